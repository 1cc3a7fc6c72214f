"""Classifier-free guidance for a class-conditional VDM (Ho & Salimans 2022): vdm.label_dropout, the
"no class" label -1 (a zero class vector), label dropout keyed by global position, the guided score
(1 + w) eps(z, c) - w eps(z, no class), and `meddiff sample --guidance`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from meddiff import config as config_mod
from meddiff.cli import main
from meddiff.errors import ConfigError, FieldError, InputError
from meddiff.vdm.build import build_vdm
from meddiff.vdm.checkpoint import load_vdm
from meddiff.vdm.generate import generate_images, generate_levels
from meddiff.vdm.networks import NO_CLASS
from meddiff.vdm.sampling import decode_levels, guided_eps, guided_score, sample_z0
from meddiff.vdm.schedule import alpha
from meddiff.vdm.vlb import label_drop, model_vlb, position_noise

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.conftest import TinyPairs, tiny_config, tiny_vdm_config, train  # noqa: E402

LABELS = {f"case{i}": i for i in range(3)}  # TinyPairs' case ids case0..case2
NAMES = ["a", "b", "c"]
CLASSES = {"n_classes": 3, "label_from": "column:c"}


def _randomised(model):
    """The model with every parameter perturbed (the zero-initialised output and conditioning layers
    included), so the class vector changes the score."""
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def _unet_cfg(**vdm):
    base = config_mod.to_dict(tiny_config("unused"))
    return config_mod.from_dict({**base, "objective": "vdm",
                                 "vdm": {"score": "unet", "gamma": "learned_linear", "embedding_dim": 16, **vdm}})


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("values, message", [
    ({"vdm": {"label_dropout": 1.0}}, "vdm.label_dropout: expected a probability 0 <= p < 1, got 1.0"),
    ({"vdm": {"label_dropout": -0.1}}, "vdm.label_dropout: expected a probability 0 <= p < 1, got -0.1"),
    ({"vdm": {"label_dropout": float("nan")}}, "vdm.label_dropout: expected a probability 0 <= p < 1, got nan"),
    ({"vdm": {"label_dropout": "x"}}, "vdm.label_dropout"),
    ({"objective": "vdm", "vdm": {"label_dropout": 0.1}},
     "vdm.label_dropout is 0.1 but vdm.n_classes is 0: dropping the label (classifier-free guidance) needs a "
     "class-conditional model"),
])
def test_bad_label_dropout_is_a_config_error_naming_the_key(values, message):
    with pytest.raises(ConfigError) as e:
        config_mod.from_dict(values)
    assert message in str(e.value)


def test_label_dropout_defaults_to_zero_and_round_trips():
    assert config_mod.from_dict({}).vdm.label_dropout == 0.0
    cfg = tiny_vdm_config("x", vdm={**CLASSES, "label_dropout": 0.1})
    assert cfg.vdm.label_dropout == 0.1 and config_mod.from_dict(config_mod.to_dict(cfg)) == cfg
    assert config_mod.load("configs/vdm_cxr64_cls.yaml", ["vdm.label_dropout=0.1"]).vdm.label_dropout == 0.1
    assert config_mod.load("configs/vdm_cxr64_cls.yaml").vdm.label_dropout == 0.0  # the documented run's values
    shipped = load_vdm("src/meddiff/checkpoints/xray_vdm64.safetensors")  # stored before the key existed
    assert shipped.cfg.vdm.label_dropout == 0.0


# ----------------------------------------------------------------------------- no class, label dropout


@pytest.mark.parametrize("cfg", [tiny_vdm_config("x", vdm={**CLASSES}), _unet_cfg(**CLASSES)], ids=["scorenet", "unet"])
def test_no_class_is_the_zero_vector_and_other_labels_are_unchanged(cfg):
    m = build_vdm(cfg, (1, 8, 8))
    n_params = sum(p.numel() for p in m.parameters())
    emb = m.embed(torch.tensor([2, NO_CLASS, 0, NO_CLASS]))
    assert torch.equal(emb[1], torch.zeros(16)) and torch.equal(emb[3], torch.zeros(16))
    assert torch.equal(emb[[0, 2]], m.class_embedding(torch.tensor([2, 0])))
    assert torch.equal(m.embed(torch.tensor([1, 2])), m.class_embedding(torch.tensor([1, 2])))
    assert m.class_embedding.num_embeddings == 3 and sum(p.numel() for p in m.parameters()) == n_params
    for bad in (-2, 3):
        with pytest.raises(InputError, match=r"expected 0\.\.2 \(or -1, no class\)"):
            m.embed(torch.tensor([0, bad]))


def test_label_drop_depends_only_on_seed_and_position_at_the_right_rate():
    n, p = 10_000, 0.1
    pos = torch.arange(n)
    drop = label_drop(3, pos, p)
    assert drop.dtype == torch.bool and drop.shape == (n,)
    assert torch.equal(drop, label_drop(3, pos, p))  # deterministic
    pick = torch.tensor([9_999, 17, 4_242, 0, 17])  # any subset, any order, repeats: the same decisions
    assert torch.equal(label_drop(3, pick, p), drop[pick])
    assert not torch.equal(label_drop(4, pos, p), drop)  # another seed, other decisions
    rate = float(drop.float().mean())
    assert abs(rate - p) < 4 * (p * (1 - p) / n) ** 0.5  # binomial: within 4 standard deviations (0.012)
    assert not bool(label_drop(3, pos[:50], 0.0).any())
    with pytest.raises(InputError, match="expected 0 <= p < 1"):
        label_drop(3, pos[:5], 1.0)


def test_dropped_examples_see_no_class_in_the_score_only():
    """model_vlb(drop=...): the dropped examples' score net sees the zero class vector (their terms do not
    depend on the label); drop all False is no dropout."""
    m = _randomised(build_vdm(tiny_vdm_config("x", vdm={**CLASSES}), (1, 8, 8)))
    x = torch.randint(0, 256, (4, 1, 8, 8))
    noise = position_noise(0, 0, torch.arange(4), 4, (4, 1, 8, 8))
    labels, other = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 2, 0, 2])
    drop = torch.tensor([True, False, True, False])
    with torch.no_grad():
        plain = model_vlb(m, x, labels=labels, noise=noise).diffusion
        none = model_vlb(m, x, labels=labels, noise=noise, drop=torch.zeros(4, dtype=torch.bool)).diffusion
        a = model_vlb(m, x, labels=labels, noise=noise, drop=drop).diffusion
        b = model_vlb(m, x, labels=other, noise=noise, drop=drop).diffusion
    assert torch.equal(none, plain)
    assert torch.equal(a[drop], b[drop]) and torch.equal(a[~drop], plain[~drop])
    assert not torch.equal(a[drop], plain[drop])
    with pytest.raises(InputError, match="label dropout needs class labels"):
        model_vlb(m, x, noise=noise, drop=drop)


def test_class_conditional_vdm_trains_with_label_dropout_reproducibly(tmp_path):
    """A tiny class-conditional VDM, 3 steps with label_dropout 0.5: the run is reproducible step by step,
    the dropout changes what it learns, label_dropout travels in the checkpoint's stored config."""
    def run(name, p):
        cfg = tiny_vdm_config(tmp_path / name, vdm={**CLASSES, "label_dropout": p}, steps=3, ema_decay=0.0)
        out = train(cfg, TinyPairs(), val_set=TinyPairs(3, seed=9), labels=LABELS, class_names=NAMES, progress=False)
        return out, load_vdm(out.checkpoint)

    (out1, a), (out2, b), (_, c) = run("a", 0.5), run("b", 0.5), run("c", 0.0)
    assert a.cfg.vdm.label_dropout == 0.5 and c.cfg.vdm.label_dropout == 0.0
    losses = [[row.split(",")[1] for row in o.log.read_text().splitlines()[1:]] for o in (out1, out2)]
    assert len(losses[0]) == 3 and losses[0] == losses[1]
    assert out1.val_log.read_text() == out2.val_log.read_text()
    sa, sb, sc = a.model.state_dict(), b.model.state_dict(), c.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # the same seed: the same steps, bit for bit
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)  # dropping half the labels changes the updates


