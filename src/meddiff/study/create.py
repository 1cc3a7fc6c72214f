"""Build a 2AFC study folder from folders of real and generated images.

Layout of the study folder (written atomically: it appears complete or not at all)::

    study.json     manifest: every option, the source files with SHA-256, and every pair
                   (method, source image, slice, real side, display window, PNG names and hashes)
    study.sqlite   pairs, readers (label, secret code), each reader's presentation order, answers
    images/        <pair id>_left.png, <pair id>_right.png (8-bit grayscale, no metadata)

Pairing. "matched" (default): a generated image belongs to the real image with the same path
relative to its folder, without format suffix and without a ``meddiff sample`` product tag
(``_restored``, ``_mean``, ``_sample<k>``), so ``run/out/colin27/axial_restored.nii.gz`` pairs with
``real/colin27/axial.nii.gz``; volumes must have the same shape and are shown slice by slice
(same slice index). The same real slices are used for every method (a paired design).
"random": real and generated slices are drawn independently.

Randomisation: one ``numpy.random.default_rng(seed)`` draws, in this order, the real slices, the
generated slices (random pairing only), the side of the real image in every pair, and the pair
ids (shuffled, so an id does not reveal the method). Each reader's presentation order is drawn
from the seed and the reader id (:func:`meddiff.study.db.reader_order`). The same inputs and
options give the same pairs and byte-identical PNGs.

Display window (both images of a pair get the same window, taken from the real image, so equal
intensities look equal): "auto" = the real slice's percentiles (default 0.5 and 99.5), "dicom" =
the real image's DICOM WindowCenter/WindowWidth (else auto), "LO:HI" = fixed, and
"MODALITY=LO:HI" (e.g. ``CT=-160:240``) for real images of that DICOM modality.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from meddiff import __version__
from meddiff.errors import InputError
from meddiff.io import ImageItem, find_images, read_volume
from meddiff.data.slices import to_slices
from meddiff.io.atomic import atomic_dir, atomic_write_bytes, atomic_write_text
from meddiff.io.outdir import check_not_input, mark
from meddiff.io.phi import public_relpath
from meddiff.io.suffixes import image_suffix
from meddiff.study import db

PRODUCT_TAG = re.compile(r"_(restored|mean|sample\d+)$")
METHOD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


@dataclass(frozen=True)
class Window:
    """Display window: intensities ``lo`` -> black, ``hi`` -> white, linear in between."""

    lo: float
    hi: float


@dataclass(frozen=True)
class WindowSpec:
    """Parsed --window options: a global rule ("auto", "dicom" or a fixed Window) and per-modality windows."""

    rule: str | Window = "auto"
    by_modality: tuple[tuple[str, Window], ...] = ()
    percentiles: tuple[float, float] = (0.5, 99.5)


def _parse_range(text: str, what: str) -> Window:
    m = re.fullmatch(r"\s*([-+]?[0-9.eE+-]+)\s*:\s*([-+]?[0-9.eE+-]+)\s*", text)
    try:
        lo, hi = (float(m.group(1)), float(m.group(2))) if m else (None, None)
    except ValueError:
        lo = hi = None
    if lo is None or not np.isfinite([lo, hi]).all() or not hi > lo:
        raise InputError(f"window {what!r}: expected LO:HI with finite numbers and LO < HI (e.g. -160:240)")
    return Window(lo, hi)


def parse_window(specs: list[str] | None, percentiles: tuple[float, float] = (0.5, 99.5)) -> WindowSpec:
    """--window values -> WindowSpec. Each value is "auto", "dicom", "LO:HI" or "MODALITY=LO:HI"."""
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise InputError(f"percentiles {percentiles}: expected 0 <= low < high <= 100")
    rule: str | Window = "auto"
    by_mod: dict[str, Window] = {}
    for spec in specs or []:
        if "=" in spec:
            mod, rng = spec.split("=", 1)
            if not re.fullmatch(r"[A-Za-z]{1,16}", mod.strip()):
                raise InputError(f"window {spec!r}: expected MODALITY=LO:HI with a DICOM modality such as CT or MR")
            by_mod[mod.strip().upper()] = _parse_range(rng, spec)
        elif spec.strip().lower() in ("auto", "dicom"):
            rule = spec.strip().lower()
        else:
            rule = _parse_range(spec, spec)
    return WindowSpec(rule, tuple(sorted(by_mod.items())), (float(lo_p), float(hi_p)))


def window_for(real_slice: np.ndarray, meta: dict, spec: WindowSpec) -> Window:
    """The display window of a pair, from its real slice (see the module docstring for the rules)."""
    modality = str(meta.get("modality", "") or "").upper()
    for mod, win in spec.by_modality:
        if mod == modality:
            return win
    if isinstance(spec.rule, Window):
        return spec.rule
    if spec.rule == "dicom" and meta.get("window"):
        centre, width = (float(v) for v in meta["window"])
        if width > 0:
            return Window(centre - width / 2, centre + width / 2)
    lo, hi = np.percentile(real_slice.astype(np.float64), spec.percentiles)
    if not hi > lo:  # nearly constant slice: fall back to its full range
        lo, hi = float(real_slice.min()), float(real_slice.max())
    return Window(float(lo), float(hi) if hi > lo else float(lo) + 1.0)


def apply_window(image: np.ndarray, window: Window) -> np.ndarray:
    """Linear display mapping (DICOM PS3.3 C.11.2.1.3 'LINEAR_EXACT'):
    ``y = clip((x - lo) / (hi - lo), 0, 1) * 255``, rounded half to even, as uint8."""
    x = (np.asarray(image, np.float64) - window.lo) / (window.hi - window.lo)
    return np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def png_bytes(image8: np.ndarray) -> bytes:
    """8-bit grayscale PNG without text chunks or timestamps (deterministic bytes)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image8, dtype=np.uint8)).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def foreground_fraction(image: np.ndarray) -> float:
    """Fraction of pixels above 5% of the slice's range (0 for a constant slice)."""
    lo, hi = float(image.min()), float(image.max())
    return 0.0 if hi <= lo else float(np.mean(image > lo + 0.05 * (hi - lo)))


