"""The VLB terms against closed forms; finite T -> continuous; antithetic times; variance minimisation."""

import math

import pytest
import torch
from conftest import discretised_gaussian, gaussian_eps_hat, levels_eps_hat
from torch.distributions import Normal, kl_divergence

from meddiff.errors import InputError
from meddiff.vdm.loss import (antithetic_times, backward_vlb, bits_per_dim, diffusion_loss_continuous,
                              diffusion_loss_discrete, latent_loss, level_values, reconstruction_loss, vlb_terms)
from meddiff.vdm.networks import LevelDecoder
from meddiff.vdm.schedule import NoiseNetGamma, alpha, build_gamma, sigma

F64 = torch.float64
G0, G1 = -13.3, 5.0


def test_latent_loss_is_the_gaussian_kl():
    f = torch.tensor([[0.3, -0.9, 0.0], [1.0, 0.5, -0.2]], dtype=F64)
    for g1 in (-1.0, 0.0, 5.0):
        g = torch.tensor(g1, dtype=F64)
        want = kl_divergence(Normal(alpha(g) * f, sigma(g)), Normal(0.0, 1.0)).sum(1)
        assert torch.allclose(latent_loss(f, g), want, atol=1e-14)


def test_reconstruction_with_two_levels_is_a_bernoulli_with_logit_z_over_variance():
    # levels -1/2, +1/2: log p(x=1|z)/p(x=0|z) = z / (sigma_0^2/alpha_0^2) = z e^{-gamma_0}
    g0 = torch.tensor(-1.5, dtype=F64)
    x = torch.tensor([[0, 1, 1], [1, 0, 0]])
    f = level_values(2, F64)[x]
    eps0 = torch.tensor([[0.3, -1.2, 2.0], [0.1, 0.7, -0.4]], dtype=F64)
    z_resc = f + torch.exp(0.5 * g0) * eps0  # z_0 / alpha_0
    p1 = torch.sigmoid(z_resc * torch.exp(-g0))
    want = -torch.where(x == 1, torch.log(p1), torch.log1p(-p1)).sum(1)
    got = reconstruction_loss(LevelDecoder(2).log_prob, x, f, g0, eps0)
    assert torch.allclose(got, want, atol=1e-12)


def test_reconstruction_of_256_levels_at_the_bin_centre():
    x = torch.tensor([[0, 17, 128, 255]])
    f = level_values(256, F64)[x]
    zero = torch.zeros_like(f)
    # noise-free z_0 at gamma_0 = -13.3: neighbours are 0.0078 / 0.0013 = 6 std away -> p = 1 - 2 e^{-18.1...}
    g0 = torch.tensor(G0, dtype=F64)
    got = reconstruction_loss(LevelDecoder(256).log_prob, x, f, g0, zero)
    d = (2 / 256) / math.exp(0.5 * G0)  # level spacing in std units
    inner = 2 * math.exp(-0.5 * d**2)  # two neighbours (and negligible further ones)
    want = 2 * math.log1p(math.exp(-0.5 * d**2)) + 2 * math.log1p(inner)  # ends have one neighbour
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_finite_T_diffusion_loss_approaches_continuous_at_rate_1_over_T():
    torch.manual_seed(0)
    gam = NoiseNetGamma(G0, G1).double()
    with torch.no_grad():
        for p in gam.shape_parameters():
            p.add_(0.3 * torch.randn_like(p))

    def score(z, g, cond=None):  # a fixed smooth network that is not the exact denoiser
        return torch.tanh(z) * torch.sigmoid(g)[:, None] + 0.1 * z

    f = torch.randn(8, 5, dtype=F64)
    eps = torch.randn(8, 5, dtype=F64)
    t = torch.arange(1, 9, dtype=F64) / 8  # on every grid i/T below (T multiple of 8)
    cont = diffusion_loss_continuous(score, gam, f, t, eps).detach()
    errs = [float((diffusion_loss_discrete(score, gam, f, t, eps, T).detach() - cont).abs().max() / cont.abs().max())
            for T in (8, 64, 512, 4096)]
    assert errs[-1] < 5e-3
    assert errs[0] > errs[1] > errs[2] > errs[3]
    for a, b in zip(errs[1:], errs[2:]):
        assert 6 < a / b < 10  # error O(1/T) once T is large: 8x more steps, ~8x smaller error


