"""Bad inputs, round two (issue 28): every case exits with code 2, prints one message naming the bad file or
value, prints no traceback and leaves the folder holding the case's files exactly as it was (nothing
written, nothing deleted: a run that fails leaves nothing). Cases run in-process and fail before any
model is sampled.

A case builds its files under `tmp_path` and returns (argv, text the message must contain).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.data import get_testdata_file

from meddiff.cli import main

from bad_input_contract import assert_refused_cleanly, broken_ct  # tests/io is on sys.path (pytest prepend mode)
from meddiff.data.samples import samples_dir
from meddiff.io.outdir import MARKER

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "demo_sr_x4.yaml"
NIFTI = samples_dir("colin27") / "colin27" / "axial.nii.gz"
CKPT = ROOT / "src" / "meddiff" / "checkpoints" / "demo_sr_x4.safetensors"


def _marked(folder: Path, verb: str, **files: bytes) -> Path:
    """A folder meddiff's `verb` wrote (its marker) holding `files` (relative path -> bytes)."""
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(json.dumps({"written_by": "meddiff", "verb": verb}))
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def _study(t: Path) -> Path:
    return _marked(t / "study", "study create", **{"study.sqlite": b"SQLite format 3\0" + b"x" * 100, "images/a.png": b"p"})


def _run(t: Path) -> Path:
    return _marked(t / "run", "train", **{"checkpoints/step_0000001/model.safetensors": b"w" * 64, "checkpoints/latest": b"step_0000001\n"})


def _prepared(t: Path) -> Path:
    return _marked(t / "prep", "prepare", **{"manifest.csv": b"a,b\n", "train.npy": b"x"})


def _sampled(t: Path) -> Path:
    return _marked(t / "samp", "sample", **{"a_restored.nii.gz": b"x"})


def _pngs(t: Path, n: int = 2) -> Path:
    from PIL import Image

    d = t / "imgs"
    for k in range(n):
        (d / f"p{k}").mkdir(parents=True)
        a = np.zeros((32, 32), np.uint8)
        a[8:24, 8:24] = 200 + k
        Image.fromarray(a).save(d / f"p{k}" / "img.png")
    return d


def _sample(t: Path, inp: Path, out: Path | None = None, *extra: str) -> list[str]:
    return ["sample", "--method", "median", "--input", str(inp), "--output", str(out or t / "out"), "--no-progress", *extra]


