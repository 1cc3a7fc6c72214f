"""BaselineObjective (meddiff.objectives.baseline), a learned baseline under meddiff's training loop: the
baseline's named optimisers get the lr of every step and train.grad_clip."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from baselines.conftest import NoisyCrops, tiny_baseline_config, train  # noqa: E402


def test_lr_of_every_optimiser_follows_the_schedule(tmp_path, monkeypatch):
    seen = []
    from meddiff.baselines.pix2pix import Pix2Pix
    real = Pix2Pix.train_step

    def spy(self, x0, cond, mask, opts, step):
        seen.append((step, opts["G"].param_groups[0]["lr"], opts["D"].param_groups[0]["lr"], self.grad_clip))
        return real(self, x0, cond, mask, opts, step)

    monkeypatch.setattr(Pix2Pix, "train_step", spy)
    train(tiny_baseline_config(tmp_path, steps=3, grad_clip=0.5), NoisyCrops(), progress=False)
    assert seen == [(0, 5e-4, 5e-4, 0.5), (1, 1e-3, 1e-3, 0.5), (2, 1e-3, 1e-3, 0.5)]  # warm-up over 2 steps
