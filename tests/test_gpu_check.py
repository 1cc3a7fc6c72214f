"""benchmarks/gpu_check.py runs unchanged on a CPU at tiny sizes: every section gives its rows, the
CUDA rows say why they were skipped, and diffusers' UNet2DModel is built at the shipped configuration."""

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def test_gpu_check_tiny_on_cpu():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.main(["--tiny", "--device", "cpu"])
    by = {(s, w.split(",")[0]): (r, n) for s, w, r, n in rows}
    assert {s for s, *_ in rows} == {"cuda", "unet", "memory", "train", "student"}
    if not torch.cuda.is_available():
        assert all(r == "skipped" and n == "no CUDA" for (s, _), (r, n) in by.items() if s == "cuda")
    fp32 = by[("unet", "meddiff fp32")]
    assert fp32[0].endswith(" ms") and float(fp32[0].split()[0]) > 0
    assert by[("unet", "meddiff fp32 compile")][0] == "skipped"
    try:
        import diffusers  # noqa: F401
    except ImportError:
        pytest.skip("diffusers not installed: its row is skipped")
    assert by[("unet", "diffusers fp32")][1] == fp32[1]  # the same parameter count: the same configuration
    assert float(by[("train", "shipped U-Net fp32")][0].split()[0]) > 0
    assert float(by[("student", "one-call student")][0].split()[0]) > 0
    assert all(r.endswith(("MB", "GB", "KB", "kB", "B")) for (s, _), (r, _) in by.items() if s == "memory")
