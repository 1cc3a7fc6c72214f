"""Results math (Clopper-Pearson, binomial test, Cohen's and Fleiss' kappa) and the results files."""

from __future__ import annotations

import csv
import json
import math
import sqlite3

import numpy as np
import pytest
from scipy import stats
from study_helpers import make_study

from meddiff.study import db
from meddiff.study.results import binomial_p, clopper_pearson, cohen_kappa, fleiss_kappa, write_results


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 10), (3, 10), (5, 10), (10, 10), (17, 40), (61, 100), (250, 480)])
def test_clopper_pearson_matches_scipy_exact_interval(k, n):
    lo, hi = clopper_pearson(k, n)
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)
    # defining property: at the bounds the one-sided tail probabilities are exactly alpha/2
    if k > 0:
        assert stats.binom.sf(k - 1, n, lo) == pytest.approx(0.025, rel=1e-9)
    if k < n:
        assert stats.binom.cdf(k, n, hi) == pytest.approx(0.025, rel=1e-9)


def test_binomial_test_hand_values():
    assert binomial_p(0, 5) == pytest.approx(2 / 32, rel=1e-12)  # P(X=0) + P(X=5)
    assert binomial_p(5, 10) == pytest.approx(1.0)
    assert binomial_p(8, 10) == pytest.approx(2 * (45 + 10 + 1) / 1024, rel=1e-12)


def test_cohen_kappa_hand_case():
    a = [1, 1, 1, 0, 0, 0, 1, 0]
    b = [1, 1, 0, 0, 0, 1, 1, 0]
    # p_o = 6/8, marginals 1/2 each -> p_e = 1/2, kappa = (3/4 - 1/2) / (1/2) = 1/2
    assert cohen_kappa(a, b) == pytest.approx(0.5, abs=1e-15)
    assert cohen_kappa(a, a) == 1.0
    assert cohen_kappa([1, 0, 1, 0], [0, 1, 0, 1]) == pytest.approx(-1.0)
    # unequal marginals: a = 3/4 ones, b = 1/4 ones; p_o = 1/2, p_e = 3/16 + 3/16 = 3/8 -> kappa = 1/5
    assert cohen_kappa([1, 1, 1, 0], [1, 0, 0, 0]) == pytest.approx(0.2, abs=1e-15)
    assert math.isnan(cohen_kappa([1, 1], [1, 1]))


def test_fleiss_kappa_hand_case():
    # 3 items, 3 raters: P_i = 1, 1, 1/3 -> mean 7/9; p = (5/9, 4/9) -> P_e = 41/81; kappa = (22/81)/(40/81) = 0.55
    assert fleiss_kappa(np.array([[3, 0], [0, 3], [2, 1]])) == pytest.approx(0.55, abs=1e-15)
    # two raters with equal marginal rates: Fleiss' kappa (Scott's pi) equals Cohen's kappa
    a, b = np.array([1, 1, 1, 0, 0, 0, 1, 0]), np.array([1, 1, 0, 0, 0, 1, 1, 0])
    counts = np.stack([a + b, 2 - a - b], axis=1)
    assert fleiss_kappa(counts) == pytest.approx(cohen_kappa(a, b), abs=1e-15)
    with pytest.raises(ValueError, match="same number"):
        fleiss_kappa(np.array([[2, 0], [1, 2]]))


def test_results_files_from_recorded_answers(tmp_path, real_dir, generated_dirs):
    study, readers = make_study(tmp_path / "s", real_dir, generated_dirs, pairs=4, readers=3, confidence=3)
    conn = db.open_study_db(study)
    real_side = dict(conn.execute("SELECT pair_id, real_side FROM pairs").fetchall())
    method = dict(conn.execute("SELECT pair_id, method FROM pairs").fetchall())
    flip = {"left": "right", "right": "left"}
    # reader1 always right; reader2 right except on even pair ids; reader3 answers only 5 pairs, all wrong
    for rid, rule, count in ((1, lambda p: real_side[p], 8), (2, lambda p: real_side[p] if p % 2 else flip[real_side[p]], 8),
                             (3, lambda p: flip[real_side[p]], 5)):
        for _ in range(count):
            p = db.progress(conn, rid).next_pair
            assert db.record_answer(conn, rid, p, rule(p), confidence=1 + p % 3, rt_ms=100 * p) == "recorded"
    conn.close()
    res = write_results(study)
    acc = {(a.by, a.group): a for a in res["accuracy"]}
    assert (acc[("reader", "reader1")].n, acc[("reader", "reader1")].correct) == (8, 8)
    assert (acc[("reader", "reader2")].n, acc[("reader", "reader2")].correct) == (8, 4)
    assert (acc[("reader", "reader3")].n, acc[("reader", "reader3")].correct) == (5, 0)
    assert (acc[("all", "all")].n, acc[("all", "all")].correct) == (21, 12)
    for m in ("bicubic", "noisy"):
        ids = [p for p in method if method[p] == m]
        a = acc[("method", m)]
        r3 = db.open_study_db(study).execute("SELECT pair_id FROM answers WHERE reader_id = 3").fetchall()
        n_r3 = sum(1 for (p,) in r3 if method[p] == m)
        assert a.n == 8 + n_r3 and a.correct == 4 + sum(1 for p in ids if p % 2)
        assert (a.ci_low, a.ci_high) == pytest.approx(clopper_pearson(a.correct, a.n))
        assert a.p_value == pytest.approx(stats.binomtest(a.correct, a.n).pvalue)
    # agreement: Fleiss over the 5 pairs all three answered; Cohen reader1/reader2 over 8 pairs
    agr = {(g.what, g.scope, g.readers): g for g in res["agreement"]}
    c12 = agr[("Cohen", "all", "reader1,reader2")]
    # reader1 always correct, reader2 half: p_o = 1/2 = p_e -> kappa 0
    assert c12.items == 8 and c12.kappa == pytest.approx(0.0, abs=1e-15)
    f = agr[("Fleiss", "all", "reader1,reader2,reader3")]
    r3_pairs = [p for (p,) in r3]
    assert f.items == 5
    assert f.kappa == pytest.approx(fleiss_kappa(np.array([[1 + p % 2, 2 - p % 2] for p in r3_pairs])), abs=1e-15)
    assert agr[("Cohen", "all", "reader1,reader3")].kappa == pytest.approx(0.0)  # constant raters: p_o = 0 = p_e
    out = study / "results"
    rows = list(csv.DictReader((out / "answers.csv").open()))
    assert len(rows) == 21 and {r["reader"] for r in rows} == {"reader1", "reader2", "reader3"}
    assert sum(int(r["correct"]) for r in rows) == 12
    assert json.loads((out / "results.json").read_text())["answers"] == 21
    html = (out / "report.html").read_text()
    assert "Clopper-Pearson" in html and "reader3" in html and "Fleiss" in html
    with sqlite3.connect(study / db.STUDY_DB) as c:  # results never write to the database
        assert c.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 21
