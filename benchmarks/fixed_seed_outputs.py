"""Fixed-seed outputs of the library's main paths, for checking that a refactoring changes no bit.

    python benchmarks/fixed_seed_outputs.py --save REF.safetensors   # record (before a change)
    python benchmarks/fixed_seed_outputs.py --check REF.safetensors  # compare bit for bit (after)

Recorded (all tiny, CPU, one thread, about a minute):
- the shipped checkpoint demo_sr_x4 restoring two 16x16 slices with each sampler (ancestral,
  ddim, dpm_solver_pp; 4 steps), through `meddiff.samplers.run.restore`;
- an unconditional VDM (tiny ScoreNet, random weights from a fixed seed) generating two 8x8 samples
  (`vdm.generate.generate_levels`), and an image-conditional U-Net VDM restoring through `restore`
  with each sampler;
- three training steps of a DDPM, a VDM and a pix2pix baseline config: the per-step losses and the
  final EMA weights; the trained pix2pix restoring slices (`baselines.registry.restore_baseline`);
- `meddiff sample` on a 24x24 NPY file (the restore pipeline, files -> slices -> samples -> files)
  with the shipped checkpoint (2 samples) and with the trained pix2pix.

tests/test_fixed_seed_outputs.py runs the same recording against the committed reference with a
small tolerance (other CPUs may round differently); --check here demands bit equality.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from meddiff import config as config_mod

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src/meddiff/checkpoints/demo_sr_x4.safetensors"
SAMPLERS = ("ancestral", "ddim", "dpm_solver_pp")


class _Pair(tuple):
    x0 = property(lambda s: s[0])
    cond = property(lambda s: s[1])
    mask = property(lambda s: s[2])
    case_id = property(lambda s: s[3])


class TinyPairs(torch.utils.data.Dataset):
    """n smooth images; condition = noisy copy from torch's global RNG (seeded by the trainer)."""

    def __init__(self, n: int = 12, size: int = 8):
        g = torch.Generator().manual_seed(123)
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
        a = torch.rand(n, 3, generator=g)
        self.x0 = torch.tanh(a[:, 0, None, None] * xx + a[:, 1, None, None] * yy + a[:, 2, None, None])[:, None]

    def __len__(self) -> int:
        return self.x0.shape[0]

    def __getitem__(self, i: int):
        x0 = self.x0[i]
        return _Pair((x0, (x0 + 0.1 * torch.randn(x0.shape)).clamp(-1, 1), torch.ones_like(x0), f"case{i % 3}"))


def _train_cfg(out: Path, **extra) -> dict:
    return {"train": {"out_dir": str(out), "steps": 3, "batch_size": 3, "lr": 1e-3, "ema_decay": 0.9, "ema_warmup": False,  # pins the constant-decay EMA path too
                      "log_every": 1,
                      "ckpt_every": 3, "device": "cpu", "threads": 1, "warmup_steps": 1, **extra}}


TINY_MODEL = {"channels": [8, 16], "attention_levels": [False, True], "norm_groups": 4, "num_res_blocks": 1,
              "num_heads": 2, "dropout": 0.1}
TRAIN_CONFIGS = {
    "ddpm": lambda out: {"task": {"kind": "denoise"}, "model": TINY_MODEL, "diffusion": {"timesteps": 50}, **_train_cfg(out)},
    "vdm": lambda out: {"objective": "vdm", "vdm": {"gamma": "learned_nnet", "gamma_features": 16, "embedding_dim": 16,
                                                    "n_layers": 2}, **_train_cfg(out, lr_schedule="cosine")},
    "baseline": lambda out: {"objective": "baseline", "task": {"kind": "denoise"},
                             "baseline": {"name": "pix2pix", "width": 8, "disc_width": 8, "depth": 4, "disc_layers": 2},
                             **_train_cfg(out)},
}


def ddpm_samples(out: dict[str, torch.Tensor]) -> None:
    from meddiff.samplers.run import restore, sampler_options

    try:
        from meddiff.diffusion.checkpoint import load_model
    except ImportError:  # before the issue-18 layout (to compare with an older commit)
        from meddiff.diffusion.checkpoint import load_model

    cfg, _, denoiser = load_model(SHIPPED)
    cond = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    for name in SAMPLERS:
        opts = sampler_options(name, cfg.diffusion.variance, 0.0, "auto")
        out[f"ddpm.{name}"] = restore(denoiser, cond, sampler=name, steps=4, seed=3, batch_size=2, progress=False, **opts)


def vdm_samples(out: dict[str, torch.Tensor]) -> None:
    from meddiff.samplers.run import restore, sampler_options
    from meddiff.vdm.build import build_vdm
    from meddiff.vdm.generate import generate_levels
    from meddiff.vdm.sampling import VDMDenoiser

    cfg = config_mod.from_dict(TRAIN_CONFIGS["vdm"](Path("unused")))
    torch.manual_seed(0)
    model = build_vdm(cfg, (1, 8, 8), 0).eval()
    out["vdm.generate"] = generate_levels(model, (1, 8, 8), 2, steps=5, seed=7)
    img = config_mod.from_dict({"objective": "vdm", "task": {"kind": "denoise"}, "model": TINY_MODEL,
                                "vdm": {"score": "unet", "image_condition": True, "gamma": "fixed_linear"}})
    torch.manual_seed(1)
    model = build_vdm(img, (1, 8, 8), 1).eval()
    cond = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1
    for name in SAMPLERS:
        try:
            denoiser = VDMDenoiser.from_gamma(model.score, model.gamma, 1000, size_multiple=model.score.unet.size_multiple)
        except TypeError:  # before the issue-18 layout: the padding multiple was read from denoiser.net
            denoiser = VDMDenoiser.from_gamma(model.score, model.gamma, 1000)
            denoiser.net = model.score.unet
        opts = sampler_options(name, "beta_tilde", 0.0, "auto")
        out[f"vdm.restore.{name}"] = restore(denoiser, cond, sampler=name, steps=4, seed=3, batch_size=2,
                                             progress=False, **opts)


