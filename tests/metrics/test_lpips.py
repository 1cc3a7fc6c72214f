"""LPIPS: metric properties on real MNI152 slices, parity with the stlpips-pytorch reference code,
standard-AlexNet loading from a local state dict, and clear errors for missing weights/bad input."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from meddiff.errors import InputError
from meddiff.metrics import lpips as L
from meddiff.metrics.weights import MissingWeightsError

torch.set_num_threads(1)

HAVE_ST = importlib.util.find_spec("stlpips_pytorch") is not None
needs_st = pytest.mark.skipif(not HAVE_ST, reason="stlpips-pytorch not installed (pip install stlpips-pytorch)")


@pytest.fixture(scope="module")
def slices() -> torch.Tensor:
    """Three axial MNI152 slices (shipped sample), [3, 1, 189, 153], scaled to [-1, 1]."""
    from meddiff.data.samples import samples_dir
    from meddiff.io import read_volume

    v = read_volume(samples_dir("mni152") / "icbm152_2009a" / "axial.nii.gz").array.astype(np.float64)
    x = v[[25, 33, 41]] / v.max() * 2 - 1
    return torch.from_numpy(x).float()[:, None]


@needs_st
def test_identical_images_give_zero_and_distance_is_symmetric(slices):
    a, b = slices, slices.roll(1, dims=0)  # pairs of different slices
    assert torch.equal(L.lpips_distance(a, a), torch.zeros(3))
    d_ab, d_ba = L.lpips_distance(a, b), L.lpips_distance(b, a)
    assert (d_ab > 0.05).all()
    torch.testing.assert_close(d_ab, d_ba, rtol=1e-5, atol=1e-7)
    crop = slices[:2, :, 60:124, 40:104]
    assert torch.equal(L.lpips_distance(crop, crop, net="vgg-st"), torch.zeros(2))


@needs_st
def test_distance_increases_monotonically_with_noise_level(slices):
    a = slices[:1]
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    sigmas = [0.01, 0.03, 0.1, 0.3]
    d = torch.cat([L.lpips_distance(a, (a + s * noise).clamp(-1, 1)) for s in sigmas])
    assert (d[1:] > d[:-1]).all(), d


@needs_st
def test_shift_tolerant_lpips_prefers_one_pixel_shift_over_noise_of_equal_mse(slices):
    a = slices[1:2]
    shifted = a.roll(1, dims=-1)  # the brain sits on background (-1), so wrap-around only moves background
    mse = (shifted - a).square().mean()
    n = torch.randn(a.shape, generator=torch.Generator().manual_seed(1))
    lo, hi = 0.0, 4.0  # bisect the noise amplitude so that the clamped noisy image has the same MSE
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ((a + mid * n).clamp(-1, 1) - a).square().mean() < mse else (lo, mid)
    noisy = (a + lo * n).clamp(-1, 1)
    torch.testing.assert_close((noisy - a).square().mean(), mse, rtol=1e-4, atol=0)
    for net in ("alex-st", "vgg-st"):
        d_shift, d_noise = L.lpips_distance(a, shifted, net=net), L.lpips_distance(a, noisy, net=net)
        assert d_shift.item() < 0.5 * d_noise.item(), (net, d_shift, d_noise)


@needs_st
def test_grayscale_is_replicated_to_rgb_and_2d_input_is_one_image(slices):
    a, b = slices[:2, :, :64, :64], slices[:2, :, 64:128, 64:128]
    d1 = L.lpips_distance(a, b)
    d3 = L.lpips_distance(a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1))
    assert torch.equal(d1, d3)
    d2d = L.lpips_distance(a[0, 0].numpy(), b[0, 0].numpy())
    assert d2d.shape == (1,) and d2d[0] == pytest.approx(d1[0].item(), rel=1e-6)


@needs_st
def test_name_reports_the_variant_and_weights():
    name = L.lpips_name()
    assert "ST-LPIPS AlexNet" in name and "stlpips-pytorch" in name
    assert "VGG-16" in L.lpips_name("vgg-st")


@needs_st
def test_shift_tolerant_scaling_constants_in_the_file_equal_imagenet_statistics():
    m = L.load_lpips("alex-st")
    torch.testing.assert_close(m.scaling_layer.shift, L.ScalingLayer().shift, rtol=0, atol=1e-6)
    torch.testing.assert_close(m.scaling_layer.scale, L.ScalingLayer().scale, rtol=0, atol=1e-6)


def _import_stlpips_reference(monkeypatch):
    """Import stlpips-pytorch's own code; it imports torchvision, IPython and torchsummary at module
    level but uses none of them for the shift-tolerant nets, so absent ones are stubbed."""
    stubs = {"torchvision": {"models": types.SimpleNamespace()}, "IPython": {"embed": lambda *a, **k: None},
             "torchsummary": {"summary": lambda *a, **k: None}}
    for mod, attrs in stubs.items():
        if importlib.util.find_spec(mod) is None:
            m = types.ModuleType(mod)
            for k, v in attrs.items():
                setattr(m, k, v)
            monkeypatch.setitem(sys.modules, mod, m)
    try:
        from stlpips_pytorch import invariant_networks, stlpips
    except Exception as e:  # pragma: no cover - depends on the installed package
        pytest.skip(f"cannot import stlpips-pytorch's reference code: {e}")
    return stlpips, invariant_networks


@needs_st
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_matches_stlpips_reference_implementation(monkeypatch, net):
    stlpips, _ = _import_stlpips_reference(monkeypatch)
    ref = stlpips.LPIPS(net=net, variant="shift_tolerant", verbose=False)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 1, 48, 40, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        r = ref(x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)).flatten()
    torch.testing.assert_close(L.lpips_distance(x, y, net=f"{net}-st"), r, rtol=1e-5, atol=1e-7)


def _torchvision_alexnet_state(seed: int = 0) -> dict:
    """A random state dict with torchvision's alexnet keys and shapes (classifier included)."""
    g = torch.Generator().manual_seed(seed)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    sd = {}
    for i, s in shapes.items():
        sd[f"features.{i}.weight"] = torch.randn(s, generator=g) * (2 / np.prod(s[1:])) ** 0.5
        sd[f"features.{i}.bias"] = torch.zeros(s[0])
    sd["classifier.1.weight"], sd["classifier.1.bias"] = torch.zeros(4096, 9216), torch.zeros(4096)
    return sd


