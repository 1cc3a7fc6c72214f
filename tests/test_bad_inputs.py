"""Bad inputs to the command line: every case exits with code 2, prints one message naming the bad
file or value, prints no traceback, and leaves nothing half-written (the folder holding the case's
files is the same before and after). Add a case for every bad input found.

A case builds its files under `tmp_path` and returns (argv, text the message must contain). Cases
run in-process (fast); those marked ``subprocess`` run the real `meddiff` entry point, for failures
whose noise could come from outside meddiff (pydicom's logger).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.data import get_testdata_file

from meddiff.cli import main
from meddiff.data.samples import samples_dir

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo_sr_x4.yaml"
NIFTI = samples_dir("colin27") / "colin27" / "axial.nii.gz"
CKPT = Path(__file__).resolve().parents[1] / "src" / "meddiff" / "checkpoints" / "demo_sr_x4.safetensors"


def _readonly(tmp: Path) -> Path:
    """A folder this process cannot create anything in (a chmod 555 folder; as root, /sys)."""
    if os.geteuid() != 0:
        ro = tmp / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        return ro / "out"
    try:
        os.mkdir("/sys/meddiff-write-probe")
    except OSError:
        return Path("/sys/meddiff-out")
    os.rmdir("/sys/meddiff-write-probe")
    pytest.skip("no read-only location to test with")


def _a_file(tmp: Path) -> Path:
    f = tmp / "afile"
    f.write_text("not a folder\n")
    return f


def _pred_truth(tmp: Path) -> list[str]:
    for name in ("pred", "truth"):
        (tmp / name).mkdir()
        (tmp / name / "a.nii.gz").write_bytes(NIFTI.read_bytes())
    return ["evaluate", "--pred", f"m={tmp / 'pred'}", "--truth", str(tmp / "truth")]


def _complex_nifti(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    data = (rng.random((8, 8, 3)) + 1j * rng.random((8, 8, 3))).astype(np.complex64)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp / "kspace.nii.gz"))
    return tmp / "kspace.nii.gz"


def _wrong_jpeg_syntax(tmp: Path) -> Path:
    """JPEG 2000 pixel data declared as JPEG Lossless (process 14)."""
    ds = pydicom.dcmread(get_testdata_file("MR_small_jp2klossless.dcm"))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGLossless
    ds.save_as(tmp / "mislabelled.dcm")
    return tmp / "mislabelled.dcm"


def _mosaic_without_count(tmp: Path) -> Path:
    import gzip

    src = Path(nib.__file__).parent / "nicom/tests/data/siemens_dwi_1000.dcm.gz"
    if not src.exists():
        pytest.skip("nibabel's Siemens mosaic test file is not installed")
    ds = pydicom.dcmread(__import__("io").BytesIO(gzip.decompress(src.read_bytes())))
    del ds[0x00291010]
    ds.save_as(tmp / "mosaic.dcm")
    return tmp / "mosaic.dcm"


def _corrupt_study(tmp: Path) -> Path:
    (tmp / "study").mkdir()
    (tmp / "study" / "study.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    return tmp / "study"


def _copy(src, dst: Path) -> Path:
    dst.write_bytes(Path(src).read_bytes())
    return dst


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def _truncated_png(tmp: Path) -> bool:
    from PIL import Image

    noise = np.random.default_rng(0).integers(0, 65535, (64, 64), dtype=np.uint16)  # incompressible
    Image.fromarray(noise).save(tmp / "full.png")
    data = (tmp / "full.png").read_bytes()
    (tmp / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp / "full.png").unlink()
    return True


def _mosaic_series(tmp: Path) -> Path:
    one = _mosaic_without_count(tmp)
    folder = tmp / "mosaics"
    folder.mkdir()
    for k in range(2):
        ds = pydicom.dcmread(one)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(folder / f"m{k}.dcm")
    one.unlink()
    return folder


def _ddpm(tmp: Path, *extra: str) -> list[str]:
    return ["sample", "--checkpoint", str(CKPT), "--input", str(NIFTI), "--output", str(tmp / "out"), "--no-progress", *extra]


def _small_png(path: Path) -> bool:
    from PIL import Image

    Image.fromarray(np.ones((5, 7), np.uint8)).save(path)
    return True


def _two_size_series(tmp: Path) -> Path:
    folder = tmp / "series"
    folder.mkdir()
    base = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for k, size in enumerate((64, 32)):
        ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [0.0, 0.0, float(k)]
        ds.Rows = ds.Columns = size
        ds.PixelData = base.pixel_array[:size, :size].astype("<i2").tobytes()
        ds.save_as(folder / f"s{k}.dcm")
    return folder


def _sample(tmp: Path, inp: Path, *extra: str) -> list[str]:
    return ["sample", "--method", "median", "--input", str(inp), "--output", str(tmp / "out"), "--no-progress", *extra]


CASES = {
    # output paths: read-only, a file, under a file
    "prepare_readonly_out": lambda t: (["prepare", str(NIFTI.parent), str(p := _readonly(t)), "--no-progress"], str(p)),
    "prepare_out_under_file": lambda t: (["prepare", str(NIFTI.parent), str(_a_file(t) / "sub"), "--no-progress"], "afile"),
    "sample_readonly_out": lambda t: (["sample", "--method", "median", "--input", str(NIFTI), "--output",
                                       str(p := _readonly(t)), "--no-progress"], str(p)),
    "sample_out_is_file": lambda t: (["sample", "--method", "median", "--input", str(NIFTI), "--output", str(_a_file(t))], "afile"),
    "sample_out_under_file": lambda t: (["sample", "--method", "median", "--input", str(NIFTI), "--output",
                                         str(_a_file(t) / "x" / "y")], "afile"),
    "train_readonly_out": lambda t: (["train", "--config", str(CONFIG), "--out", str(p := _readonly(t))], str(p)),
    "train_out_is_file": lambda t: (["train", "--config", str(CONFIG), "--out", str(_a_file(t))], "afile"),
    "evaluate_readonly_out": lambda t: ([*_pred_truth(t), "--out", str(p := _readonly(t))], str(p)),
    "evaluate_out_is_file": lambda t: ([*_pred_truth(t), "--out", str(_a_file(t))], "afile"),
    # files that are not what they claim
    "binary_config": lambda t: ((t / "bin.yaml").write_bytes(b"\xff\xfe\x00\x81" * 64) and
                                ["train", "--config", str(t / "bin.yaml")], "bin.yaml"),
    "complex_nifti": lambda t: (_sample(t, _complex_nifti(t)), "kspace.nii.gz"),
    "complex_tiff": lambda t: (tifffile.imwrite(t / "c.tif", np.ones((4, 4), np.complex64)) or _sample(t, t / "c.tif"), "c.tif"),
    "wrong_jpeg_transfer_syntax": lambda t: (_sample(t, _wrong_jpeg_syntax(t)), "mislabelled.dcm"),
    "mosaic_without_csa_count": lambda t: (_sample(t, _mosaic_without_count(t)), "mosaic.dcm"),
    # options that do not apply
    "mask_for_super_resolution": lambda t: (["sample", "--method", "bicubic", "--input", str(NIFTI), "--output", str(t / "out"),
                                             "--mask", str(NIFTI)], "--mask"),
    # the study server
    "study_port_too_large": lambda t: (["study", "serve", str(t), "--port", "99999"], "99999"),
    "study_port_negative": lambda t: (["study", "serve", str(t), "--port", "-1"], "-1"),
    "study_bad_host": lambda t: (["study", "serve", str(t), "--host", "no such host!", "--port", "0"], "no such host!"),
    "study_serve_corrupt_db": lambda t: (["study", "serve", str(_corrupt_study(t)), "--port", "0"], "study.sqlite"),
    "study_results_corrupt_db": lambda t: (["study", "results", str(_corrupt_study(t))], "study.sqlite"),
    "study_readers_corrupt_db": lambda t: (["study", "readers", str(_corrupt_study(t))], "study.sqlite"),
    # more inputs that are not images, or not usable ones
    "input_missing": lambda t: (_sample(t, t / "nowhere.nii.gz"), "nowhere.nii.gz"),
    "truncated_dicom": lambda t: (_sample(t, _copy(get_testdata_file("MR_truncated.dcm"), t / "cut.dcm")), "cut.dcm"),
    "dicom_without_pixels": lambda t: (_sample(t, _copy(get_testdata_file("rtstruct.dcm"), t / "rt.dcm")), "rt.dcm"),
    "nan_nifti": lambda t: (_sample(t, _nifti(t / "nan.nii.gz", np.full((8, 8, 2), np.nan, np.float32))), "nan.nii.gz"),
    "empty_nifti_file": lambda t: ((t / "empty.nii.gz").write_bytes(b"") or _sample(t, t / "empty.nii.gz"), "empty.nii.gz"),
    "truncated_png": lambda t: (_truncated_png(t) and _sample(t, t / "cut.png"), "cut.png"),
    "pickled_npy": lambda t: (np.save(t / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
                              or _sample(t, t / "obj.npy"), "obj.npy"),
    "mosaic_series_folder": lambda t: (_sample(t, _mosaic_series(t)), "mosaics"),
    "sample_zero_samples": lambda t: (_sample(t, NIFTI, "--samples", "0"), "--samples 0"),
    "sample_zero_batch": lambda t: (_sample(t, NIFTI, "--batch-size", "0"), "--batch-size 0"),
    "sample_sr_factor_below_one": lambda t: (["sample", "--method", "bicubic", "--input", str(NIFTI), "--output",
                                              str(t / "out"), "--sr-factor", "0.5"], "0.5"),
    "prepare_input_missing": lambda t: (["prepare", str(t / "nothing"), str(t / "out")], "nothing"),
    "prepare_tiny_size": lambda t: (["prepare", str(NIFTI.parent), str(t / "out"), "--size", "2"], "--size"),
    "config_missing": lambda t: (["train", "--config", str(t / "none.yaml")], "none.yaml"),
    "config_not_a_mapping": lambda t: ((t / "list.yaml").write_text("- a\n- b\n") and
                                       ["train", "--config", str(t / "list.yaml")], "list.yaml"),
    "config_unknown_override": lambda t: (["train", "--config", str(CONFIG), "train.no_such_key=1", "--out", str(t / "o")],
                                          "no_such_key"),
    "study_not_a_study": lambda t: (["study", "serve", str(t), "--port", "0"], str(t)),
    "study_method_without_folder": lambda t: (["study", "create", str(t / "s"), "--real", str(NIFTI.parent),
                                               "--method", "justaname"], "justaname"),
    # checkpoints and sampler options
    "checkpoint_missing": lambda t: (["sample", "--checkpoint", str(t / "none.safetensors"), "--input", str(NIFTI),
                                      "--output", str(t / "out")], "none.safetensors"),
    "checkpoint_not_safetensors": lambda t: ((t / "junk.safetensors").write_bytes(b"junk" * 50) and
                                             ["sample", "--checkpoint", str(t / "junk.safetensors"), "--input", str(NIFTI),
                                              "--output", str(t / "out")], "junk.safetensors"),
    "checkpoint_truncated": lambda t: ((t / "cut.safetensors").write_bytes(CKPT.read_bytes()[:5000]) and
                                       ["sample", "--checkpoint", str(t / "cut.safetensors"), "--input", str(NIFTI),
                                        "--output", str(t / "out")], "cut.safetensors"),
    "steps_zero": lambda t: (_ddpm(t, "--steps", "0"), "--steps 0"),
    "sampler_unknown": lambda t: (_ddpm(t, "--sampler", "nosuch"), "nosuch"),
    "eta_out_of_range": lambda t: (_ddpm(t, "--sampler", "ddim", "--eta", "2"), "--eta 2"),
    "eta_for_ancestral": lambda t: (_ddpm(t, "--sampler", "ancestral", "--eta", "0.5"), "--eta"),
    # inputs and masks
    "input_empty_folder": lambda t: ((t / "empty").mkdir() or _sample(t, t / "empty"), "empty"),
    "input_folder_of_text": lambda t: ((t / "txt").mkdir() or (t / "txt" / "notes.txt").write_text("x") and
                                       _sample(t, t / "txt"), "txt"),
    "dcm_that_is_text": lambda t: ((t / "fake.dcm").write_text("hello, not DICOM\n" * 20) and _sample(t, t / "fake.dcm"),
                                   "fake.dcm"),
    "nifti_4d_time_series": lambda t: (_sample(t, _nifti(t / "fmri.nii.gz", np.ones((6, 6, 3, 4), np.float32))), "fmri.nii.gz"),
    "npz_without_image_key": lambda t: (np.savez(t / "two.npz", a=np.ones((4, 4)), b=np.ones((4, 4))) or
                                        _sample(t, t / "two.npz"), "two.npz"),
    "series_with_two_sizes": lambda t: (_sample(t, _two_size_series(t)), "series"),
    "mask_missing": lambda t: (["sample", "--method", "biharmonic", "--input", str(NIFTI), "--output", str(t / "out"),
                                "--mask", str(t / "nomask.png")], "nomask.png"),
    "mask_wrong_shape": lambda t: (_small_png(t / "m.png") and ["sample", "--method", "biharmonic", "--input", str(NIFTI),
                                                               "--output", str(t / "out"), "--mask", str(t / "m.png")], "m.png"),
    "inpaint_without_mask": lambda t: (["sample", "--method", "biharmonic", "--input", str(NIFTI), "--output", str(t / "out")],
                                       "--mask"),
    # prepare options
    "prepare_input_is_file": lambda t: (["prepare", str(NIFTI), str(t / "out")], str(NIFTI)),
    "prepare_split_negative": lambda t: (["prepare", str(NIFTI.parent), str(t / "out"), "--split", "-1", "1", "1"], "-1"),
    "prepare_min_foreground_above_one": lambda t: (["prepare", str(NIFTI.parent), str(t / "out"), "--min-foreground", "2"],
                                                   "--min-foreground"),
    # configs
    "config_invalid_yaml": lambda t: ((t / "bad.yaml").write_text("train:\n\tsteps: [1,\n") and
                                      ["train", "--config", str(t / "bad.yaml")], "bad.yaml"),
    "config_wrong_type": lambda t: (["train", "--config", str(CONFIG), "train.steps=many", "--out", str(t / "o")], "many"),
    # evaluate and the study
    "evaluate_pred_without_name": lambda t: (["evaluate", "--pred", str(t), "--truth", str(t)], str(t)),
    "evaluate_truth_missing": lambda t: (["evaluate", "--pred", f"m={t}", "--truth", str(t / "no_truth")], "no_truth"),
    "study_create_real_missing": lambda t: (["study", "create", str(t / "s"), "--real", str(t / "no_real"),
                                             "--method", f"m={NIFTI.parent}"], "no_real"),
    "study_results_not_a_study": lambda t: (["study", "results", str(t)], str(t)),
    "study_bad_reader_code": lambda t: (["study", "readers", str(_corrupt_study(t)), "--add-codes", "a b"], "study.sqlite"),
}
SUBPROCESS = {"wrong_jpeg_transfer_syntax", "sample_out_is_file", "study_port_negative"}


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(folder.rglob("*"))}


def _run(argv: list[str], in_process: bool, capsys, caplog) -> tuple[int, str]:
    if in_process:
        code = main(argv)
        err = capsys.readouterr().err + caplog.text
        return code, err
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-m", "meddiff.cli", *argv], capture_output=True, text=True, env=env, timeout=300)
    return proc.returncode, proc.stderr + proc.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input(case, tmp_path, capsys, caplog):
    argv, named = CASES[case](tmp_path)
    before = _tree(tmp_path)
    code, err = _run(argv, case not in SUBPROCESS, capsys, caplog)
    assert code == 2, (case, code, err)
    assert "Traceback" not in err, err
    assert "error:" in err and named in err, (named, err)
    assert _tree(tmp_path) == before  # nothing half-written, no temporary left behind