def _public(path: Path, folder: Path) -> str:
    """A source path as study.json records it: relative to its --real / --method folder, folder names
    pseudonymised (meddiff.io.phi; the folders themselves may name a patient)."""
    return public_relpath(path, folder).as_posix()


def image_key(item: ImageItem, folder: Path, generated: bool) -> str:
    """Pairing key: path relative to `folder`, '/'-separated, without format suffix (and, for
    generated images, without a trailing ``_restored`` / ``_mean`` / ``_sample<k>`` tag)."""
    rel = public_relpath(item.path, folder, is_dir=item.kind == "dicom_series").as_posix()  # folders pseudonymised
    if item.path.is_file():
        suffix = image_suffix(rel)
        rel = rel[: len(rel) - len(suffix)]
    return PRODUCT_TAG.sub("", rel) if generated else rel


def collect(folder: Path, generated: bool, product: str | None = None) -> dict[str, ImageItem]:
    """Key -> image under `folder`. Generated folders skip ``_std`` maps; with `product` only
    files with that tag (e.g. "mean", "sample0") are kept. Two images with one key are an error."""
    folder = Path(folder)
    if not folder.is_dir():
        from ..io.readers import missing
        raise InputError(missing(folder, "a folder of images"))
    found: dict[str, ImageItem] = {}
    for item in find_images(folder):
        rel = image_key(item, folder, generated=False)
        if generated and rel.endswith("_std"):
            continue
        if generated and product is not None and not rel.endswith(f"_{product}"):
            continue
        key = image_key(item, folder, generated)
        if key in found:
            raise InputError(f"{folder}: two images for {key!r}: {found[key].path} and {item.path}; "
                             "choose one product with --product (e.g. restored, mean, sample0)")
        found[key] = item
    if not found:
        raise InputError(f"{folder}: no usable images" + (f" with product tag _{product}" if product else ""))
    return found


