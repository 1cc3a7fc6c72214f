"""Data consistency (samplers.consistency): the SR measurement operator and its projection, inpainting
replacement and RePaint, as options of the three samplers, restore() and `meddiff sample`.

The SR operator is checked against torch's own interpolation, the projection against the defining
properties of an orthogonal projection onto {x : A x = y} (exactness, idempotence, identity on the
set, minimum-norm correction = the full pseudo-inverse / least-squares solution), and the samplers'
outputs against the measurement to float precision.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_ancestral import NP_AB, SCHED, T, ExactGaussianNet

from meddiff import config as config_mod
from meddiff.data.degrade import SuperResolution
from meddiff.diffusion.denoiser import DDPMDenoiser
from meddiff.diffusion.schedule import build_schedule
from meddiff.errors import InputError
from meddiff.samplers.run import restore
from meddiff.io import read_volume, write_volume
from meddiff.nn.unet import build_unet
from meddiff.samplers.ancestral import sample_ancestral
from meddiff.samplers.noise import generators_for
from meddiff.samplers.consistency import (
    KnownPixels, RePaint, SRProjection, check_request, measurement_for, resample_matrix, resample_pinv,
    sr_consistency_error, sr_forward, sr_pinv, sr_project,
)
from meddiff.samplers.ddim import sample_ddim
from meddiff.samplers.dpm_solver import sample_dpm_solver_pp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "commands"))
from test_sample import make_checkpoint, real_lowres  # noqa: E402
from test_sample import run as run_cli  # noqa: E402

SQ8 = 2 * math.sqrt(2)
SAMPLERS = {"ancestral": sample_ancestral, "ddim": sample_ddim, "dpm_solver_pp": sample_dpm_solver_pp}


def rand(*shape, seed=0, dtype=torch.float64):
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1).to(dtype)


def lr_of(size, factor):
    return SuperResolution(factor).low_res_size(size)


# ------------------------------------------------------------------ the operator and its projection

@pytest.mark.parametrize("size,factor", [((64, 64), 4.0), ((45, 37), SQ8), ((33, 17), 4.0), ((9, 11), SQ8), ((31, 64), 4 * math.sqrt(2))])
def test_separable_matrices_are_exactly_torch_antialiased_bicubic(size, factor):
    x = rand(2, 1, *size)
    lr = lr_of(size, factor)
    want = F.interpolate(x, size=lr, mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(sr_forward(x, lr), want, rtol=0, atol=1e-13)
    # = SuperResolution.downsample wherever its clamp is inactive
    sr = SuperResolution(factor).downsample(x.float()).double()
    inside = want.abs() < 1
    torch.testing.assert_close(sr[inside], want[inside], rtol=0, atol=2e-6)
    m = resample_matrix(size[0], lr[0])
    assert m.shape == (lr[0], size[0]) and resample_matrix(size[0], lr[0]) is m  # cached
    torch.testing.assert_close(m.sum(1), torch.ones(lr[0], dtype=torch.float64), rtol=0, atol=1e-13)  # weights sum to 1
    # full row rank: M M^+ = I (what makes A A^+ = I and the projection exact)
    torch.testing.assert_close(m @ resample_pinv(size[0], lr[0]), torch.eye(lr[0], dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("size,factor", [((64, 64), 4.0), ((45, 37), SQ8), ((33, 17), 4.0), ((9, 11), SQ8), ((127, 65), SQ8)])
def test_projection_makes_A_x_equal_y(size, factor):
    lr = lr_of(size, factor)
    y = sr_forward(rand(3, 1, *size, seed=1), lr)  # a measurement of some other image
    x = rand(3, 1, *size, seed=2)
    assert sr_consistency_error(x, y).min() > 0.1
    p64 = sr_project(x, y)
    assert p64.dtype == torch.float64 and sr_consistency_error(p64, y).max() < 1e-13
    p32 = sr_project(x.float(), y.float())
    assert p32.dtype == torch.float32 and sr_consistency_error(p32, y).max() < 1e-6
    torch.testing.assert_close(p32.double(), p64, rtol=0, atol=1e-5)


@pytest.mark.parametrize("size,factor", [((45, 37), SQ8), ((32, 33), 4.0)])
def test_projection_is_idempotent_and_the_identity_on_consistent_images(size, factor):
    lr = lr_of(size, factor)
    y = sr_forward(rand(2, 1, *size, seed=3), lr)
    p = sr_project(rand(2, 1, *size, seed=4), y)
    torch.testing.assert_close(sr_project(p, y), p, rtol=0, atol=1e-14)
    consistent = rand(2, 1, *size, seed=5)
    torch.testing.assert_close(sr_project(consistent, sr_forward(consistent, lr)), consistent, rtol=0, atol=1e-14)
    # the projection onto {A x = y} changes nothing that A does not see: P(x + n) = P(x) + n for A n = 0
    v = rand(2, 1, *size, seed=6)
    n = v - sr_pinv(sr_forward(v, lr), size)
    assert sr_forward(n, lr).abs().max() < 1e-13 and n.abs().max() > 0.1
    x = rand(2, 1, *size, seed=7)
    torch.testing.assert_close(sr_project(x + n, y), sr_project(x, y) + n, rtol=0, atol=1e-13)


@pytest.mark.parametrize("size,factor", [((9, 11), SQ8), ((12, 8), 4.0)])
def test_correction_is_the_minimum_norm_one(size, factor):
    """d = P(x) - x equals pinv(A) (y - A x) for the FULL matrix A (Kronecker of the 1D ones), is
    orthogonal to the null space of A, and every other consistent image is farther from x."""
    lr = lr_of(size, factor)
    a_full = torch.kron(resample_matrix(size[0], lr[0]), resample_matrix(size[1], lr[1]))  # row-major vec
    x, xt = rand(1, 1, *size, seed=8), rand(1, 1, *size, seed=9)
    torch.testing.assert_close(a_full @ xt.flatten(), sr_forward(xt, lr).flatten(), rtol=0, atol=1e-13)
    y = sr_forward(xt, lr)
    d = (sr_project(x, y) - x).flatten()
    r = (y - sr_forward(x, lr)).flatten()
    torch.testing.assert_close(d, torch.linalg.pinv(a_full) @ r, rtol=0, atol=1e-12)
    torch.testing.assert_close(d, torch.linalg.lstsq(a_full, r[:, None], driver="gelsd").solution[:, 0], rtol=0, atol=1e-12)
    null = torch.linalg.svd(a_full).Vh[a_full.shape[0]:]  # orthonormal basis of null(A)
    assert null.shape[0] == x.numel() - y.numel()
    assert (null @ d).abs().max() < 1e-12
    for k in range(3):  # another consistent image: x + d + n with n in null(A)
        n = null.T @ rand(null.shape[0], seed=20 + k)
        other = d + n
        assert (a_full @ other - r).abs().max() < 1e-12
        assert float(other.norm()) ** 2 == pytest.approx(float(d.norm()) ** 2 + float(n.norm()) ** 2, rel=1e-10)  # Pythagoras


def test_projection_acts_on_the_unpadded_top_left_only():
    size, factor = (9, 11), SQ8
    y = sr_forward(rand(2, 1, *size, seed=1), lr_of(size, factor)).float()
    padded = rand(2, 1, 12, 12, seed=2, dtype=torch.float32)
    out = SRProjection(y, size)(padded)
    assert sr_consistency_error(out[..., :9, :11], y).max() < 1e-6
    assert torch.equal(out[..., 9:, :], padded[..., 9:, :]) and torch.equal(out[..., :, 11:], padded[..., :, 11:])


# ------------------------------------------------------------------ samplers

def tiny_denoiser(cond_channels=1, prediction="eps", residual=False, timesteps=50) -> DDPMDenoiser:
    """A small untrained U-Net (output conv randomised so it matters), fixed seed."""
    cfg = config_mod.from_dict({
        "model": {"channels": [8, 16], "attention_levels": [False, True], "norm_groups": 4, "num_res_blocks": 1, "num_heads": 2},
        "diffusion": {"timesteps": timesteps, "prediction": prediction, "residual": residual},
        "sampler": {"steps": 5},
    })
    torch.manual_seed(0)
    net = build_unet(cfg.model, 1 + cond_channels, 1)
    with torch.no_grad():
        for p in net.conv_out.parameters():
            p.normal_(0, 0.3)
    return DDPMDenoiser(net.eval(), build_schedule(cfg.diffusion), prediction, residual)


def sr_problem(size=(16, 16), factor=4.0, n=2):
    """(cond = bicubic upsampling of y, y) for the low-res measurement of a random image."""
    deg = SuperResolution(factor)
    y = deg.downsample(rand(n, 1, *size, seed=3, dtype=torch.float32))
    return deg.upsample(y, size), y


def inpaint_problem(size=(16, 16), n=2):
    x0 = rand(n, 1, *size, seed=4, dtype=torch.float32)
    mask = torch.zeros(n, 1, *size)
    mask[:, :, 3:11, 4:13] = 1
    mask[1, :, 12:, :5] = 1
    return torch.cat([x0 * (1 - mask), mask], 1), x0, mask


OPTIONS = {"ancestral": {}, "ddim": {"eta": 0.5}, "dpm_solver_pp": {"order": 3}}


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("prediction,residual", [("eps", False), ("x0", True)])
def test_sr_samples_and_every_x0_estimate_are_consistent(name, prediction, residual):
    cond, y = sr_problem()
    den = tiny_denoiser(prediction=prediction, residual=residual)
    seen = []
    out = SAMPLERS[name](den, cond, steps=6, generators=generators_for([1, 2]), consistency=SRProjection(y, (16, 16)),
                         callback=lambda i, x, x0: seen.append(x0), **OPTIONS[name])
    assert out.dtype == torch.float32
    assert sr_consistency_error(out, y).max() < 1e-6
    assert len(seen) == 6 and max(float(sr_consistency_error(e, y).max()) for e in seen) < 1e-6
    free = SAMPLERS[name](den, cond, steps=6, generators=generators_for([1, 2]), **OPTIONS[name])
    assert sr_consistency_error(free, y).min() > 1e-2  # without the option the untrained net is far from y


@pytest.mark.parametrize("name", list(SAMPLERS))
@pytest.mark.parametrize("residual", [False, True])
def test_inpainting_replacement_keeps_known_pixels_bit_exact(name, residual):
    cond, x0, mask = inpaint_problem()
    den = tiny_denoiser(cond_channels=2, prediction="x0" if residual else "v", residual=residual)
    out = SAMPLERS[name](den, cond, steps=5, generators=generators_for([3, 4]), consistency=KnownPixels(cond[:, :1], mask),
                         **OPTIONS[name])
    known = mask == 0
    assert torch.equal(out[known], x0[known])
    assert (out[~known] - x0[~known]).abs().mean() > 0.05


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_no_consistency_is_unchanged_and_identity_consistency_changes_nothing(name):
    """None is the old code path; an identity callable goes through every hook (non-residual: bit-equal)."""
    cond, _ = sr_problem()
    den = tiny_denoiser()
    a = SAMPLERS[name](den, cond, steps=4, generators=generators_for([5, 6]), **OPTIONS[name])
    b = SAMPLERS[name](den, cond, steps=4, generators=generators_for([5, 6]), consistency=None, **OPTIONS[name])
    calls = []
    c = SAMPLERS[name](den, cond, steps=4, generators=generators_for([5, 6]),
                       consistency=lambda x: calls.append(1) or x, **OPTIONS[name])
    assert torch.equal(a, b) and torch.equal(a, c)
    assert len(calls) == 4 + 1  # every x0 estimate, then the result


# ------------------------------------------------------------------ RePaint

class Recording(torch.nn.Module):
    """Wraps a net and keeps each input x_t with its timestep."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []

    def forward(self, x, k):
        self.calls.append((int(k[0]), x[:, :1].clone()))
        return self.net(x, k)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("resample", [1, 3])
