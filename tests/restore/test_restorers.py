"""The restorers of restore.restorers take their sampler settings from samplers.registry.resolve: the
checkpoint's stored defaults (precision included) unless the request overrides them; a VDM refuses
the settings it cannot honour instead of dropping them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from meddiff import config as config_mod
from meddiff.checkpointing import update_metadata
from meddiff.checkpointing.named import model_config, resolve_checkpoint
from meddiff.errors import FieldError
from meddiff.restore import Request, restore
from meddiff.restore import restorers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from train.conftest import TinyPairs, tiny_config, train  # noqa: E402


@pytest.fixture
def captured(monkeypatch):
    """The (denoiser, spec, options) every sample_slices call of the restorers received (it returns the condition)."""
    calls = []

    def fake(denoiser, cond, spec, **options):
        calls.append((denoiser, spec, options))
        return cond[None, :, :1].clamp(-1, 1).expand(spec.samples, *cond[:, :1].shape).clone()

    monkeypatch.setattr(restorers, "sample_slices", fake)
    return calls


def _image(tmp_path: Path) -> Path:
    src = tmp_path / "img.npy"
    np.save(src, np.random.default_rng(0).uniform(0, 1000, (16, 16)).astype(np.float32))
    return src


def test_sample_uses_the_checkpoints_stored_precision(tmp_path, captured):
    """`meddiff sample` follows the checkpoint's sampler.precision, as `meddiff demo` does (it used "auto")."""
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(Path(resolve_checkpoint("demo_sr_x4")).read_bytes())
    cfg = model_config(ckpt)
    stored = config_mod.to_dict(cfg)
    stored["sampler"]["precision"] = "bf16"
    update_metadata(ckpt, config=yaml.safe_dump(stored))
    restore(Request(output=tmp_path / "a", input=_image(tmp_path), checkpoint=str(ckpt), progress=False))
    restore(Request(output=tmp_path / "b", input=_image(tmp_path), checkpoint=str(ckpt), precision="fp32", progress=False))
    (den_a, spec_a, _), (den_b, spec_b, _) = captured
    assert (spec_a.precision, den_a.precision) == ("bf16", "bf16") and (spec_b.precision, den_b.precision) == ("fp32", "fp32")
    assert (spec_a.name, spec_a.steps) == (cfg.sampler.name, cfg.sampler.steps)


@pytest.fixture(scope="module")
def image_vdm(tmp_path_factory) -> Path:

    out = tmp_path_factory.mktemp("vdm")
    cfg = config_mod.from_dict({**config_mod.to_dict(tiny_config(out / "run", steps=1)), "objective": "vdm",
                                "vdm": {"score": "unet", "image_condition": True, "gamma": "fixed_linear"}})
    return train(cfg, TinyPairs(), progress=False).checkpoint


@pytest.mark.parametrize("extra,message", [({"precision": "bf16"}, "precision bf16: a VDM checkpoint samples in fp32"),
                                           ({"compile": True}, "compile applies to DDPM checkpoints only")])
def test_a_vdm_refuses_what_it_cannot_honour(tmp_path, image_vdm, extra, message):
    with pytest.raises(FieldError, match=message):
        restore(Request(output=tmp_path / "o", input=_image(tmp_path), checkpoint=str(image_vdm), progress=False, **extra))


def test_a_vdm_honours_noise_and_memory_settings(tmp_path, image_vdm, captured):
    restore(Request(output=tmp_path / "o", input=_image(tmp_path), checkpoint=str(image_vdm), progress=False,
                    noise="shared", max_memory="2GB", tile_size=8, steps=3))
    (_, spec, options), = captured
    assert spec.steps == 3 and spec.variance == "beta_tilde" and spec.name == "ancestral"
    assert options["noise"] == "shared" and options["max_memory"] == 2 * 10**9 and options["tile_size"] == 8


def test_restorers_are_typed_and_carry_their_domain_check():
    from meddiff.restore import DomainCheck, Restorer, located, restorer_for

    classical = restorer_for(Request(output=Path("unused"), method="bicubic"), "cpu")
    assert isinstance(classical, Restorer) and classical.task.kind == "sr" and classical.domain_check is None
    ddpm = restorer_for(located(Request(output=Path("unused"), checkpoint="sr_x4_general")), "cpu")
    check = ddpm.domain_check
    assert isinstance(check, DomainCheck) and check.factor == 4.0 and check.sampler == "posterior_mean 1"
    assert check.denoiser is not None and check.card is not None and ddpm.describe.startswith("posterior_mean 1 steps")
    assert (ddpm.sampling.name, ddpm.sampling.steps, ddpm.sampling.precision) == ("posterior_mean", 1, "fp32")


def test_one_sample_run_resolves_the_checkpoint_once(tmp_path):
    """`meddiff sample` resolves the name and the model file once (a ModelSource passed down), not 5-6 times."""
    import meddiff.checkpointing.formats as formats
    from meddiff.cli import main

    counted = {formats.resolve_model_file.__code__: "resolve_model_file", formats.format_of.__code__: "format_of"}
    calls = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code in counted:
            first = next(iter(frame.f_locals.values()), None)
            if not isinstance(first, formats.ModelSource):  # a ModelSource is not resolved again
                calls.append(counted[frame.f_code])

    sys.setprofile(profile)
    try:
        rc = main(["sample", "--checkpoint", "sr_x4_general", "--input", str(_image(tmp_path)), "--output",
                   str(tmp_path / "o"), "--no-progress"])
    finally:
        sys.setprofile(None)
    assert rc == 0 and calls == ["resolve_model_file"]
