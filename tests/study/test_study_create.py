"""`meddiff study create`: pairs, randomisation, windowing, reproducibility, input errors."""

from __future__ import annotations

import io
import json
import sqlite3

import numpy as np
import pytest
from PIL import Image
from study_helpers import make_study

from meddiff.errors import InputError
from meddiff.io import read_volume
from meddiff.study import db
from meddiff.study.create import Window, apply_window, parse_window, window_for


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())))


def test_apply_window_linear_exact():
    x = np.array([[-10.0, 0.0, 50.0, 100.0, 1e6]])
    assert apply_window(x, Window(0.0, 100.0)).tolist() == [[0, 0, 128, 255, 255]]  # 127.5 rounds half to even -> 128
    assert apply_window(np.array([[25.0]]), Window(0.0, 100.0))[0, 0] == 64  # 63.75
    assert apply_window(x, Window(0.0, 100.0)).dtype == np.uint8


def test_window_rules():
    img = np.arange(1000, dtype=np.float64).reshape(10, 100)
    spec = parse_window(["auto"], (1.0, 99.0))
    w = window_for(img, {}, spec)
    assert (w.lo, w.hi) == pytest.approx(tuple(np.percentile(img, [1, 99])))
    spec = parse_window(["CT=-160:240", "0:500"])
    assert window_for(img, {"modality": "CT"}, spec) == Window(-160.0, 240.0)
    assert window_for(img, {"modality": "MR"}, spec) == Window(0.0, 500.0)
    assert window_for(img, {"window": (40.0, 400.0)}, parse_window(["dicom"])) == Window(-160.0, 240.0)
    for bad in (["5:1"], ["a:b"], ["CT:1:2"], ["C T=1:2"], ["1:inf"]):
        with pytest.raises(InputError, match="window"):
            parse_window(bad)


def test_pairs_are_real_vs_generated_slices_randomised_and_reproducible(tmp_path, real_dir, generated_dirs):
    s1, readers = make_study(tmp_path / "a", real_dir, generated_dirs, pairs=6, seed=3, readers=3)
    s2, _ = make_study(tmp_path / "b", real_dir, generated_dirs, pairs=6, seed=3, readers=3)
    s3, _ = make_study(tmp_path / "c", real_dir, generated_dirs, pairs=6, seed=4, readers=3)
    m1, m2, m3 = (json.loads((s / db.STUDY_JSON).read_text()) for s in (s1, s2, s3))
    assert m1["pairs"] == m2["pairs"] and m1["pairs"] != m3["pairs"]
    assert sorted(p.name for p in (s1 / "images").iterdir()) == sorted(p.name for p in (s2 / "images").iterdir())
    for p in (s1 / "images").iterdir():
        assert p.read_bytes() == (s2 / "images" / p.name).read_bytes()
    pairs = m1["pairs"]
    assert len(pairs) == 12 and sorted(p["pair_id"] for p in pairs) == list(range(1, 13))
    # the same real slices for both methods (paired design), distinct within a method
    by_method = {m: sorted(p["real"]["slice"] for p in pairs if p["method"] == m) for m in ("bicubic", "noisy")}
    assert by_method["bicubic"] == by_method["noisy"] and len(set(by_method["bicubic"])) == 6
    # ids are shuffled across methods, sides vary
    ids = [p["method"] for p in sorted(pairs, key=lambda p: p["pair_id"])]
    assert ids != sorted(ids)
    assert {p["real_side"] for p in pairs} == {"left", "right"}
    # each PNG is the window of the right slice: real side = real slice, other side = generated slice
    real = np.asarray(read_volume(real_dir / "colin27" / "axial.nii.gz").array)
    gens = {m: np.load(generated_dirs[m] / "colin27" / "axial_restored.npy") for m in generated_dirs}
    for p in pairs:
        z, win = p["real"]["slice"], Window(*p["window"])
        assert p["generated"]["slice"] == z
        assert (win.lo, win.hi) == pytest.approx(tuple(np.percentile(real[z].astype(np.float64), [0.5, 99.5])))
        fake_side = "left" if p["real_side"] == "right" else "right"
        np.testing.assert_array_equal(_png(s1 / "images" / p[f"{p['real_side']}_png"]), apply_window(real[z], win))
        np.testing.assert_array_equal(_png(s1 / "images" / p[f"{fake_side}_png"]), apply_window(gens[p["method"]][z], win))
    # the database holds the same pairs, and every reader has a permutation of all pairs (different orders)
    with sqlite3.connect(s1 / db.STUDY_DB) as conn:
        rows = conn.execute("SELECT pair_id, method, real_side, left_png, right_png FROM pairs ORDER BY pair_id").fetchall()
        assert rows == [(p["pair_id"], p["method"], p["real_side"], p["left_png"], p["right_png"]) for p in pairs]
        orders = [[r[0] for r in conn.execute("SELECT pair_id FROM schedule WHERE reader_id = ? ORDER BY position", (rid,))]
                  for rid in (1, 2, 3)]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert all(sorted(o) == list(range(1, 13)) for o in orders) and len({tuple(o) for o in orders}) == 3
    assert orders == [db.reader_order(3, rid, list(range(1, 13)), "per-reader") for rid in (1, 2, 3)]
    assert len({c for _, c in readers}) == 3 and all(len(c) == 8 for _, c in readers)


