"""Small real images shipped with meddiff (see README.md here for provenance and licences).

    mni152/   MNI ICBM152 2009a T1 template: axial, coronal, sagittal NIfTI stacks (training)
    colin27/  Colin27 (ch2bet) single-subject T1: same layout (held-out test: another person)
    cxr/      chest radiograph RG1_UNCR (pydicom-data): downsampled and cropped DICOMs
    cxr_films/  four held-out chest films (NIH ChestX-ray14, Kermany; films.csv): the X-ray demos
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InputError

SAMPLES = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped sample sets (sub-folders)."""
    return sorted(p.name for p in SAMPLES.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))


def samples_dir(name: str | None = None) -> Path:
    """Folder of the shipped samples, or of one set ("mni152", "colin27", "cxr")."""
    if name is None:
        return SAMPLES
    path = SAMPLES / name
    if name not in available():
        raise InputError(f"no shipped sample set {name!r}; available: {available()}")
    return path