def _sha256(item: ImageItem) -> str:
    h = hashlib.sha256()
    for f in item.files:
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def _pick(n_avail: int, n: int | None, rng: np.random.Generator, what: str) -> list[int]:
    """`n` distinct indices out of `n_avail` (all if n is None), sorted."""
    if n is None:
        return list(range(n_avail))
    if n > n_avail:
        raise InputError(f"--pairs {n}: only {n_avail} {what}; ask for at most {n_avail} pairs per method")
    return sorted(int(i) for i in rng.choice(n_avail, size=n, replace=False))


def create_study(out: str | Path, real: str | Path, methods: dict[str, str | Path], *, pairs: int | None = 20,
                 seed: int = 0, pairing: str = "matched", axis: int = 0, window: list[str] | None = None,
                 percentiles: tuple[float, float] = (0.5, 99.5), min_foreground: float = 0.1,
                 product: str | None = None, readers: int = 4, reader_codes: list[str] | None = None,
                 feedback: str = "end", confidence: int = 0, order: str = "per-reader") -> tuple[Path, list[tuple[str, str]]]:
    """Build the study folder `out` (must not exist). Returns (out, [(reader label, code)]).

    real: folder of real images; methods: method name -> folder (or ``meddiff sample`` output
    folder) of generated images; pairs: pairs per method (None = every candidate slice);
    confidence: number of confidence levels asked after each choice (0 = not asked, else 2-10).
    """
    out, real = Path(out), Path(real)
    _check_options(out, real, methods, pairs=pairs, pairing=pairing, feedback=feedback, order=order,
                   confidence=confidence, min_foreground=min_foreground)
    wspec = parse_window(window, percentiles)
    rng = np.random.default_rng(seed)

    real_items = collect(real, generated=False)
    gen_items = {m: collect(Path(f), generated=True, product=product) for m, f in methods.items()}
    slices = _Slices(axis, min_foreground)
    # (method, real key, real slice, generated key, generated slice)
    if pairing == "matched":
        chosen = _matched_pairs(slices, real, real_items, gen_items, pairs, rng)
    else:
        chosen = _random_pairs(slices, real_items, gen_items, pairs, rng)

    real_sides = rng.integers(0, 2, size=len(chosen))
    ids = rng.permutation(len(chosen)) + 1
    hashes = {("real", k): _sha256(it) for k, it in real_items.items()}
    hashes.update({(m, k): _sha256(it) for m, items in gen_items.items() for k, it in items.items()})

    with atomic_dir(out) as tmp:
        mark(tmp, "study create")
        (tmp / "images").mkdir()
        records = _write_pairs(tmp, chosen, real_sides, ids, slices.volumes, real_items, gen_items, wspec, real, methods)
        options = {"pairs_per_method": pairs, "seed": seed, "pairing": pairing, "axis": axis, "window": list(window or ["auto"]),
                   "percentiles": list(wspec.percentiles), "min_foreground": min_foreground, "product": product,
                   "feedback": feedback, "confidence": confidence, "order": order}
        manifest = {
            "format": "meddiff-2afc-study", "version": 1, "meddiff": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "options": options,
            "real": {"folder": None, "images": {k: {"path": _public(it.path, real), "sha256": hashes[("real", k)]} for k, it in real_items.items()}},
            "methods": {m: {"folder": None, "images": {k: {"path": _public(it.path, methods[m]), "sha256": hashes[(m, k)]} for k, it in items.items()}}
                        for m, items in gen_items.items()},
            "pairs": records,
        }
        atomic_write_text(tmp / db.STUDY_JSON, json.dumps(manifest, indent=1) + "\n")
        meta = {"seed": str(seed), "order": order, "feedback": feedback, "confidence": str(confidence),
                "created": manifest["created"]}
        added = _write_database(tmp / db.STUDY_DB, records, meta, readers, reader_codes)
    return out, added


