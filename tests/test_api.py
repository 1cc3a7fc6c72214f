"""The Python API does what the CLI does: `meddiff.load_pretrained(name).restore(...)` applies the checkpoint's
stored sampler settings exactly as `meddiff sample` (bit for bit on a real image), `import meddiff` exposes the
entry points lazily, and README's API example runs from a folder that is not the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import meddiff
from meddiff.cli import main
from meddiff.errors import FieldError
from meddiff.io import read_volume

ROOT = Path(__file__).resolve().parents[1]
MNI = ROOT / "src/meddiff/data/samples/mni152/icbm152_2009a/axial.nii.gz"


@pytest.fixture(scope="module")
def mni_slice(tmp_path_factory) -> Path:
    """A low-resolution slice of the shipped MNI152 template (its middle slice, every 4th pixel, at most 48x48), as .npy."""
    vol = read_volume(MNI).array
    z = vol.shape[0] // 2
    lowres = np.ascontiguousarray(vol[z, ::4, ::4][:48, :48], dtype=np.float32)
    path = tmp_path_factory.mktemp("mni") / "mni_axial.npy"
    np.save(path, lowres)
    return path


def cli_output(tmp: Path, image: Path, *extra: str) -> dict[str, np.ndarray]:
    out = tmp / "cli"
    assert main(["sample", "--checkpoint", extra[0], "--input", str(image), "--output", str(out), "--no-progress",
                 *extra[1:]]) == 0
    return {p.name: np.load(p) for p in sorted(out.rglob("*.npy"))}


@pytest.mark.parametrize("model", ["sr_x4_general", "sr_x4_general_1step"])
def test_the_api_restores_an_array_as_the_cli_does_bit_for_bit(tmp_path, mni_slice, model):
    """The stored default of each model (posterior_mean / the distilled student, one call) without any setting given."""
    pipe = meddiff.load_pretrained(model)
    lowres = np.load(mni_slice)
    got = pipe.restore(lowres)
    (name, want), = cli_output(tmp_path, mni_slice, model).items()
    assert name == "mni_axial_restored.npy" and got.dtype == want.dtype == np.float32
    assert got.shape == tuple(4 * s for s in lowres.shape)
    assert np.array_equal(got, want)


def test_overrides_and_several_samples_match_the_cli(tmp_path, mni_slice):
    pipe = meddiff.load_pretrained("sr_x4_general", seed=3)
    got = pipe.restore(np.load(mni_slice), sampler="ddim", steps=2, samples=2)
    want = cli_output(tmp_path, mni_slice, "sr_x4_general", "--sampler", "ddim", "--steps", "2", "--samples", "2",
                      "--seed", "3")
    assert sorted(got) == ["mean", "sample0", "sample1", "std"]
    for tag, arr in got.items():
        assert np.array_equal(arr, want[f"mni_axial_{tag}.npy"]), tag


def test_files_in_files_out_are_the_cli_files(tmp_path, mni_slice):
    written = meddiff.load_pretrained("sr_x4_general").restore(mni_slice, output=tmp_path / "api")
    want = cli_output(tmp_path, mni_slice, "sr_x4_general")
    assert [p.name for p in written] == ["mni_axial_restored.npy"]
    assert np.array_equal(np.load(written[0]), want["mni_axial_restored.npy"])


def test_the_pipeline_refuses_unknown_settings_and_names_fields(mni_slice):
    pipe = meddiff.load_pretrained("sr_x4_general")
    with pytest.raises(TypeError, match="unknown settings \\['temperature'\\]"):
        pipe.restore(np.load(mni_slice), temperature=1.0)
    with pytest.raises(FieldError, match="steps 0: expected 1..2000"):
        pipe.restore(np.load(mni_slice), sampler="ddim", steps=0)
    with pytest.raises(TypeError, match="output=FOLDER"):
        pipe.restore(mni_slice)
    assert pipe.cfg.sampler.name == "posterior_mean" and pipe.denoiser.size_multiple >= 1


def test_import_meddiff_is_lazy_and_exposes_the_entry_points():
    code = ("import sys, meddiff; heavy = [m for m in ('torch', 'meddiff.restore', 'meddiff.evaluation') if m in sys.modules];"
            "print(heavy, meddiff.__version__, meddiff.load_pretrained.__module__, meddiff.Request.__name__,"
            " meddiff.EvaluationRequest.__name__, meddiff.Pipeline.__name__)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split()[:2] == ["[]", meddiff.__version__]
    assert "meddiff.restore.pipeline Request EvaluationRequest Pipeline" in out
    with pytest.raises(AttributeError):
        meddiff.no_such_entry_point


def test_the_readme_api_example_runs_outside_the_repository(tmp_path):
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## In Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
