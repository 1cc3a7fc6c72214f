"""Precision "auto": bf16 where the device runs bf16 natively (a capability probe), fp32 elsewhere; bf16
sampling on a copy of the network cast once (cast_network), training under autocast."""

import pytest
import torch

import meddiff.diffusion.denoiser as dn


@pytest.mark.parametrize("native", [False, True])
def test_auto_follows_the_probe_and_explicit_choices_are_kept(native, monkeypatch):
    monkeypatch.setattr(dn, "bf16_native", lambda device: native)
    cpu = torch.device("cpu")
    assert dn.resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert dn.resolve_precision("fp32", cpu) == "fp32" and dn.resolve_precision("fp16", cpu) == "fp16"
    assert dn.resolve_precision("auto", cpu, training=True) == "fp32"  # CPU training stays fp32 (bit-exact)
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


def small_denoiser(precision: str) -> dn.DDPMDenoiser:
    from meddiff.diffusion.schedule import DiscreteSchedule, linear_betas
    from meddiff.nn.unet import UNet

    torch.manual_seed(0)
    net = UNet(2, 1, channels=(8, 16), num_res_blocks=1, attention_levels=(False, True), norm_groups=4, num_heads=2)
    with torch.no_grad():
        for p in net.parameters():  # every layer contributes (zero-initialised ones too)
            p.copy_(torch.randn(p.shape) * 0.1)
    return dn.DDPMDenoiser(net, DiscreteSchedule(linear_betas(100, 1e-4, 0.02)), "x0", precision=precision)


def test_cast_network_is_made_once_and_renewed_when_the_weights_change():
    net = small_denoiser("fp32").net
    low = dn.cast_network(net, torch.bfloat16)
    assert dn.cast_network(net, torch.bfloat16) is low
    assert all(p.dtype == torch.bfloat16 for p in low.parameters())
    assert all(p.dtype == torch.float32 for p in net.parameters())  # the original is untouched
    with torch.no_grad():
        net.conv_in.bias.add_(1.0)  # an in-place update (as an optimiser step) bumps the version counter
    renewed = dn.cast_network(net, torch.bfloat16)
    assert renewed is not low
    assert torch.equal(renewed.conv_in.bias, net.conv_in.bias.bfloat16())
    net.train(not net.training)
    flipped = dn.cast_network(net, torch.bfloat16)
    assert flipped is not renewed and flipped.training == net.training


def test_bf16_sampling_call_is_close_to_fp32_and_training_keeps_autocast():
    x, cond, k = torch.randn(2, 1, 16, 16), torch.randn(2, 1, 16, 16), torch.tensor([3, 90])
    ref = small_denoiser("fp32")
    fast = small_denoiser("bf16")
    with torch.no_grad():
        want = ref.net_output(x, k, cond)
        got = fast.net_output(x, k, cond)
        with dn.autocast(torch.device("cpu"), "bf16"):
            auto = fast.net(torch.cat([x, cond], 1), k).float()
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert dn._CAST.get(fast.net) is not None  # the call ran on the cast copy
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(got, want) < 2e-2 and rel(auto, want) < 2e-2  # bf16 keeps ~8 bits of mantissa
    assert rel(got, auto) < 2e-2
    out = fast.net_output(x, k, cond)  # with autograd (training): autocast on the fp32 weights
    out.sum().backward()
    assert fast.net.conv_in.weight.grad is not None


def test_compiled_network_is_not_cast():
    net = small_denoiser("fp32").net
    compiled = dn.compile_network(net, backend="eager")
    assert dn.cast_network(compiled, torch.bfloat16) is compiled  # its callers keep autocast
