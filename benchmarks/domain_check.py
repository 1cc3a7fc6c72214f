"""The domain check (meddiff.domain) measured as a classifier, per held-out source and degradation (issue 29, item 4).

    python benchmarks/domain_check.py [--checkpoint src/meddiff/checkpoints/sr_x4_general.safetensors] \\
        [--sources colin27_ch2 epi_t2star ...] [--kernel bicubic kspace_none ...] [--noise 0.02] \\
        [--slices 8] [--crop 128] [--out runs/domain_check]

For every input (a truth image x of a held-out source, degraded by one kernel at x4): does the model
(its stored default sampler; sr_x4_general: posterior_mean, one call, seed 0) beat bicubic in PSNR
against x (the label: *win* or *loss*), and does the domain check flag it (the prediction), as
`meddiff sample` runs the check: before sampling on the delivered low-resolution image (modality,
the input's pixel spacing, intensities, the model-based score and the signals the card holds) and
after sampling on the result (consistency with the measurement). Reported per source (never pooled
across sources) and per source x degradation:

- false-alarm rate: flagged among the inputs where the model wins (target <= 10%);
- detection rate: flagged among the inputs where it loses (target >= 90%);
- the same for the check before sampling alone (what --strict-domain refuses on).

Held-out sources (none is used to train or calibrate any model or threshold here):

| name | what | output spacing |
|---|---|---|
| colin27_ch2 | Colin27 T1 with skull, /usr/share/mricron/templates/ch2.nii.gz (Debian mricron-data), axial 128^2 crops | 1 mm |
| epi_t2star | nibabel's example4d.nii.gz, frame 0, axial slices 128x96 | 2 mm |
| mr_t2_se | pydicom's MR_small.dcm (one 64^2 slice) and its 7 other flips/rotations | 0.31 mm |
| mr_emri | pydicom-data emri_small.dcm, multi-frame MR 64^2, its 10 frames | (none in the file) |
| mr_shoulder_t1 | pydicom-data MR2_UNCR.dcm, 1024^2 -> 256^2, 128^2 crops with foreground | 0.78 mm |
| mr_abdomen_gre | pydicom-data MR-SIEMENS-DICOM-WithOverlays.dcm, 484^2 -> 256^2, 128^2 crops | 1.37 mm |
| ct_small | pydicom's CT_small.dcm (128^2) and its 7 flips/rotations: known out of domain (modality CT) | 0.66 mm |

Degradations: ``bicubic`` (Med-cDiff's anti-aliased bicubic, what the model trained on) and the
k-space kernels of meddiff.data.acquisition (truncation with no window, Hamming, Tukey, Fermi;
partial Fourier 5/8 zero-filled and homodyne; zero-filled interpolation x2), each as
benchmarks/generalization.py makes them; ``--noise S`` adds the case ``kspace_none+noiseS``
(complex k-space noise, std S of the [0, 1] range). Truth min/max-normalised per source to [-1, 1].
Writes OUT/domain_check.md and OUT/domain_check_inputs.csv (one row per input: label, flag, numbers).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generalization import condition  # noqa: E402
from heldout import _crop4, _dicom, _norm, _resize  # noqa: E402

from meddiff.data.acquisition import KSPACE_KERNELS  # noqa: E402
from meddiff.diffusion.checkpoint import load_model  # noqa: E402
from meddiff.samplers.run import restore, sampler_options  # noqa: E402
from meddiff.io.atomic import atomic_write_text  # noqa: E402
from meddiff.metrics.image import psnr  # noqa: E402

FACTOR = 4.0
COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")


@dataclass
class HeldOut:
    name: str
    modality: str  # the DICOM modality the check is given
    images: list[np.ndarray]  # truth [H, W] in [-1, 1], sides multiples of 4
    spacing_mm: float | None  # in-plane spacing of the truth (= the output's); None: the file has none


def _dihedral(a: np.ndarray) -> list[np.ndarray]:
    """The 8 flips/rotations of one image (a source with a single slice gives 8 inputs, not 8 independent ones)."""
    return [np.ascontiguousarray(np.rot90(b, k)) for b in (a, a[:, ::-1]) for k in range(4)]


def _crops(a: np.ndarray, size: int, stride: int, min_fg: float = 0.3, n: int = 12) -> list[np.ndarray]:
    out = [np.ascontiguousarray(a[i:i + size, j:j + size]) for i in range(0, a.shape[0] - size + 1, stride)
           for j in range(0, a.shape[1] - size + 1, stride)]
    out = [c for c in out if (c > -0.9).mean() >= min_fg]
    idx = np.linspace(0, len(out) - 1, min(n, len(out))).round().astype(int) if out else []
    return [out[i] for i in idx]


def _spacing(key: str) -> float | None:
    from pydicom.data import get_testdata_file

    from meddiff.io import read_volume

    s = read_volume(get_testdata_file(key)).spacing
    return float(min(s[-2:])) if s and min(s[-2:]) > 0 else None


def _large(name: str, key: str, n: int, crop: int) -> HeldOut:
    a = _dicom(key)
    a = a if a.ndim == 2 else a[a.shape[0] // 2]
    s = min(a.shape)
    a = a[(a.shape[0] - s) // 2:(a.shape[0] - s) // 2 + s, (a.shape[1] - s) // 2:(a.shape[1] - s) // 2 + s]
    sp = _spacing(key)
    return HeldOut(name, "MR", _crops(_norm(_resize(a, 256)), crop, 32, n=n), None if sp is None else sp * s / 256)


def colin27(n: int, crop: int) -> HeldOut:
    from meddiff.io import read_volume

    vol = read_volume(COLIN)
    v = _norm(vol.array)  # [Z, Y, X], axial planes
    out = []
    for z in np.linspace(0.25, 0.75, n).round(3) * (len(v) - 1):
        sl = v[int(round(z))]
        i, j = (sl.shape[0] - crop) // 2, (sl.shape[1] - crop) // 2
        out.append(np.ascontiguousarray(sl[i:i + crop, j:j + crop]))
    return HeldOut("colin27_ch2", "MR", out, float(min(vol.spacing[-2:])))


def epi(n: int) -> HeldOut:
    import nibabel as nib
    from nibabel.testing import data_path

    img = nib.load(f"{data_path}/example4d.nii.gz")
    a = np.asarray(img.dataobj, np.float32)[..., 0]
    v = _crop4(_norm(np.transpose(a, (2, 1, 0))[:, ::-1]))
    keep = [z for z in range(len(v)) if (v[z] > -0.8).mean() > 0.15]
    idx = np.linspace(0, len(keep) - 1, min(n, len(keep))).round().astype(int)
    return HeldOut("epi_t2star", "MR", [np.ascontiguousarray(v[keep[i]]) for i in idx], float(min(img.header.get_zooms()[:2])))


def held_out(n: int, crop: int) -> list[HeldOut]:
    emri = _crop4(_norm(_dicom("emri_small.dcm")))
    return [
        colin27(n, crop),
        epi(n),
        HeldOut("mr_t2_se", "MR", _dihedral(_crop4(_norm(_dicom("MR_small.dcm")))), _spacing("MR_small.dcm")),
        HeldOut("mr_emri", "MR", [np.ascontiguousarray(f) for f in emri], _spacing("emri_small.dcm")),
        _large("mr_shoulder_t1", "MR2_UNCR.dcm", n, crop),
        _large("mr_abdomen_gre", "MR-SIEMENS-DICOM-WithOverlays.dcm", n, crop),
        HeldOut("ct_small", "CT", _dihedral(_crop4(_norm(_dicom("CT_small.dcm")))), _spacing("CT_small.dcm")),
    ]


def check_one(m, src: HeldOut, restored: np.ndarray, denoiser, card) -> dict:
    """The domain check on one input as `meddiff sample` runs it; returns the report as a dict plus
    'flag_pre' (flagged before sampling) and 'flag' (before or after)."""
    from meddiff import domain

    spacing = None if src.spacing_mm is None else (src.spacing_mm * m.factor,) * 2  # the delivered image's
    rep = domain.check_input(src.name, m.lowres, src.modality, spacing, m.factor, denoiser, card,
                             score=min(m.lowres.shape[-2:]) >= 32)
    pre = not rep.in_domain
    out = torch.from_numpy(restored)[None, None]
    if hasattr(domain, "check_output"):
        domain.check_output(rep, out, m.lowres, m.factor, card)
    else:  # the check before issue 29 (meddiff.domain.check.domain_postcheck)
        rep.consistency = domain.consistency_ratio(out, m.lowres, m.factor)
        if rep.consistency > domain.SCORE_LIMIT:
            rep.reasons.append("consistency")
    d = {k: v for k, v in asdict(rep).items() if k not in ("source",)}
    d["reasons"] = " | ".join(r.split(" (")[0][:60] for r in rep.reasons)
    signal_flag = getattr(rep, "worse_than_bicubic", None)
    if signal_flag is None:  # the check before issue 29: every reason but the modality
        signal_flag = any(not r.startswith("modality") for r in rep.reasons)
    d.pop("signals", None)
    d.pop("notes", None)
    d |= {f"sig_{k}": v for k, v in getattr(rep, "signals", {}).items()}
    return d | {"flag_pre": pre, "flag": not rep.in_domain, "flag_signals": bool(signal_flag)}


def run_case(src: HeldOut, kernel: str, noise: float, restorer, denoiser, card) -> list[dict]:
    k = kernel.split("+")[0]
    conds = [condition(x, k, FACTOR, noise if "+noise" in kernel else 0.0, seed=i) for i, x in enumerate(src.images)]
    rows = []
    for i, (x, m) in enumerate(zip(src.images, conds)):
        y = restorer(m.cond)
        bic = m.cond[0, 0].numpy()
        d = float(psnr(np.clip(y, -1, 1), x, data_range=2.0) - psnr(bic, x, data_range=2.0))
        rows.append({"source": src.name, "kernel": kernel, "image": i, "size": f"{x.shape[0]}x{x.shape[1]}",
                     "d_psnr": round(d, 3), "loss": d <= 0} | check_one(m, src, y, denoiser, card))
    return rows


def rates(rows: list[dict], key: str) -> tuple[int, int, str, str]:
    wins = [r for r in rows if not r["loss"]]
    losses = [r for r in rows if r["loss"]]
    fa = f"{sum(r[key] for r in wins)}/{len(wins)} ({100 * sum(r[key] for r in wins) / len(wins):.0f}%)" if wins else "-"
    det = f"{sum(r[key] for r in losses)}/{len(losses)} ({100 * sum(r[key] for r in losses) / len(losses):.0f}%)" if losses else "-"
    return len(wins), len(losses), fa, det


def verdict(rows: list[dict], key: str) -> str:
    wins = [r for r in rows if not r["loss"]]
    losses = [r for r in rows if r["loss"]]
    ok_fa = not wins or sum(r[key] for r in wins) <= 0.10 * len(wins)
    ok_det = not losses or sum(r[key] for r in losses) >= 0.90 * len(losses)
    return ("met" if ok_fa and ok_det else "not met: " + ", ".join(
        t for t, ok in (("false alarms", ok_fa), ("detection", ok_det)) if not ok))


def markdown(rows: list[dict], title: str) -> str:
    head = ("| source | degradation | n | model wins | loses | mean Δ PSNR dB | false alarms (flagged / wins) | "
            "detected (flagged / losses) | before sampling only: false alarms | detected | "
            "signals only (no modality rule): false alarms | detected | target |")
    lines = [title, "", "Per source, all degradations together:", "", head, "|" + "---|" * 13]
    srcs = list(dict.fromkeys(r["source"] for r in rows))

    def line(rs, src, deg):
        w, l_, fa, det = rates(rs, "flag")
        _, _, fa0, det0 = rates(rs, "flag_pre")
        _, _, fa1, det1 = rates(rs, "flag_signals")
        return (f"| {src} | {deg} | {len(rs)} | {w} | {l_} | {np.mean([r['d_psnr'] for r in rs]):+.2f} | {fa} | {det} | "
                f"{fa0} | {det0} | {fa1} | {det1} | {verdict(rs, 'flag')} |")

    lines += [line([r for r in rows if r["source"] == s], s, "all") for s in srcs]
    lines += ["", "Per source and degradation:", "", head, "|" + "---|" * 13]
    for s in srcs:
        for k in dict.fromkeys(r["kernel"] for r in rows):
            rs = [r for r in rows if r["source"] == s and r["kernel"] == k]
            if rs:
                lines.append(line(rs, s, k))
    return "\n".join(lines) + "\n"


def spacing_sweep(restorer, n: int, crop: int, spacings=(0.33, 0.5, 0.67, 1.0, 1.5, 2.0, 3.0)) -> str:
    """Does the output pixel spacing matter? Axial slices of the MNI152 2009a T1 (nilearn, 1 mm: the
    training side) and of Colin27 (held out) resampled (anti-aliased cubic) to each output spacing,
    `crop`^2 central crops, bicubic kernel x4: the model's win rate over bicubic and mean gain."""
    import nibabel as nib
    from nilearn import datasets

    from meddiff.io import read_volume

    vols = {"mni152 (training side)": _norm(np.transpose(np.asarray(datasets.load_mni152_template(resolution=1).dataobj, np.float32), (2, 1, 0))[:, ::-1]),
            "colin27_ch2 (held out)": _norm(read_volume(COLIN).array)}
    del nib
    lines = ["| volume | output spacing mm | n | model wins | mean Δ PSNR dB |", "|---|---|---|---|---|"]
    for name, v in vols.items():
        for sp in spacings:
            d = []
            for z in np.linspace(0.3, 0.7, n).round(3) * (len(v) - 1):
                sl = v[int(round(z))]
                size = [int(round(a / sp)) for a in sl.shape]
                t = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(sl))[None, None], size=size, mode="bicubic",
                                                    antialias=True, align_corners=False)[0, 0].clamp(-1, 1).numpy()
                c = min(crop, (min(t.shape) // 4) * 4)
                i, j = (t.shape[0] - c) // 2, (t.shape[1] - c) // 2
                x = np.ascontiguousarray(t[i:i + c, j:j + c])
                m = condition(x, "bicubic", FACTOR)
                y = restorer(m.cond)
                d.append(float(psnr(np.clip(y, -1, 1), x, data_range=2.0) - psnr(m.cond[0, 0].numpy(), x, data_range=2.0)))
            lines.append(f"| {name} | {sp:g} | {len(d)} | {sum(v_ > 0 for v_ in d)} | {np.mean(d):+.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="src/meddiff/checkpoints/sr_x4_general.safetensors")
    p.add_argument("--sources", nargs="*", default=None)
    p.add_argument("--kernel", nargs="+", default=["bicubic", *KSPACE_KERNELS], choices=("bicubic", *KSPACE_KERNELS))
    p.add_argument("--noise", type=float, default=0.02, help="adds the case kspace_none+noiseS (0: no noisy case)")
    p.add_argument("--slices", type=int, default=8, help="images (slices or crops) per volume/large source")
    p.add_argument("--crop", type=int, default=128, help="crop side of colin27 and the large sources (output pixels)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--thresholds", type=Path, default=None, help="a thresholds JSON to use instead of the card's")
    p.add_argument("--spacing-sweep", action="store_true", help="only the output-spacing sweep (spacing_sweep)")
    p.add_argument("--out", type=Path, default=Path("runs/domain_check"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from meddiff.checkpointing import resolve_model_file
    from meddiff.domain import read_card

    cfg, _, denoiser = load_model(args.checkpoint, expect_task="sr")
    card = read_card(resolve_model_file(args.checkpoint))
    if args.thresholds is not None:  # another fit (scripts/domain_thresholds.py OUT/thresholds_*.json) in place of the card's
        import dataclasses
        import json

        card = dataclasses.replace(card, thresholds=json.loads(args.thresholds.read_text())["thresholds"])
    s = cfg.sampler
    opts = sampler_options(s.name, cfg.diffusion.variance, s.eta, s.grid)

    def restorer(cond: torch.Tensor) -> np.ndarray:
        return restore(denoiser, cond, sampler=s.name, steps=s.steps, seed=0, batch_size=1, progress=False, **opts)[0, 0, 0].numpy()

    if args.spacing_sweep:
        md = spacing_sweep(restorer, args.slices, args.crop)
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out / "spacing_sweep.md", md)
        print(md)
        return 0
    kernels = list(args.kernel) + ([f"kspace_none+noise{args.noise:g}"] if args.noise > 0 else [])
    rows: list[dict] = []
    for src in held_out(args.slices, args.crop):
        if args.sources and src.name not in args.sources:
            continue
        for k in kernels:
            t0 = time.perf_counter()
            rows += run_case(src, k, args.noise, restorer, denoiser, card)
            print(f"{src.name} {k}: {len(src.images)} inputs, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    title = (f"Domain check as a classifier: {args.checkpoint} ({s.name}, {s.steps} step(s), seed 0), x{FACTOR:g}; "
             "label = the model's PSNR against the truth is not above bicubic's (loss); prediction = flagged.")
    md = markdown(rows, title)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "domain_check.md", md)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(args.out / "domain_check_inputs.csv.tmp", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    (args.out / "domain_check_inputs.csv.tmp").replace(args.out / "domain_check_inputs.csv")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
