"""gamma(t) for the three schedules: endpoints, monotonicity, derivative; alpha^2 + sigma^2 = 1."""

import pytest
import torch

from meddiff.errors import InputError
from meddiff.vdm.schedule import (GAMMAS, NoiseNetGamma, alpha, alpha2, build_gamma, gamma_and_derivative, sigma,
                                  sigma2, snr)

T = torch.linspace(0, 1, 2001, dtype=torch.float64)


def _perturbed(kind):
    """A gamma whose parameters are moved away from their initial values (raw weights of any sign)."""
    torch.manual_seed(3)
    g = build_gamma(kind, -10.0, 7.0)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(0.5 * torch.randn_like(p))
    return g


@pytest.mark.parametrize("kind", GAMMAS)
def test_endpoints_and_strictly_increasing(kind):
    for g in (build_gamma(kind, -10.0, 7.0), _perturbed(kind)):
        with torch.no_grad():
            vals = g(T)
        if kind == "fixed_linear":
            g0, g1 = -10.0, 7.0
        else:  # learned endpoints: gamma_0 = b, gamma_1 = b + |w|
            g0, g1 = float(g.b.detach()), float(g.b.detach()) + abs(float(g.w.detach()))
        assert float(vals[0]) == pytest.approx(g0, abs=1e-12)
        assert float(vals[-1]) == pytest.approx(g1, abs=1e-12)
        assert bool((vals.diff() > 0).all())
        _, dg = gamma_and_derivative(g, T)
        assert bool((dg > 0).all())


def test_initial_schedules_are_the_reference_line():
    for kind in GAMMAS[:2]:
        vals = build_gamma(kind)(T).detach()
        assert torch.allclose(vals, -13.3 + 18.3 * T, atol=1e-12 if kind == "fixed_linear" else 1e-6)  # float32 params


def test_derivative_matches_finite_differences():
    g = _perturbed("learned_nnet").double()
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    _, dg = gamma_and_derivative(g, t)
    h = 1e-6
    with torch.no_grad():
        fd = (g(t + h) - g(t - h)) / (2 * h)
    assert torch.allclose(dg, fd, rtol=1e-6)
    _, dlin = gamma_and_derivative(build_gamma("fixed_linear"), t)
    assert torch.allclose(dlin, torch.full_like(t, 18.3), atol=1e-12)


def test_derivative_carries_gradient_to_schedule_parameters():
    g = build_gamma("learned_linear")
    _, dg = gamma_and_derivative(g, torch.tensor([0.3]))
    dg.sum().backward()
    assert float(g.w.grad) == pytest.approx(1.0)  # d|w|/dw at w > 0


def test_variance_preserving_identities():
    gam = torch.linspace(-20, 20, 401, dtype=torch.float64)
    assert torch.allclose(alpha2(gam) + sigma2(gam), torch.ones_like(gam), atol=1e-15)
    assert torch.allclose(alpha(gam) ** 2 + sigma(gam) ** 2, torch.ones_like(gam), atol=1e-15)
    assert torch.allclose(snr(gam), alpha2(gam) / sigma2(gam), rtol=1e-12)
    assert torch.allclose(torch.log(sigma2(gam) / alpha2(gam)), gam, atol=1e-9)


def test_noise_net_has_1024_sigmoid_units_and_shape_parameters():
    g = NoiseNetGamma()
    assert g.l2.out_features == 1024
    shape = list(g.shape_parameters())
    assert {id(p) for p in shape} | {id(g.b), id(g.w)} == {id(p) for p in g.parameters()}
    assert list(build_gamma("learned_linear").shape_parameters()) == []
    assert list(build_gamma("fixed_linear").parameters()) == []


def test_bad_names_and_ranges_are_refused():
    with pytest.raises(InputError, match="cosine"):
        build_gamma("cosine")
    with pytest.raises(InputError, match="gamma_min < gamma_max"):
        build_gamma("fixed_linear", 5.0, -13.3)
