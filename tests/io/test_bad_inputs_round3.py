"""Bad inputs, round three (issue 28: the misleading errors M2, M4, M8 and the rest of the >= 200 kinds): every
case exits with code 2, prints one message naming the bad file or value, prints no traceback and leaves the
folder holding the case's files exactly as it was (nothing written, nothing deleted). Cases run in-process and
fail before any model is sampled; each is a kind of bad input not in tests/test_bad_inputs.py or
tests/io/test_bad_inputs_round2.py.

A case builds its files under `tmp_path` and returns (argv, text the message must contain). A value argparse
itself refuses (text for an integer flag, an unknown choice) exits through SystemExit(2), counted the same.
"""

from __future__ import annotations

import gzip
import struct
import zlib
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

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "demo_sr_x4.yaml"
NIFTI = samples_dir("colin27") / "colin27" / "axial.nii.gz"
CKPT = ROOT / "src" / "meddiff" / "checkpoints" / "demo_sr_x4.safetensors"
CT = Path(get_testdata_file("CT_small.dcm"))
MR = Path(get_testdata_file("MR_small.dcm"))
CT_PIXEL_BYTES = 128 * 128 * 2  # Rows x Columns x SamplesPerPixel x BitsAllocated/8 of CT_small


def _sample(t: Path, inp: Path, out: Path | None = None, *extra: str) -> list[str]:
    return ["sample", "--method", "median", "--input", str(inp), "--output", str(out or t / "out"), "--no-progress", *extra]


def _sr(t: Path, inp: Path, *extra: str) -> list[str]:
    """`meddiff sample --checkpoint demo_sr_x4`: the model is loaded, the input refused before any network call."""
    return ["sample", "--checkpoint", "demo_sr_x4", "-i", str(inp), "-o", str(t / "out"), "--no-progress", *extra]


def _with_checkpoint(t: Path, ckpt: Path) -> list[str]:
    return ["sample", "--checkpoint", str(ckpt), "-i", str(NIFTI), "-o", str(t / "out"), "--no-progress"]


def _degrade(t: Path, *extra: str) -> list[str]:
    return ["degrade", "-i", str(NIFTI), "-o", str(t / "o"), *extra]


def _train(t: Path, *overrides: str) -> list[str]:
    return ["train", "--config", str(CONFIG), *overrides, "--out", str(t / "o")]


def _cfg(t: Path, text: str) -> list[str]:
    (t / "c.yaml").write_text(text)
    return ["train", "--config", str(t / "c.yaml"), "--out", str(t / "o")]


