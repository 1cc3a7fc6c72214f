"""Inpainting masks from files (meddiff.data.mask_files): a mask per input matched by name, label maps and
DICOM SEG, dilation in millimetres, and errors when a mask is not on its image's grid."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from meddiff.data.mask_files import MaskSpec, check_geometry, dilate, find_mask_file, mask_for, read_mask, read_seg
from meddiff.data.masks import lesion, random_mask
from meddiff.errors import InputError
from meddiff.io import Volume, read_volume
from meddiff.io.readers import ImageItem


def _nifti(path: Path, a: np.ndarray, zooms=(1.0, 1.0, 1.0), shift=0.0) -> Path:
    aff = np.diag([*zooms[::-1], 1.0])  # nibabel (x, y, z) order
    aff[0, 3] = shift
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(a.astype(np.float32).transpose(2, 1, 0) if a.ndim == 3 else a.astype(np.float32).T, aff), str(path))
    return path


def _item(path: Path) -> ImageItem:
    return ImageItem(path, path.name, "nifti", (path,))


def test_a_mask_per_input_is_matched_by_name_tag_and_subfolder(tmp_path):
    img = tmp_path / "img"
    a, b = _nifti(img / "p1" / "case.nii.gz", np.ones((2, 4, 4))), _nifti(img / "other.nii.gz", np.ones((2, 4, 4)))
    m = tmp_path / "masks"
    ma = _nifti(m / "p1" / "case_mask.nii.gz", np.ones((2, 4, 4)))
    mb = _nifti(m / "deep" / "other_seg.nii", np.ones((2, 4, 4)))  # flat match by name anywhere below
    assert find_mask_file(m, _item(a), img) == ma
    assert find_mask_file(m, _item(b), img) == mb
    one = tmp_path / "one.nii.gz"
    _nifti(one, np.ones((2, 4, 4)))
    assert find_mask_file(one, _item(a), img) == one  # a file: the same mask for every input


def test_an_input_without_a_mask_or_with_two_is_an_error_naming_it(tmp_path):
    img = tmp_path / "img"
    a = _nifti(img / "case.nii.gz", np.ones((2, 4, 4)))
    m = tmp_path / "masks"
    _nifti(m / "else.nii.gz", np.ones((2, 4, 4)))
    with pytest.raises(InputError, match=r"no mask for the input .*case\.nii\.gz.*'case'.*else"):
        find_mask_file(m, _item(a), img)
    _nifti(m / "case_mask.nii.gz", np.ones((2, 4, 4)))
    _nifti(m / "case_seg.nii.gz", np.ones((2, 4, 4)))
    with pytest.raises(InputError, match="2 masks match"):
        find_mask_file(m, _item(a), img)


def test_label_map_selects_one_label_and_names_the_values_when_absent(tmp_path):
    img = _nifti(tmp_path / "i.nii.gz", np.ones((2, 4, 4)))
    lab = np.zeros((2, 4, 4))
    lab[0, 1, 1], lab[1, 2, 2] = 2, 3
    m = _nifti(tmp_path / "lab.nii.gz", lab)
    vol = read_volume(img)
    got = read_mask(m, vol, label=3)
    assert got.sum() == 1 and got[1, 2, 2]
    assert read_mask(m, vol).sum() == 2  # no label: every nonzero voxel
    with pytest.raises(InputError, match=r"no voxel of label 5 \(its values: 0, 2, 3\)"):
        read_mask(m, vol, label=5)


def test_dilation_is_in_millimetres_through_anisotropic_spacing():
    holes = np.zeros((9, 9), bool)
    holes[4, 4] = True
    grown = dilate(holes, (1.0, 2.0), 2.0)  # 2 mm: two rows (1 mm apart) but one column (2 mm apart)
    rows, cols = np.nonzero(grown)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 6, 3, 5)
    assert not grown[3, 3]  # sqrt(1 + 4) > 2 mm: a disc in mm, not a box
    assert dilate(holes, (1.0, 1.0), 0.0) is holes


def test_a_mask_off_the_image_grid_fails_naming_both_files(tmp_path):
    img = _nifti(tmp_path / "i.nii.gz", np.ones((2, 4, 4)), zooms=(3.0, 1.0, 1.0))
    vol = read_volume(img)
    shape = _nifti(tmp_path / "shape.nii.gz", np.ones((2, 4, 5)), zooms=(3.0, 1.0, 1.0))
    spacing = _nifti(tmp_path / "spacing.nii.gz", np.ones((2, 4, 4)), zooms=(2.0, 1.0, 1.0))
    shifted = _nifti(tmp_path / "shift.nii.gz", np.ones((2, 4, 4)), zooms=(3.0, 1.0, 1.0), shift=5.0)
    for path, what in ((shape, "shape"), (spacing, "spacing"), (shifted, "mm apart")):
        with pytest.raises(InputError, match=rf"{path.name}.*{what}.*i\.nii\.gz|{path.name}.*i\.nii\.gz.*{what}"):
            read_mask(path, vol)
    # a PNG / NPY mask carries no geometry: the shape alone is checked
    np.save(tmp_path / "m.npy", np.ones((2, 4, 4), np.float32))
    assert read_mask(tmp_path / "m.npy", vol).all()


def test_mask_for_dilates_only_with_a_known_spacing(tmp_path):
    m = np.zeros((1, 8, 8))
    m[0, 4, 4] = 1
    img = _nifti(tmp_path / "i.nii.gz", np.ones((1, 8, 8)), zooms=(1.0, 0.5, 0.5))
    _nifti(tmp_path / "m.nii.gz", m, zooms=(1.0, 0.5, 0.5))
    vol = read_volume(img)
    holes = mask_for(MaskSpec(tmp_path / "m.nii.gz", dilate_mm=1.0), _item(img), vol)
    assert holes.sum() == 13  # a disc of radius 2 pixels (1 mm at 0.5 mm)
    np.save(tmp_path / "x.npy", np.ones((8, 8), np.float32))
    np.save(tmp_path / "xm.npy", m[0].astype(np.float32))
    raw = read_volume(tmp_path / "x.npy")
    with pytest.raises(InputError, match="no pixel spacing"):
        mask_for(MaskSpec(tmp_path / "xm.npy", dilate_mm=1.0), _item(tmp_path / "x.npy"), raw)
    with pytest.raises(InputError, match="--mask-dilate"):
        MaskSpec(tmp_path, dilate_mm=-1)


def _seg(path: Path, frames: np.ndarray, positions, segments) -> Path:
    """A minimal DICOM Segmentation (BINARY) with one segment number and position per frame."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.66.4", ds.file_meta.MediaStorageSOPInstanceUID, "SEG"
    ds.SegmentationType = "BINARY"
    ds.Rows, ds.Columns, ds.NumberOfFrames = frames.shape[1], frames.shape[2], frames.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 1, 0, 0
    ds.SegmentSequence = []
    for n in sorted(set(segments)):
        s = Dataset()
        s.SegmentNumber, s.SegmentLabel = n, f"seg{n}"
        ds.SegmentSequence.append(s)
    ds.PerFrameFunctionalGroupsSequence = []
    for pos, n in zip(positions, segments):
        fg, pp, si = Dataset(), Dataset(), Dataset()
        pp.ImagePositionPatient = [float(v) for v in pos]
        si.ReferencedSegmentNumber = n
        fg.PlanePositionSequence, fg.SegmentIdentificationSequence = [pp], [si]
        ds.PerFrameFunctionalGroupsSequence.append(fg)
    bits = np.packbits(frames.astype(np.uint8).ravel(), bitorder="little")
    ds.PixelData = bits.tobytes() + (b"\0" if bits.size % 2 else b"")
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_dicom_seg_frames_land_on_the_slices_their_positions_name(tmp_path):
    aff = np.array([[0, 0, -1.0, 0], [0, -1.0, 0, 0], [2.0, 0, 0, 10.0], [0, 0, 0, 1]])  # (z, y, x) -> RAS; LPS origin (0, 0, 10)
    vol = Volume(np.zeros((3, 8, 8), np.float32), (2.0, 1.0, 1.0), aff, "p", tmp_path / "img", {"format": "dicom"})
    f = np.zeros((2, 8, 8), bool)
    f[0, 1, 1], f[1, 5, 5] = True, True
    path = _seg(tmp_path / "seg.dcm", f, [(0, 0, 12.0), (0, 0, 14.0)], [1, 2])  # slices z = 1 and 2
    holes = read_mask(path, vol)
    assert np.argwhere(holes).tolist() == [[1, 1, 1], [2, 5, 5]]
    assert np.argwhere(read_seg(path, vol, 2)).tolist() == [[2, 5, 5]]
    with pytest.raises(InputError, match=r"segments \[1, 2\], not 7"):
        read_seg(path, vol, 7)
    off = _seg(tmp_path / "off.dcm", f[:1], [(0, 0, 13.0)], [1])  # between two slices
    with pytest.raises(InputError, match="lies on no slice"):
        read_mask(off, vol)


def test_lesion_masks_are_seeded_blobs_and_reach_small_coverages():
    g = torch.Generator().manual_seed(3)
    a = lesion(64, 64, 1.0, g, torch.device("cpu"))
    b = lesion(64, 64, 1.0, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert torch.equal(a, b) and 0 < a.mean() < 0.2
    cov = [random_mask(64, 64, ("box", "stroke", "lesion"), (0.02, 0.4), g).mean().item() for _ in range(20)]
    assert min(cov) >= 0.02 and max(cov) <= 0.4