def test_antithetic_times_are_an_evenly_spaced_grid_with_lower_variance():
    for u0 in (0.0, 0.37, 0.999):
        t = antithetic_times(16, u0)
        assert bool(((t >= 0) & (t < 1)).all())
        assert torch.allclose(t.sort().values.diff(), torch.full((15,), 1 / 16, dtype=F64), atol=1e-12)
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(4000, generator=gen, dtype=F64)
    every = torch.cat([antithetic_times(16, float(v)) for v in u])
    counts = torch.histc(every, bins=10, min=0, max=1)  # uniform over [0, 1): each bin ~6400
    assert float((counts - 6400).abs().max()) < 4 * math.sqrt(6400)
    h = lambda t: torch.exp(3 * t)  # noqa: E731  a loss that varies along t
    anti = torch.stack([h(antithetic_times(16, float(v))).mean() for v in u])
    iid = h(torch.rand(4000, 16, generator=gen, dtype=F64)).mean(1)
    assert float(anti.var()) < float(iid.var()) / 10  # stratified: measured ~14x lower
    with pytest.raises(InputError):
        antithetic_times(0, 0.5)


def test_gaussian_data_with_exact_denoiser_latent_plus_diffusion_equals_mutual_information():
    """Exact score, continuous time: L_1 + L_inf = I(x; z_0) + KL(q(z_1) || N(0, I)), per dimension
    0.5 log(1 + s^2 SNR_0) + KL(N(alpha_1 mu, alpha_1^2 s^2 + sigma_1^2) || N(0, 1))."""
    mu, s, B, D = 0.3, 0.5, 65536, 64
    gen = torch.Generator().manual_seed(0)
    gam = build_gamma("fixed_linear")
    f = mu + s * torch.randn(B, D, generator=gen, dtype=F64)
    t = antithetic_times(B, float(torch.rand(1, generator=gen, dtype=F64)))
    eps = torch.randn(B, D, generator=gen, dtype=F64)
    with torch.no_grad():
        total = latent_loss(f, torch.tensor(G1, dtype=F64)) + diffusion_loss_continuous(gaussian_eps_hat(mu, s), gam, f, t, eps)
    a1 = 1 / (1 + math.exp(G1))
    m, v = math.sqrt(a1) * mu, a1 * s**2 + 1 - a1
    closed = D * (0.5 * math.log1p(s**2 * math.exp(-G0)) + 0.5 * (m * m + v - math.log(v) - 1))
    se = float(total.std()) / math.sqrt(B)
    assert abs(float(total.mean()) - closed) < 4 * se
    assert se / closed < 3e-3  # the check is tight: 4 se < 1.2% of the value


def test_bits_per_dim_of_the_exact_model_is_the_entropy_of_the_data():
    """Data x ~ a discretised Gaussian over 256 levels, the exact denoiser E[f | z_t]: the VLB in
    bits/dim is the entropy of x (the bound is tight up to the small reconstruction/prior gaps)."""
    V, D, B, chunks = 256, 1, 16384, 8  # D = 1: every value gets its own (stratified) time
    p = discretised_gaussian(V, 120.0, 20.0)
    entropy_bits = float(-(p * torch.log2(p)).sum())
    gen = torch.Generator().manual_seed(1)
    gam, dec, score = build_gamma("fixed_linear"), LevelDecoder(V), levels_eps_hat(p)
    totals, recon = [], []
    with torch.no_grad():
        for _ in range(chunks):
            x = torch.multinomial(p, B * D, replacement=True, generator=gen).view(B, D)
            f = level_values(V, F64)[x]
            t = antithetic_times(B, float(torch.rand(1, generator=gen, dtype=F64)))
            eps, eps0 = torch.randn(2, B, D, generator=gen, dtype=F64)
            terms = vlb_terms(x, f, dec.log_prob, score, gam, t=t, eps=eps, eps_0=eps0)
            totals.append(bits_per_dim(terms.total, D))
            recon.append(bits_per_dim(terms.reconstruction, D))
    total = torch.cat(totals)
    se = float(total.std()) / math.sqrt(total.numel())
    # total = H(x) - H(x|z_0) + reconstruction + KL(q(z_1) || N(0, 1)): within ~0.015 bit of H(x)
    assert abs(float(total.mean()) - entropy_bits) < 4 * se + 0.015
    assert se < 0.05
    assert 0 < float(torch.cat(recon).mean()) < 0.015


