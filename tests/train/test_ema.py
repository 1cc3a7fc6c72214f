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
