"""meddiff.domain: the model-based score, the consistency ratio, the card checks (domain/card.py), and `meddiff
sample` warning about (or, with --strict-domain, refusing) an input unlike the training data (domain/check.py)."""

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from meddiff.cli import main
from meddiff.data.degrade import SuperResolution
from meddiff.domain import (DomainCard, card_from_training, check_input, consistency_ratio, fit_thresholds, flagged_by,
                            foreground_quantiles, histogram_distance, model_score, noise_sigma, read_card,
                            spectral_rolloff, spectrum_edge_ratio, write_card)
from meddiff.diffusion.checkpoint import load_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from commands.test_sample import make_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    """A residual x0-model with a zero output layer: it always predicts the condition (bicubic)."""
    return make_checkpoint(tmp_path_factory.mktemp("id"), identity=True)


def _image(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 1, n // 8, n // 8, generator=g), size=(n, n), mode="bicubic")
    return (x - x.min()) / (x.max() - x.min()) * 2 - 1


def test_score_of_a_model_that_returns_bicubic_is_one(identity):
    _, _, den = load_model(identity)
    s = model_score(den, torch.cat([_image(), _image(seed=1)]), 4.0)
    np.testing.assert_allclose(s, 1.0, rtol=1e-5)


def test_consistency_ratio_is_one_for_bicubic_and_grows_when_the_output_changes_the_measurement():
    sr = SuperResolution(4.0)
    x = _image(64)
    y = sr.downsample(x)
    up = sr.upsample(y, (64, 64))
    assert consistency_ratio(up, y, 4.0) == pytest.approx(1.0, rel=1e-6)
    assert consistency_ratio(x, y, 4.0) < 0.5  # the truth itself agrees with its measurement
    assert consistency_ratio((up + 0.2).clamp(-1, 1), y, 4.0) > 2


def test_card_checks_name_each_reason_and_spacing_or_histogram_alone_only_notes(identity):
    _, _, den = load_model(identity)
    lows = SuperResolution(4.0).downsample(_image(128))
    card = DomainCard(modalities=("MR",), spacing_mm=(0.8, 1.5), intensity_quantiles=foreground_quantiles(lows[:, 0].numpy()),
                      thresholds={"score": ["high", 1.5], "noise": ["high", 0.15]})
    ok = check_input("a.dcm", lows, "MR", (4.0, 4.0), 4.0, den, card)
    assert ok.in_domain and not ok.notes and ok.score == pytest.approx(1.0, rel=1e-5) and ok.histogram_distance == pytest.approx(0.0)
    far = check_input("f.dcm", torch.where(lows > -0.9, 0.9, lows), "MR", (40.0, 40.0), 4.0, den, card)
    assert far.in_domain and not far.worse_than_bicubic  # spacing and histogram do not predict a loss: notes only
    assert "spacing 10.00 mm" in " ".join(far.notes) and "intensity histogram" in " ".join(far.notes)
    g = torch.Generator().manual_seed(0)
    noisy = (lows + 0.4 * torch.randn(lows.shape, generator=g)).clamp(-1, 1)
    bad = check_input("b.dcm", noisy, "CT", (4.0, 4.0), 4.0, den, card)
    text = " ".join(bad.reasons)
    assert "modality CT" in text and "noise std" in text and bad.worse_than_bicubic
    assert bad.signals["noise"] > 0.15 > ok.signals["noise"]
    assert histogram_distance([0, 0.5], [0.2, 0.5]) == pytest.approx(0.1)


def test_spectrum_edge_ratio_separates_antialiased_kspace_and_zero_filled_inputs():
    from meddiff.data.acquisition import low_res

    g = torch.Generator().manual_seed(3)  # detail up to half the HR band: beyond the low-resolution band
    x = torch.nn.functional.interpolate(torch.rand(1, 1, 64, 64, generator=g), size=(128, 128), mode="bicubic") * 2 - 1
    u = (x.double() + 1) / 2
    bic = SuperResolution(4.0).downsample(x)
    ksp = low_res(u, "kspace_none", (32, 32)).float() * 2 - 1
    zip2 = low_res(u, "zip2", (32, 32)).float() * 2 - 1  # 64^2 delivered, its outer half-band empty
    e_bic, e_ksp, e_zip = (spectrum_edge_ratio(t)[0] for t in (bic, ksp, zip2))
    assert e_ksp.min() > 1.4 * e_bic.max()  # flat to the cut (ringing); the bicubic kernel rolls off
    assert e_zip.max() < 0.1 * e_bic.min()
    assert spectrum_edge_ratio(bic).shape == (1, 2)


def test_spectral_rolloff_is_negative_after_antialiasing_and_near_zero_after_a_kspace_truncation():
    from meddiff.data.acquisition import low_res

    g = torch.Generator().manual_seed(4)
    # a power-law (1/f) image: every band holds detail, as in a scan
    f = torch.fft.fftfreq(256).abs()
    amp = 1 / torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).clamp_min(1 / 256)
    x = torch.fft.ifft2(amp * torch.exp(2j * torch.pi * torch.rand(256, 256, generator=g))).real[None, None].float()
    x = (x - x.min()) / (x.max() - x.min()) * 2 - 1
    u = (x.double() + 1) / 2
    bic = spectral_rolloff(SuperResolution(4.0).downsample(x))[0]
    ksp = spectral_rolloff(low_res(u, "kspace_none", (64, 64)).float() * 2 - 1)[0]
    assert bic.mean() < -0.3 and bic.mean() < ksp.mean() - 0.3 and abs(ksp.mean()) < 0.2, (bic, ksp)


