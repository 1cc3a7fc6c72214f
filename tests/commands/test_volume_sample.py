"""`meddiff sample` on volumes: a tiny 3D thick-slice model restores a NIfTI end to end (shape, affine,
--samples, --consistency project along z, tiling under --max-memory); 2.5D with --samples and
--consistency project; the slice layouts of restore.volume."""

import logging

import nibabel as nib
import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.io.phi import pseudonym
from meddiff.data.thick import thick_slices
from meddiff.restore.volume import Layout

from .test_volume_train import TINY, prepared, run_3d  # noqa: F401 (module fixtures)

AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1.0, 0, -126], [0, 0, 4.0, -72], [0, 0, 0, 1]])


@pytest.fixture(scope="module")
def thick_nifti(prepared, tmp_path_factory):
    """A 12 x 16 x 3 NIfTI of 4 mm thick slices (k) cut from an MNI152 volume (the x4 means of 12 thin slices)."""
    vol = np.load(next((prepared / "volumes").glob("*axial.npy")))  # [Z, Y, X] in [-1, 1]
    z0 = vol.shape[0] // 2 - 6
    thin = vol[z0:z0 + 12, 20:36, 16:28]  # [12, 16, 12] (Z, Y, X)
    thick = thin.reshape(3, 4, 16, 12).mean(1)  # [3, 16, 12]
    path = tmp_path_factory.mktemp("thick") / "thick.nii.gz"
    nib.save(nib.Nifti1Image((thick.T * 500 + 500).astype(np.float32), AFFINE), str(path))  # data [i, j, k] = [X, Y, Z]
    return path


def expected_affine(factor: int) -> np.ndarray:
    """k spacing / factor; the first thin slice's centre (f - 1) / (2 f) of a thick slice before the thick one's."""
    m = np.eye(4)
    m[2, 2], m[2, 3] = 1 / factor, (1 / factor - 1) / 2
    return AFFINE @ m


def test_3d_thick_slice_model_restores_a_nifti_through_the_cli(run_3d, thick_nifti, tmp_path):
    out = tmp_path / "o"
    assert main(["sample", "--checkpoint", str(run_3d), "--input", str(thick_nifti), "--output", str(out),
                 "--steps", "2", "--no-progress"]) == 0
    img = nib.load(str(out / "thick_restored.nii.gz"))
    assert img.shape == (12, 16, 12) and np.isfinite(img.get_fdata()).all()
    np.testing.assert_allclose(img.affine, expected_affine(4), atol=1e-5)
    np.testing.assert_allclose(img.header.get_zooms(), (1, 1, 1), atol=1e-6)
    # the same with 3D windows under a small --tile-size: a volume of the same shape, close to the whole one
    assert main(["sample", "--checkpoint", str(run_3d), "--input", str(thick_nifti), "--output", str(tmp_path / "t"),
                 "--steps", "2", "--tile-size", "8", "--tile-overlap", "4", "--no-progress"]) == 0
    tiled = nib.load(str(tmp_path / "t" / "thick_restored.nii.gz")).get_fdata()
    assert tiled.shape == img.shape and np.isfinite(tiled).all()


def test_3d_samples_and_consistency_project_along_z(run_3d, thick_nifti, tmp_path):
    """--samples 2 --consistency project: each sample's means of 4 thin slices along k are the measured
    thick slices (up to float32 and the writer's rounding), and the samples differ (their own noise)."""
    out = tmp_path / "o"
    assert main(["sample", "--checkpoint", str(run_3d), "--input", str(thick_nifti), "--output", str(out), "--steps", "2",
                 "--samples", "2", "--consistency", "project", "--no-progress"]) == 0
    measured = nib.load(str(thick_nifti)).get_fdata()
    s0, s1 = (nib.load(str(out / f"thick_sample{k}.nii.gz")).get_fdata() for k in (0, 1))
    std = nib.load(str(out / "thick_std.nii.gz")).get_fdata()
    assert s0.shape == s1.shape == std.shape == (12, 16, 12)
    for s in (s0, s1):
        again = thick_slices(torch.from_numpy(s), 4, 2).numpy()
        np.testing.assert_allclose(again, measured, atol=1e-3 * np.ptp(measured))
    assert not np.allclose(s0, s1) and std.max() > 0


