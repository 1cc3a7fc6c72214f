"""Scores of unconditional generation: a set of generated images against a set of real ones
(`meddiff evaluate --generated DIR --real DIR`), no pairing by file name.

One table of: FID and KID (meddiff.metrics.fid, Inception-v3 pool3 features), improved precision
and recall (Kynkaanniemi et al., "Improved Precision and Recall Metric for Assessing Generative
Models", NeurIPS 2019) in the same feature space, and, given a VDM checkpoint and a prepared
folder, the held-out negative VLB in bits/dim (computed by meddiff.vdm.likelihood, passed in).

Small-n caveats, stated in the table rather than hidden: FID is biased upwards below ~50
images per set (its covariance is a rank-(n-1) estimate of a 2048-d one), so it is given with a
note and only comparable between sets of one n; KID is unbiased, so at small n its estimate can
fall below 0 when the sets are indistinguishable at that n: the table then says "n too small"
with the estimate and its spread instead of a negative distance. Precision/recall with k
neighbours need n > k in each set.

Intensities (`read_image_set`): each image becomes [N, H, W] on [-1, 1]. A `meddiff prepare`
folder is already there; files written by meddiff with a stored window (the VDM's PNG samples,
levels 0..V-1) are mapped by that window; other 8-bit images map 0..255; anything else (16-bit
PNG, DICOM, NIfTI) is scaled by its own 0.5 and 99.5 percentiles, as `meddiff prepare
--clip-percentiles 0.5 99.5` does for a radiograph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

PERCENTILES = (0.5, 99.5)
FID_MIN_N = 50  # below this per set FID is reported with the bias note
PR_K = 3  # Kynkaanniemi et al.: k = 3 nearest neighbours


# --------------------------------------------------------------------------- precision / recall


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [Na, Nb] between the rows of a [Na, D] and b [Nb, D] (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.clip(d2, 0.0, None))


def knn_radii(features: np.ndarray, k: int = PR_K) -> np.ndarray:
    """Radius of each sample's hypersphere [N]: the distance to its k-th nearest other sample of
    the same set (Kynkaanniemi et al. 2019, eq. 1; the sample itself is not its own neighbour)."""
    n = features.shape[0]
    if not 1 <= k < n:
        raise InputError(f"k-NN manifold with k = {k} needs more than k samples, got {n}")
    d = pairwise_distances(features, features)
    np.fill_diagonal(d, np.inf)
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def manifold_coverage(queries: np.ndarray, support: np.ndarray, radii: np.ndarray) -> float:
    """Share of `queries` inside the manifold of `support`: f(q) = 1 if ||q - s|| <= radius(s) for
    some support sample s (eq. 1), averaged over the queries (eq. 2 / eq. 3)."""
    d = pairwise_distances(queries, support)
    return float(np.mean((d <= radii[None, :]).any(axis=1)))


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = PR_K) -> tuple[float, float]:
    """(precision, recall): the share of generated samples inside the real manifold, and of real
    samples inside the generated manifold, both with k-NN radii in feature space [N, D]."""
    precision = manifold_coverage(generated, real, knn_radii(real, k))
    recall = manifold_coverage(real, generated, knn_radii(generated, k))
    return precision, recall


# --------------------------------------------------------------------------- image sets


def percentile_scale(a: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> np.ndarray:
    """a scaled to [-1, 1] by its own (low, high) percentiles, values outside clipped."""
    lo, hi = (float(v) for v in np.percentile(a, percentiles))
    if not hi > lo:
        return np.zeros_like(a, dtype=np.float32)
    return np.clip(2.0 * (a - lo) / (hi - lo) - 1.0, -1.0, 1.0).astype(np.float32)


def _to_unit(vol) -> np.ndarray:
    arr = np.asarray(vol.array, np.float64)
    window = vol.meta.get("window_mapped")
    if window is not None:  # written by meddiff with its window (e.g. VDM levels 0..V-1)
        lo, hi = window
        return np.clip(2.0 * (arr - lo) / (hi - lo) - 1.0, -1.0, 1.0).astype(np.float32)
    if vol.meta.get("bits") == 8:
        return (arr / 127.5 - 1.0).astype(np.float32)
    return percentile_scale(arr)


def read_image_set(folder: str | Path, split: str = "test") -> list[np.ndarray]:
    """2D images on [-1, 1] (see the module docstring) from a folder of image files or from a
    `meddiff prepare` folder (its `split`); 3D volumes give one image per slice along axis 0. Files
