"""Generation and held-out likelihood of a trained VDMModel (what `meddiff sample` and
`meddiff evaluate --likelihood` call).

generate_levels: z_1 ~ N(0, I), `steps` ancestral steps (sampling.sample_z0), then
x ~ p(x | z_0) by the decoder (Kingma et al. 2021, Sec. 3.3); image i depends only on seed + i.
generate_images / write_generated: what `meddiff sample` does with a VDM checkpoint and no input
(batches of samples, then OUT/grid.png and one file per sample, marked synthetic).

heldout_bpd: the negative VLB (eq. 11-17) of every slice of a dataset in bits/dim, one
Monte-Carlo draw of (t, eps, eps_0) per slice with times drawn independently (not
antithetically): then the per-slice estimates are independent and unbiased, so their mean
estimates E[-VLB] and std / sqrt(N) is its standard error (data and Monte-Carlo noise together).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import FieldError, InputError
from ..metrics.grids import VIEW_WIDTH, grid_for_viewing, image_grid, upscale_nearest  # noqa: F401 (re-exported)
from ..io import Volume, write_volume
from .build import latent_shape
from .checkpoint import LoadedVDM
from .networks import NO_CLASS, VDMModel, to_levels
from .vlb import model_vlb
from .sampling import decode_levels, guided_score, sample_z0
from .schedule import alpha

TERMS = ("reconstruction", "latent", "diffusion", "total")
log = logging.getLogger(__name__)
EXTENSIONS = {"same": ".png", "png": ".png", "nifti": ".nii.gz", "dicom": ".dcm"}  # output format -> suffix


@torch.no_grad()
def generate_levels(model: VDMModel, latent_shape: Sequence[int], n: int, *, steps: int, seed: int = 0,
                    labels: Tensor | None = None, device: torch.device | str = "cpu", guidance: float = 0.0) -> Tensor:
    """n samples x in 0..V-1, int64 [n, *data_shape]: ancestral sampling of z_0 over `steps` steps,
    then a draw from p(x | z_0). labels: int64 [n] class indices (class-conditional models).

    guidance: the weight w of classifier-free guidance (sampling.guided_score: each step's eps_hat is
    (1 + w) eps_hat(z, c) - w eps_hat(z, no class)); 0 is the unguided sampler, bit for bit. Needs
    a class-conditional model (trained with vdm.label_dropout > 0 for the unconditional branch to mean
    anything); the decoder p(x | z_0) keeps the class."""
    if n < 1:
        raise InputError(f"number of samples {n!r}: expected >= 1")
    if not math.isfinite(guidance):
        raise FieldError("guidance", guidance, "expected a finite weight w (0 = no guidance)")
    if guidance != 0 and (model.class_embedding is None or labels is None):
        raise FieldError("guidance", guidance, "classifier-free guidance needs a class-conditional VDM and class labels")
    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    emb = model.embed(None if labels is None else labels.to(device))
    score = model.score
    if guidance != 0:
        score = guided_score(model.score, float(guidance), model.embed(torch.full_like(labels, NO_CLASS).to(device)))
    z0 = sample_z0(score, model.gamma, (n, *latent_shape), steps=steps, generators=gens, cond=emb,
                   device=device)
    g0 = model.gamma(torch.zeros((), dtype=z0.dtype, device=z0.device))
    logits = model.decoder.logits(z0 / alpha(g0), g0, emb)
    return decode_levels(logits, gens)


def levels_to_image(x: Tensor, vocab_size: int) -> Tensor:
    """Levels 0..V-1 -> meddiff's [-1, 1] range: 2 x / (V - 1) - 1 (inverse of networks.to_levels)."""
    return 2.0 * x.float() / (vocab_size - 1) - 1.0


@dataclass(frozen=True)
class HeldoutBPD:
    """Per-slice bits/dim of each term (arrays [N]) and their mean and standard error."""

    per_slice: dict[str, np.ndarray]
    case_ids: list[str]

    def mean(self, term: str = "total") -> float:
        return float(self.per_slice[term].mean())

    def stderr(self, term: str = "total") -> float:
        v = self.per_slice[term]
        return float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