def test_repaint_known_region_has_the_forward_marginal_at_every_network_call(residual, resample):
    """Each x_t the network sees (after a replacement, or after a jump back with q(x_t | x_{t-1}))
    is, on the known pixels, sqrt(ab_t) z_known + sqrt(1 - ab_t) N(0, 1) in the diffused space."""
    n, h, w = 2, 64, 64
    mask = torch.zeros(n, 1, h, w)
    mask[:, :, :, :16] = 1
    known = 0.6 * torch.cos(torch.arange(w) / 5.0).expand(n, 1, h, w) * (1 - mask)
    cond = torch.cat([known, mask], 1)
    net = Recording(ExactGaussianNet("eps", cond))
    den = DDPMDenoiser(net, SCHED, "eps", residual)
    steps = 8
    out = sample_ancestral(den, cond, steps=steps, clip=False, generators=generators_for([7, 8]),
                           consistency=RePaint(known, mask, resample))
    assert len(net.calls) == (steps - 1) * resample + 1
    z = (known - known) if residual else known  # residual: the known image minus y = cond plane
    sel = mask == 0
    for k, x in net.calls:
        ab = float(NP_AB[k])
        e = ((x.double() - math.sqrt(ab) * z) / math.sqrt(1 - ab))[sel]
        assert abs(e.mean().item()) < 4.5 / math.sqrt(e.numel()), k
        assert abs(e.std().item() - 1) < 4.5 * math.sqrt(0.5 / e.numel()), k
    assert net.calls[0][0] == T - 1 and net.calls[-1][0] == 0
    assert torch.equal(out[sel], known[sel])