named grid* (the tiled grids `meddiff sample` and this module write) are skipped."""
    from ..io import find_images, read_volume

    root = Path(folder)
    if (root / "manifest.csv").is_file() and (root / f"{split}.npy").is_file():
        arr = np.load(root / f"{split}.npy")
        images = [np.asarray(a, np.float32).reshape(a.shape[-2:]) for a in arr]
    elif root.is_dir():
        images = []
        for item in find_images(root):
            if Path(item.path).name.startswith("grid"):  # the tiled grids meddiff writes beside samples
                continue
            vol = read_volume(item)
            unit = _to_unit(vol)
            images += [unit] if unit.ndim == 2 else [s for s in unit]
    else:
        raise InputError(f"{root}: expected a folder of images or a `meddiff prepare` folder")
    if len(images) < 2:
        raise InputError(f"{root}: found {len(images)} image(s); generation metrics need at least 2 per set")
    return images


# --------------------------------------------------------------------------- the table


@dataclass
class GenerationScores:
    n_generated: int
    n_real: int
    rows: list[tuple[str, str, str]] = field(default_factory=list)  # (metric, value, note)
    values: dict[str, float] = field(default_factory=dict)

    def markdown(self) -> str:
        lines = [f"generated n = {self.n_generated}, real n = {self.n_real}", "",
                 "| metric | value | note |", "|---|---:|---|"]
        lines += [f"| {m} | {v} | {note} |" for m, v, note in self.rows]
        return "\n".join(lines) + "\n"


def kid_row(kid: float, kid_std: float, n: int) -> tuple[str, str]:
    """(value, note) of KID: the estimate, or "n too small" when it is below 0 (see the module docstring)."""
    if kid < 0:
        return "n too small", (f"estimate {kid:.4f} +- {kid_std:.4f} is below 0: the sets are indistinguishable "
                               f"at n = {n}; more images are needed")
    return f"{kid:.4f} +- {kid_std:.4f}", f"unbiased MMD^2, subsets of {n} (mean +- std over subsets)"


def score_features(f_gen: np.ndarray, f_real: np.ndarray, k: int = PR_K, seed: int = 0) -> GenerationScores:
    """FID, KID and precision/recall rows from Inception features [N, D] of each set."""
    from .fid import fid_from_features, kid_from_features

    ng, nr = f_gen.shape[0], f_real.shape[0]
    s = GenerationScores(ng, nr)
    fid = fid_from_features(f_gen, f_real)
    note = f"biased upwards below {FID_MIN_N} images per set; compare only at equal n, read KID" if min(ng, nr) < FID_MIN_N else ""
    s.rows.append(("FID", f"{fid:.2f}", note))
    m = min(ng, nr, 1000)
    kid, kid_std = kid_from_features(f_gen, f_real, subsets=100, subset_size=m, seed=seed)
    s.rows.append(("KID", *kid_row(kid, kid_std, m)))
    s.values.update(fid=fid, kid=kid, kid_std=kid_std)
    if min(ng, nr) > k:
        p, r = precision_recall(f_real, f_gen, k)
        s.rows += [("precision", f"{p:.3f}", f"generated inside the real k-NN manifold (k = {k})"),
                   ("recall", f"{r:.3f}", f"real inside the generated k-NN manifold (k = {k})")]
        s.values.update(precision=p, recall=r)
    else:
        s.rows.append(("precision / recall", "n too small", f"needs more than k = {k} images per set"))
    return s


def evaluate_generation(generated: str | Path, real: str | Path, out: str | Path, *, split: str = "test",
                        bits_per_dim: tuple[float, float, int] | None = None, draws: int = 1,
                        k: int = PR_K, seed: int = 0, real_size: str = "resize") -> GenerationScores:
    """The whole `meddiff evaluate --generated --real` run: read both sets (the real ones brought to
    the generated size, or refused, by `real_size`: see match_real_to_generated), score them in the
    Inception feature space, add the held-out bits/dim when given ((mean, standard error, slices) of
    the generating model on `split`, each slice the mean of `draws` draws: meddiff.vdm.likelihood.heldout_total),
    and write OUT/generation.{md,csv,json} and OUT/grid_{generated,real}.png (nearest-upscaled)."""
    from .fid import inception_features

    gen, ref = read_image_set(generated, split), read_image_set(real, split)
    ref, note = match_real_to_generated(gen, ref, real_size)
    scores = score_features(_features(gen, inception_features), _features(ref, inception_features), k, seed)
    if note:
        scores.rows.append(("resolution", "x".join(map(str, gen[0].shape)), note))
    if bits_per_dim is not None:
        bpd, se, n = bits_per_dim
        scores.rows.append(("bits/dim (held out)", f"{bpd:.3f} +- {se:.3f}",
                            f"negative VLB of the EMA weights on {n} slices of split {split!r}, {draws} draw(s) each"))
        scores.values.update(bits_per_dim=bpd, bits_per_dim_se=se)
    write_generation_outputs(scores, gen, ref, Path(out))
    return scores


def match_real_to_generated(gen: list[np.ndarray], ref: list[np.ndarray], mode: str = "resize") -> tuple[list[np.ndarray], str]:
    """The real set at the generated images' size, and a note saying what was done ("" if nothing).

    Scores of sets at unequal resolution measure the resolution, not the model (a 32-px sample
    against 256-px films scored KID 0.46 where the same films at 32 px scored 0.136), so sizes are
    never compared silently: mode "resize" resamples each real image to the generated size with an
    anti-aliased (area-averaging) filter, mode "refuse" raises. Generated images of several sizes,
    or real images of another aspect ratio, are refused either way.
    """
    if mode not in ("resize", "refuse"):
        raise InputError(f"--real-size {mode!r}: expected 'resize' or 'refuse'")
    sizes = sorted({im.shape for im in gen})
    if len(sizes) != 1:
        raise InputError(f"the generated images have {len(sizes)} sizes {sizes[:4]}: generate one size per set to score it")
    (h, w), = sizes
    other = sorted({im.shape for im in ref if im.shape != (h, w)})
    if not other:
        return ref, ""
    if mode == "refuse":
        raise InputError(f"the real images are {other[0][0]}x{other[0][1]} (and {len(other) - 1} other size(s)), the generated "
                         f"{h}x{w}: scores across sizes measure the resolution; resize the real set or use --real-size resize")
    bad = [s for s in other if abs(s[0] * w - s[1] * h) > max(s) * 0.02 * max(h, w)]
    if bad:
        raise InputError(f"real images of {bad[0][0]}x{bad[0][1]} have another aspect ratio than the generated {h}x{w}: "
                         "crop or pad them to that shape first")
    import torch
    import torch.nn.functional as F

    out = []
    for im in ref:
        if im.shape == (h, w):
            out.append(im)
            continue
        x = torch.from_numpy(np.ascontiguousarray(im, np.float32))[None, None]
        out.append(F.interpolate(x, size=(h, w), mode="area").clamp(-1, 1)[0, 0].numpy())
    listed = ", ".join(f"{a}x{b}" for a, b in other[:3])
    return out, f"real images resampled from {listed} to the generated {h}x{w} (area averaging) before scoring"


def _features(images: list[np.ndarray], inception_features) -> np.ndarray:
    """Inception features of images of any sizes (batched by shape, original order kept)."""
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        by_shape.setdefault(im.shape, []).append(i)
    feats: list[np.ndarray | None] = [None] * len(images)
    for idx in by_shape.values():
        f = inception_features(np.stack([images[i] for i in idx]), value_range=(-1.0, 1.0))
        for i, row in zip(idx, f):
            feats[i] = row
    return np.stack(feats)  # type: ignore[arg-type]


def write_generation_outputs(scores: GenerationScores, gen: list[np.ndarray], ref: list[np.ndarray], out: Path) -> None:
    """generation.md / .csv / .json and the two viewing grids, each written atomically."""
    import csv
    import io
    import json

    from ..io.atomic import atomic_write_text
    from .grids import grid_for_viewing

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "generation.md", scores.markdown())
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["metric", "value", "note"])
    w.writerows(scores.rows)
    atomic_write_text(out / "generation.csv", buf.getvalue())
    doc = {"n_generated": scores.n_generated, "n_real": scores.n_real, **scores.values}
    atomic_write_text(out / "generation.json", json.dumps(doc, indent=1) + "\n")
    for name, images in (("generated", gen), ("real", ref)):
        _write_png(grid_for_viewing(_common_size(images[:64])), out / f"grid_{name}.png")


def _common_size(images: list[np.ndarray]) -> np.ndarray:
    """[N, H, W] of the first images, every one cropped to the smallest height and width."""
    h, w = min(im.shape[0] for im in images), min(im.shape[1] for im in images)
    return np.stack([im[:h, :w] for im in images])


def _write_png(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    from ..io.atomic import atomic_path

    u8 = np.round((np.clip(img, -1, 1) + 1) * 127.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(u8).save(tmp, format="PNG")