def training(out: dict[str, torch.Tensor]) -> None:
    from meddiff.train.loop import train

    import inspect

    from meddiff.objectives import objective_class

    receives = "family" in inspect.signature(train).parameters  # since redesign step 2; before, the loop looked it up
    for kind, values in TRAIN_CONFIGS.items():
        with tempfile.TemporaryDirectory() as tmp:
            cfg = config_mod.from_dict(values(Path(tmp)))
            data = TinyPairs(size=16 if kind == "baseline" else 8)
            family = {"family": objective_class(cfg)} if receives else {}
            res = train(cfg, data, val_set=TinyPairs(4, data.x0.shape[-1]), progress=False, **family)
            rows = list(csv.DictReader(open(res.log)))
            out[f"train.{kind}.loss"] = torch.tensor([float(r["loss"]) for r in rows], dtype=torch.float64)
            vals = list(csv.DictReader(open(res.val_log)))
            out[f"train.{kind}.val"] = torch.tensor([float(r["val_loss"]) for r in vals], dtype=torch.float64)
            for k, v in load_file(str(res.checkpoint / "model.safetensors")).items():
                out[f"train.{kind}.ema.{k}"] = v
            if kind == "baseline":
                baseline_restore(out, res.checkpoint, Path(tmp))


def baseline_restore(out: dict[str, torch.Tensor], ckpt: Path, tmp: Path) -> None:
    from meddiff.baselines.registry import load_baseline, restore_baseline

    _, model = load_baseline(ckpt)
    cond = torch.rand(3, 1, 20, 20, generator=torch.Generator().manual_seed(5)) * 2 - 1
    out["baseline.restore"] = restore_baseline(model, cond, samples=2, seed=4, batch_size=2)
    out["baseline.files"] = sample_files(tmp, ["--checkpoint", str(ckpt)])


def sample_files(tmp: Path, how: list[str]) -> torch.Tensor:
    """`meddiff sample` on a 24x24 NPY image; the written arrays, stacked."""
    import numpy as np

    from meddiff.cli import main
    from meddiff.io import read_volume

    src = tmp / "in" / "img.npy"
    src.parent.mkdir(parents=True, exist_ok=True)
    np.save(src, np.random.default_rng(0).uniform(0, 1000, (24, 24)).astype(np.float32))
    dest = tmp / "out"
    if main(["sample", "--input", str(src), "--output", str(dest), "--no-progress", *how]) != 0:
        raise RuntimeError("meddiff sample failed")
    files = sorted(p for p in dest.rglob("*") if p.is_file() and not p.name.startswith(".") and p.suffix != ".json")
    return torch.stack([torch.from_numpy(np.asarray(read_volume(f).array, dtype=np.float32)) for f in files])


def ddpm_files(out: dict[str, torch.Tensor]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out["ddpm.files"] = sample_files(Path(tmp), ["--checkpoint", str(SHIPPED), "--steps", "3", "--samples", "2",
                                                     "--sampler", "ddim", "--seed", "2",
                                                     "--precision", "fp32"])  # the CLI default is bf16 where native


def record() -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    out: dict[str, torch.Tensor] = {}
    ddpm_samples(out)
    ddpm_files(out)
    vdm_samples(out)
    training(out)
    return {k: v.contiguous() for k, v in out.items()}


def reduced(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The recording with each kind's EMA weights replaced by per-tensor float64 sums and sums of squares
    (the small reference the test keeps)."""
    small = {k: v for k, v in out.items() if ".ema." not in k}
    for kind in TRAIN_CONFIGS:
        keys = sorted(k for k in out if k.startswith(f"train.{kind}.ema."))
        small[f"train.{kind}.ema_sums"] = torch.tensor(
            [[float(out[k].double().sum()), float(out[k].double().square().sum())] for k in keys], dtype=torch.float64)
    return small


def compare(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> list[str]:
    """Names whose tensors are not bit-equal (or missing on one side)."""
    bad = sorted(set(got) ^ set(ref))
    bad += [k for k in sorted(set(got) & set(ref)) if got[k].dtype != ref[k].dtype or not torch.equal(got[k], ref[k])]
    return bad


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--save", type=Path)
    g.add_argument("--check", type=Path)
    p.add_argument("--reduced", action="store_true", help="EMA weights as per-tensor sums (the test's reference)")
    a = p.parse_args()
    got = reduced(record()) if a.reduced else record()
    if a.save:
        save_file(got, str(a.save))
        print(f"recorded {len(got)} tensors -> {a.save}")
        return 0
    bad = compare(got, load_file(str(a.check)))
    print(f"{len(got)} tensors; {len(bad)} differ" + (": " + ", ".join(bad[:20]) if bad else " (bit-equal)"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