def test_repaint_is_reproducible_and_resampling_changes_the_holes():
    cond, x0, mask = inpaint_problem()
    den = tiny_denoiser(cond_channels=2, prediction="x0", residual=True)
    runs = {u: [sample_ancestral(den, cond, steps=5, generators=generators_for([9, 10]),
                                 consistency=RePaint(cond[:, :1], mask, u)) for _ in range(2)] for u in (1, 3)}
    known = mask == 0
    for u, (a, b) in runs.items():
        assert torch.equal(a, b)
        assert torch.equal(a[known], x0[known])
    assert (runs[1][0] - runs[3][0])[~known].abs().mean() > 1e-2
    # one image's result does not depend on its batch mate (per-image generators)
    single = sample_ancestral(den, cond[1:], steps=5, generators=generators_for([10]), consistency=RePaint(cond[1:, :1], mask[1:], 3))
    torch.testing.assert_close(single[0], runs[3][0][1], rtol=0, atol=1e-4)  # batched convs round differently


def test_repaint_arguments():
    cond, _, mask = inpaint_problem()
    den = tiny_denoiser(cond_channels=2)
    for name in ("ddim", "dpm_solver_pp"):
        with pytest.raises(ValueError, match=f"RePaint works with the ancestral sampler only, not {name}"):
            SAMPLERS[name](den, cond, steps=2, generators=generators_for([1, 2]), consistency=RePaint(cond[:, :1], mask))
    with pytest.raises(InputError, match="resample 0: expected an integer >= 1"):
        RePaint(cond[:, :1], mask, 0)