def test_noise_sigma_recovers_the_std_of_white_noise_on_a_smooth_image():
    g = torch.Generator().manual_seed(1)
    x = _image(128, seed=2) * 0.5
    for sigma in (0.02, 0.1):
        est = noise_sigma(x + sigma * torch.randn(x.shape, generator=g))
        assert est[0] == pytest.approx(sigma, rel=0.15)


def test_flagged_by_and_fit_thresholds():
    assert flagged_by({"a": 2.0, "b": float("nan"), "c": None}, {"a": ["high", 1.0], "b": ["high", 0.0], "c": ["low", 9]}) == ["a"]
    assert flagged_by({"a": 0.5}, {"a": ["low", 1.0]}) == ["a"] and flagged_by({"a": 1.5}, {"a": ["low", 1.0]}) == []
    rng = np.random.default_rng(0)
    rows = [{"loss": False, "s": float(v), "t": float(rng.normal())} for v in rng.normal(0, 1, 200)]
    rows += [{"loss": True, "s": float(v), "t": float(rng.normal())} for v in rng.normal(4, 1, 100)]  # s separates, t does not
    th = fit_thresholds(rows, {"s": "high", "t": "high"}, 0.05)
    assert "s" in th and th["s"][0] == "high"
    wins = [r for r in rows if not r["loss"]]
    losses = [r for r in rows if r["loss"]]
    assert sum(bool(flagged_by(r, th)) for r in wins) <= 0.05 * len(wins)
    assert sum(bool(flagged_by(r, th)) for r in losses) >= 0.9 * len(losses)
    # a second kind of image whose wins sit higher: pooled, its false alarms exceed the bound; per kind, they do not
    rows += [{"loss": False, "s": float(v), "t": 0.0, "kind": "b"} for v in rng.normal(3, 1, 60)]
    rows = [r | {"kind": r.get("kind", "a")} for r in rows]
    pooled, per_kind = fit_thresholds(rows, {"s": "high"}, 0.1), fit_thresholds(rows, {"s": "high"}, 0.1, group="kind")
    b_wins = [r for r in rows if r["kind"] == "b"]
    assert sum(bool(flagged_by(r, pooled)) for r in b_wins) > 0.1 * len(b_wins)
    assert sum(bool(flagged_by(r, per_kind)) for r in b_wins) <= 0.1 * len(b_wins)


def test_card_round_trips_through_the_model_file(identity, tmp_path):
    import shutil

    f = tmp_path / "model.safetensors"
    shutil.copy(identity / "model.safetensors", f)
    _, _, den = load_model(f)
    imgs = np.concatenate([_image(64, s)[0].numpy() for s in range(4)])
    card = card_from_training(imgs, den, 4.0, modalities=("MR",), anatomy="brain", spacing_mm=(1.0, 1.2),
                              thresholds={"score": ["high", 0.8], "edge_min": ["low", 0.01]})
    write_card(f, card)
    assert read_card(f) == card and read_card(identity / "model.safetensors") is None
    assert card.score_reference[0] == pytest.approx(1.0, rel=1e-5)
    load_model(f)  # still a valid model file