def test_random_pairing_and_same_order(tmp_path, real_dir, generated_dirs):
    s, _ = make_study(tmp_path / "s", real_dir, {"bicubic": generated_dirs["bicubic"]}, pairs=5, pairing="random",
                      order="same", readers=2, reader_codes=["alpha1", "beta22"])
    m = json.loads((s / db.STUDY_JSON).read_text())
    assert len(m["pairs"]) == 5
    assert any(p["real"]["slice"] != p["generated"]["slice"] or p["real"]["key"] != p["generated"]["key"] for p in m["pairs"])
    with sqlite3.connect(s / db.STUDY_DB) as conn:
        assert [r[0] for r in conn.execute("SELECT code FROM readers ORDER BY reader_id")] == ["ALPHA1", "BETA22"]
        o = [[r[0] for r in conn.execute("SELECT pair_id FROM schedule WHERE reader_id = ? ORDER BY position", (k,))] for k in (1, 2)]
    assert o[0] == o[1]


def test_input_errors_name_the_problem(tmp_path, real_dir, generated_dirs):
    g = {"bicubic": generated_dirs["bicubic"]}
    with pytest.raises(InputError, match="--pairs 500: only"):
        make_study(tmp_path / "a", real_dir, g, pairs=500)
    with pytest.raises(InputError, match="no real image"):
        make_study(tmp_path / "b", generated_dirs["noisy"], g)  # keys differ (real side has the _restored name)
    with pytest.raises(InputError, match="method names"):
        make_study(tmp_path / "c", real_dir, {"../x": generated_dirs["bicubic"]})
    with pytest.raises(InputError, match="already exists"):
        make_study(tmp_path, real_dir, g)
    with pytest.raises(InputError, match="confidence 11"):
        make_study(tmp_path / "d", real_dir, g, confidence=11)
    with pytest.raises(InputError, match="reader codes"):
        make_study(tmp_path / "e", real_dir, g, reader_codes=["ab"])
    with pytest.raises(InputError, match="given twice"):
        make_study(tmp_path / "f", real_dir, g, reader_codes=["abcd", "ABCD"])
    shifted = tmp_path / "shifted" / "colin27"
    shifted.mkdir(parents=True)
    np.save(shifted / "axial_restored.npy", np.load(generated_dirs["bicubic"] / "colin27" / "axial_restored.npy")[:, :-4])
    with pytest.raises(InputError, match="differs from the real"):
        make_study(tmp_path / "g", real_dir, {"cut": shifted.parent})
    assert not any(p.name.startswith(tuple("abcdefg")) for p in tmp_path.iterdir() if p.name != "shifted")
