"""PNG/JPEG/BMP (Pillow), TIFF (tifffile) and NumPy (.npy/.npz) images.

These formats carry no patient geometry: spacing is 1 mm (``meta["spacing_source"]`` says so,
unless an .npz stores ``spacing``) and the affine is :func:`meddiff.io.geometry.default_affine`.
16-bit PNG/TIFF keep their full 0..65535 range. A PNG written by meddiff stores its intensity
window in a text chunk ``meddiff_window`` = "lo hi"; reading maps 0..max back to lo..hi.
Writers: :func:`write_png`, :func:`write_tiff` (the source's integer type, or float32),
:func:`write_numpy` (float32 ``.npy``, or ``.npz`` with ``image`` and ``spacing``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from meddiff.errors import InputError
from meddiff.io._raw import RawImage, colour_to_gray, reading
from meddiff.io.geometry import default_affine

PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
TIFF_SUFFIXES = {".tif", ".tiff"}
NUMPY_SUFFIXES = {".npy", ".npz"}


def _no_geometry(array: np.ndarray, meta: dict, spacing=None) -> RawImage:
    nd = min(array.ndim, 3)
    if spacing is None:
        spacing = (1.0,) * nd
        meta["spacing_source"] = "none (1 mm assumed)"
    else:
        meta["spacing_source"] = "file"
    return RawImage(array, tuple(float(s) for s in spacing), default_affine(tuple(spacing)[-nd:]), meta, None)


PNG_COLOUR_TYPES = {0: "grayscale", 2: "RGB", 3: "palette", 4: "gray + alpha", 6: "RGBA"}


def _check_png_depth(path: Path, arr: np.ndarray, mode: str) -> None:
    """InputError for a 16-bit PNG that Pillow decodes at 8 bits (gray + alpha, RGB(A)): its precision would be lost
    without a word."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR" or head[24] != 16 or arr.dtype.itemsize > 1:
        return
    kind = PNG_COLOUR_TYPES.get(head[25], f"colour type {head[25]}")
    raise InputError(f"{path}: 16-bit PNG with {kind} samples, which Pillow reads at 8 bits (mode {mode}), losing its "
                     "precision; expected a 16-bit grayscale PNG without alpha (or the image as a 16-bit TIFF)")


def read_pil(path: Path, *, allow_rgb_to_gray: bool = False) -> RawImage:
    """PNG (8/16-bit gray, RGB, palette), JPEG, BMP -> 2D ``[Y, X]`` in stored counts."""
    try:
        with Image.open(path) as im:
            im.load()
            mode, info = im.mode, dict(im.info)
            if mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif mode in ("LA", "PA"):
                im = im.getchannel(0)
            arr = np.asarray(im)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; expected an image file") from None
    except Exception as e:
        raise InputError(f"{path}: cannot read image ({type(e).__name__}: {e}); the file may be truncated or corrupt") from e
    _check_png_depth(path, arr, mode)
    meta = {"format": path.suffix.lower().lstrip(".").replace("jpeg", "jpg"), "units": "counts", "modality": "",
            "pil_mode": mode, "bits": 16 if arr.dtype == np.uint16 or mode.startswith("I;16") else 8 * arr.dtype.itemsize}
    if arr.ndim == 3:
        arr, note = colour_to_gray(arr, path, allow_rgb_to_gray, f"{meta['format'].upper()} (mode {mode})")
        meta.update(note)
    values = arr.astype(np.float64)
    window = info.get("meddiff_window")
    if window:
        try:
            lo, hi = (float(v) for v in str(window).split())
        except ValueError:
            lo = hi = float("nan")
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise InputError(f"{path}: PNG text chunk meddiff_window is {str(window)[:80]!r}; expected 'LO HI' (two finite "
                             "numbers, LO < HI) as meddiff writes it, or no such chunk")
        top = 2 ** meta["bits"] - 1
        values = lo + values * ((hi - lo) / top)
        meta.update(units="window", window_mapped=(lo, hi))
    return _no_geometry(values, meta)


def read_tiff(path: Path, *, allow_rgb_to_gray: bool = False) -> RawImage:
    """TIFF (8/16/32-bit, float, multi-page) -> ``[Y, X]`` or ``[Z, Y, X]`` (pages = Z)."""
    import tifffile

    with reading(path, "TIFF"):
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            arr = series.asarray()
            shapes = [(tuple(s.shape), s.axes, str(s.dtype)) for s in tif.series]
            if len(shapes) > 1:  # pages stored as separate series: one volume only if they are alike 2D planes
                if len(set(shapes)) > 1 or len(shapes[0][0]) != 2:
                    detail = ", ".join(f"{'x'.join(map(str, shp))} {ax} {dt}" for shp, ax, dt in shapes[:6])
                    raise InputError(f"{path}: TIFF holds {len(shapes)} images that differ ({detail}); expected one image, "
                                     "or pages of one size and type (a volume)")
                arr = np.stack([s.asarray() for s in tif.series])
                axes = "Q" + axes
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{path}: TIFF data type {arr.dtype} is not real-valued; expected real intensities (save the magnitude first)")
    meta = {"format": "tiff", "units": "counts", "modality": "", "bits": 8 * arr.dtype.itemsize, "tiff_axes": axes,
            "dtype": str(arr.dtype)}
    if "S" in axes and arr.shape[axes.index("S")] > 1:
        arr = np.moveaxis(arr, axes.index("S"), -1)
        arr, note = colour_to_gray(arr, path, allow_rgb_to_gray, "TIFF")
        meta.update(note)
    return _no_geometry(arr.astype(np.float64), meta)