@torch.no_grad()
def heldout_bpd(model: VDMModel, dataset, *, timesteps: int, vocab_size: int, seed: int = 0, batch_size: int = 16,
                labels_of: Callable[[list[str]], Tensor | None] = lambda ids: None,
                cond_of: Callable[[Tensor, Tensor], Tensor | None] = lambda cond, mask: None,
                device: torch.device | str = "cpu", draws: int = 1) -> HeldoutBPD:
    """Negative VLB in bits/dim of every item of `dataset` (Pair items in [-1, 1]); noise of batch k
    from torch.Generator(seed + k). labels_of(case_ids) -> class indices; cond_of(cond, mask) ->
    condition planes (image-conditional models).

    draws > 1: each slice's value is the mean of `draws` independent Monte-Carlo draws of
    (t, eps, eps_0) (draw d uses seed + 1_000_003 d), which lowers the Monte-Carlo part of the
    standard error; draws=1 is the single-draw estimate above, unchanged."""
    n = len(dataset)
    if n == 0:
        raise InputError("no slices to evaluate")
    if draws < 1:
        raise InputError(f"draws {draws!r}: expected >= 1")
    if draws > 1:
        runs = [heldout_bpd(model, dataset, timesteps=timesteps, vocab_size=vocab_size, seed=seed + 1_000_003 * d,
                            batch_size=batch_size, labels_of=labels_of, cond_of=cond_of, device=device)
                for d in range(draws)]
        return HeldoutBPD({k: np.mean([r.per_slice[k] for r in runs], axis=0) for k in TERMS}, runs[0].case_ids)
    out: dict[str, list[float]] = {k: [] for k in TERMS}
    ids: list[str] = []
    for k, s in enumerate(range(0, n, batch_size)):
        items = [dataset[i] for i in range(s, min(n, s + batch_size))]
        x = to_levels(torch.stack([it.x0 for it in items]).float(), vocab_size).to(device)
        case = [str(it.case_id) for it in items]
        cond = cond_of(torch.stack([it.cond for it in items]).float(), torch.stack([it.mask for it in items]).float())
        labels = labels_of(case)
        terms = model_vlb(model, x, labels=None if labels is None else labels.to(device),
                          image_cond=None if cond is None else cond.to(device),
                          generator=torch.Generator().manual_seed(seed + k), timesteps=timesteps, antithetic=False)
        scale = 1.0 / (terms.dims * math.log(2.0))
        for name in TERMS[:3]:
            out[name] += (getattr(terms, name) * scale).double().cpu().tolist()
        out["total"] += (terms.total * scale).double().cpu().tolist()
        ids += case
    return HeldoutBPD({k: np.asarray(v) for k, v in out.items()}, ids)


def resolve_labels(label: str | None, names: tuple[str, ...], n: int) -> tuple[torch.Tensor | None, list[str]]:
    """(class indices [n] or None, class name per sample ('' when unconditional))."""
    if not names:
        if label is not None:
            raise FieldError("label", repr(label), "this VDM is unconditional (trained without class labels)")
        return None, [""] * n
    if label is None:
        idx = [i % len(names) for i in range(n)]
    elif label in names:
        idx = [names.index(label)] * n
    elif label.isdigit() and int(label) < len(names):
        idx = [int(label)] * n
    else:
        raise FieldError("label", repr(label), f"expected one of the model's classes {list(names)} or an index 0..{len(names) - 1}")
    return torch.tensor(idx, dtype=torch.long), [names[i] for i in idx]


def generation_steps(vdm: LoadedVDM, steps: int | None = None) -> int:
    """The ancestral steps of a generation run: `steps`, else the checkpoint's vdm.sample_steps (a
    continuous-time chain: any number >= 1); FieldError("steps") otherwise."""
    steps = vdm.cfg.vdm.sample_steps if steps is None else steps
    if steps < 1:
        raise FieldError("steps", steps, "expected an integer >= 1 (any number of ancestral steps)")
    return int(steps)


def generate_images(vdm: LoadedVDM, n: int, *, steps: int, seed: int = 0, labels: Tensor | None = None,
                    batch_size: int = 16, device: torch.device | str = "cpu", guidance: float = 0.0) -> np.ndarray:
    """n samples of `vdm` as levels 0..V-1, float32 [n, H, W] (one channel), in batches of batch_size
    (sample i uses seed + i, so it does not depend on n or the batch size); guidance: the weight w of
    classifier-free guidance (generate_levels)."""
    lat = latent_shape(vdm.cfg, vdm.data_shape)
    chunks = []
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        chunks.append(generate_levels(vdm.model, lat, e - s, steps=steps, seed=seed + s,
                                      labels=None if labels is None else labels[s:e], device=device,
                                      guidance=guidance).cpu())
        log.info("generated %d/%d", e, n)
    return torch.cat(chunks)[:, 0].numpy().astype(np.float32)  # [n, H, W] levels (one channel)


def write_generated(vdm: LoadedVDM, x: np.ndarray, out: Path, names: list[str], what: str, fmt: str = "same",
                    provenance: dict | None = None) -> list[Path]:
    """OUT/grid.png (all samples tiled) and OUT/sample_0000[_<class>].<ext> per sample, marked synthetic,
    each with its provenance sidecar; PNG: 8 bit when V <= 256, window 0..V-1. Returns the files written."""
    from ..io.outdir import mark
    from ..io.provenance import file_sha256

    v = vdm.cfg.vdm.vocab_size
    bits = 8 if v <= 256 else 16
    mark(out, "sample")
    prov = {"checkpoint": str(vdm.file), "checkpoint_sha256": file_sha256(vdm.file), "checkpoint_step": vdm.step,
            **(provenance or {})}
    written = write_volume(_volume(grid_for_viewing(x, fill=0.0), vdm.file, what), out / "grid.png", synthetic=True,
                           description=f"meddiff {what} (grid)", bits=bits, window=(0.0, v - 1.0), provenance=prov)
    ext = EXTENSIONS[fmt]
    for i in range(len(x)):
        name = f"sample_{i:04d}" + (f"_{names[i]}" if names[i] else "")
        desc = f"meddiff {what}" + (f", class {names[i]}" if names[i] else "")
        written += write_volume(_volume(x[i], vdm.file, desc), out / f"{name}{ext}", synthetic=True, description=desc,
                                bits=bits, window=(0.0, v - 1.0) if ext == ".png" else None, overwrite=True,
                                provenance=prov)
    return written


def _volume(arr: np.ndarray, source: Path, what: str) -> Volume:
    return Volume(np.ascontiguousarray(arr, dtype=np.float32), (1.0, 1.0), np.eye(4), "meddiff", Path(source),
                  {"modality": "OT", "units": "levels", "derived": what})
