"""Rebuild the small real samples shipped in src/meddiff/data/samples/ (byte-identical).

Sources (installed packages, nothing is downloaded):
  mni152   nilearn wheel: nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz
  colin27  Debian mricron-data: /usr/share/mricron/templates/ch2bet.nii.gz
  cxr      pydicom-data wheel: data_store/data/RG1_UNCR.dcm

Brains: for each orientation (axial, coronal, sagittal) one NIfTI int16 stack of 2D slices
taken every STEP_MM through the brain's bounding box, each slice upright (superior or
anterior at the top row). The stack axis is NIfTI k, so meddiff reads it as axis 0 of
[Z, Y, X]. The affine of each stack is the source affine composed with the voxel index map,
so every voxel keeps its exact RAS+ position in mm. Chest X-ray: a derived DICOM of the whole
image downsampled 4x (anti-aliased) and a full-resolution 512x512 crop, MONOCHROME1 kept.
Layout: <set>/<patient>/<file>, one patient folder per set (see PATIENT).

    python scripts/make_samples.py [--out src/meddiff/data/samples]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
MNI_NAME = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
COLIN = Path("/usr/share/mricron/templates/ch2bet.nii.gz")
STEP_MM = {"mni152": 2, "colin27": 3}
# one sub-folder per patient inside each set, so `meddiff prepare samples/<set>` sees one patient
PATIENT = {"mni152": "icbm152_2009a", "colin27": "colin27", "cxr": "rg1"}
MARGIN = 4  # voxels of background kept around the brain's bounding box
MIN_FOREGROUND = 0.10  # keep slices with at least this fraction of voxels > 5% of the maximum
CXR_FACTOR = 4
CXR_CROP = (640, 330, 512)  # top row, left column, side (full resolution; right lung and hilum)


def mni_path() -> Path:
    import nilearn

    return Path(nilearn.__file__).parent / "datasets" / "data" / MNI_NAME


def rg1_path() -> Path:
    from importlib.metadata import files

    hits = [f for f in files("pydicom-data") if f.name == "RG1_UNCR.dcm"]
    if not hits:
        sys.exit("pydicom-data does not contain RG1_UNCR.dcm")
    return Path(hits[0].locate())


def index_map(orientation: str, box: np.ndarray, k_index: int) -> np.ndarray:
    """4x4 integer matrix M: new voxel (i', j', k', 1) -> source voxel (i, j, k, 1).

    i' = column, j' = row (top row = superior, or anterior for axial), k' = slice number;
    `box` = [[i0, j0, k0], [i1, j1, k1]] inclusive; k_index is the source index of slice k'=0
    along the stacking axis (the step is applied by the caller through column 2).
    """
    (i0, j0, k0), (i1, j1, k1) = box
    M = np.zeros((4, 4))
    M[3, 3] = 1
    if orientation == "axial":  # columns i (left->right), rows j descending, stack along k
        M[0, 0], M[0, 3] = 1, i0
        M[1, 1], M[1, 3] = -1, j1
        M[2, 2], M[2, 3] = 1, k_index
    elif orientation == "coronal":  # columns i, rows k descending, stack along j
        M[0, 0], M[0, 3] = 1, i0
        M[2, 1], M[2, 3] = -1, k1
        M[1, 2], M[1, 3] = 1, k_index
    else:  # sagittal: columns j (posterior->anterior), rows k descending, stack along i
        M[1, 0], M[1, 3] = 1, j0
        M[2, 1], M[2, 3] = -1, k1
        M[0, 2], M[0, 3] = 1, k_index
    return M


def reslice(data: np.ndarray, M: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """new[i', j', k'] = data[M @ (i', j', k', 1)] (integer index map, no interpolation)."""
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1).reshape(-1, 3)
    src = (grid @ M[:3, :3].T + M[:3, 3]).round().astype(int)
    return data[src[:, 0], src[:, 1], src[:, 2]].reshape(shape)


def brain_stacks(src: Path, step: int) -> dict[str, nib.Nifti1Image]:
    img = nib.load(str(src))
    data = np.asarray(img.dataobj).astype(np.int16)
    fg = data > 0.05 * data.max()
    idx = np.argwhere(fg)
    box = np.stack([np.maximum(idx.min(0) - MARGIN, 0), np.minimum(idx.max(0) + MARGIN, np.array(data.shape) - 1)])
    (i0, j0, k0), (i1, j1, k1) = box
    ext = {"axial": (i1 - i0 + 1, j1 - j0 + 1, (k0, k1)), "coronal": (i1 - i0 + 1, k1 - k0 + 1, (j0, j1)),
           "sagittal": (j1 - j0 + 1, k1 - k0 + 1, (i0, i1))}
    out = {}
    for name, (ncol, nrow, (s0, s1)) in ext.items():
        M = index_map(name, box, s0)
        full = reslice(data, M, (ncol, nrow, s1 - s0 + 1))
        keep = [s for s in range(0, s1 - s0 + 1, step) if (full[:, :, s] > 0.05 * data.max()).mean() >= MIN_FOREGROUND]
        first, last = keep[0], keep[-1]
        stack = full[:, :, first : last + 1 : step]
        M = M.copy()
        M[:3, 3] += M[:3, 2] * first  # slice 0 of the kept stack
        M[:3, 2] *= step
        affine = img.affine @ M
        new = nib.Nifti1Image(np.ascontiguousarray(stack, dtype=np.int16), affine)
        code = int(img.header["sform_code"]) or 2
        new.set_sform(affine, code=code)
        new.set_qform(affine, code=code)
        new.header.set_xyzt_units("mm")
        new.header["descrip"] = f"meddiff sample: {name} slices every {step} mm of {src.name}".encode()[:79]
        out[name] = new
    return out


def _downsample(pix: np.ndarray, factor: int) -> np.ndarray:
    t = torch.from_numpy(pix.astype(np.float64))[None, None]
    size = (round(pix.shape[0] / factor), round(pix.shape[1] / factor))
    t = F.interpolate(t, size=size, mode="bicubic", antialias=True, align_corners=False)
    hi = 2 ** 15 - 1
    return t[0, 0].round().clamp(0, hi).numpy().astype(np.uint16)


def derived_dicom(ds: pydicom.Dataset, pixels: np.ndarray, what: str, spacing_factor: int) -> pydicom.Dataset:
    """Copy of `ds` with new pixels, marked DERIVED, with a deterministic new SOP Instance UID."""
    out = copy.deepcopy(ds)
    out.Rows, out.Columns = pixels.shape
    out.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    out.ImageType = ["DERIVED", "SECONDARY"]
    out.DerivationDescription = f"meddiff sample: {what} of RG1_UNCR.dcm (pydicom-data)"
    uid = generate_uid(entropy_srcs=[str(ds.SOPInstanceUID), what])
    out.SOPInstanceUID = uid
    out.file_meta.MediaStorageSOPInstanceUID = uid
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        if tag in out and all(float(v) > 0 for v in out[tag].value):
            out[tag].value = [float(v) * spacing_factor for v in out[tag].value]
    return out


def cxr_files() -> dict[str, pydicom.Dataset]:
    ds = pydicom.dcmread(str(rg1_path()))
    pix = ds.pixel_array
    top, left, side = CXR_CROP
    return {
        "rg1_downsampled_x4.dcm": derived_dicom(ds, _downsample(pix, CXR_FACTOR), f"anti-aliased bicubic {CXR_FACTOR}x downsampling", CXR_FACTOR),
        "rg1_crop512.dcm": derived_dicom(ds, pix[top : top + side, left : left + side], f"crop rows {top}:{top + side} columns {left}:{left + side}", 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "src" / "meddiff" / "data" / "samples")
    out = parser.parse_args(argv).out
    written = []
    for name, src in (("mni152", mni_path()), ("colin27", COLIN)):
        for orient, img in brain_stacks(src, STEP_MM[name]).items():
            path = out / name / PATIENT[name] / f"{orient}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(img, str(path))
            written.append((path, img.shape))
    for fname, ds in cxr_files().items():
        path = out / "cxr" / PATIENT["cxr"] / fname
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(str(path), enforce_file_format=True)
        written.append((path, (ds.Rows, ds.Columns)))
    for path, shape in written:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        print(f"{path.relative_to(out)}  shape {shape}  {path.stat().st_size / 1e3:.0f} kB  sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