def test_backward_vlb_gives_shape_parameters_the_second_moment_gradient():
    torch.manual_seed(0)
    gam = NoiseNetGamma(G0, G1, n_features=16)
    score = gaussian_eps_hat(0.0, 0.7)
    f = 0.7 * torch.randn(32, 4)
    t = antithetic_times(32, 0.3).float()
    eps, eps0 = torch.randn(2, 32, 4)
    zero = lambda x, z, g: (z * 0).sum(1)  # noqa: E731  decoder term that still depends on gamma_0

    def terms():
        return vlb_terms(f, f, zero, score, gam, t=t, eps=eps, eps_0=eps0)

    tt = terms()
    sm = (bits_per_dim(tt.diffusion, 4) ** 2).mean()
    want_shape = torch.autograd.grad(sm, list(gam.shape_parameters()), retain_graph=True)
    want_ends = torch.autograd.grad(tt.bpd()["total"], [gam.b, gam.w])
    backward_vlb(terms(), gam)
    for p, g in zip(gam.shape_parameters(), want_shape):
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-8)
    assert torch.allclose(gam.b.grad, want_ends[0]) and torch.allclose(gam.w.grad, want_ends[1])


def test_variance_minimisation_lowers_the_variance_and_keeps_the_vlb():
    """Exact denoiser of Gaussian data, endpoints frozen: training the noise net's shape on
    backward_vlb lowers Var[L_diff] while E[L_diff] (invariant to the shape, eq. 17) stays."""
    torch.manual_seed(0)
    mu, s, D = 0.3, 0.5, 4
    score = gaussian_eps_hat(mu, s)
    gam = NoiseNetGamma(G0, G1)
    for p in gam.endpoint_parameters():
        p.requires_grad_(False)
    zero = lambda x, z, g: torch.zeros(x.shape[0])  # noqa: E731

    def draw(gen, b):
        f = mu + s * torch.randn(b, D, generator=gen)
        return f, torch.rand(b, generator=gen), torch.randn(b, D, generator=gen), torch.randn(b, D, generator=gen)

    def stats():
        f, t, e, _ = draw(torch.Generator().manual_seed(123), 20000)
        with torch.no_grad():
            d = diffusion_loss_continuous(score, gam, f, t, e)
        return float(d.mean()), float(d.var()), float(d.std()) / math.sqrt(d.numel())

    m0, v0, se0 = stats()
    opt = torch.optim.Adam(gam.shape_parameters(), lr=2e-2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(100):
        f, _, e, e0 = draw(gen, 256)
        t = antithetic_times(256, float(torch.rand(1, generator=gen))).float()
        opt.zero_grad()
        backward_vlb(vlb_terms(f, f, zero, score, gam, t=t, eps=e, eps_0=e0), gam)
        opt.step()
    m1, v1, se1 = stats()
    assert v1 < 0.8 * v0
    assert abs(m1 - m0) < 3 * math.hypot(se0, se1)
    with torch.no_grad():
        assert float(gam(torch.tensor(0.0))) == pytest.approx(G0, abs=1e-5)
        assert float(gam(torch.tensor(1.0))) == pytest.approx(G1, abs=1e-5)


def test_bad_inputs_are_refused():
    gam, f = build_gamma("fixed_linear"), torch.zeros(2, 3)
    zero = lambda x, z, g: torch.zeros(2)  # noqa: E731
    with pytest.raises(InputError, match="timesteps"):
        vlb_terms(f, f, zero, gaussian_eps_hat(0, 1), gam, t=torch.zeros(2), eps=f, eps_0=f, timesteps=-1)
    with pytest.raises(InputError, match="noise shapes"):
        vlb_terms(f, f, zero, gaussian_eps_hat(0, 1), gam, t=torch.zeros(3), eps=f, eps_0=f)
