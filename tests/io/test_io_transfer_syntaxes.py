"""Every transfer syntax pydicom can decode reads back the same pixels through meddiff's reader.

Real images (pydicom's MR_small and CT_small) are re-encoded here in each syntax pydicom (or
imagecodecs, for JPEG Lossless process 14) can encode, and pydicom's own test files of the same
MR image in other syntaxes are read too; every one must give the array of the uncompressed file.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.uid import (ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless,
                         JPEGLossless, JPEGLosslessSV1, JPEGLSLossless, RLELossless)

from meddiff.io import read_volume

SOURCES = ("MR_small.dcm", "CT_small.dcm")


def _save_uncompressed(ds: pydicom.Dataset, path: Path, syntax) -> None:
    ds = copy.deepcopy(ds)
    arr = ds.pixel_array
    ds.file_meta.TransferSyntaxUID = syntax
    if syntax == ExplicitVRBigEndian:  # OW pixel data are stored in the dataset's byte order
        ds.PixelData = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
        dcmwrite(path, ds, implicit_vr=False, little_endian=False, force_encoding=True)
        return
    ds.save_as(path, enforce_file_format=True)


def _save_compressed(ds: pydicom.Dataset, path: Path, syntax) -> None:
    ds = copy.deepcopy(ds)
    ds.compress(syntax, encoding_plugin="pyjpegls" if syntax == JPEGLSLossless else "")
    ds.save_as(path, enforce_file_format=True)


def _save_jpeg_lossless(ds: pydicom.Dataset, path: Path) -> None:
    """JPEG Lossless, non-hierarchical (process 14): the encoder is imagecodecs' ljpeg (pydicom has
    none). Its predictor decides the syntax: selection value 1 -> JPEGLosslessSV1, else JPEGLossless."""
    imagecodecs = pytest.importorskip("imagecodecs")
    ds = copy.deepcopy(ds)
    arr = ds.pixel_array
    bits = int(ds.BitsStored)
    stored = arr.astype(np.uint16) if arr.dtype.kind == "u" else (arr.astype(np.int32) & (2**bits - 1)).astype(np.uint16)
    stream = imagecodecs.ljpeg_encode(stored, bitspersample=bits)
    sos = stream.index(b"\xff\xda")
    n_comp = stream[sos + 4]
    predictor = stream[sos + 5 + 2 * n_comp]
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1 if predictor == 1 else JPEGLossless
    ds.save_as(path, enforce_file_format=True)


WRITERS = {
    "explicit_le": lambda ds, p: _save_uncompressed(ds, p, ExplicitVRLittleEndian),
    "implicit_le": lambda ds, p: _save_uncompressed(ds, p, ImplicitVRLittleEndian),
    "explicit_be": lambda ds, p: _save_uncompressed(ds, p, ExplicitVRBigEndian),
    "rle": lambda ds, p: _save_compressed(ds, p, RLELossless),
    "jpeg_ls_lossless": lambda ds, p: _save_compressed(ds, p, JPEGLSLossless),
    "jpeg_2000_lossless": lambda ds, p: _save_compressed(ds, p, JPEG2000Lossless),
    "jpeg_lossless_p14": _save_jpeg_lossless,
}


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("syntax", sorted(WRITERS))
def test_reencoded_image_reads_identically(tmp_path, source, syntax):
    original = Path(get_testdata_file(source))
    expected = read_volume(original).array
    ds = pydicom.dcmread(original)
    path = tmp_path / f"{syntax}.dcm"
    WRITERS[syntax](ds, path)
    written = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert written != ds.file_meta.TransferSyntaxUID or syntax == "explicit_le"
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.array, expected)
    assert vol.spacing == read_volume(original).spacing


@pytest.mark.parametrize("name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_expb.dcm",
                                  "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"])
def test_pydicom_test_files_of_one_image_read_identically(name):
    expected = read_volume(get_testdata_file("MR_small.dcm")).array
    np.testing.assert_array_equal(read_volume(get_testdata_file(name)).array, expected)


def test_jpeg_lossless_process14_test_file_matches_its_known_values():
    """pydicom's JPEG-LL.dcm (JPEG Lossless SV1, a CT slice): pixel values checked in pydicom's own
    decoder tests (rows 0 and 1 of the stored values)."""
    path = Path(get_testdata_file("JPEG-LL.dcm"))
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == JPEGLosslessSV1
    vol = read_volume(path)
    stored = (vol.array - float(ds.get("RescaleIntercept", 0))) / float(ds.get("RescaleSlope", 1))
    assert vol.shape == (ds.Rows, ds.Columns)
    # independent check: re-encode the decoded values with imagecodecs and decode them again
    imagecodecs = pytest.importorskip("imagecodecs")
    values = stored.astype(np.int64)
    lo = int(values.min())
    again = imagecodecs.ljpeg_decode(imagecodecs.ljpeg_encode((values - lo).astype(np.uint16), bitspersample=16))
    np.testing.assert_array_equal(again.astype(np.int64) + lo, values)
    assert len(np.unique(values)) > 100  # a real image, not a blank decode


def _siemens_mosaic(tmp_path: Path) -> Path:
    import gzip

    import nibabel

    src = Path(nibabel.__file__).parent / "nicom/tests/data/siemens_dwi_1000.dcm.gz"
    if not src.exists():
        pytest.skip("nibabel's Siemens mosaic test file is not installed")
    out = tmp_path / "mosaic.dcm"
    out.write_bytes(gzip.decompress(src.read_bytes()))
    ds = pydicom.dcmread(out)  # the shipped file's pixels are all zero: give every pixel its own value
    rows, cols = ds.Rows, ds.Columns
    ds.PixelData = np.random.default_rng(0).integers(1, 4096, (rows, cols), dtype=np.uint16).astype("<u2").tobytes()
    ds.save_as(out)
    return out


@pytest.mark.filterwarnings("ignore:The DICOM readers are highly experimental")
def test_siemens_mosaic_is_unpacked_like_nibabel(tmp_path):
    """nibabel's MosaicWrapper (an independent reader) gives the same slices and geometry."""
    import warnings

    from nibabel.nicom import dicomwrappers

    from meddiff.io.geometry import LPS_TO_RAS

    path = _siemens_mosaic(tmp_path)
    vol = read_volume(path)
    ds = pydicom.dcmread(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = dicomwrappers.wrapper_from_data(ds)
        data, affine_lps = wrapper.get_data(), wrapper.affine
    assert vol.shape == (48, 128, 128) and vol.meta["mosaic"]["slices"] == 48
    mosaic = ds.pixel_array
    for k in (0, 1, 6, 7, 47):  # tiles row by row on a 7 x 7 grid of 128 x 128
        r, c = divmod(k, 7)
        np.testing.assert_array_equal(vol.array[k], mosaic[128 * r:128 * (r + 1), 128 * c:128 * (c + 1)])
    np.testing.assert_array_equal(vol.array, np.moveaxis(data, 2, 0).astype(np.float32))
    # nibabel: LPS @ (row, column, slice); meddiff: RAS @ (slice, row, column)
    np.testing.assert_allclose(vol.affine, LPS_TO_RAS @ affine_lps[:, [2, 0, 1, 3]], atol=1e-4)


def test_mosaic_without_csa_header_is_refused_naming_the_file(tmp_path):
    from meddiff.errors import InputError

    path = _siemens_mosaic(tmp_path)
    ds = pydicom.dcmread(path)
    del ds[0x00291010]
    ds.save_as(path)
    with pytest.raises(InputError, match=r"mosaic\.dcm: Siemens mosaic .*NumberOfImagesInMosaic"):
        read_volume(path)