def _heads(path, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
                for k, c in enumerate((64, 192, 384, 256, 256))}, path)


def test_standard_alexnet_loads_a_torchvision_state_dict_and_matches_reference_layers(tmp_path, monkeypatch):
    bb, hd = tmp_path / "alexnet.pth", tmp_path / "alex_heads.pth"
    sd = _torchvision_alexnet_state()
    torch.save(sd, bb)
    _heads(hd)
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    d = L.lpips_distance(x, x.flip(-1), net="alex", backbone=bb, heads=hd)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.equal(L.lpips_distance(x, x, net="alex", backbone=bb, heads=hd), torch.zeros(2))
    assert "LPIPS v0.1 AlexNet" in L.lpips_name("alex", backbone=bb, heads=hd)
    model = L.load_lpips("alex", backbone=bb, heads=hd)
    torch.testing.assert_close(getattr(model.net.slice1, "0").weight, sd["features.0.weight"])
    torch.testing.assert_close(getattr(model.net.slice5, "10").weight, sd["features.10.weight"])
    if HAVE_ST:  # stlpips-pytorch's torchvision-free plain AlexNet, same weights -> same five feature maps
        _, inv = _import_stlpips_reference(monkeypatch)
        ref = inv.alexnet(variant="vanilla")
        ref.load_state_dict({k.removeprefix("net."): v for k, v in model.state_dict().items() if k.startswith("net.")})
        with torch.no_grad():
            for a, b in zip(model.net(x.expand(-1, 3, -1, -1)), ref(x.expand(-1, 3, -1, -1))):
                torch.testing.assert_close(a, b)


def test_standard_alexnet_without_backbone_says_what_to_provide(tmp_path):
    with pytest.raises(MissingWeightsError, match="backbone="):
        L.lpips_distance(torch.zeros(32, 32), torch.zeros(32, 32), net="alex")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    _heads(tmp_path / "h.pth")
    with pytest.raises(InputError, match="features"):
        L.load_lpips("alex", backbone=tmp_path / "wrong.pth", heads=tmp_path / "h.pth")


def test_missing_package_names_the_package_to_install(monkeypatch):
    monkeypatch.setattr(L, "_CACHE", {})
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(MissingWeightsError, match="pip install stlpips-pytorch"):
        L.lpips_distance(torch.zeros(32, 32), torch.zeros(32, 32))


@needs_st
def test_bad_inputs_are_rejected_with_the_value():
    z = torch.zeros(1, 1, 32, 32)
    with pytest.raises(InputError, match="NaN"):
        L.lpips_distance(z, torch.full_like(z, float("nan")))
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        L.lpips_distance(z, z + 1000.0)  # e.g. HU values
    with pytest.raises(InputError, match="differ in shape"):
        L.lpips_distance(z, torch.zeros(1, 1, 32, 33))
    with pytest.raises(InputError, match="at least 32"):
        L.lpips_distance(torch.zeros(16, 16), torch.zeros(16, 16))
    with pytest.raises(InputError, match="unknown LPIPS network"):
        L.lpips_distance(z, z, net="squeeze")
