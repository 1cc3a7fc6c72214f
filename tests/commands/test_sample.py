"""`meddiff sample` end to end on real data: NIfTI and DICOM in, same format out with the
super-resolved geometry, repeated samples, and the errors a user can run into."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from safetensors.torch import save_file

from meddiff import config as config_mod
from meddiff.cli import main
from meddiff.io.phi import pseudonym
from meddiff.restore import output_path, scaled_geometry
from meddiff.data.samples import samples_dir
from meddiff.io import ImageItem, Volume, read_volume, write_volume
from meddiff.io.dicom_write import MARKER_SYNTHETIC
from meddiff.nn.unet import build_unet
from meddiff.checkpointing import export_model, save_checkpoint


def make_checkpoint(root: Path, task: str = "sr", identity: bool = False, **diffusion) -> Path:
    """A tiny checkpoint folder with fixed-seed random weights (output conv randomised too).

    identity=True: residual x0-prediction with the zero-initialised output conv kept, so the
    network predicts a zero residual and every sample is exactly the condition (bicubic
    upsampling for SR): the whole pipeline then has a known answer.
    """
    if identity:
        diffusion = {"prediction": "x0", "residual": True, **diffusion}
    cfg = config_mod.from_dict({
        "task": {"kind": task, "sr_factor": 4.0},
        "model": {"channels": [8, 16], "attention_levels": [False, True], "norm_groups": 4, "num_res_blocks": 1, "num_heads": 2},
        "diffusion": {"timesteps": 20, **diffusion},
        "sampler": {"steps": 3},
    })
    in_ch = {"sr": 2, "denoise": 2, "inpaint": 3}[task]
    torch.manual_seed(0)
    net = build_unet(cfg.model, in_ch, 1)
    with torch.no_grad():
        for p in net.conv_out.parameters():
            p.normal_(0, 0.3) if not identity else p.zero_()
    opt = torch.optim.Adam(net.parameters())
    return save_checkpoint(root, 1, cfg, net, net, opt, in_channels=in_ch)


@pytest.fixture(scope="module")
def sr_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck_sr"))


@pytest.fixture(scope="module")
def id_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck_id"), identity=True)


def bicubic_x4(inp: Volume) -> np.ndarray:
    """What the identity model must return: per-volume min/max to [-1, 1], bicubic x4 of each
    slice (clamped), back to the input's units."""
    lo, hi = float(inp.array.min()), float(inp.array.max())
    y = torch.from_numpy((inp.array.astype(np.float64) - lo) / (hi - lo) * 2 - 1).float()[:, None]
    up = torch.nn.functional.interpolate(y, size=(4 * inp.shape[1], 4 * inp.shape[2]), mode="bicubic").clamp(-1, 1)
    return ((up[:, 0].double().numpy() + 1) / 2 * (hi - lo) + lo)


def real_lowres() -> Volume:
    """3 axial slices x 16 x 16 of the MNI152 template (2 mm x 4 mm x 4 mm after 4x4 block means),
    with the affine of that crop."""
    vol = read_volume(samples_dir("mni152") / "icbm152_2009a" / "axial.nii.gz")
    z0, y0, x0 = 30, 60, 40
    crop = vol.array[z0 : z0 + 3, y0 : y0 + 64, x0 : x0 + 64].astype(np.float64)
    low = crop.reshape(3, 16, 4, 16, 4).mean(axis=(2, 4)).astype(np.float32)
    # voxel (z, j, i) of `low` is centred on old voxel (z0 + z, y0 + 4j + 1.5, x0 + 4i + 1.5)
    m = np.diag([1.0, 4.0, 4.0, 1.0])
    m[:3, 3] = [z0, y0 + 1.5, x0 + 1.5]
    affine = np.asarray(vol.affine) @ m
    spacing = (vol.spacing[0], 4 * vol.spacing[1], 4 * vol.spacing[2])
    assert low.std() > 10
    return Volume(low, spacing, affine, "mni", Path("mni"), {"units": "arbitrary", "modality": "MR"})


def run(*args) -> int:
    return main(["sample", *map(str, args), "--steps", "3", "--no-progress", "--device", "cpu"])


def centres(affine, idx):
    return (np.asarray(affine) @ np.c_[idx, np.ones(len(idx))].T).T[:, :3]


