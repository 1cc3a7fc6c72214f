"""meddiff sample --sr-factor: the output grid follows the given factor, with the identity model's known answer."""

import numpy as np
import torch

from meddiff.io import read_volume, write_volume

from .test_sample import id_ckpt, make_checkpoint, real_lowres, run  # noqa: F401  (fixture)


def test_sr_factor_2_gives_a_2x_grid_equal_to_bicubic_x2(tmp_path, id_ckpt):  # noqa: F811
    inp_path = tmp_path / "lowres.nii.gz"
    write_volume(real_lowres(), inp_path)
    inp = read_volume(inp_path)
    assert run("--checkpoint", id_ckpt, "--input", inp_path, "--output", tmp_path / "out", "--sr-factor", "2") == 0
    out = read_volume(tmp_path / "out" / "lowres_restored.nii.gz")
    assert out.shape == (inp.shape[0], 2 * inp.shape[1], 2 * inp.shape[2])
    np.testing.assert_allclose(out.spacing, (inp.spacing[0], inp.spacing[1] / 2, inp.spacing[2] / 2), rtol=1e-5)
    lo, hi = float(inp.array.min()), float(inp.array.max())
    y = torch.from_numpy((inp.array.astype(np.float64) - lo) / (hi - lo) * 2 - 1).float()[:, None]
    up = torch.nn.functional.interpolate(y, scale_factor=2, mode="bicubic").clamp(-1, 1)[:, 0].double().numpy()
    np.testing.assert_allclose(out.array, (up + 1) / 2 * (hi - lo) + lo, rtol=0, atol=1e-4 * (hi - lo))


def test_sr_factor_is_refused_for_other_tasks_and_below_one(tmp_path, id_ckpt, capsys):  # noqa: F811
    inp_path = tmp_path / "s.nii.gz"
    write_volume(real_lowres(), inp_path)
    assert run("--checkpoint", id_ckpt, "--input", inp_path, "--output", tmp_path / "o", "--sr-factor", "0.5") == 2
    assert "--sr-factor 0.5: expected a factor > 1" in capsys.readouterr().err
    ck = make_checkpoint(tmp_path / "ck", task="denoise")
    assert run("--checkpoint", ck, "--input", inp_path, "--output", tmp_path / "o2", "--sr-factor", "2") == 2
    assert "--sr-factor applies to super-resolution checkpoints" in capsys.readouterr().err
