"""`meddiff train` on the command line: bad config input and a tiny end-to-end run."""

import numpy as np
import pytest
from PIL import Image

from meddiff import cli
from meddiff.data.prepare import PrepareOptions, prepare
from meddiff.diffusion.checkpoint import load_model

TINY = ["model.channels=[8,16]", "model.attention_levels=[false,true]", "model.norm_groups=4",
        "model.num_res_blocks=1", "model.num_heads=2", "diffusion.timesteps=50", "sampler.steps=10",
        "train.batch_size=2", "train.log_every=1", "train.ckpt_every=2", "train.device=cpu", "train.threads=1"]


@pytest.mark.parametrize("override, message", [
    ("train.bogus=1", "override 'train.bogus=1': unknown key 'bogus' in section 'train'"),
    ("bogus.steps=1", "override 'bogus.steps=1': unknown key 'bogus'"),
    ("train.steps=abc", "override 'train.steps=abc': train.steps: expected an integer, got 'abc'"),
    ("task.kind=deblur", "override 'task.kind=deblur': task.kind: 'deblur' is not one of"),
    ("train.steps", "expected KEY=VALUE"),
])
def test_bad_config_override_exits_2_with_one_line_naming_the_key(override, message, capsys):
    assert cli.main(["train", "--config", "configs/sr_x4.yaml", override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("meddiff train: error:") and err.count("\n") == 1


def test_missing_prepared_folder_is_reported(tmp_path, capsys):
    assert cli.main(["train", "--config", "configs/sr_x4.yaml", f"data.prepared={tmp_path / 'none'}"]) == 2
    assert "is not a prepared folder" in capsys.readouterr().err


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32]
    for p in range(4):
        d = root / "in" / f"patient{p}"
        d.mkdir(parents=True)
        for i in range(2):
            img = 120 + 100 * np.sin(xx / (3 + p + i)) * np.cos(yy / 5) + rng.normal(0, 5, (32, 32))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(d / f"s{i}.png")
    prepare(root / "in", root / "prep", PrepareOptions(size=16, split=(0.5, 0.25, 0.25), min_foreground=0.0), progress=False)
    return root / "prep"


def test_train_end_to_end_then_resume_and_load(prepared, tmp_path, capsys):
    args = ["train", "--no-progress", "--out", str(tmp_path / "run"), "--config", "configs/inpaint.yaml",
            f"data.prepared={prepared}", "data.size=16", *TINY]
    assert cli.main([*args, "train.steps=2"]) == 0
    out = capsys.readouterr().out
    assert "step_0000002/model.safetensors" in out and "loss.png" in out and "train_log.csv" in out
    assert cli.main([*args, "train.steps=4", "--resume"]) == 0
    cfg, net, _ = load_model(tmp_path / "run", expect_task="inpaint")
    assert net.in_channels == 3 and cfg.data.size == 16  # x_t, masked image, mask
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step_0000004"
    assert len((tmp_path / "run" / "val_log.csv").read_text().splitlines()) == 3  # header + steps 2, 4


def test_size_mismatch_with_prepared_slices_names_both_sizes(prepared, capsys):
    assert cli.main(["train", "--config", "configs/sr_x4.yaml", f"data.prepared={prepared}", *TINY]) == 2
    assert "data.size is 128 but the slices in" in capsys.readouterr().err