def check_sr_geometry(out: Volume, inp: Volume):
    assert out.shape == (inp.shape[0], 4 * inp.shape[1], 4 * inp.shape[2])
    np.testing.assert_allclose(out.spacing, (inp.spacing[0], inp.spacing[1] / 4, inp.spacing[2] / 4), rtol=1e-5)
    # new voxel j' is centred on old continuous index (j' + 0.5) / 4 - 0.5 (same field of view)
    new = np.array([[0, 0, 0], [2, 63, 0], [1, 5, 62], [2, 63, 63]], float)
    old = np.c_[new[:, 0], (new[:, 1:] + 0.5) / 4 - 0.5]
    np.testing.assert_allclose(centres(out.affine, new), centres(inp.affine, old), atol=2e-3)
    # outer voxel edges coincide: index -0.5 and n - 0.5 map to the same points
    edges_new = np.array([[0, -0.5, -0.5], [0, 63.5, 63.5]])
    edges_old = np.array([[0, -0.5, -0.5], [0, 15.5, 15.5]])
    np.testing.assert_allclose(centres(out.affine, edges_new), centres(inp.affine, edges_old), atol=2e-3)


def check_values(out: Volume, inp: Volume, tol: float = 1e-3):
    a = out.array
    assert np.isfinite(a).all() and a.std() > 0
    span = inp.array.max() - inp.array.min()
    # samples are clipped to [-1, 1] before the inverse normalisation: within the input's window
    assert a.min() >= inp.array.min() - tol * span and a.max() <= inp.array.max() + tol * span


def test_nifti_lowres_gives_4x_grid_same_field_of_view(tmp_path, id_ckpt):
    inp_path = tmp_path / "in" / "lowres.nii.gz"
    inp_path.parent.mkdir()
    write_volume(real_lowres(), inp_path)
    inp = read_volume(inp_path)
    assert run("--checkpoint", id_ckpt, "--input", inp_path, "--output", tmp_path / "out") == 0
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("[!.]*") if p.is_file())
    # one input file: no patient folder (no patient data in paths); image + provenance sidecar + domain report
    assert files == ["domain_check.json", "lowres_restored.json", "lowres_restored.nii.gz"]
    out_path = tmp_path / "out" / "lowres_restored.nii.gz"
    out = read_volume(out_path)
    check_sr_geometry(out, inp)
    check_values(out, inp)
    assert b"meddiff synthetic" in bytes(nib.load(str(out_path)).header["descrip"])
    np.testing.assert_allclose(out.array, bicubic_x4(inp), rtol=0, atol=1e-4 * np.ptp(inp.array))


def test_dicom_series_in_dicom_series_out(tmp_path, id_ckpt, sr_ckpt):
    series = tmp_path / "in" / "series"
    write_volume(real_lowres(), series, synthetic=False)
    inp = read_volume(series)
    in_uids = {pydicom.dcmread(f).SeriesInstanceUID for f in series.iterdir()}
    out_root = tmp_path / "out"
    assert run("--checkpoint", id_ckpt / "model.safetensors", "--input", series, "--output", out_root) == 0
    out_dir = out_root / f"{pseudonym('series')}_restored"
    files = sorted(out_dir.iterdir())
    assert [f.name for f in files] == ["IM_0001.dcm", "IM_0002.dcm", "IM_0003.dcm"]
    out = read_volume(out_dir)
    check_sr_geometry(out, inp)
    check_values(out, inp, tol=1e-3)
    np.testing.assert_allclose(out.array, bicubic_x4(inp), rtol=0, atol=1e-3 * np.ptp(inp.array))  # DICOM: 16-bit
    dss = [pydicom.dcmread(f) for f in files]
    assert len({d.SOPInstanceUID for d in dss}) == 3
    assert {d.SeriesInstanceUID for d in dss}.isdisjoint(in_uids) and len({d.SeriesInstanceUID for d in dss}) == 1
    for d in dss:
        assert list(d.ImageType)[:1] == ["DERIVED"] and d.DerivationDescription == MARKER_SYNTHETIC
        assert d.Modality == "MR" and (d.Rows, d.Columns) == (64, 64)
    # re-running (another model) replaces the series cleanly: same files, new UIDs and pixels, nothing left over
    assert run("--checkpoint", sr_ckpt, "--input", series, "--output", out_root, "--overwrite") == 0
    again = sorted(out_dir.iterdir())
    assert [f.name for f in again] == [f.name for f in files]
    assert pydicom.dcmread(again[0]).SeriesInstanceUID != dss[0].SeriesInstanceUID
    assert sorted(p.name for p in out_root.iterdir()) == sorted([".meddiff-output.json", "domain_check.json", f"{pseudonym('series')}_restored",
                                                                 f"{pseudonym('series')}_restored.json"])
    assert np.abs(read_volume(out_dir).array - out.array).mean() > 1e-2 * np.ptp(inp.array)