# ----------------------------------------------------------------------------- guided sampling


@pytest.mark.parametrize("cfg", [tiny_vdm_config("x", vdm={**CLASSES}), _unet_cfg(**CLASSES)], ids=["scorenet", "unet"])
def test_guided_score_is_the_formula_of_two_separate_calls(cfg):
    m = _randomised(build_vdm(cfg, (1, 8, 8)))
    z, g = torch.randn(3, 1, 8, 8), torch.tensor([-4.0, 0.5, 3.0])
    c, u = m.embed(torch.tensor([0, 1, 2])), m.embed(torch.full((3,), NO_CLASS))
    w = 2.5
    with torch.no_grad():
        want = (1 + w) * m.score(z, g, c) - w * m.score(z, g, u)
        got = guided_score(m.score, w, u)(z, g, c)
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
        assert torch.allclose(guided_eps(m.score(z, g, c), m.score(z, g, u), w), want, atol=0, rtol=0)
        assert torch.allclose(guided_score(m.score, 0.0, u)(z, g, c), m.score(z, g, c), atol=1e-6)


def test_guidance_zero_is_the_unguided_sampler_bit_for_bit():
    m = _randomised(build_vdm(tiny_vdm_config("x", vdm={**CLASSES}), (1, 8, 8)))
    labels = torch.tensor([0, 1, 2, 1])
    gens = [torch.Generator().manual_seed(5 + i) for i in range(4)]
    with torch.no_grad():  # the sampler as it was before guidance: sample_z0, then p(x | z_0)
        emb = m.embed(labels)
        z0 = sample_z0(m.score, m.gamma, (4, 1, 8, 8), steps=6, generators=gens, cond=emb)
        g0 = m.gamma(torch.zeros(()))
        want = decode_levels(m.decoder.logits(z0 / alpha(g0), g0, emb), gens)
    got = generate_levels(m, (1, 8, 8), 4, steps=6, seed=5, labels=labels, guidance=0.0)
    assert torch.equal(got, want) and torch.equal(generate_levels(m, (1, 8, 8), 4, steps=6, seed=5, labels=labels), want)