# ------------------------------------------------------------------ restore() and the request checks

def test_restore_sr_projection_with_padding_and_batches():
    den = tiny_denoiser()
    size, factor = (9, 11), SQ8
    y = rand(5, 1, *lr_of(size, factor), seed=11, dtype=torch.float32) * 0.8
    cond = SuperResolution(factor).upsample(y, size)
    m = measurement_for("sr", "project", cond, factor=factor, lowres=y)
    a = restore(den, cond, steps=3, samples=2, batch_size=2, progress=False, consistency=m)
    b = restore(den, cond, steps=3, samples=2, batch_size=5, progress=False, consistency=m)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert max(float(sr_consistency_error(s, y).max()) for s in a) < 1e-6
    # --input-kind upsampled: y = A(cond), which cond itself satisfies
    up = measurement_for("sr", "project", cond, factor=factor)
    torch.testing.assert_close(up.lowres.double(), sr_forward(cond, lr_of(size, factor)), rtol=0, atol=1e-6)
    c = restore(den, cond, steps=3, progress=False, consistency=up)
    assert float(sr_consistency_error(c[0], up.lowres).max()) < 1e-6
    assert restore(den, cond, steps=3, progress=False, consistency=measurement_for("sr", "none", cond)).shape == (1, 5, 1, 9, 11)


def test_restore_inpainting_and_repaint_through_restore():
    cond, x0, mask = inpaint_problem(size=(10, 13))
    den = tiny_denoiser(cond_channels=2, prediction="x0", residual=True)
    known = mask == 0
    for mode, sampler in [("project", "ddim"), ("project", "ancestral"), ("repaint", "ancestral")]:
        out = restore(den, cond, sampler=sampler, steps=3, progress=False, consistency=measurement_for("inpaint", mode, cond))
        assert torch.equal(out[0][known], x0[known]), (mode, sampler)
    with pytest.raises(InputError, match="consistency repaint needs sampler ancestral, not ddim"):
        restore(den, cond, sampler="ddim", steps=3, progress=False, consistency=measurement_for("inpaint", "repaint", cond, resample=2))


