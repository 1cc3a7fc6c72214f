"""Bad inputs, round two (issue 28): every case exits with code 2, prints one message naming the bad file or
value, prints no traceback and leaves the folder holding the case's files exactly as it was (nothing
written, nothing deleted: a run that fails leaves nothing). Cases run in-process and fail before any
model is sampled.

A case builds its files under `tmp_path` and returns (argv, text the message must contain).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from meddiff.cli import main
from meddiff.data.samples import samples_dir
from meddiff.io.outdir import MARKER

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "demo_sr_x4.yaml"
NIFTI = samples_dir("colin27") / "colin27" / "axial.nii.gz"


def _marked(folder: Path, verb: str, **files: bytes) -> Path:
    """A folder meddiff's `verb` wrote (its marker) holding `files` (relative path -> bytes)."""
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(json.dumps({"written_by": "meddiff", "verb": verb}))
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def _study(t: Path) -> Path:
    return _marked(t / "study", "study create", **{"study.sqlite": b"SQLite format 3\0" + b"x" * 100, "images/a.png": b"p"})


def _run(t: Path) -> Path:
    return _marked(t / "run", "train", **{"checkpoints/step_0000001/model.safetensors": b"w" * 64, "checkpoints/latest": b"step_0000001\n"})


def _prepared(t: Path) -> Path:
    return _marked(t / "prep", "prepare", **{"manifest.csv": b"a,b\n", "train.npy": b"x"})


def _sampled(t: Path) -> Path:
    return _marked(t / "samp", "sample", **{"a_restored.nii.gz": b"x"})


def _pngs(t: Path, n: int = 2) -> Path:
    from PIL import Image

    d = t / "imgs"
    for k in range(n):
        (d / f"p{k}").mkdir(parents=True)
        a = np.zeros((32, 32), np.uint8)
        a[8:24, 8:24] = 200 + k
        Image.fromarray(a).save(d / f"p{k}" / "img.png")
    return d


def _sample(t: Path, inp: Path, out: Path | None = None, *extra: str) -> list[str]:
    return ["sample", "--method", "median", "--input", str(inp), "--output", str(out or t / "out"), "--no-progress", *extra]