def test_guided_sampler_follows_the_formula_and_refuses_an_unconditional_model():
    m = _randomised(build_vdm(tiny_vdm_config("x", "fixed_linear", vdm={**CLASSES}), (1, 8, 8)))
    labels, w = torch.tensor([0, 2]), 3.0
    u = m.embed(torch.full((2,), NO_CLASS))

    def two_calls(z, g, c):  # the guided eps from a conditional and an unconditional call
        return (1 + w) * m.score(z, g, c) - w * m.score(z, g, u)

    def z0_of(score):
        gens = [torch.Generator().manual_seed(i) for i in range(2)]
        return sample_z0(score, m.gamma, (2, 1, 8, 8), steps=5, generators=gens, cond=m.embed(labels))

    with torch.no_grad():
        assert torch.allclose(z0_of(guided_score(m.score, w, u)), z0_of(two_calls), rtol=1e-4, atol=1e-4)
        assert not torch.allclose(z0_of(guided_score(m.score, w, u)), z0_of(m.score), atol=1e-3)
    uncond = build_vdm(tiny_vdm_config("x"), (1, 8, 8)).eval()
    with pytest.raises(FieldError, match="guidance 1.0: classifier-free guidance needs a class-conditional VDM"):
        generate_levels(uncond, (1, 8, 8), 2, steps=2, guidance=1.0)
    with pytest.raises(FieldError, match="guidance 1.0: classifier-free guidance needs"):
        generate_levels(m, (1, 8, 8), 2, steps=2, guidance=1.0)  # no labels