def test_upsampled_input_keeps_shape_and_exact_geometry(tmp_path, id_ckpt):
    inp_path = tmp_path / "up.nii.gz"
    write_volume(real_lowres(), inp_path)
    inp = read_volume(inp_path)
    assert run("--checkpoint", id_ckpt, "--input", inp_path, "--output", tmp_path / "out", "--input-kind", "upsampled") == 0
    out = read_volume(tmp_path / "out" / "up_restored.nii.gz")
    assert out.shape == inp.shape
    np.testing.assert_array_equal(out.affine, inp.affine)
    check_values(out, inp)
    np.testing.assert_allclose(out.array, inp.array, rtol=0, atol=1e-4 * np.ptp(inp.array))  # identity model


def test_several_samples_write_mean_std_and_each_sample(tmp_path, sr_ckpt):
    inp_path = tmp_path / "a.nii.gz"
    write_volume(real_lowres(), inp_path)
    out_root = tmp_path / "out"
    for again in ([], ["--overwrite"]):  # the second run (--overwrite) replaces the same files
        assert run("--checkpoint", sr_ckpt, "--input", inp_path, "--output", out_root, "--samples", "3", "--seed", "5", *again) == 0
    names = sorted(p.name for p in out_root.glob("a_*") if p.suffix != ".json")
    assert names == ["a_mean.nii.gz", "a_sample0.nii.gz", "a_sample1.nii.gz", "a_sample2.nii.gz", "a_std.nii.gz"]
    s = np.stack([read_volume(out_root / f"a_sample{i}.nii.gz").array for i in range(3)]).astype(np.float64)
    mean = read_volume(out_root / "a_mean.nii.gz").array
    std = read_volume(out_root / "a_std.nii.gz").array
    span = np.ptp(s)
    np.testing.assert_allclose(mean, s.mean(0), atol=1e-4 * span)
    np.testing.assert_allclose(std, s.std(0, ddof=1), atol=1e-4 * span)  # in the input's units
    assert std.mean() > 0.01 * span
    assert not np.allclose(s[0], s[1])


def test_config_variance_reaches_the_sampler(tmp_path):
    inp_path = tmp_path / "v.nii.gz"
    write_volume(real_lowres(), inp_path)
    outs = []
    for variance in ("beta", "beta_tilde"):
        ck = make_checkpoint(tmp_path / f"ck_{variance}", variance=variance)
        assert run("--checkpoint", ck, "--input", inp_path, "--output", tmp_path / variance) == 0
        outs.append(read_volume(tmp_path / variance / "v_restored.nii.gz").array)
    assert np.abs(outs[0] - outs[1]).mean() > 1e-3 * np.ptp(outs[0])


def test_denoise_checkpoint_keeps_the_grid_and_exported_model_works(tmp_path):
    ck = make_checkpoint(tmp_path / "ck", task="denoise")
    exported = export_model(ck, tmp_path / "denoise.safetensors")
    inp_path = tmp_path / "d.nii.gz"
    write_volume(real_lowres(), inp_path)
    assert run("--checkpoint", exported, "--input", inp_path, "--output", tmp_path / "out") == 0
    out = read_volume(tmp_path / "out" / "d_restored.nii.gz")
    inp = read_volume(inp_path)
    assert out.shape == inp.shape
    np.testing.assert_array_equal(out.affine, inp.affine)


def test_inpaint_without_mask_is_refused(tmp_path, capsys):
    ck = make_checkpoint(tmp_path / "ck", task="inpaint")
    inp_path = tmp_path / "i.nii.gz"
    write_volume(real_lowres(), inp_path)
    assert run("--checkpoint", ck, "--input", inp_path, "--output", tmp_path / "out") == 2
    assert "this checkpoint inpaints: give --mask FILE" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_not_a_meddiff_checkpoint(tmp_path, capsys):
    inp_path = tmp_path / "x.nii.gz"
    write_volume(real_lowres(), inp_path)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "pt"})
    assert run("--checkpoint", other, "--input", inp_path, "--output", tmp_path / "out") == 2
    assert f"{other} is not a meddiff checkpoint" in capsys.readouterr().err
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    assert run("--checkpoint", junk, "--input", inp_path, "--output", tmp_path / "out") == 2
    assert f"{junk} is corrupt or not a safetensors file" in capsys.readouterr().err