def _check_options(out: Path, real: Path, methods: dict[str, str | Path], *, pairs: int | None, pairing: str,
                   feedback: str, order: str, confidence: int, min_foreground: float) -> None:
    """InputError naming the bad option: the study folder new and outside the inputs, generated folders other than
    the real one, method names, pairing, feedback, order, confidence levels, pairs and the foreground fraction."""
    check_not_input(out, [real, *methods.values()], inside_input_ok=False)  # a study inside --real would be read as real
    for name, folder in methods.items():
        if Path(folder).exists() and real.exists() and Path(folder).resolve() == real.resolve():
            raise InputError(f"--method {name}={folder} is the --real folder {real}: every pair would show an image next "
                             "to itself; expected a folder of generated images")
    if out.exists():
        raise InputError(f"{out}: already exists; expected a new study folder")
    if not methods:
        raise InputError("no generated images given; expected at least one --method NAME=FOLDER")
    bad = [m for m in methods if not METHOD_RE.match(m)]
    if bad:
        raise InputError(f"method names {bad!r}: expected 1-64 letters, digits, '.', '_', '+' or '-'")
    if pairing not in ("matched", "random"):
        raise InputError(f"pairing {pairing!r}: expected 'matched' or 'random'")
    if feedback not in db.FEEDBACK:
        raise InputError(f"feedback {feedback!r}: expected one of {db.FEEDBACK}")
    if order not in ("per-reader", "same"):
        raise InputError(f"order {order!r}: expected 'per-reader' or 'same'")
    if confidence != 0 and not 2 <= confidence <= 10:
        raise InputError(f"confidence {confidence}: expected 0 (not asked) or 2-10 levels")
    if pairs is not None and pairs < 1:
        raise InputError(f"--pairs {pairs}: expected at least 1")
    if not 0 <= min_foreground < 1:
        raise InputError(f"min_foreground {min_foreground}: expected a fraction in [0, 1)")


class _Slices:
    """The images of a study as slice stacks along `axis`, each read once ((kind, key) -> (slices, meta); kind is
    "real" or a method), and their slices with at least `min_foreground` foreground."""

    def __init__(self, axis: int, min_foreground: float):
        self.axis, self.min_foreground = axis, min_foreground
        self.volumes: dict[tuple[str, str], tuple[np.ndarray, dict]] = {}

    def load(self, kind: str, key: str, item: ImageItem) -> tuple[np.ndarray, dict]:
        if (kind, key) not in self.volumes:
            vol = read_volume(item)
            self.volumes[(kind, key)] = (to_slices(np.asarray(vol.array), self.axis), dict(vol.meta))
        return self.volumes[(kind, key)]

    def usable(self, kind: str, key: str, item: ImageItem) -> list[tuple[str, int]]:
        arr, _ = self.load(kind, key, item)
        return [(key, z) for z in range(arr.shape[0]) if foreground_fraction(arr[z]) >= self.min_foreground]


def _matched_pairs(slices: _Slices, real: Path, real_items: dict, gen_items: dict, pairs: int | None,
                   rng: np.random.Generator) -> list[tuple[str, str, int, str, int]]:
    """Matched pairing: the same slice of the same relative path, real and generated (grids must agree); `pairs`
    slices shared by every method drawn once and shown for each method."""
    for m, items in gen_items.items():
        missing = sorted(set(items) - set(real_items))
        if missing:
            raise InputError(f"method {m}: no real image in {real} for generated {missing[:5]!r}"
                             + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
                             + " (matched pairing pairs files by relative path; use --pairing random otherwise)")
    keys = sorted(set.intersection(*(set(items) for items in gen_items.values())))
    for key in keys:
        shape = slices.load("real", key, real_items[key])[0].shape
        for m, items in gen_items.items():
            gshape = slices.load(m, key, items[key])[0].shape
            if gshape != shape:
                raise InputError(f"{items[key].path}: shape {gshape} (slices along axis {slices.axis}) differs from the real "
                                 f"{real_items[key].path} {shape}; matched pairs need the same grid")
    cands = [c for key in keys for c in slices.usable("real", key, real_items[key])]
    if not cands:
        raise InputError(f"{real}: no real slice shared by every method has >= {slices.min_foreground:.0%} foreground")
    picked = [cands[i] for i in _pick(len(cands), pairs, rng, "real slices with a generated counterpart")]
    return [(m, k, z, k, z) for m in gen_items for k, z in picked]


