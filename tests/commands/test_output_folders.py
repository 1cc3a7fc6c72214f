"""Output folders: meddiff never deletes or overwrites an input or a folder it did not write,
and no patient data from the tags reaches an output path (issue 16, items 1 and 2)."""

from pathlib import Path

import numpy as np
import pytest

from meddiff.cli import main
from meddiff.data.samples import samples_dir
from meddiff.io import Volume, write_volume
from meddiff.io.outdir import MARKER, check_output_dir, mark

from .test_sample import make_checkpoint
from meddiff.io.phi import pseudonym


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _images(folder: Path, n: int = 2) -> Path:
    """n patients' PNG slices (8-bit, 32x32 with a bright square) under folder/p<k>/."""
    rng = np.random.default_rng(0)
    for k in range(n):
        a = np.zeros((32, 32), np.float32)
        a[8:24, 8:24] = 200 + rng.integers(0, 50)
        write_volume(Volume(a, (1.0, 1.0), np.eye(4), f"p{k}", Path("x"), {}), folder / f"p{k}" / "img.png")
    return folder


def prep(*args) -> int:
    return main(["prepare", *map(str, args), "--size", "16", "--min-foreground", "0", "--no-progress"])


def test_prepare_into_its_own_input_is_refused_and_deletes_nothing(tmp_path, capsys):
    d = _images(tmp_path / "d")
    before = _tree(d)
    for out in (d, d / ".", tmp_path):  # the input itself, the same path spelled differently, its parent
        assert prep(d, out, "--overwrite") == 2
        assert "input" in capsys.readouterr().err
    assert _tree(d) == before


def test_prepare_parent_child_keeps_input_and_unrelated_files(tmp_path, capsys):
    parent = tmp_path / "parent"
    _images(parent / "child")
    (parent / "unrelated.txt").write_text("mine")
    before = _tree(parent)
    assert prep(parent / "child", parent, "--overwrite") == 2
    assert "contains the input" in capsys.readouterr().err
    assert _tree(parent) == before


def test_prepare_output_inside_input_is_refused(tmp_path, capsys):
    d = _images(tmp_path / "d")
    assert prep(d, d / "prepared") == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (d / "prepared").exists()


def test_overwrite_replaces_only_meddiffs_folder(tmp_path, capsys):
    d = _images(tmp_path / "d")
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    assert prep(d, user, "--overwrite") == 2
    assert MARKER in capsys.readouterr().err and (user / "notes.txt").read_text() == "keep"
    assert prep(d, tmp_path / "ours") == 0 and (tmp_path / "ours" / MARKER).is_file()
    assert prep(d, tmp_path / "ours") == 2  # not empty, no --overwrite
    assert prep(d, tmp_path / "ours", "--overwrite") == 0


def test_check_output_dir_rules(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(Exception, match="is a file"):
        check_output_dir(f)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_output_dir(empty) == empty and check_output_dir(tmp_path / "new") == tmp_path / "new"
    mark(tmp_path / "m", "test")
    (tmp_path / "m" / "a.txt").write_text("a")
    with pytest.raises(Exception, match="already exists"):
        check_output_dir(tmp_path / "m")
    assert check_output_dir(tmp_path / "m", overwrite=True) == tmp_path / "m"
    with pytest.raises(Exception, match="contains the input"):
        check_output_dir(tmp_path, [tmp_path / "m" / "a.txt"], overwrite=True)


@pytest.fixture(scope="module")
def id_ckpt(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ck_id"), identity=True)


def _dicom_input(root: Path, patient_id: str) -> Path:
    """A real 2D MR DICOM (pydicom's MR_small) renamed and given a patient ID that must not leak."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PatientID = patient_id
    ds.PatientName = "Doe^Jane"
    (root / "case_a").mkdir(parents=True)
    path = root / "case_a" / "slice.dcm"
    ds.save_as(path)
    return path


def sample(*args) -> int:
    return main(["sample", *map(str, args), "--steps", "2", "--no-progress", "--device", "cpu"])


def test_sample_paths_carry_no_patient_id(tmp_path, id_ckpt):
    _dicom_input(tmp_path / "in", "PID-123565")
    out = tmp_path / "out"
    assert sample("--checkpoint", id_ckpt, "--input", tmp_path / "in", "--output", out, "--input-kind", "upsampled") == 0
    files = [p for p in out.rglob("*") if p.is_file() and p.suffix != ".json"]
    assert files and all("123565" not in str(p) and "Doe" not in str(p) for p in files)
    assert [p.relative_to(out).as_posix() for p in files] == [f"{pseudonym('case_a')}/slice_restored.dcm"]  # mirrors the input, folders pseudonymised
    kept = tmp_path / "kept"
    assert sample("--checkpoint", id_ckpt, "--input", tmp_path / "in" / "case_a" / "slice.dcm", "--output", kept,
                  "--input-kind", "upsampled", "--keep-patient-tags") == 0
    assert (kept / "PID-123565" / "slice_restored.dcm").is_file()  # asked for: the patient ID names the folder


def test_sample_does_not_silently_replace_results(tmp_path, id_ckpt, capsys):
    src = samples_dir("colin27") / "colin27" / "axial.nii.gz"
    inp = tmp_path / "in"
    inp.mkdir()
    from meddiff.io import read_volume

    v = read_volume(src)
    write_volume(Volume(v.array[40:41, ::8, ::8].copy(), v.spacing, v.affine, "c", src, {}), inp / "lr.nii.gz")
    out = tmp_path / "out"
    assert sample("--checkpoint", id_ckpt, "--input", inp, "--output", out) == 0
    first = _tree(out)
    assert sample("--checkpoint", id_ckpt, "--input", inp, "--output", out) == 2
    assert "--overwrite" in capsys.readouterr().err and _tree(out) == first
    assert sample("--checkpoint", id_ckpt, "--input", inp, "--output", out, "--overwrite") == 0
    assert sample("--checkpoint", id_ckpt, "--input", inp, "--output", inp, "--overwrite") == 2  # its own input
    assert "input" in capsys.readouterr().err