def test_2p5d_samples_and_consistency_project(prepared, tmp_path, caplog):
    run = tmp_path / "r25"
    assert main(["train", "--config", "configs/volume_2p5d_sr_x4.yaml", f"data.prepared={prepared}", "data.crop=16",
                 "diffusion.prediction=eps", "diffusion.residual=false", *TINY, f"train.out_dir={run}", "--no-progress"]) == 0
    low = np.load(next((prepared / "volumes").glob("*axial.npy")))[6:10, 10:18, 8:20]
    np.save(tmp_path / "low.npy", np.ascontiguousarray(low))
    with caplog.at_level(logging.INFO, logger="meddiff.restore.restorers"):
        assert main(["sample", "--checkpoint", str(run), "--input", str(tmp_path / "low.npy"), "--output", str(tmp_path / "o"),
                     "--steps", "2", "--samples", "2", "--consistency", "project", "--no-progress"]) == 0
    for tag in ("mean", "std", "sample0", "sample1"):
        arr = np.load(tmp_path / "o" / f"low_{tag}.npy")
        assert arr.shape == (4, 32, 48) and np.isfinite(arr).all()
    err = [float(r.getMessage().rsplit("samples ", 1)[1].split()[0]) for r in caplog.records if "largest RMS" in r.getMessage()]
    assert err and max(err) < 1e-4  # every slice of every sample agrees with its low-resolution slice


@pytest.mark.parametrize("layout", [Layout(), Layout(context=2), Layout(spatial_dims=3), Layout(thick=4),
                                    Layout(spatial_dims=3, thick=4)])
def test_layouts_round_trip_the_slices_of_a_volume(layout):
    """A network that returns its first condition plane gives back the condition slices, in order."""
    planes = torch.randn(8, 1, 6, 5)
    net_in = layout.to_net(planes)
    assert net_in.shape[1] == (5 if layout.context else 1)
    out = layout.from_net(net_in[None, :, :1].repeat(2, 1, 1, *[1] * (net_in.ndim - 2)))
    assert out.shape == (2, 8, 1, 6, 5)
    assert torch.equal(out[1], planes)


def test_thick_layout_measurement_projects_along_the_slice_axis():
    """The thick-slice measurement of a layout puts y in the network's layout; its projection of any x
    has the measured thick slices (in the volume's slice order)."""
    planes, y = torch.randn(8, 1, 6, 5), torch.randn(2, 1, 6, 5)
    for layout in (Layout(thick=4), Layout(spatial_dims=3, thick=4)):
        m = layout.measurement("sr", "project", planes, y, factor=4.0)
        x = torch.randn(1, *layout.to_net(planes).shape)[0]
        projected = layout.from_net(m.for_batch(0, x)(x)[None])[0]
        torch.testing.assert_close(thick_slices(projected, 4, 0), y, atol=1e-5, rtol=0)


def test_3d_thick_slice_model_restores_a_dicom_series(run_3d, thick_nifti, tmp_path):
    """A DICOM series of 3 thick slices in, a series of 12 thin slices out: positions 1 mm apart along the
    slice normal, first one 1.5 mm before the first thick slice's centre, SliceThickness 1."""
    import pydicom

    from meddiff.io import read_volume, write_volume

    import dataclasses

    series = tmp_path / "in" / "thick"
    vol = read_volume(thick_nifti)
    write_volume(dataclasses.replace(vol, meta={**vol.meta, "modality": "MR"}), series, synthetic=False)  # MR: a stack, not projections
    assert main(["sample", "--checkpoint", str(run_3d), "--input", str(series), "--output", str(tmp_path / "o"),
                 "--steps", "2", "--no-progress"]) == 0
    src, out = read_volume(series), read_volume(tmp_path / "o" / f"{pseudonym('thick')}_restored")
    assert out.shape == (12, 16, 12) and np.allclose(out.spacing, (1, 1, 1), atol=1e-4)
    m = np.eye(4)
    m[0, 0], m[0, 3] = 0.25, -0.375
    np.testing.assert_allclose(out.affine, src.affine @ m, atol=1e-3)
    first = pydicom.dcmread(sorted((tmp_path / "o" / f"{pseudonym('thick')}_restored").glob("*.dcm"))[0])
    assert float(first.SliceThickness) == pytest.approx(1.0)