def _random_pairs(slices: _Slices, real_items: dict, gen_items: dict, pairs: int | None,
                  rng: np.random.Generator) -> list[tuple[str, str, int, str, int]]:
    """Random pairing: `pairs` usable real slices (default: as many as the smallest set) each paired with a random
    usable slice of each method."""
    chosen: list[tuple[str, str, int, str, int]] = []
    real_c = [c for key, it in real_items.items() for c in slices.usable("real", key, it)]
    n = pairs if pairs is not None else min(len(real_c), *(len(v) for v in gen_items.values()))
    real_pick = [real_c[i] for i in _pick(len(real_c), n, rng, "usable real slices")]
    for m, items in gen_items.items():
        gen_c = [c for key, it in items.items() for c in slices.usable(m, key, it)]
        gen_pick = [gen_c[i] for i in _pick(len(gen_c), n, rng, f"usable slices of method {m}")]
        chosen += [(m, rk, rz, gk, gz) for (rk, rz), (gk, gz) in zip(real_pick, gen_pick)]
    return chosen


def _write_pairs(tmp: Path, chosen, real_sides, ids, volumes, real_items: dict, gen_items: dict, wspec,
                 real: Path, methods: dict) -> list[dict]:
    """The two PNGs of each pair (both in the real slice's window, the real one on its drawn side) under
    tmp/images, and the manifest record of each, sorted by pair id."""
    records = []
    for (m, rk, rz, gk, gz), side_bit, pid in zip(chosen, real_sides, ids):
        r_arr, r_meta = volumes[("real", rk)]
        g_arr = volumes[(m, gk)][0]
        win = window_for(r_arr[rz], r_meta, wspec)
        real_png, gen_png = png_bytes(apply_window(r_arr[rz], win)), png_bytes(apply_window(g_arr[gz], win))
        real_side = db.SIDES[int(side_bit)]
        left, right = (real_png, gen_png) if real_side == "left" else (gen_png, real_png)
        names = (f"{pid:05d}_left.png", f"{pid:05d}_right.png")
        atomic_write_bytes(tmp / "images" / names[0], left)
        atomic_write_bytes(tmp / "images" / names[1], right)
        records.append({
            "pair_id": int(pid), "method": m, "real_side": real_side,
            "real": {"key": rk, "slice": rz, "path": _public(real_items[rk].path, real)},
            "generated": {"key": gk, "slice": gz, "path": _public(gen_items[m][gk].path, methods[m])},
            "window": [win.lo, win.hi], "left_png": names[0], "right_png": names[1],
            "left_sha256": hashlib.sha256(left).hexdigest(), "right_sha256": hashlib.sha256(right).hexdigest(),
        })
    records.sort(key=lambda r: r["pair_id"])
    return records


def _write_database(path: Path, records: list[dict], meta: dict[str, str], readers: int,
                    reader_codes: list[str] | None) -> list[tuple[str, str]]:
    """The study's SQLite database: schema, meta (with a new secret key), the pairs, and the readers added
    (returns their (label, code))."""
    conn = db.connect(path)
    try:
        conn.executescript(db.SCHEMA)
        conn.execute("BEGIN IMMEDIATE")
        meta = {**meta, "secret_key": secrets.token_hex(32)}
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(meta.items()))
        conn.executemany(
            "INSERT INTO pairs (pair_id, method, real_side, left_png, right_png, real_source, generated_source, slice) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [(r["pair_id"], r["method"], r["real_side"], r["left_png"], r["right_png"],
              f"{r['real']['key']}#{r['real']['slice']}", f"{r['generated']['key']}#{r['generated']['slice']}",
              r["real"]["slice"]) for r in records])
        conn.execute("COMMIT")
        return db.add_readers(conn, n=readers, codes=reader_codes)
    finally:
        conn.close()