# ----------------------------------------------------------------------------- meddiff sample --guidance


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Tiny checkpoints: class-conditional with label_dropout 0.5 and 0, unconditional VDM, DDPM."""
    root = tmp_path_factory.mktemp("guidance")
    with torch.random.fork_rng():
        ck = {name: train(tiny_vdm_config(root / name, vdm={**CLASSES, "label_dropout": p}, steps=1), TinyPairs(),
                          labels=LABELS, class_names=NAMES, progress=False).checkpoint
              for name, p in (("cfg", 0.5), ("plain", 0.0))}
        ck["uncond"] = train(tiny_vdm_config(root / "uncond", steps=1), TinyPairs(), progress=False).checkpoint
        ck["ddpm"] = train(tiny_config(root / "ddpm", steps=1), TinyPairs(), progress=False).checkpoint
    np.save(root / "x.npy", np.random.default_rng(0).uniform(0, 1, (8, 8)).astype(np.float32))
    return root, ck


def _sample(ck, out, *extra):
    return main(["sample", "--checkpoint", str(ck), "--output", str(out), "--num", "3", "--steps", "3", "--no-progress",
                 *extra])


def test_sample_guidance_records_it_and_warns_without_label_dropout(checkpoints, tmp_path, capsys):
    root, ck = checkpoints
    assert _sample(ck["cfg"], tmp_path / "g", "--guidance", "2") == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((tmp_path / "g" / "grid.json").read_text())["guidance"] == 2.0
    vdm = load_vdm(ck["cfg"])
    labels = torch.tensor([0, 1, 2])
    want = generate_images(vdm, 3, steps=3, labels=labels, guidance=2.0)
    from meddiff.io import read_volume

    got = np.stack([read_volume(tmp_path / "g" / f"sample_{i:04d}_{NAMES[i]}.png").array for i in range(3)])
    assert np.array_equal(got, want)
    assert _sample(ck["cfg"], tmp_path / "z", "--guidance", "0") == 0 and _sample(ck["cfg"], tmp_path / "n") == 0
    assert json.loads((tmp_path / "z" / "grid.json").read_text())["guidance"] == 0.0
    for i in range(3):
        name = f"sample_{i:04d}_{NAMES[i]}.png"
        assert np.array_equal(read_volume(tmp_path / "z" / name).array, read_volume(tmp_path / "n" / name).array)
    capsys.readouterr()
    assert _sample(ck["plain"], tmp_path / "p", "--guidance", "1.5") == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(err) == 1 and "--guidance 1.5" in err[0] and "vdm.label_dropout 0" in err[0]


def test_sample_guidance_refusals_name_the_flag_and_file(checkpoints, tmp_path, capsys):
    root, ck = checkpoints
    assert _sample(ck["cfg"], tmp_path / "a", "--guidance", "-1") == 2
    assert "--guidance -1: expected a weight w >= 0" in capsys.readouterr().err
    assert _sample(ck["uncond"], tmp_path / "b", "--guidance", "1") == 2
    err = capsys.readouterr().err
    assert "--guidance 1:" in err and "is an unconditional VDM" in err and "model.safetensors" in err
    assert main(["sample", "--checkpoint", str(ck["ddpm"]), "--input", str(root / "x.npy"), "--output",
                 str(tmp_path / "c"), "--guidance", "1"]) == 2
    err = capsys.readouterr().err
    assert "--guidance 1 applies to generation from a class-conditional VDM checkpoint only" in err
    assert "model.safetensors is not a VDM checkpoint" in err
    assert main(["sample", "--method", "bicubic", "--input", str(root / "x.npy"), "--output", str(tmp_path / "d"),
                 "--guidance", "1"]) == 2
    assert "no --checkpoint is sampled" in capsys.readouterr().err