CASES = {
    # D1: --overwrite replaces only a folder the same verb wrote
    "D1_prepare_overwrite_study": lambda t: (["prepare", str(_pngs(t)), str(_study(t)), "--overwrite", "--no-progress"],
                                             "study.sqlite"),
    "D1_prepare_overwrite_train_run": lambda t: (["prepare", str(_pngs(t)), str(_run(t)), "--overwrite", "--no-progress"],
                                                 "checkpoints"),
    "D1_prepare_overwrite_sample_folder": lambda t: (["prepare", str(_pngs(t)), str(_sampled(t)), "--overwrite",
                                                      "--no-progress"], "meddiff sample"),
    "D1_sample_overwrite_study": lambda t: (_sample(t, NIFTI, _study(t), "--overwrite"), "study.sqlite"),
    "D1_sample_overwrite_prepared": lambda t: (_sample(t, NIFTI, _prepared(t), "--overwrite"), "meddiff prepare"),
    "D1_sample_overwrite_train_run": lambda t: (_sample(t, NIFTI, _run(t), "--overwrite"), "checkpoints"),
    "D1_degrade_overwrite_study": lambda t: (["degrade", "-i", str(NIFTI), "-o", str(_study(t)), "--overwrite"], "study.sqlite"),
    "D1_evaluate_overwrite_study": lambda t: (["evaluate", "--pred", f"m={NIFTI.parent}", "--truth", str(NIFTI.parent),
                                               "--out", str(_study(t)), "--overwrite"], "study.sqlite"),
    "D1_evaluate_overwrite_sample": lambda t: (["evaluate", "--pred", f"m={NIFTI.parent}", "--truth", str(NIFTI.parent),
                                                "--out", str(_sampled(t)), "--overwrite"], "meddiff sample"),
    "D1_train_into_prepared": lambda t: (["train", "--config", str(CONFIG), "--out", str(_prepared(t))], "meddiff prepare"),
    "D1_train_into_study": lambda t: (["train", "--config", str(CONFIG), "--out", str(_study(t))], "study.sqlite"),
    "D1_old_marker_study": lambda t: (["prepare", str(_pngs(t)), str(_marked(t / "s", "", **{"study.sqlite": b"x"})),
                                       "--overwrite", "--no-progress"], "study.sqlite"),
    # a run that fails leaves nothing (no marker, no logs)
    "fail_train_negative_lr": lambda t: (["train", "--config", str(CONFIG), "train.lr=-1", "--out", str(t / "o")], "lr"),
    "fail_train_missing_prepared": lambda t: (["train", "--config", str(CONFIG), f"data.prepared={t / 'none'}",
                                               "--out", str(t / "o")], "none"),
    # S12 / T6 / T7 / T8: configs
    "S12_yaml_duplicate_section": lambda t: (_cfg(t, "train:\n  steps: 7\nmodel:\n  dropout: 0.1\ntrain:\n  lr: 0.001\n"),
                                             "'train' is given twice"),
    "S12_yaml_duplicate_key": lambda t: (_cfg(t, "train:\n  steps: 7\n  steps: 9\n"), "'steps' is given twice"),
    "T6_yaml_deep_nesting": lambda t: (_cfg(t, "a: " + "[" * 20000 + "]" * 20000 + "\n"), "nested more than"),
    "T6_yaml_deep_mapping": lambda t: (_cfg(t, "".join("  " * k + f"k{k}:\n" for k in range(200)) + "  " * 200 + "v: 1\n"),
                                       "nested more than"),
    "T7_yaml_alias_bomb": lambda t: (_cfg(t, "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))), "alias *a"),
    "T8_norm_groups_zero": lambda t: (_train(t, "model.norm_groups=0"), "model.norm_groups"),
    "T8_channels_empty": lambda t: (_train(t, "model.channels=[]", "model.attention_levels=[]"), "model.channels"),
    "T8_channels_negative": lambda t: (_train(t, "model.channels=[-16,32,64]"), "model.channels"),
    "T8_dropout_two": lambda t: (_train(t, "model.dropout=2.0"), "model.dropout"),
    "T8_num_heads_not_dividing": lambda t: (_train(t, "model.num_heads=3"), "model.num_heads"),
    "T8_num_heads_zero": lambda t: (_train(t, "model.num_heads=0"), "model.num_heads"),
    "T8_timesteps_huge": lambda t: (_train(t, "diffusion.timesteps=10000000000"), "diffusion.timesteps"),
    "T8_num_res_blocks_zero": lambda t: (_train(t, "model.num_res_blocks=0"), "model.num_res_blocks"),
    "T8_lr_nan": lambda t: (_train(t, "train.lr=.nan"), "train.lr"),
    "T8_lr_zero": lambda t: (_train(t, "train.lr=0"), "train.lr"),
    "T8_weight_decay_negative": lambda t: (_train(t, "train.weight_decay=-1"), "train.weight_decay"),
    "T8_betas_above_one": lambda t: (_train(t, "train.betas=[0.9,1.5]"), "train.betas"),
    "T8_ema_decay_above_one": lambda t: (_train(t, "train.ema_decay=2"), "train.ema_decay"),
    "T8_grad_clip_negative": lambda t: (_train(t, "train.grad_clip=-1"), "train.grad_clip"),
    "T8_log_every_zero": lambda t: (_train(t, "train.log_every=0"), "train.log_every"),
    "T8_ckpt_every_zero": lambda t: (_train(t, "train.ckpt_every=0"), "train.ckpt_every"),
    "T8_keep_last_negative": lambda t: (_train(t, "train.keep_last=-1"), "train.keep_last"),
    "T8_data_size_zero": lambda t: (_train(t, "data.size=0"), "data.size"),
    "T9_garbage_train_npy": lambda t: (_train(t, f"data.prepared={_garbage_prepared(t)}"), "train.npy"),
    # T1: text in DICOM numeric tags, a one-value PixelSpacing
    "T1_pixel_spacing_text": lambda t: (_sample(t, _ct(t, PixelSpacing="abc\\def")), "PixelSpacing"),
    "T1_pixel_spacing_one_value": lambda t: (_sample(t, _ct(t, PixelSpacing="0.5")), "PixelSpacing"),
    "T1_rescale_slope_text": lambda t: (_sample(t, _ct(t, RescaleSlope="abc")), "RescaleSlope"),
    "T1_rescale_intercept_text": lambda t: (_sample(t, _ct(t, RescaleIntercept="x1")), "RescaleIntercept"),
    "T1_slice_thickness_text": lambda t: (_sample(t, _ct(t, SliceThickness="thick")), "SliceThickness"),
    "T1_window_center_text": lambda t: (_sample(t, _ct(t, WindowCenter="mid", WindowWidth="400")), "WindowCenter"),
    "T1_orientation_text": lambda t: (_sample(t, _ct(t, ImageOrientationPatient="a\\b\\c\\d\\e\\f")), "ImageOrientationPatient"),
    "T1_position_text": lambda t: (_sample(t, _ct(t, ImagePositionPatient="x\\y\\z")), "ImagePositionPatient"),
    "T1_orientation_five_values": lambda t: (_sample(t, _ct(t, ImageOrientationPatient="1\\0\\0\\0\\1")), "ImageOrientationPatient"),
    "T1_series_spacing_text": lambda t: (_sample(t, _series(t, per_slice=_set(SliceThickness=["2", "two", "2"]))), "SliceThickness"),
    # T2 / S6: geometry validated when read
    "T2_pixel_spacing_inf": lambda t: (_sample(t, _ct(t, PixelSpacing="inf\\inf")), "PixelSpacing"),
    "T2_pixel_spacing_nan": lambda t: (_sample(t, _ct(t, PixelSpacing="nan\\1")), "PixelSpacing"),
    "T2_orientation_zero": lambda t: (_sample(t, _ct(t, ImageOrientationPatient=[0, 0, 0, 0, 0, 0])), "ImageOrientationPatient"),
    "T2_position_inf": lambda t: (_sample(t, _ct(t, ImagePositionPatient=["inf", 0, 0])), "ImagePositionPatient"),
    "S6_orientation_parallel": lambda t: (_sample(t, _ct(t, ImageOrientationPatient=[1, 0, 0, 1, 0, 0])), "ImageOrientationPatient"),
    "S6_orientation_not_unit": lambda t: (_sample(t, _ct(t, ImageOrientationPatient=[2, 0, 0, 0, 1, 0])), "ImageOrientationPatient"),
    "T2_nifti_nan_affine": lambda t: (_sample(t, _nifti_affine(t, [np.nan, 0, 0, 0])), "geo.nii"),
    "T2_nifti_singular_affine": lambda t: (_sample(t, _nifti_affine(t, [0, 0, 0, 0])), "geo.nii"),
    "T2_npz_zero_spacing_to_dicom": lambda t: (_sample(t, _npz(t, "z.npz", image=np.random.rand(8, 8), spacing=np.zeros(2)), None,
                                                       "--format", "dicom"), "z.npz"),
    # S2 / S7: series that are not one image
    "S2_mixed_pixel_spacing": lambda t: (_sample(t, _series(t, per_slice=_set(PixelSpacing=[[0.5, 0.5], [1, 1], [0.5, 0.5]]))),
                                         "PixelSpacing"),
    "S7_mixed_modality": lambda t: (_sample(t, _series(t, per_slice=_set(Modality=["MR", "CT", "MR"]))), "Modality"),
    "M3_mixed_bits_allocated": lambda t: (_sample(t, _series(t, per_slice=_bits_8)), "BitsAllocated"),
    # S5 / T4 / T5: NumPy files
    "S5_npz_negative_spacing": lambda t: (_sample(t, _npz(t, "n.npz", image=np.random.rand(8, 8), spacing=np.array([-1.0, 1.0]))), "n.npz"),
    "S5_npz_nan_spacing": lambda t: (_sample(t, _npz(t, "n.npz", image=np.random.rand(8, 8), spacing=np.array([np.nan, 1.0]))), "n.npz"),
    "S5_npz_spacing_wrong_length": lambda t: (_sample(t, _npz(t, "n.npz", image=np.random.rand(8, 8), spacing=np.ones(5))), "n.npz"),
    "T4_npy_zero_dim": lambda t: (_sample(t, _npy(t, "s.npy", np.float32(3))), "s.npy"),
    "T4_npy_one_dim": lambda t: (_sample(t, _npy(t, "v.npy", np.arange(10.0))), "v.npy"),
    "T5_npz_object_dtype": lambda t: (np.savez(t / "o.npz", image=np.array([[{"a": 1}]], dtype=object)) or
                                      _sample(t, t / "o.npz"), "o.npz"),
    "T5_npz_bad_crc": lambda t: (_sample(t, _bad_crc_npz(t)), "crc.npz"),
    "T5_npz_string_spacing": lambda t: (_sample(t, _npz(t, "s.npz", image=np.random.rand(8, 8), spacing=np.array(["a", "b"]))), "s.npz"),
    "T5_npy_string_dtype": lambda t: (_sample(t, _npy(t, "str.npy", np.array([["a", "b"], ["c", "d"]]))), "str.npy"),
    # T3: PNG text chunk
    "T3_png_window_malformed": lambda t: (_sample(t, _png_window(t, "not numbers")), "w.png"),
    "T3_png_window_reversed": lambda t: (_sample(t, _png_window(t, "5 1")), "w.png"),
    # S3 / S4 / M7: TIFF
    "S4_tiff_pages_differ": lambda t: (_tiff_pages(t, [(8, 8), (4, 4)]) and _sample(t, t / "p.tif"), "p.tif"),
    "M7_tiff_gray_alpha": lambda t: (tifffile.imwrite(t / "ga.tif", np.ones((8, 8, 2), np.uint8), photometric="minisblack",
                                                      extrasamples=["unassalpha"]) or _sample(t, t / "ga.tif"), "ga.tif"),
    # S8 / S9 / S10 / T11 / T12 / M2 / M5 / M6
    "S8_degrade_factor_too_large": lambda t: (["degrade", "-i", str(_npy(t, "small.npy", np.random.rand(16, 16))), "-o",
                                               str(t / "o"), "--task", "sr", "--factor", "64"], "--factor 64"),
    "S9_study_real_is_method": lambda t: (["study", "create", str(t / "st"), "--real", str(_pngs(t)), "--method", f"m={t / 'imgs'}"],
                                          "imgs"),
    "S10_study_inside_real": lambda t: (["study", "create", str(_pngs(t) / "st"), "--real", str(t / "imgs"), "--method",
                                         f"m={NIFTI.parent}"], "imgs"),
    "T11_seed_negative": lambda t: (_sample(t, NIFTI, None, "--seed", "-1"), "--seed -1"),
    "T12_symlink_loop_input": lambda t: (_sample(t, _symlink_loop(t)), "loop"),
    "M2_truncated_dicom": lambda t: (_sample(t, _truncated(t)), "truncated"),
    "M5_output_is_fifo": lambda t: (_sample(t, NIFTI, _fifo(t)), "FIFO"),
    "S11_degrade_unconditional_vdm": lambda t: (["degrade", "-i", str(NIFTI), "-o", str(t / "o"), "--checkpoint",
                                                 str(_vdm_file(t))], "unconditional VDM"),
    "T10_samples_beyond_memory": lambda t: (["sample", "--checkpoint", str(CKPT), "-i", str(NIFTI), "-o", str(t / "o"),
                                             "--samples", "100000000", "--no-progress"], "--samples 100000000"),
    "M6_device_banana": lambda t: (["sample", "--method", "median", "-i", str(NIFTI), "-o", str(t / "o"),
                                    "--device", "banana", "--no-progress"], "--device banana"),
}


def _vdm_file(t: Path) -> Path:
    """A model file whose metadata is that of an unconditional VDM (weights are not read by degrade)."""
    import torch
    import yaml
    from safetensors.torch import save_file

    from meddiff import config as config_mod

    cfg = config_mod.from_dict({"objective": "vdm", "model": {"channels": [16], "attention_levels": [False], "norm_groups": 4}})
    save_file({"w": torch.zeros(1)}, str(t / "vdm.safetensors"),
              metadata={"format": "meddiff-vdm-v1", "config": yaml.safe_dump(config_mod.to_dict(cfg))})
    return t / "vdm.safetensors"


def _bits_8(k: int, ds) -> None:
    if k == 1:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelRepresentation = 0
        ds.PixelData = (ds.pixel_array // 256).astype(np.uint8).tobytes() if False else bytes(ds.Rows * ds.Columns)


def _tiff_pages(t: Path, shapes) -> bool:
    with tifffile.TiffWriter(t / "p.tif") as w:
        for shp in shapes:
            w.write(np.ones(shp, np.uint16), photometric="minisblack")
    return True


def _truncated(t: Path) -> Path:
    data = CT.read_bytes()
    (t / "cut.dcm").write_bytes(data[: len(data) - 20000])
    return t / "cut.dcm"


CT = Path(get_testdata_file("CT_small.dcm"))
MR = Path(get_testdata_file("MR_small.dcm"))


def _ct(t: Path, name: str = "bad.dcm", **tags) -> Path:
    return broken_ct(t / name, tags, values_as_text=True)


def _series(t: Path, n: int = 3, per_slice=None, name: str = "series") -> Path:
    """n single-frame slices of MR_small 2 mm apart; per_slice(k, ds) edits slice k."""
    folder = t / name
    folder.mkdir(parents=True)
    uid = pydicom.uid.generate_uid()
    for k in range(n):
        ds = pydicom.dcmread(MR)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = k + 1
        if per_slice is not None:
            per_slice(k, ds)
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
        ds.save_as(folder / f"s{k}.dcm", implicit_vr=True, little_endian=True)
    return folder


def _set(**tags):
    def edit(k, ds):
        from pydicom.dataelem import DataElement
        from pydicom.datadict import tag_for_keyword

        for key, values in tags.items():
            if isinstance(values[k], str):
                ds[tag_for_keyword(key)] = DataElement(tag_for_keyword(key), "LO", values[k])
            else:
                setattr(ds, key, values[k])
    return edit


def _npy(t: Path, name: str, arr) -> Path:
    np.save(t / name, arr, allow_pickle=False)
    return t / name


def _npz(t: Path, name: str, **arrays) -> Path:
    np.savez(t / name, **arrays)
    return t / name


def _nifti_affine(t: Path, srow_x) -> Path:
    """A NIfTI whose sform row x is `srow_x` (patched into the header: nibabel would rewrite it on save)."""
    img = nib.Nifti1Image(np.arange(64, dtype=np.float32).reshape(4, 4, 4), np.eye(4))
    img.header.set_qform(None, code=0)
    nib.save(img, str(t / "geo.nii"))
    data = bytearray((t / "geo.nii").read_bytes())
    data[280:296] = np.asarray(srow_x, "<f4").tobytes()  # srow_x: bytes 280..295 of a NIfTI-1 header
    (t / "geo.nii").write_bytes(bytes(data))
    return t / "geo.nii"


def _bad_crc_npz(t: Path) -> Path:
    path = _npz(t, "crc.npz", image=np.arange(64, dtype=np.float32).reshape(8, 8))
    data = bytearray(path.read_bytes())
    at = data.find(b"\x93NUMPY") + 200
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _png_window(t: Path, text: str) -> Path:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("meddiff_window", text)
    Image.fromarray((np.arange(256).reshape(16, 16)).astype(np.uint8)).save(t / "w.png", pnginfo=info)
    return t / "w.png"


def _symlink_loop(t: Path) -> Path:
    (t / "loop").symlink_to(t / "loop")
    return t / "loop"


def _fifo(t: Path) -> Path:
    os.mkfifo(t / "fifo")
    return t / "fifo"


def _garbage_prepared(t: Path) -> Path:
    import shutil

    d = t / "prep"
    d.mkdir()
    (d / "manifest.csv").write_text("split,index,case_id,patient_id\n")
    (d / "normalisation.json").write_text('{"patients": {}}')
    for split in ("train", "val", "test"):
        (d / f"{split}.npy").write_bytes(b"garbage, not an npy file" * 10)
    (d / MARKER).write_text(json.dumps({"written_by": "meddiff", "verb": "prepare"}))
    del shutil
    return d


def _cfg(t: Path, text: str) -> list[str]:
    (t / "c.yaml").write_text(text)
    return ["train", "--config", str(t / "c.yaml"), "--out", str(t / "o")]


def _train(t: Path, *overrides: str) -> list[str]:
    return ["train", "--config", str(CONFIG), *overrides, "--out", str(t / "o")]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_round2(case, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, named = CASES[case](tmp_path)
    assert_refused_cleanly(case, argv, named, tmp_path, capsys, caplog)


def test_overwrite_of_own_verb_still_works(tmp_path):
    out = tmp_path / "out"
    assert main(_sample(tmp_path, NIFTI, out)) == 0
    assert main(_sample(tmp_path, NIFTI, out, "--overwrite")) == 0
    assert json.loads((out / MARKER).read_text())["verb"] == "sample"


def test_folder_with_only_leftover_temporaries_is_accepted(tmp_path):
    """K1: a kill during the marker write leaves `.meddiff-output.json.XXXX.tmp`; a plain re-run accepts the folder."""
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{MARKER}.abc123.tmp.json").write_text("{")
    (out / ".axial_restored.nii.gz.k2j3.tmp.nii.gz").write_bytes(b"half")
    assert main(_sample(tmp_path, NIFTI, out)) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [MARKER]