CASES = {
    # D1: --overwrite replaces only a folder the same verb wrote
    "D1_prepare_overwrite_study": lambda t: (["prepare", str(_pngs(t)), str(_study(t)), "--overwrite", "--no-progress"],
                                             "study.sqlite"),
    "D1_prepare_overwrite_train_run": lambda t: (["prepare", str(_pngs(t)), str(_run(t)), "--overwrite", "--no-progress"],
                                                 "checkpoints"),
    "D1_prepare_overwrite_sample_folder": lambda t: (["prepare", str(_pngs(t)), str(_sampled(t)), "--overwrite",
                                                      "--no-progress"], "meddiff sample"),
    "D1_sample_overwrite_study": lambda t: (_sample(t, NIFTI, _study(t), "--overwrite"), "study.sqlite"),
    "D1_sample_overwrite_prepared": lambda t: (_sample(t, NIFTI, _prepared(t), "--overwrite"), "meddiff prepare"),
    "D1_sample_overwrite_train_run": lambda t: (_sample(t, NIFTI, _run(t), "--overwrite"), "checkpoints"),
    "D1_degrade_overwrite_study": lambda t: (["degrade", "-i", str(NIFTI), "-o", str(_study(t)), "--overwrite"], "study.sqlite"),
    "D1_evaluate_overwrite_study": lambda t: (["evaluate", "--pred", f"m={NIFTI.parent}", "--truth", str(NIFTI.parent),
                                               "--out", str(_study(t)), "--overwrite"], "study.sqlite"),
    "D1_evaluate_overwrite_sample": lambda t: (["evaluate", "--pred", f"m={NIFTI.parent}", "--truth", str(NIFTI.parent),
                                                "--out", str(_sampled(t)), "--overwrite"], "meddiff sample"),
    "D1_train_into_prepared": lambda t: (["train", "--config", str(CONFIG), "--out", str(_prepared(t))], "meddiff prepare"),
    "D1_train_into_study": lambda t: (["train", "--config", str(CONFIG), "--out", str(_study(t))], "study.sqlite"),
    "D1_old_marker_study": lambda t: (["prepare", str(_pngs(t)), str(_marked(t / "s", "", **{"study.sqlite": b"x"})),
                                       "--overwrite", "--no-progress"], "study.sqlite"),
    # a run that fails leaves nothing (no marker, no logs)
    "fail_train_negative_lr": lambda t: (["train", "--config", str(CONFIG), "train.lr=-1", "--out", str(t / "o")], "lr"),
    "fail_train_missing_prepared": lambda t: (["train", "--config", str(CONFIG), f"data.prepared={t / 'none'}",
                                               "--out", str(t / "o")], "none"),
    # S12 / T6 / T7 / T8: configs
    "S12_yaml_duplicate_section": lambda t: (_cfg(t, "train:\n  steps: 7\nmodel:\n  dropout: 0.1\ntrain:\n  lr: 0.001\n"),
                                             "'train' is given twice"),
    "S12_yaml_duplicate_key": lambda t: (_cfg(t, "train:\n  steps: 7\n  steps: 9\n"), "'steps' is given twice"),
    "T6_yaml_deep_nesting": lambda t: (_cfg(t, "a: " + "[" * 20000 + "]" * 20000 + "\n"), "nested more than"),
    "T6_yaml_deep_mapping": lambda t: (_cfg(t, "".join("  " * k + f"k{k}:\n" for k in range(200)) + "  " * 200 + "v: 1\n"),
                                       "nested more than"),
    "T7_yaml_alias_bomb": lambda t: (_cfg(t, "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))), "alias *a"),
    "T8_norm_groups_zero": lambda t: (_train(t, "model.norm_groups=0"), "model.norm_groups"),
    "T8_channels_empty": lambda t: (_train(t, "model.channels=[]", "model.attention_levels=[]"), "model.channels"),
    "T8_channels_negative": lambda t: (_train(t, "model.channels=[-16,32,64]"), "model.channels"),
    "T8_dropout_two": lambda t: (_train(t, "model.dropout=2.0"), "model.dropout"),
    "T8_num_heads_not_dividing": lambda t: (_train(t, "model.num_heads=3"), "model.num_heads"),
    "T8_num_heads_zero": lambda t: (_train(t, "model.num_heads=0"), "model.num_heads"),
    "T8_timesteps_huge": lambda t: (_train(t, "diffusion.timesteps=10000000000"), "diffusion.timesteps"),
    "T8_num_res_blocks_zero": lambda t: (_train(t, "model.num_res_blocks=0"), "model.num_res_blocks"),
    "T8_lr_nan": lambda t: (_train(t, "train.lr=.nan"), "train.lr"),
    "T8_lr_zero": lambda t: (_train(t, "train.lr=0"), "train.lr"),
    "T8_weight_decay_negative": lambda t: (_train(t, "train.weight_decay=-1"), "train.weight_decay"),
    "T8_betas_above_one": lambda t: (_train(t, "train.betas=[0.9,1.5]"), "train.betas"),
    "T8_ema_decay_above_one": lambda t: (_train(t, "train.ema_decay=2"), "train.ema_decay"),
    "T8_grad_clip_negative": lambda t: (_train(t, "train.grad_clip=-1"), "train.grad_clip"),
    "T8_log_every_zero": lambda t: (_train(t, "train.log_every=0"), "train.log_every"),
    "T8_ckpt_every_zero": lambda t: (_train(t, "train.ckpt_every=0"), "train.ckpt_every"),
    "T8_keep_last_negative": lambda t: (_train(t, "train.keep_last=-1"), "train.keep_last"),
    "T8_data_size_zero": lambda t: (_train(t, "data.size=0"), "data.size"),
}


def _cfg(t: Path, text: str) -> list[str]:
    (t / "c.yaml").write_text(text)
    return ["train", "--config", str(t / "c.yaml"), "--out", str(t / "o")]


def _train(t: Path, *overrides: str) -> list[str]:
    return ["train", "--config", str(CONFIG), *overrides, "--out", str(t / "o")]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_round2(case, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv, named = CASES[case](tmp_path)
    before = _tree(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err + caplog.text
    assert code == 2, (case, code, err)
    assert "Traceback" not in err, err
    assert "error:" in err and named in err, (named, err)
    assert _tree(tmp_path) == before  # nothing written, nothing deleted, no temporary left behind


def test_overwrite_of_own_verb_still_works(tmp_path):
    out = tmp_path / "out"
    assert main(_sample(tmp_path, NIFTI, out)) == 0
    assert main(_sample(tmp_path, NIFTI, out, "--overwrite")) == 0
    assert json.loads((out / MARKER).read_text())["verb"] == "sample"


def test_folder_with_only_leftover_temporaries_is_accepted(tmp_path):
    """K1: a kill during the marker write leaves `.meddiff-output.json.XXXX.tmp`; a plain re-run accepts the folder."""
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{MARKER}.abc123.tmp.json").write_text("{")
    (out / ".axial_restored.nii.gz.k2j3.tmp.nii.gz").write_bytes(b"half")
    assert main(_sample(tmp_path, NIFTI, out)) == 0
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [MARKER]