def test_nan_input_is_refused_naming_the_file(tmp_path, sr_ckpt, capsys):
    arr = real_lowres().array.copy()
    arr[1, 2, 3] = np.nan
    bad = tmp_path / "bad.npy"
    np.save(bad, arr)
    assert run("--checkpoint", sr_ckpt, "--input", bad, "--output", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "NaN" in err


@pytest.mark.parametrize("steps", ["0", "21"])
def test_steps_out_of_range_is_refused(tmp_path, sr_ckpt, capsys, steps):
    inp_path = tmp_path / "s.nii.gz"
    write_volume(real_lowres(), inp_path)
    argv = ["sample", "--checkpoint", str(sr_ckpt), "--input", str(inp_path), "--output", str(tmp_path / "o"),
            "--steps", steps, "--no-progress"]
    assert main(argv) == 2
    assert f"--steps {steps}: expected 1..20" in capsys.readouterr().err


def test_output_path_naming():
    out = Path("/o")

    def item(name, kind, pid="p1"):
        return ImageItem(Path("/in/case") / name, pid, kind, (Path("/in/case") / name,))

    from meddiff.io.phi import pseudonym

    # mirrors the input's path below the --input folder, folder names pseudonymised; the patient id names nothing
    root = Path("/in")
    assert output_path(out, item("scan.nii.gz", "nifti"), "same", "restored", input_root=root) == Path(f"/o/{pseudonym('case')}/scan_restored.nii.gz")
    assert output_path(out, item("scan.nii", "nifti"), "same", "mean") == Path("/o/scan_mean.nii.gz")
    assert output_path(out, item("ser", "dicom_series"), "same", "std") == Path(f"/o/{pseudonym('ser')}_std")
    assert output_path(out, item("img.DCM", "dicom"), "same", "sample2") == Path("/o/img_sample2.dcm")
    assert output_path(out, item("cxr.png", "raster"), "same", "restored") == Path("/o/cxr_restored.png")
    assert output_path(out, item("arr.npy", "numpy"), "same", "restored") == Path("/o/arr_restored.npy")
    assert output_path(out, item("ct.tif", "tiff"), "same", "restored") == Path("/o/ct_restored.tif")
    assert output_path(out, item("ser", "dicom_series"), "nifti", "restored") == Path(f"/o/{pseudonym('ser')}_restored.nii.gz")
    assert output_path(out, item("scan.nii.gz", "nifti"), "dicom", "restored") == Path("/o/scan_restored.dcm")
    # --keep-patient-tags: the patient id names the folder, as before
    assert output_path(out, item("scan.nii.gz", "nifti"), "same", "restored", patient_folder=True) == Path("/o/p1/scan_restored.nii.gz")


@pytest.mark.parametrize("pid", ["../../etc", "a/b", "..", "", "x\\y"])
def test_output_path_stays_inside_the_output_folder(pid):
    p = output_path(Path("/o"), ImageItem(Path("/in/s.dcm"), pid, "dicom", (Path("/in/s.dcm"),)), "same", "restored",
                    patient_folder=True)
    assert p.parent.parent == Path("/o") and p.name == "s_restored.dcm"
    assert p.parent.name not in ("", ".", "..") and "/" not in p.parent.name and "\\" not in p.parent.name


def test_scaled_geometry_2d_image():
    vol = Volume(np.zeros((5, 7), np.float32), (0.8, 0.5), np.diag([0.8, 0.5, 1.0, 1.0]), "p", Path("p"))
    spacing, affine = scaled_geometry(vol, 4.0, 0, (20, 28))
    np.testing.assert_allclose(spacing, (0.2, 0.125))
    np.testing.assert_allclose(centres(affine, np.array([[0, 0, 0]], float)), centres(vol.affine, np.array([[-0.375, -0.375, 0]])))


@pytest.mark.parametrize("extra,message", [(["--sampler", "euler"], "--sampler euler: expected one of ['ancestral', 'ddim', 'dpm_solver_pp', 'posterior_mean', 'student']"),
                                           (["--batch-size", "0"], "--batch-size 0: expected >= 1"),
                                           (["--samples", "0"], "--samples 0: expected >= 1"),
                                           (["--sampler", "ancestral", "--grid", "logsnr"], "--grid applies to --sampler ddim or dpm_solver_pp")])
def test_bad_options_are_refused(tmp_path, sr_ckpt, capsys, extra, message):
    inp_path = tmp_path / "s.nii.gz"
    write_volume(real_lowres(), inp_path)
    assert run("--checkpoint", sr_ckpt, "--input", inp_path, "--output", tmp_path / "o", *extra) == 2
    assert message in capsys.readouterr().err


def test_inpaint_keeps_known_pixels_and_checks_the_mask_shape(tmp_path, capsys):
    ck = make_checkpoint(tmp_path / "ck", task="inpaint")
    vol = real_lowres()
    inp_path, mask_path = tmp_path / "i.nii.gz", tmp_path / "m.nii.gz"
    write_volume(vol, inp_path)
    mask = np.zeros(vol.shape, np.float32)
    mask[:, 4:10, 5:12] = 1
    write_volume(vol.with_array(mask), mask_path)
    assert run("--checkpoint", ck, "--input", inp_path, "--output", tmp_path / "out", "--mask", mask_path) == 0
    out = read_volume(tmp_path / "out" / "i_restored.nii.gz")
    known = mask == 0
    np.testing.assert_allclose(out.array[known], vol.array[known], rtol=0, atol=1e-4 * np.ptp(vol.array))
    assert np.abs(out.array[~known] - vol.array[~known]).mean() > 0.01 * np.ptp(vol.array)
    write_volume(Volume(mask[:2], vol.spacing, vol.affine, "m", Path("m")), mask_path)
    assert run("--checkpoint", ck, "--input", inp_path, "--output", tmp_path / "out2", "--mask", mask_path) == 2
    err = capsys.readouterr().err
    assert "has shape (2, 16, 16)" in err and "(3, 16, 16)" in err


def test_slices_along_another_axis_scale_only_that_plane(tmp_path, id_ckpt):
    inp_path = tmp_path / "ax.nii.gz"
    write_volume(real_lowres(), inp_path)
    inp = read_volume(inp_path)
    assert run("--checkpoint", id_ckpt, "--input", inp_path, "--output", tmp_path / "out", "--axis", "1") == 0
    out = read_volume(tmp_path / "out" / "ax_restored.nii.gz")
    assert out.shape == (12, 16, 64)
    np.testing.assert_allclose(out.spacing, (inp.spacing[0] / 4, inp.spacing[1], inp.spacing[2] / 4), rtol=1e-5)
    new = np.array([[0, 0, 0], [11, 7, 63]], float)
    old = np.c_[(new[:, 0] + 0.5) / 4 - 0.5, new[:, 1], (new[:, 2] + 0.5) / 4 - 0.5]
    np.testing.assert_allclose(centres(out.affine, new), centres(inp.affine, old), atol=2e-3)


def test_single_2d_dicom_radiograph(tmp_path, id_ckpt):
    cxr = read_volume(samples_dir("cxr") / "rg1" / "rg1_downsampled_x4.dcm")
    crop = Volume(cxr.array[200:224, 180:212].copy(), cxr.spacing, cxr.affine, cxr.patient_id, cxr.source, cxr.meta)
    inp_path = tmp_path / "cxr.dcm"
    write_volume(crop, inp_path, synthetic=False)
    inp = read_volume(inp_path)
    assert run("--checkpoint", id_ckpt, "--input", inp_path, "--output", tmp_path / "out") == 0
    out_file = tmp_path / "out" / "cxr_restored.dcm"
    out = read_volume(out_file)
    assert out.shape == (96, 128)
    ds = pydicom.dcmread(out_file)
    assert "PixelSpacing" not in ds and "unknown pixel spacing" in ds.ImageComments  # the film records none: not invented
    assert ds.Modality == "CR" and ds.DerivationDescription == MARKER_SYNTHETIC
    lo, hi = float(inp.array.min()), float(inp.array.max())
    y = torch.from_numpy((inp.array - lo) / (hi - lo) * 2 - 1).float()[None, None]
    up = torch.nn.functional.interpolate(y, size=(96, 128), mode="bicubic").clamp(-1, 1)[0, 0].numpy()
    np.testing.assert_allclose(out.array, (up + 1) / 2 * (hi - lo) + lo, rtol=0, atol=2e-3 * (hi - lo))
