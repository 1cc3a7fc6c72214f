"""Dice and accuracy against closed forms (meddiff.downstream.metrics)."""

import pytest
import torch

from meddiff.downstream import EMPTY_DICE, accuracy, dice, mean_dice
from meddiff.errors import InputError


def _maps(*arrays):
    return torch.stack([torch.as_tensor(a, dtype=torch.long) for a in arrays])


def test_identical_maps_give_one_and_disjoint_give_zero():
    a = torch.zeros(8, 8, dtype=torch.long)
    a[:4, :4], a[4:, 4:] = 1, 2
    b = torch.zeros(8, 8, dtype=torch.long)
    b[:4, 4:], b[4:, :4] = 1, 2  # same sizes, no overlap
    d = dice(_maps(a, a), _maps(a, b), 3)
    assert d.shape == (2, 2) and d.dtype == torch.float64
    assert torch.equal(d[0], torch.ones(2, dtype=torch.float64)) and torch.equal(d[1], torch.zeros(2, dtype=torch.float64))


def test_half_overlap_closed_form():
    # A = 16 pixels, B = 16 pixels shifted by half: |A ∩ B| = 8 -> 2 * 8 / 32 = 0.5
    a = torch.zeros(8, 8, dtype=torch.long)
    b = torch.zeros(8, 8, dtype=torch.long)
    a[0:4, 0:4] = 1
    b[2:6, 0:4] = 1
    assert dice(a[None], b[None], 2).item() == 0.5
    # unequal sizes: A = 12, B = 4 inside A: 2 * 4 / 16 = 0.5; A = 9, B = 3 inside: 2 * 3 / 12 = 0.5; A = 5, B = 3: 6 / 8
    c = torch.zeros(1, 10, dtype=torch.long)
    c[0, :5] = 1
    e = torch.zeros(1, 10, dtype=torch.long)
    e[0, :3] = 1
    assert dice(c[None], e[None], 2).item() == pytest.approx(0.75, abs=0)


def test_empty_conventions_and_ignore():
    z = torch.zeros(1, 4, 4, dtype=torch.long)
    one = torch.ones(1, 4, 4, dtype=torch.long)
    assert dice(z, z, 3).tolist() == [[EMPTY_DICE, EMPTY_DICE]] and EMPTY_DICE == 1.0  # absent from both: 1
    assert dice(one, z, 3).tolist() == [[0.0, 1.0]]  # class 1 in one map only: 0; class 2 nowhere: 1
    assert dice(one, one, 3, ignore=()).tolist() == [[1.0, 1.0, 1.0]]  # background kept: 3 columns
    assert dice(one, z, 3, ignore=()).tolist() == [[0.0, 0.0, 1.0]]
    assert mean_dice(one, z, 3).tolist() == [0.5]


def test_dice_is_symmetric_and_per_image():
    g = torch.Generator().manual_seed(0)
    p, r = torch.randint(0, 3, (5, 16, 16), generator=g), torch.randint(0, 3, (5, 16, 16), generator=g)
    d = dice(p, r, 3)
    assert torch.equal(d, dice(r, p, 3))
    for i in range(5):  # each row equals the single-image Dice, computed by counting
        for k in (1, 2):
            a, b = p[i] == k, r[i] == k
            assert d[i, k - 1].item() == pytest.approx(2 * (a & b).sum().item() / (a.sum() + b.sum()).item(), abs=1e-15)


def test_dice_bad_input_names_the_problem():
    with pytest.raises(InputError, match="pred has shape"):
        dice(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long), 3)
    with pytest.raises(InputError, match=r"pred has labels in \[3, 3\]; expected 0..2"):
        dice(torch.full((1, 2, 2), 3), torch.zeros(1, 2, 2, dtype=torch.long), 3)
    with pytest.raises(InputError, match="integer label maps"):
        dice(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), 3)


def test_accuracy_closed_form():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 0.0, 5.0], [1.0, 0.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 2, 2])) == 0.75
    with pytest.raises(InputError, match="labels must be integers in 0..2"):
        accuracy(logits, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(InputError, match=r"expected logits \[B, K\]"):
        accuracy(logits[0], torch.tensor([0]))
