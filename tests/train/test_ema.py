import pytest
import torch
from torch import nn

from meddiff.train.ema import ema_copy, ema_update


def test_ema_update_is_the_convex_combination():
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    ema = ema_copy(model)
    before = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    ema_update(ema, model, 0.9)
    for e, b, m in zip(ema.parameters(), before, model.parameters()):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * m, rtol=0, atol=1e-7)


def test_ema_after_n_constant_updates_approaches_the_weights_geometrically():
    model = nn.Linear(2, 1)
    ema = ema_copy(model)
    start = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    for _ in range(10):
        ema_update(ema, model, 0.5)
    for e, s in zip(ema.parameters(), start):  # 1 - (1 - s) * 0.5^10
        torch.testing.assert_close(e, 1 - (1 - s) * 0.5**10, rtol=0, atol=1e-6)


def test_ema_copy_is_frozen_and_independent():
    model = nn.Linear(2, 2)
    ema = ema_copy(model)
    assert not any(p.requires_grad for p in ema.parameters()) and not ema.training
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not torch.equal(ema.weight, model.weight)
    ema_update(ema, model, 0.0)  # decay 0 copies
    assert torch.equal(ema.weight, model.weight)


def test_ema_rejects_bad_decay():
    model = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="decay must be in"):
        ema_update(ema_copy(model), model, 1.5)


# ----------------------------------------------------------------------- warm-up (issue 19)

import math  # noqa: E402

from meddiff.checkpointing.ema import ema_decay_at, init_share, init_share_warning  # noqa: E402


def test_warmup_decay_is_capped_and_constant_rule_is_unchanged():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay_at(10**6, 0.999) == 0.999  # the cap: the configured decay in the long run
    assert ema_decay_at(0, 0.995, warmup=False) == 0.995


@pytest.mark.parametrize("n", [1, 5, 30, 300])
def test_init_share_with_warmup_is_one_over_binomial_before_the_cap(n):
    # prod_{t<n} (1 + t)/(10 + t) = n! 9! / (n + 9)! = 1 / C(n + 9, 9) while below decay 0.9999
    assert init_share(n, 0.9999) == pytest.approx(1 / math.comb(n + 9, 9), rel=1e-9)


def test_init_share_matches_the_weight_left_after_real_updates():
    """The share the formula predicts is the share of the initial weights an EMA really keeps."""
    model = nn.Linear(3, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.0)
    ema = ema_copy(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.fill_(1.0)  # the "initialisation" the average starts from; the model stays at 0
    for t in range(40):
        ema_update(ema, model, ema_decay_at(t, 0.98))
    torch.testing.assert_close(ema.weight, torch.full_like(ema.weight, init_share(40, 0.98)), rtol=1e-5, atol=0)


def test_constant_decay_share_is_a_power_and_warns_while_warmup_does_not():
    assert init_share(300, 0.995, warmup=False) == pytest.approx(0.995**300)  # 22%: the run
    text = init_share_warning(300, 0.995, False)
    assert text is not None and "22.2%" in text and "--weights raw" in text
    assert init_share_warning(300, 0.995, True) is None
    assert init_share(0, 0.9) == 1.0 and init_share(5, 0.0, warmup=False) == 0.0
