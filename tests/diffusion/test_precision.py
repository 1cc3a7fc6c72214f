"""Precision "auto": bf16 autocast where the device runs bf16 natively (a capability probe), fp32 elsewhere."""

import pytest
import torch

import meddiff.diffusion.denoiser as dn


@pytest.mark.parametrize("native", [False, True])
def test_auto_follows_the_probe_and_explicit_choices_are_kept(native, monkeypatch):
    monkeypatch.setattr(dn, "bf16_native", lambda device: native)
    cpu = torch.device("cpu")
    assert dn.resolve_precision(cpu, "auto") == ("bf16" if native else "fp32")
    assert dn.resolve_precision(cpu, "fp32") == "fp32" and dn.resolve_precision(cpu, "fp16") == "fp16"
    lin = torch.nn.Linear(4, 4)
    with dn.autocast(cpu, "auto"):
        out = lin(torch.randn(2, 4))
    assert out.dtype == (torch.bfloat16 if native else torch.float32)


def test_probe_reads_the_cpu_flags(monkeypatch, tmp_path):
    import builtins

    real_open = builtins.open
    for flags, expected in (("fpu sse avx512f", False), ("fpu avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True)):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(builtins, "open", lambda p, *a, **k: real_open(info if p == "/proc/cpuinfo" else p, *a, **k))
        assert dn.bf16_native(torch.device("cpu")) is expected
    assert dn.bf16_native(torch.device("meta")) is False