def test_demo_volume_with_a_3d_thick_slice_model(run_3d, tmp_path):
    """`meddiff demo --volume` with a thick-slice 3D model: Colin27's coronal stack with S-I as the slice
    axis, 16 x 32 x 32 voxels; table rows for bicubic and the 3D model; the restored NIfTI has the crop's shape."""
    import csv

    out = tmp_path / "dv"
    assert main(["demo", "--volume", "--checkpoint", str(run_3d), "--out", str(out), "--slices", "16", "--crop", "32",
                 "--steps", "2", "--no-progress"]) == 0
    rows = {r["method"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert set(rows) == {"bicubic", "meddiff 3D"}
    assert all(np.isfinite(float(v)) for r in rows.values() for k, v in r.items() if k != "method")
    img = nib.load(str(out / "colin27_restored.nii.gz"))
    assert sorted(img.shape) == [16, 32, 32] and (out / "volume.png").is_file()
    assert "thick slices along S-I" in (out / "results.md").read_text()


def test_3d_inplane_sr_checkpoint_restores_a_volume_with_consistency(tmp_path, caplog):
    """A 3D in-plane x4 SR checkpoint (random weights: such models cannot be trained yet, the in-plane
    degradation is 2D) restores a 4 x 8 x 12 NPY volume to 4 x 32 x 48 as one volume, with --samples 2
    and --consistency project making every slice of every sample agree with its low-resolution slice."""
    from meddiff import config as config_mod
    from meddiff.checkpointing import save_checkpoint
    from meddiff.nn.unet import build_unet

    cfg = config_mod.from_dict({"data": {"mode": "volume", "patch": [4, 16, 16]}, "task": {"kind": "sr", "sr_factor": 4.0},
                                "model": {"spatial_dims": 3, "channels": [8, 16], "attention_levels": [False, True], "norm_groups": 4},
                                "diffusion": {"timesteps": 20}, "sampler": {"steps": 2}})
    torch.manual_seed(0)
    net = build_unet(cfg.model, 2, 1)
    net.conv_out.weight.data.normal_(0, 0.3)
    ckpt = save_checkpoint(tmp_path / "ck", 1, cfg, net, net, torch.optim.Adam(net.parameters()), in_channels=2)
    np.save(tmp_path / "low.npy", np.random.default_rng(0).uniform(0, 100, (4, 8, 12)).astype(np.float32))
    with caplog.at_level(logging.INFO, logger="meddiff.restore.restorers"):
        assert main(["sample", "--checkpoint", str(ckpt), "--input", str(tmp_path / "low.npy"), "--output", str(tmp_path / "o"),
                     "--samples", "2", "--consistency", "project", "--no-progress"]) == 0
    s0, s1 = (np.load(tmp_path / "o" / f"low_sample{k}.npy") for k in (0, 1))
    assert s0.shape == s1.shape == np.load(tmp_path / "o" / "low_std.npy").shape == (4, 32, 48)
    assert not np.allclose(s0, s1)
    err = [float(r.getMessage().rsplit("samples ", 1)[1].split()[0]) for r in caplog.records if "largest RMS" in r.getMessage()]
    assert err and max(err) < 1e-4


def test_2d_thick_slice_recipe_trains_on_reformats_and_restores_a_thick_nifti(prepared, thick_nifti, tmp_path):
    """configs/sr_thick_x4.yaml in miniature: a 2D model trained on coronal/sagittal planes thickened along
    their rows (synthetic planes mixed in) restores a 4 mm series to 1 mm slices with the affine scaled along z."""
    run = tmp_path / "thick2d"
    assert main(["train", "--config", "configs/sr_thick_x4.yaml", f"data.prepared={prepared}", "data.crop=16",
                 "train.init_from=", "train.threads=1", *TINY, f"train.out_dir={run}", "--no-progress"]) == 0
    out = tmp_path / "o"
    assert main(["sample", "--checkpoint", str(run), "--input", str(thick_nifti), "--output", str(out), "--no-progress"]) == 0
    img = nib.load(str(out / "thick_restored.nii.gz"))
    assert img.shape == (12, 16, 12) and np.isfinite(img.get_fdata()).all()
    np.testing.assert_allclose(img.affine, expected_affine(4), atol=1e-5)