CASES = {
    # M2: a truncated DICOM names the file, the pixel bytes expected and those present
    "M2_truncated_half_in_folder": lambda t: (_sr(t, _cut(t, CT, len(CT.read_bytes()) // 2, "in/ct.dcm").parent),
                                              f"expected {CT_PIXEL_BYTES} bytes"),
    "M2_truncated_before_pixel_data": lambda t: (_sample(t, _cut(t, CT, 6000)), "truncated"),
    "M2_pixel_data_shorter_than_rows": lambda t: (_sample(t, _ct(t, Rows=200)), f"{200 * 128 * 2} bytes"),
    # M4: non-finite weights are the checkpoint's fault
    "M4_nan_weights": lambda t: (_with_checkpoint(t, _bad_weights(t, float("nan"))), "nan.safetensors"),
    "M4_inf_weights_named": lambda t: (_with_checkpoint(t, _bad_weights(t, float("inf"), "inf.safetensors")), "conv_out.weight"),
    # M8: export names the destination given, not its temporary file
    "M8_export_unwritable": lambda t: (["export", "--checkpoint", "demo_sr_x4", "-o", "/proc/m.ts"], "-o /proc/m.ts"),
    "M8_export_to_folder": lambda t: ((t / "dir").mkdir() or ["export", "--checkpoint", "demo_sr_x4", "-o", str(t / "dir"),
                                                             "--overwrite"], "is a folder"),
    # DICOM image-pixel attributes
    "dicom_rows_text": lambda t: (_sample(t, _ct_explicit(t, Rows="abc")), "Rows"),
    "dicom_rows_zero": lambda t: (_sample(t, _ct(t, Rows=0)), "Rows"),
    "dicom_columns_missing": lambda t: (_sample(t, _ct(t, Columns=None)), "Columns"),
    "dicom_bits_stored_above_allocated": lambda t: (_sample(t, _ct(t, BitsStored=20, HighBit=19)), "BitsStored"),
    "dicom_bits_allocated_twelve": lambda t: (_sample(t, _ct(t, BitsAllocated=12)), "BitsAllocated"),
    "dicom_high_bit_wrong": lambda t: (_sample(t, _ct(t, HighBit=3)), "HighBit"),
    "dicom_pixel_representation_two": lambda t: (_sample(t, _ct(t, PixelRepresentation=2)), "PixelRepresentation"),
    "dicom_samples_per_pixel_zero": lambda t: (_sample(t, _ct(t, SamplesPerPixel=0)), "SamplesPerPixel"),
    "dicom_photometric_unknown": lambda t: (_sample(t, _ct(t, PhotometricInterpretation="BANANA")), "PhotometricInterpretation"),
    "dicom_number_of_frames_zero": lambda t: (_sample(t, _ct(t, NumberOfFrames="0")), "NumberOfFrames"),
    "dicom_number_of_frames_text": lambda t: (_sample(t, _ct(t, NumberOfFrames="many")), "NumberOfFrames"),
    "dicom_number_of_frames_too_many": lambda t: (_sample(t, _ct(t, NumberOfFrames="4")), "NumberOfFrames"),
    "dicom_pixel_spacing_negative": lambda t: (_sample(t, _ct(t, PixelSpacing="-0.5\\-0.5")), "PixelSpacing"),
    "dicom_window_width_zero": lambda t: (_sample(t, _ct(t, WindowCenter="40", WindowWidth="0")), "WindowWidth"),
    "dicom_rescale_slope_inf": lambda t: (_sample(t, _ct(t, RescaleSlope="inf")), "RescaleSlope"),
    "dicom_empty_file": lambda t: (_sample(t, _empty(t, "e.dcm")), "e.dcm"),
    "dicom_png_named_dcm": lambda t: (_sample(t, _png(t, "scan.dcm")), "scan.dcm"),
    # NIfTI
    "nifti_pixdim_zero": lambda t: (_sample(t, _nifti_pixdim(t, [0.0, 1.0, 1.0])), "pixdim.nii"),
    "nifti_pixdim_negative": lambda t: (_sample(t, _nifti_pixdim(t, [1.0, -1.0, 1.0])), "pixdim.nii"),
    "nifti_some_nan_voxels": lambda t: (_sample(t, _nifti(t, "pnan.nii.gz", _with(np.nan))), "pnan.nii.gz"),
    "nifti_inf_voxels": lambda t: (_sample(t, _nifti(t, "inf.nii.gz", _with(np.inf))), "inf.nii.gz"),
    "nifti_five_dims": lambda t: (_sample(t, _nifti(t, "five.nii.gz", np.ones((4, 4, 3, 1, 2), np.float32))), "five.nii.gz"),
    "nifti_qform_nan": lambda t: (_sample(t, _nifti_qform_nan(t)), "q.nii"),
    "nifti_gzip_cut": lambda t: (_sample(t, _cut(t, NIFTI, len(NIFTI.read_bytes()) // 2, "cut.nii.gz")), "cut.nii.gz"),
    "nifti_data_cut": lambda t: (_sample(t, _nifti_data_cut(t)), "short.nii"),
    "nifti_empty_uncompressed": lambda t: (_sample(t, _empty(t, "e.nii")), "e.nii"),
    "nifti_header_not_nifti": lambda t: (_sample(t, _bytes(t, "h.nii", b"\x00" * 400)), "h.nii"),
    "nifti_gzip_of_text": lambda t: (_sample(t, _bytes(t, "t.nii.gz", gzip.compress(b"not a nifti header" * 40))), "t.nii.gz"),
    "nifti_dicom_named_nii": lambda t: (_sample(t, _bytes(t, "ct.nii.gz", CT.read_bytes())), "ct.nii.gz"),
    # PNG / TIFF / NumPy / other rasters
    "png_empty": lambda t: (_sample(t, _empty(t, "e.png")), "e.png"),
    "png_16bit_gray_alpha": lambda t: (_sample(t, _png16_alpha(t)), "ga16.png"),
    "png_nifti_named_png": lambda t: (_sample(t, _bytes(t, "n.png", NIFTI.read_bytes())), "n.png"),
    "tiff_empty": lambda t: (_sample(t, _empty(t, "e.tif")), "e.tif"),
    "tiff_float_nan": lambda t: (_sample(t, _tiff(t, "nan.tif", _with(np.nan)[0])), "nan.tif"),
    "tiff_five_dims": lambda t: (_sample(t, _tiff(t, "five.tif", np.ones((2, 2, 3, 8, 8), np.uint8))), "five.tif"),
    "npy_empty": lambda t: (_sample(t, _empty(t, "e.npy")), "e.npy"),
    "npy_zero_size": lambda t: (_sample(t, _npy(t, "z.npy", np.ones((0, 8), np.float32))), "z.npy"),
    "npz_empty": lambda t: (_sample(t, _empty(t, "e.npz")), "e.npz"),
    "jpeg_cut": lambda t: (_sample(t, _jpeg_cut(t)), "cut.jpg"),
    "suffix_unknown": lambda t: (_sample(t, _bytes(t, "scan.xyz", b"data")), "scan.xyz"),
    # configs
    "config_unknown_section": lambda t: (_cfg(t, "nosuch:\n  a: 1\n"), "nosuch"),
    "config_section_not_mapping": lambda t: (_cfg(t, "train: 5\n"), "train"),
    "config_empty_file": lambda t: (_cfg(t, ""), "c.yaml"),
    "config_channels_text": lambda t: (_train(t, "model.channels=abc"), "model.channels"),
    "config_betas_one_value": lambda t: (_train(t, "train.betas=[0.9]"), "train.betas"),
    "config_steps_negative": lambda t: (_train(t, "train.steps=-5"), "train.steps"),
    "config_steps_bool": lambda t: (_train(t, "train.steps=true"), "train.steps"),
    "config_batch_size_zero": lambda t: (_train(t, "train.batch_size=0"), "train.batch_size"),
    "config_schedule_unknown": lambda t: (_train(t, "diffusion.schedule=banana"), "banana"),
    "config_objective_unknown": lambda t: (_train(t, "objective=banana"), "banana"),
    "config_attention_levels_length": lambda t: (_train(t, "model.attention_levels=[true]"), "model.attention_levels"),
    "config_override_without_value": lambda t: (_train(t, "train.steps"), "train.steps"),
    "config_override_unknown_section": lambda t: (_train(t, "nosuch.key=1"), "nosuch"),
    # command-line values
    "cli_num_zero": lambda t: (["sample", "--checkpoint", "xray_vdm64", "-o", str(t / "out"), "--num", "0"], "--num 0"),
    "cli_factor_zero": lambda t: (_degrade(t, "--task", "sr", "--factor", "0"), "--factor 0"),
    "cli_factor_negative": lambda t: (_degrade(t, "--task", "sr", "--factor", "-2"), "--factor -2"),
    "cli_factor_nan": lambda t: (_degrade(t, "--task", "sr", "--factor", "nan"), "--factor nan"),
    "cli_noise_std_reversed": lambda t: (_degrade(t, "--task", "denoise", "--noise-std", "0.2", "0.1"), "--noise-std"),
    "cli_max_memory_junk": lambda t: (_sample(t, NIFTI, None, "--max-memory", "lots"), "lots"),
    "cli_device_cuda_index": lambda t: (_sample(t, NIFTI, None, "--device", "cuda:99"), "cuda:99"),
    "cli_seed_text": lambda t: (_sample(t, NIFTI, None, "--seed", "abc"), "'abc'"),
    "cli_format_unknown": lambda t: (_sample(t, NIFTI, None, "--format", "jpeg2000"), "jpeg2000"),
    "cli_sr_factor_nan": lambda t: (["sample", "--method", "bicubic", "-i", str(NIFTI), "-o", str(t / "out"),
                                     "--sr-factor", "nan", "--no-progress"], "--sr-factor nan"),
    "cli_axis_out_of_range": lambda t: (_sample(t, NIFTI, None, "--axis", "5"), "--axis 5"),
    "cli_clip_percentiles_reversed": lambda t: (_sample(t, NIFTI, None, "--clip-percentiles", "99", "1"), "--clip-percentiles"),
    "cli_tile_overlap_above_size": lambda t: (_sr(t, NIFTI, "--tile-size", "32", "--tile-overlap", "64"), "--tile-overlap"),
    # checkpoint files
    "checkpoint_empty_file": lambda t: (_with_checkpoint(t, _empty(t, "e.safetensors")), "e.safetensors"),
    "checkpoint_wrong_format_tag": lambda t: (_with_checkpoint(t, _retagged(t, format="other-v9")), "re.safetensors"),
    "checkpoint_no_config": lambda t: (_with_checkpoint(t, _retagged(t, config=None)), "re.safetensors"),
    "checkpoint_config_not_yaml": lambda t: (_with_checkpoint(t, _retagged(t, config="a: [1,\n")), "re.safetensors"),
    "checkpoint_missing_tensor": lambda t: (_with_checkpoint(t, _retagged(t, drop="conv_out.weight")), "re.safetensors"),
    "checkpoint_empty_folder": lambda t: ((t / "ck").mkdir() or _with_checkpoint(t, t / "ck"), "ck"),
    "checkpoint_unknown_name": lambda t: (_with_checkpoint(t, Path("no_such_model")), "no_such_model"),
    # evaluate / study / prepare inputs
    "evaluate_pred_no_images": lambda t: (_evaluate(t, pred={"notes.txt": b"x"}, truth={"a.npy": _npy_bytes((8, 8))}), "pred"),
    "evaluate_shapes_differ": lambda t: (_evaluate(t, pred={"a.npy": _npy_bytes((8, 8))}, truth={"a.npy": _npy_bytes((16, 16))}),
                                         "a.npy"),
    "evaluate_no_common_names": lambda t: (_evaluate(t, pred={"a.npy": _npy_bytes((8, 8))}, truth={"b.npy": _npy_bytes((8, 8))}),
                                           "pred"),
    "study_real_no_images": lambda t: ((t / "real").mkdir() or ["study", "create", str(t / "st"), "--real", str(t / "real"),
                                                              "--method", f"m={NIFTI.parent}"], "real"),
    "study_method_no_images": lambda t: ((t / "gen").mkdir() or ["study", "create", str(t / "st"), "--real", str(NIFTI.parent),
                                                               "--method", f"m={t / 'gen'}"], "gen"),
    "prepare_folder_no_images": lambda t: ((t / "notes").mkdir() or (t / "notes" / "a.txt").write_text("x") and
                                           ["prepare", str(t / "notes"), str(t / "out"), "--no-progress"], "notes"),
    "prepare_split_all_zero": lambda t: (["prepare", str(NIFTI.parent), str(t / "out"), "--split", "0", "0", "0",
                                          "--no-progress"], "--split"),
    # round three, second batch
    "M2_truncated_compressed": lambda t: (_sample(t, _cut(t, JPEG2000, 3108)), "truncated"),
    "M2_truncated_slice_of_series": lambda t: (_sample(t, _series_one_cut(t)), "s1.dcm"),
    "M2_image_class_without_pixels": lambda t: (_sample(t, _cut(t, JPEG2000, 2308)), "a truncated file"),
    "dicom_dicomdir": lambda t: (_sample(t, _bytes(t, "DICOMDIR.dcm", Path(get_testdata_file("DICOMDIR")).read_bytes())),
                                 "Media Storage Directory"),
    "nifti_scl_slope_inf": lambda t: (_sample(t, _nifti_slope(t, np.inf)), "scl_slope"),
    "tiff_cut": lambda t: (_sample(t, _tiff_cut(t)), "c.tif"),
    "mask_empty_file": lambda t: (_inpaint(t, _empty(t, "m.png")), "m.png"),
    "mask_dilate_negative": lambda t: (_inpaint(t, _mask_png(t), "--mask-dilate", "-2"), "--mask-dilate -2"),
    "sample_interval_above_one": lambda t: (_sr(t, NIFTI, "--interval", "1.5"), "--interval 1.5"),
    "sample_eta_nan": lambda t: (_sr(t, NIFTI, "--sampler", "ddim", "--eta", "nan"), "--eta nan"),
    "sample_shard_beyond_count": lambda t: (_sample(t, NIFTI, None, "--shard", "3/2"), "--shard 3/2"),
    "sample_shard_text": lambda t: (_sample(t, NIFTI, None, "--shard", "a/b"), "--shard a/b"),
    "sample_samples_negative": lambda t: (_sr(t, NIFTI, "--samples", "-3"), "--samples -3"),
    "sample_steps_above_timesteps": lambda t: (_sr(t, NIFTI, "--steps", "100000"), "--steps 100000"),
    "sample_workers_without_ray": lambda t: (_sample(t, NIFTI, None, "--workers", "0"), "--workers"),
    "sample_retries_negative": lambda t: (_sample(t, NIFTI, None, "--retries", "-1"), "--retries -1"),
    "sample_label_without_vdm": lambda t: (_sr(t, NIFTI, "--label", "3"), "--label"),
    "prepare_spacing_zero": lambda t: (_prepare(t, "--mode", "volume", "--spacing", "0"), "--spacing"),
    "prepare_spacing_nan": lambda t: (_prepare(t, "--mode", "volume", "--spacing", "nan"), "--spacing"),
    "prepare_min_foreground_nan": lambda t: (_prepare(t, "--min-foreground", "nan"), "--min-foreground"),
    "prepare_size_beyond_memory": lambda t: (_prepare(t, "--size", "100000"), "--size 100000"),
    "evaluate_bootstrap_negative": lambda t: (_evaluate_same(t, "--bootstrap", "-1"), "--bootstrap"),
    "evaluate_data_range_zero": lambda t: (_evaluate_same(t, "--data-range", "0"), "--data-range"),
    "evaluate_data_range_text": lambda t: (_evaluate_same(t, "--data-range", "wide"), "wide"),
    "evaluate_patients_csv_missing": lambda t: (_evaluate_same(t, "--patients", str(t / "none.csv")), "none.csv"),
    "study_pairs_zero": lambda t: (_study(t, "--pairs", "0"), "--pairs 0"),
    "study_confidence_one": lambda t: (_study(t, "--confidence", "1"), "--confidence 1"),
    "study_window_junk": lambda t: (_study(t, "--window", "wide"), "wide"),
    "study_readers_zero": lambda t: (_study(t, "--readers", "0"), "--readers 0"),
    "train_path_as_override": lambda t: (["train", "--config", str(CONFIG), "--resume", str(t / "norun")], "norun"),
}


JPEG2000 = Path(get_testdata_file("JPEG2000.dcm"))


def _prepare(t: Path, *extra: str) -> list[str]:
    return ["prepare", str(NIFTI.parent), str(t / "out"), "--no-progress", *extra]


def _inpaint(t: Path, mask: Path, *extra: str) -> list[str]:
    return ["sample", "--method", "biharmonic", "-i", str(NIFTI), "-o", str(t / "out"), "--mask", str(mask), "--no-progress",
            *extra]


def _study(t: Path, *extra: str) -> list[str]:
    (t / "gen").mkdir()
    (t / "gen" / "axial.nii.gz").write_bytes(NIFTI.read_bytes())
    return ["study", "create", str(t / "st"), "--real", str(NIFTI.parent), "--method", f"m={t / 'gen'}", *extra]


def _evaluate_same(t: Path, *extra: str) -> list[str]:
    return [*_evaluate(t, pred={"a.npy": _npy_bytes((8, 8))}, truth={"a.npy": _npy_bytes((8, 8))}), *extra]


def _mask_png(t: Path) -> Path:
    from PIL import Image

    Image.fromarray(np.ones((181, 217), np.uint8)).save(t / "m.png")
    return t / "m.png"


def _series_one_cut(t: Path) -> Path:
    """Three slices of MR_small 2 mm apart; the middle one lost its last 3,000 bytes."""
    (t / "ser").mkdir()
    for k in range(3):
        ds = pydicom.dcmread(MR)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.InstanceNumber = k + 1
        ds.save_as(t / "ser" / f"s{k}.dcm")
    data = (t / "ser" / "s1.dcm").read_bytes()
    (t / "ser" / "s1.dcm").write_bytes(data[: len(data) - 3000])
    return t / "ser"


def _nifti_slope(t: Path, slope: float) -> Path:
    nib.save(nib.Nifti1Image(np.arange(256, dtype=np.int16).reshape(4, 8, 8), np.eye(4)), str(t / "sl.nii"))
    data = bytearray((t / "sl.nii").read_bytes())
    data[112:116] = np.asarray([slope], "<f4").tobytes()  # scl_slope: bytes 112..115 of a NIfTI-1 header
    (t / "sl.nii").write_bytes(bytes(data))
    return t / "sl.nii"


def _tiff_cut(t: Path) -> Path:
    tifffile.imwrite(t / "f.tif", np.random.default_rng(0).random((64, 64)).astype(np.float32))
    data = (t / "f.tif").read_bytes()
    (t / "f.tif").unlink()
    return _bytes(t, "c.tif", data[:2000])


def _cut(t: Path, src: Path, n: int, name: str = "cut.dcm") -> Path:
    (t / name).parent.mkdir(parents=True, exist_ok=True)
    (t / name).write_bytes(src.read_bytes()[:n])
    return t / name


def _bytes(t: Path, name: str, data: bytes) -> Path:
    (t / name).write_bytes(data)
    return t / name


def _empty(t: Path, name: str) -> Path:
    return _bytes(t, name, b"")


def _ct(t: Path, name: str = "bad.dcm", **tags) -> Path:
    return broken_ct(t / name, tags, values_as_text=False)


def _ct_explicit(t: Path, **tags: str) -> Path:
    """CT_small in explicit VR with `tags` stored as LO text (a US attribute holding text)."""
    from pydicom.datadict import tag_for_keyword
    from pydicom.dataelem import DataElement

    ds = pydicom.dcmread(CT)
    for k, v in tags.items():
        ds[tag_for_keyword(k)] = DataElement(tag_for_keyword(k), "LO", v)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.save_as(t / "explicit.dcm", implicit_vr=False, little_endian=True)
    return t / "explicit.dcm"


def _png(t: Path, name: str) -> Path:
    from PIL import Image

    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(t / name, format="PNG")
    return t / name


def _png16_alpha(t: Path) -> Path:
    """A 16-bit gray + alpha PNG (colour type 4), written chunk by chunk (Pillow cannot write one)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h = w = 8
    px = np.zeros((h, w, 2), ">u2")
    px[..., 0], px[..., 1] = np.arange(h * w).reshape(h, w) * 1000, 65535
    raw = b"".join(b"\x00" + px[y].tobytes() for y in range(h))
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return _bytes(t, "ga16.png", data)


def _jpeg_cut(t: Path) -> Path:
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(t / "full.jpg", quality=90)
    data = (t / "full.jpg").read_bytes()
    (t / "full.jpg").unlink()
    return _bytes(t, "cut.jpg", data[: len(data) // 3])


def _tiff(t: Path, name: str, arr: np.ndarray) -> Path:
    tifffile.imwrite(t / name, arr)
    return t / name


def _npy(t: Path, name: str, arr) -> Path:
    np.save(t / name, arr, allow_pickle=False)
    return t / name


def _npy_bytes(shape) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.random.default_rng(0).random(shape).astype(np.float32))
    return buf.getvalue()


def _with(value: float) -> np.ndarray:
    a = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    a[0, 3, 4] = value
    return a


def _nifti(t: Path, name: str, arr: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(t / name))
    return t / name


def _nifti_pixdim(t: Path, zooms) -> Path:
    """A NIfTI without qform/sform (geometry from pixdim) whose pixdim[1:4] are `zooms` (patched in the header)."""
    img = nib.Nifti1Image(np.random.default_rng(0).random((4, 8, 8)).astype(np.float32), None)
    img.header.set_qform(None, code=0)
    img.header.set_sform(None, code=0)
    nib.save(img, str(t / "pixdim.nii"))
    data = bytearray((t / "pixdim.nii").read_bytes())
    data[80:92] = np.asarray(zooms, "<f4").tobytes()  # pixdim[1..3]: bytes 80..91 of a NIfTI-1 header
    (t / "pixdim.nii").write_bytes(bytes(data))
    return t / "pixdim.nii"


def _nifti_qform_nan(t: Path) -> Path:
    img = nib.Nifti1Image(np.random.default_rng(0).random((4, 8, 8)).astype(np.float32), np.eye(4))
    img.header.set_sform(None, code=0)
    img.header.set_qform(np.eye(4), code=1)
    nib.save(img, str(t / "q.nii"))
    data = bytearray((t / "q.nii").read_bytes())
    data[256:260] = np.asarray([np.nan], "<f4").tobytes()  # quatern_b: bytes 256..259
    (t / "q.nii").write_bytes(bytes(data))
    return t / "q.nii"


def _nifti_data_cut(t: Path) -> Path:
    nib.save(nib.Nifti1Image(np.ones((8, 16, 16), np.float32), np.eye(4)), str(t / "full.nii"))
    data = (t / "full.nii").read_bytes()
    (t / "full.nii").unlink()
    return _bytes(t, "short.nii", data[:352 + 1000])


def _bad_weights(t: Path, value: float, name: str = "nan.safetensors") -> Path:
    """The shipped demo_sr_x4 model with one weight of conv_out.weight set to `value`, metadata kept."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(CKPT), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["conv_out.weight"] = tensors["conv_out.weight"].clone()
    tensors["conv_out.weight"].view(-1)[0] = value
    save_file(tensors, str(t / name), metadata=meta)
    return t / name


def _retagged(t: Path, drop: str | None = None, **meta_changes) -> Path:
    """The shipped demo_sr_x4 model with metadata items changed (None removes) or a tensor dropped."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(CKPT), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys() if k != drop}
    for k, v in meta_changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    save_file(tensors, str(t / "re.safetensors"), metadata=meta)
    return t / "re.safetensors"


def _evaluate(t: Path, pred: dict[str, bytes], truth: dict[str, bytes]) -> list[str]:
    for folder, files in (("pred", pred), ("truth", truth)):
        (t / folder).mkdir()
        for name, data in files.items():
            (t / folder / name).write_bytes(data)
    return ["evaluate", "--pred", f"m={t / 'pred'}", "--truth", str(t / "truth"), "--out", str(t / "ev"), "--no-progress"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_round3(case, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, named = CASES[case](tmp_path)
    assert_refused_cleanly(case, argv, named, tmp_path, capsys, caplog)


def test_no_case_repeats_an_earlier_round():
    """Round three adds new kinds: no case name of the earlier files is reused."""
    earlier = (ROOT / "tests" / "test_bad_inputs.py").read_text() + (ROOT / "tests" / "io" / "test_bad_inputs_round2.py").read_text()
    assert not [name for name in CASES if f'"{name}"' in earlier]


def test_m2_truncated_dicom_names_file_and_bytes(tmp_path, capsys):
    """M2: CT_small cut to half its bytes, in a folder given to a model: the file, 'truncated', the pixel bytes
    expected (Rows x Columns x SamplesPerPixel x BitsAllocated/8) and those present; not "has no pixel data"."""
    data = CT.read_bytes()
    cut = _cut(tmp_path, CT, len(data) // 2, "in/ct.dcm")
    present = len(pydicom.dcmread(cut).PixelData)
    assert main(_sr(tmp_path, cut.parent)) == 2
    err = capsys.readouterr().err
    assert str(cut) in err and "truncated" in err and "no pixel data" not in err
    assert f"expected {CT_PIXEL_BYTES} bytes" in err and f"hold {present} bytes" in err
    assert not (tmp_path / "out").exists()


def test_m2_file_without_pixel_data_keeps_its_message(tmp_path, capsys):
    """A whole file that has no PixelData element (an RT structure set) is still 'has no pixel data'."""
    rt = _bytes(tmp_path, "rt.dcm", Path(get_testdata_file("rtstruct.dcm")).read_bytes())
    assert main(_sample(tmp_path, rt)) == 2
    err = capsys.readouterr().err
    assert "has no pixel data" in err and "truncated" not in err


def test_m4_non_finite_weights_refused_when_loaded(tmp_path):
    """M4: the loader (not the input check) refuses the model file, naming it and the first non-finite tensor."""
    from meddiff.diffusion.checkpoint import load_model
    from meddiff.errors import CheckpointError

    bad = _bad_weights(tmp_path, float("nan"))
    with pytest.raises(CheckpointError, match="conv_out.weight") as e:
        load_model(bad)
    assert str(bad) in str(e.value)
    cfg, net, _ = load_model(CKPT)  # the shipped file itself loads
    assert net is not None


def test_m8_export_error_names_destination_not_temporary(tmp_path, capsys):
    assert main(["export", "--checkpoint", "demo_sr_x4", "-o", "/proc/m.ts"]) == 2
    err = capsys.readouterr().err
    assert "/proc/m.ts" in err and ".tmp" not in err