def _ct_input(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    (tmp_path / "in").mkdir()
    ds.save_as(tmp_path / "in" / "ct.dcm")
    return tmp_path / "in"


def test_sample_warns_and_strict_domain_refuses(identity, tmp_path, capsys):
    import json
    import shutil

    model = tmp_path / "mr_model.safetensors"
    shutil.copy(identity / "model.safetensors", model)
    write_card(model, DomainCard(modalities=("MR",), anatomy="brain"))
    inp = _ct_input(tmp_path)
    args = ["sample", "--checkpoint", str(model), "--input", str(inp), "--steps", "2", "--no-progress", "--device", "cpu",
            "--input-kind", "upsampled"]
    assert main(args + ["--output", str(tmp_path / "strict"), "--strict-domain"]) == 2
    err = capsys.readouterr().err
    assert "ct.dcm" in err and "modality CT" in err and "--strict-domain" in err and "Traceback" not in err
    assert not (tmp_path / "strict").exists()
    assert main(args + ["--output", str(tmp_path / "warn")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and err.count("modality CT") == 1  # one warning, printed once
    (rep,) = json.loads((tmp_path / "warn" / "domain_check.json").read_text())
    assert rep["source"].endswith("ct.dcm") and any("modality CT" in r for r in rep["reasons"])
    out = pydicom.dcmread(tmp_path / "warn" / "ct_restored.dcm")
    assert out.SeriesDescription == "meddiff sr (restored)"  # the findings are in domain_check.json, not stamped here


def test_a_result_the_check_scores_worse_than_bicubic_is_summarised_and_fails_only_with_strict_domain(identity, tmp_path, capsys):
    import shutil

    model = tmp_path / "m.safetensors"
    shutil.copy(identity / "model.safetensors", model)
    # the identity model returns bicubic exactly: consistency ratio 1, above a limit of 0.5; nothing fires before sampling
    write_card(model, DomainCard(modalities=("MR",), thresholds={"consistency": ["high", 0.5]}))
    from meddiff.io import Volume, write_volume

    write_volume(Volume((_image(64)[0, 0].numpy() + 1) * 100, (1.0, 1.0), np.eye(4), "p", tmp_path / "x", {}),
                 tmp_path / "in" / "a.nii.gz")
    args = ["sample", "--checkpoint", str(model), "--input", str(tmp_path / "in"), "--steps", "2", "--no-progress",
            "--device", "cpu"]
    assert main(args + ["--output", str(tmp_path / "o1")]) == 0
    err = capsys.readouterr().err
    assert "scored worse than bicubic" in err and "a.nii.gz" in err and err.count("warning:") == 1
    assert main(args + ["--output", str(tmp_path / "o2"), "--strict-domain"]) == 3
    assert "scored worse than bicubic" in capsys.readouterr().err
    # the run finished: its outputs and findings stay for the user to look at (a failed run would remove them)
    assert (tmp_path / "o2" / "domain_check.json").exists() and list((tmp_path / "o2").rglob("a*.nii.gz"))


def test_calibrated_uncertainty_is_written_only_for_the_calibrated_sampler(identity, tmp_path):
    import math
    import shutil

    from meddiff.io import read_volume, write_volume, Volume

    model = tmp_path / "m.safetensors"
    shutil.copy(identity / "model.safetensors", model)
    write_card(model, DomainCard(modalities=("MR",), std_scale=2.0, std_sampler="dpm_solver_pp 2"))
    img = (_image(32)[0, 0].numpy() + 1) * 100
    write_volume(Volume(img, (1.0, 1.0), np.eye(4), "p", tmp_path / "x", {}), tmp_path / "in" / "a.nii.gz")
    base = ["sample", "--checkpoint", str(model), "--input", str(tmp_path / "in"), "--samples", "2", "--sampler",
            "dpm_solver_pp", "--no-progress", "--device", "cpu", "--input-kind", "upsampled", "--precision", "fp32"]
    assert main(base + ["--steps", "2", "--output", str(tmp_path / "o2")]) == 0
    std = read_volume(tmp_path / "o2" / "a_std.nii.gz").array
    unc = read_volume(tmp_path / "o2" / "a_uncertainty.nii.gz").array
    np.testing.assert_allclose(unc, 2.0 * math.sqrt(1.5) * std, rtol=1e-4, atol=1e-4)
    assert main(base + ["--steps", "3", "--output", str(tmp_path / "o3")]) == 0
    assert not (tmp_path / "o3" / "a_uncertainty.nii.gz").exists()  # fitted for 2 steps, not 3