def _numpy_contents(path: Path, loaded) -> tuple[np.ndarray, tuple[float, ...] | None]:
    """(image array, spacing or None) of a loaded .npy array or .npz archive."""
    if isinstance(loaded, np.ndarray):
        return loaded, None
    spacing = None
    with loaded:
        keys = list(loaded.files)
        image_keys = [k for k in ("image", "array") if k in keys]
        others = [k for k in keys if k not in ("spacing", "affine")]
        if image_keys:
            key = image_keys[0]
        elif len(others) == 1:
            key = others[0]
        else:
            raise InputError(f"{path}: .npz holds arrays {keys}; expected a key 'image' or 'array', or a single array")
        arr = loaded[key]
        if "spacing" in keys:
            raw = np.ravel(loaded["spacing"])
            try:
                spacing = tuple(float(s) for s in raw)
            except (TypeError, ValueError):
                raise InputError(f"{path}: 'spacing' {raw.tolist()[:6]} is not numeric; expected one number (mm) per axis") from None
    return arr, spacing


def read_numpy(path: Path) -> RawImage:
    """.npy: the array. .npz: key 'image' or 'array', else the only array; optional 'spacing'."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; expected a .npy/.npz file") from None
    except Exception as e:
        raise InputError(f"{path}: cannot read as NumPy file ({type(e).__name__}: {e}); expected a .npy/.npz without pickled objects") from e
    try:
        arr, spacing = _numpy_contents(path, loaded)
    except InputError:
        raise
    except Exception as e:  # an .npz member is read lazily: a bad CRC, pickled objects, a truncated member
        reason = " ".join(str(e).split())[:200]
        raise InputError(f"{path}: cannot read its arrays ({type(e).__name__}: {reason}); expected an .npz of numeric "
                         "arrays without pickled objects") from None
    if arr.ndim < 2:
        raise InputError(f"{path}: array has shape {arr.shape} ({arr.ndim}D); expected a 2D image or 3D volume")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{path}: array dtype {arr.dtype}; expected a numeric (bool/int/float) array")
    if spacing is not None and len(spacing) != min(arr.ndim, 3):
        raise InputError(f"{path}: spacing {spacing} has {len(spacing)} values; expected {min(arr.ndim, 3)} for array shape {arr.shape}")
    meta = {"format": "npy" if path.suffix.lower() == ".npy" else "npz", "units": "arbitrary", "modality": "",
            "dtype": str(arr.dtype)}
    return _no_geometry(arr.astype(np.float64), meta, spacing)


def write_png(array_yx: np.ndarray, path: Path, *, bits: int, window: tuple[float, float] | None, description: str) -> tuple[float, float] | None:
    """Write a 2D array as 8/16-bit gray PNG. Returns the window used (None = stored as is).

    With ``window=None`` and integer values already inside 0..2**bits-1 the values are stored
    unchanged (exact round trip); otherwise ``window`` (default: the array's min..max) is mapped
    linearly to 0..2**bits-1 (clipped) and recorded in the ``meddiff_window`` text chunk.
    """
    arr = np.asarray(array_yx, np.float64)
    top = 2**bits - 1
    dtype = np.uint16 if bits == 16 else np.uint8
    exact = window is None and np.all(arr == np.round(arr)) and arr.min() >= 0 and arr.max() <= top
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "meddiff")
    info.add_text("Description", description)
    if exact:
        counts = arr.astype(dtype)
        window = None
    else:
        lo, hi = window if window is not None else (float(arr.min()), float(arr.max()))
        scale = top / (hi - lo) if hi > lo else 0.0
        counts = np.clip(np.round((arr - lo) * scale), 0, top).astype(dtype)
        info.add_text("meddiff_window", f"{lo!r} {hi!r}")
        window = (lo, hi)
    Image.fromarray(counts).save(path, format="PNG", pnginfo=info)
    return window


def integer_range(dtype: str) -> tuple[int, int] | None:
    """(min, max) of an integer dtype name ("uint16" -> (0, 65535)); None for float/bool/unknown."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        return None
    if dt.kind not in "iu":
        return None
    info = np.iinfo(dt)
    return int(info.min), int(info.max)


def write_tiff(array: np.ndarray, path: Path, *, dtype: str, description: str) -> None:
    """``[Y, X]`` or ``[Z, Y, X]`` (pages) as TIFF: integer `dtype` -> values rounded and clipped to
    its range (the input's true values, not stretched); otherwise float32."""
    import tifffile

    arr = np.asarray(array, np.float64)
    rng = integer_range(dtype)
    data = np.clip(np.round(arr), *rng).astype(dtype) if rng else arr.astype(np.float32)
    # minisblack always: 3 or 4 pages of a gray volume are pages, never one RGB(A) image
    tifffile.imwrite(path, data, description=description, software="meddiff", metadata=None, photometric="minisblack")


def write_numpy(array: np.ndarray, path: Path, *, spacing: tuple[float, ...]) -> None:
    """float32 ``.npy`` (the array), or ``.npz`` with keys ``image`` and ``spacing`` (mm)."""
    arr = np.asarray(array, np.float32)
    with open(path, "wb") as f:
        if path.name.lower().endswith(".npz"):
            np.savez(f, image=arr, spacing=np.asarray(spacing, np.float64))
        else:
            np.save(f, arr)