@pytest.mark.parametrize("task,mode,resample,message", [
    ("denoise", "project", 1, "consistency 'project': denoising has no measurement operator"),
    ("denoise", "repaint", 1, "consistency 'repaint': denoising has no measurement operator"),
    ("sr", "repaint", 1, "consistency 'repaint' is for inpainting; this task is 'sr'"),
    ("sr", "exact", 1, "consistency 'exact': expected one of ['none', 'project', 'repaint']"),
    ("inpaint", "project", 2, "resample 2 applies to consistency 'repaint' only, not 'project'"),
    ("inpaint", "repaint", 0, "resample 0: expected an integer >= 1"),
])
def test_bad_requests_are_input_errors(task, mode, resample, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_request(task, mode, resample)
    check_request("denoise", "none")  # fine: nothing to be consistent with


def test_sr_measurement_of_the_wrong_size_is_refused():
    cond = torch.zeros(2, 1, 16, 16)
    with pytest.raises(InputError, match=r"low-resolution size \(5, 4\): expected \(4, 4\) for a \(16, 16\) image at factor 4.0"):
        measurement_for("sr", "project", cond, factor=4.0, lowres=torch.zeros(2, 1, 5, 4))


# ------------------------------------------------------------------ meddiff sample

def test_cli_sr_lowres_output_downsamples_to_the_input(tmp_path):
    ck = make_checkpoint(tmp_path / "ck")  # random weights: without consistency far from the input
    vol = real_lowres()
    inp = tmp_path / "v.nii.gz"
    write_volume(vol, inp)
    errs = {}
    for mode in ("none", "project"):
        assert run_cli("--checkpoint", ck, "--input", inp, "--output", tmp_path / mode, "--consistency", mode) == 0
        out = read_volume(tmp_path / mode / "v_restored.nii.gz")
        assert out.shape == (3, 64, 64)
        lo, hi = float(vol.array.min()), float(vol.array.max())  # the CLI's min/max normalisation
        norm = lambda a: torch.from_numpy((a.astype(np.float64) - lo) / (hi - lo) * 2 - 1)[:, None]  # noqa: E731
        errs[mode] = float(sr_consistency_error(norm(out.array), norm(vol.array)).max())
    assert errs["project"] < 1e-5 and errs["none"] > 1e-2, errs


@pytest.mark.parametrize("task,extra,message", [
    ("denoise", ["--consistency", "project"], "consistency 'project': denoising has no measurement operator"),
    ("sr", ["--consistency", "repaint"], "consistency 'repaint' is for inpainting; this task is 'sr'"),
    ("sr", ["--resample", "3"], "resample 3 applies to consistency 'repaint' only, not 'none'"),
    ("inpaint", ["--consistency", "repaint", "--sampler", "ddim"], "--consistency repaint needs --sampler ancestral, not ddim"),
    ("inpaint", ["--consistency", "repaint", "--resample", "0"], "resample 0: expected an integer >= 1"),
])
def test_cli_consistency_errors(tmp_path, capsys, task, extra, message):
    ck = make_checkpoint(tmp_path / "ck", task=task)
    vol = real_lowres()
    inp, mask = tmp_path / "v.nii.gz", tmp_path / "m.nii.gz"
    write_volume(vol, inp)
    write_volume(vol.with_array(np.ones(vol.shape, np.float32)), mask)
    assert run_cli("--checkpoint", ck, "--input", inp, "--output", tmp_path / "o", "--mask", mask, *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_inpaint_repaint_keeps_known_pixels(tmp_path):
    ck = make_checkpoint(tmp_path / "ck", task="inpaint")
    vol = real_lowres()
    inp, mpath = tmp_path / "i.nii.gz", tmp_path / "m.nii.gz"
    write_volume(vol, inp)
    mask = np.zeros(vol.shape, np.float32)
    mask[:, 4:10, 5:12] = 1
    write_volume(vol.with_array(mask), mpath)
    assert run_cli("--checkpoint", ck, "--input", inp, "--output", tmp_path / "o", "--mask", mpath,
                   "--consistency", "repaint", "--resample", "2") == 0
    out = read_volume(tmp_path / "o" / "i_restored.nii.gz").array
    known = mask == 0
    np.testing.assert_allclose(out[known], vol.array[known], rtol=0, atol=1e-4 * np.ptp(vol.array))
    assert np.abs(out[~known] - vol.array[~known]).mean() > 0.01 * np.ptp(vol.array)


def test_projection_respects_the_clamped_measurement_on_a_real_brain():
    """y = clamp(A x0): the truth is consistent (error 0) and left unchanged by the projection,
    although many low-res edge pixels sit at the clamp; a projected guess satisfies clamp(A x) = y."""
    from meddiff.data.samples import samples_dir
    from meddiff.samplers.consistency import sr_forward, sr_project, sr_consistency_error

    vol = read_volume(samples_dir("mni152") / "icbm152_2009a" / "axial.nii.gz")
    sl = torch.from_numpy(np.asarray(vol.array[len(vol.array) // 2], dtype=np.float64))
    x0 = (2 * (sl - sl.min()) / (sl.max() - sl.min()) - 1)[None, None, :128, :128].contiguous()
    y = SuperResolution(4.0).downsample(x0)
    assert (sr_forward(x0, tuple(y.shape[-2:])) < -1).float().mean() > 0.02  # the clamp is active
    assert float(sr_consistency_error(x0, y)) < 1e-12
    assert torch.allclose(sr_project(x0, y), x0, atol=1e-12, rtol=0)
    guess = F.interpolate(y, size=(128, 128), mode="bilinear", align_corners=False)
    assert float(sr_consistency_error(guess, y)) > 1e-3
    assert float(sr_consistency_error(sr_project(guess, y), y)) < 1e-12
