"""DPM-Solver++ (meddiff.samplers.dpm_solver) against diffusers' DPMSolverMultistepScheduler.

Both are driven by the same deterministic denoiser -- the EXACT posterior mean E[x0 | x_t] of
per-pixel Gaussian-mixture data (nonlinear in x_t, so every order of the solver matters) -- from
the same x_T, on the paper's schedule (T = 2000, linear betas 1e-4..0.02) and meddiff's own
time grids, and every step of the trajectory is compared.

diffusers options that ARE meddiff's sampler (Lu et al. 2022b, "DPM-Solver++", Algorithm 2):
    algorithm_type="dpmsolver++"      multistep in data (x0) prediction
    solver_type="midpoint"            2M: D = (1 + 1/(2r)) m0 - 1/(2r) m1 (Algorithm 2; "heun" is
                                      the Taylor variant, not meddiff's)
    final_sigmas_type="zero"          meddiff's grid ends at the clean end (alpha 1, sigma 0) after
                                      the last network call at k = 0; this also forces diffusers'
                                      last step to first order, which returns x0_hat(k=0) as meddiff does
    lower_order_final=False           meddiff does not drop to order 2 on the second-to-last step
    set_timesteps(timesteps=grid.k)   the same network timesteps (uniform or log-SNR grid)
    prediction_type                   meddiff "eps" / "x0" / "v" = "epsilon" / "sample" / "v_prediction"
                                      (same v = alpha eps - sigma x0 convention); diffusers gets
                                      the raw network output, meddiff the same net via DDPMDenoiser
    thresholding=True, sample_max_value=1.0
                                      the dynamic threshold s is clamped to [1, 1], so it is
                                      clamp(x0_hat, -1, 1): meddiff's clip=True
The warm-up (first step order 1, second step order <= 2) is the same in both.

Order 3 does NOT match, by design of the two codes: diffusers' 3M multiplies its second divided
difference D2 = h^2 f[l0, l1, l2] (= h^2 x0''/2 for the interpolating quadratic) by
phi_3 = (e^{-h} - 1 + h)/h^2 - 1/2, which integrates only HALF the quadratic term of x0_hat(lambda);
meddiff integrates the whole interpolating quadratic exactly. The tests pin the difference to that
term and show the consequence on an exactly solvable ODE: meddiff's 3M converges at order >= 3,
diffusers' at order 2 (see test_3m_converges_at_third_order_and_diffusers_3m_at_second).

diffusers computes its schedule in float32; 1 - alpha_bar at k = 0 (1e-4) then keeps only ~4 digits,
so the reference is handed meddiff's float64 alpha_bar (test_linear_schedule_is_diffusers_linear_schedule
checks it is the same schedule to float32 precision). The public step() always computes in float32;
the float64 parity uses diffusers' own update functions on float64 sigmas.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

diffusers = pytest.importorskip("diffusers", minversion="0.28",
                                reason="diffusers (>= 0.28, custom timesteps) is the test-only reference; "
                                       "pip install -e .[dev]")
from diffusers import DPMSolverMultistepScheduler  # noqa: E402

from meddiff.diffusion.denoiser import DDPMDenoiser  # noqa: E402
from meddiff.diffusion.schedule import DiscreteSchedule, linear_betas  # noqa: E402
from meddiff.samplers.noise import generators_for, randn_per_image  # noqa: E402
from meddiff.samplers.dpm_solver import sample_dpm_solver_pp  # noqa: E402
from meddiff.diffusion.grid import time_grid  # noqa: E402

T, BETA_START, BETA_END = 2000, 1e-4, 0.02
SCHED = DiscreteSchedule(linear_betas(T, BETA_START, BETA_END))
AB = SCHED.alpha_bar  # float64 [T]
SHAPE, SEEDS = (2, 1, 8, 8), [11, 12]
# per-pixel data: mixture of N(mu_j, s_j^2) with weights w_j; ~10% of the mass lies outside [-1, 1]
WEIGHTS, MEANS, STDS = (0.3, 0.7), (-0.6, 0.55), (0.2, 0.3)
PREDICTION_TYPE = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def mixture_posterior_mean(x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """E[x0 | x_t = x] for x0 ~ sum_j w_j N(mu_j, s_j^2), x_t = alpha x0 + sigma eps (float64):
    sum_j r_j(x) (mu_j + s_j^2 alpha / v_j (x - alpha mu_j)), v_j = alpha^2 s_j^2 + sigma^2,
    r_j(x) proportional to w_j N(x; alpha mu_j, v_j) (Bayes' rule per component)."""
    x = x.double()
    logits, means = [], []
    for w, mu, s in zip(WEIGHTS, MEANS, STDS):
        v = alpha * alpha * s * s + sigma * sigma
        logits.append(math.log(w) - 0.5 * math.log(v) - (x - alpha * mu) ** 2 / (2 * v))
        means.append(mu + s * s * alpha / v * (x - alpha * mu))
    r = torch.softmax(torch.stack(logits), dim=0)
    return (r * torch.stack(means)).sum(dim=0)


def alpha_sigma(k: int) -> tuple[float, float]:
    ab = float(AB[k])
    return math.sqrt(ab), math.sqrt(1 - ab)


class MixtureNet(nn.Module):
    """net(cat(x_t, cond), k) -> the eps / x0 / v of the exact mixture posterior mean (float32 out)."""

    def __init__(self, prediction: str):
        super().__init__()
        self.prediction = prediction

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.output(x[:, :1], int(k[0])).float()

    def output(self, xt: torch.Tensor, k: int) -> torch.Tensor:
        a, s = alpha_sigma(k)
        x0 = mixture_posterior_mean(xt, a, s)
        eps = (xt.double() - a * x0) / s
        return {"x0": x0, "eps": eps, "v": a * eps - s * x0}[self.prediction]


class Float64MixtureDenoiser:
    """The same posterior mean as a float64 denoiser (the contract the samplers use:
    .sched, .from_diffused, __call__(x_t, k, cond) -> x0_hat)."""

    sched = SCHED

    def time_grid(self, steps, kind="uniform"):  # the Denoiser contract: its own grid
        return time_grid(self.sched, steps, kind)

    def from_diffused(self, z0, cond):
        return z0.double()

    def __call__(self, x, k, cond):
        a, s = alpha_sigma(int(k[0]))
        x0 = mixture_posterior_mean(x, a, s)
        return x0


def reference_scheduler(order: int, prediction: str = "x0", clip: bool = False, timesteps=None):
    """diffusers' DPM-Solver++ configured as meddiff's sampler (module docstring), float64 alpha_bar."""
    sch = DPMSolverMultistepScheduler(
        num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END, beta_schedule="linear",
        algorithm_type="dpmsolver++", solver_order=order, solver_type="midpoint",
        prediction_type=PREDICTION_TYPE[prediction], thresholding=clip, sample_max_value=1.0,
        lower_order_final=False, euler_at_final=False, final_sigmas_type="zero")
    sch.alphas_cumprod = AB.clone()
    if timesteps is not None:
        sch.set_timesteps(timesteps=[int(k) for k in timesteps])
    return sch


def meddiff_trajectory(denoiser, cond, **kw) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    """(x after each step, x0 estimate used at each step, output) of sample_dpm_solver_pp."""
    xs, x0s = [], []
    out = sample_dpm_solver_pp(denoiser, cond, generators=generators_for(SEEDS),
                               callback=lambda i, x, x0: (xs.append(x.clone()), x0s.append(x0.clone())), **kw)
    return xs, x0s, out


def x_T(dtype=torch.float32) -> torch.Tensor:
    """The x_T meddiff draws for SEEDS (one generator per image)."""
    return randn_per_image(SHAPE, generators_for(SEEDS), torch.device("cpu")).to(dtype)


def test_linear_schedule_is_diffusers_linear_schedule():
    """Same betas; diffusers' float32 cumprod agrees with meddiff's float64 alpha_bar to float32
    precision (so handing it the float64 alpha_bar changes rounding only)."""
    sch = DPMSolverMultistepScheduler(num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END,
                                      beta_schedule="linear")
    torch.testing.assert_close(sch.betas.double(), SCHED.betas, rtol=1e-6, atol=0)
    rel = ((sch.alphas_cumprod.double() - AB) / AB).abs().max().item()
    assert rel < 2e-6, rel  # measured 7.1e-7 (alpha_bar[T-1] = 1.6e-9)
    one_minus = ((1 - sch.alphas_cumprod[0].double()) - (1 - AB[0])).abs().item() / (1 - AB[0]).item()
    assert one_minus > 1e-5  # why the reference gets the float64 alpha_bar: 1 - ab(k=0) in float32


@pytest.mark.parametrize("grid,steps", [("uniform", 10), ("uniform", 37), ("logsnr", 12), ("logsnr", 50)])
def test_time_grid_is_diffusers_grid(grid, steps):
    """set_timesteps(timesteps=grid.k) reproduces meddiff's TimeGrid: same timesteps, the same
    sigma/alpha (diffusers' sigma is sqrt((1-ab)/ab)) and the clean end sigma = 0."""
    g = time_grid(SCHED, steps, grid)
    sch = reference_scheduler(2, timesteps=g.k.tolist())
    assert sch.timesteps.tolist() == g.k.tolist() and g.k[-1] == 0 and g.k[0] == T - 1
    assert sch.sigmas[-1].item() == 0.0 and g.sigma[-1].item() == 0.0 and g.alpha[-1].item() == 1.0
    torch.testing.assert_close(sch.sigmas[:-1].double(), g.sigma[:-1] / g.alpha[:-1], rtol=1e-7, atol=0)
    # lambda = log(alpha/sigma) = -log(sigma_diffusers): meddiff's (half-log-SNR) time variable
    torch.testing.assert_close(-torch.log(sch.sigmas[:-1].double()), g.lam[:-1], rtol=0, atol=1e-7)


def run_diffusers_step(sch, net: MixtureNet, x: torch.Tensor) -> list[torch.Tensor]:
    """The public loop: model_output = raw network output at the scheduler's sample, then step()."""
    xs = []
    for t in sch.timesteps:
        x = sch.step(net.output(x, int(t)).to(x.dtype), t, x).prev_sample
        xs.append(x)
    return xs


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("grid,steps,clip", [("uniform", 10, False), ("logsnr", 20, True), ("uniform", 50, True),
                                             ("logsnr", 8, False)])
def test_every_step_matches_diffusers_step(order, prediction, grid, steps, clip):
    """float32 (diffusers' step() always computes in float32): the public DDPMDenoiser + sampler
    against step() fed the raw output of the same network. Measured max |diff| 4.8e-6 over all cases
    (|x| up to 1.4), the size of each one's own float32 error against meddiff in float64 (up to
    5.8e-6, largest for eps, whose x0 = (x - sigma eps)/alpha amplifies rounding when alpha is small);
    a wrong option gives O(0.1): solver_type="heun" 0.45, thresholding off with clip 0.45-0.57."""
    net = MixtureNet(prediction)
    den = DDPMDenoiser(net, SCHED, prediction)
    cond = torch.zeros(SHAPE)
    xs, _, out = meddiff_trajectory(den, cond, steps=steps, order=order, grid=grid, clip=clip)
    sch = reference_scheduler(order, prediction, clip, time_grid(SCHED, steps, grid).k.tolist())
    ref = run_diffusers_step(sch, net, x_T())
    assert len(ref) == len(xs) == len(sch.timesteps)
    for i, (a, b) in enumerate(zip(xs, ref)):
        torch.testing.assert_close(a, b, rtol=0, atol=2e-5, msg=lambda m: f"step {i}: {m}")
    torch.testing.assert_close(out, ref[-1], rtol=0, atol=2e-5)
    if clip:  # the clip was active, and the output respects it in both
        assert (mixture_posterior_mean(xs[-2], *alpha_sigma(0)).abs() > 1).any()
        assert out.abs().max().item() <= 1.0 and ref[-1].abs().max().item() <= 1.0


def diffusers_update(sch, i: int, x: torch.Tensor, history: list[torch.Tensor], order: int) -> torch.Tensor:
    """diffusers' own update of step i (float64 when sch.sigmas is float64): history = the x0
    estimates, oldest first (diffusers' model_outputs), newest = at step i."""
    sch._step_index = i  # what step() sets before calling these; step() itself would cast to float32
    if order == 1:
        return sch.dpm_solver_first_order_update(history[-1], sample=x)
    if order == 2:
        return sch.multistep_dpm_solver_second_order_update(history[-2:], sample=x)
    return sch.multistep_dpm_solver_third_order_update(history[-3:], sample=x)


def float64_reference(order: int, grid: str, steps: int) -> DPMSolverMultistepScheduler:
    g = time_grid(SCHED, steps, grid)
    sch = reference_scheduler(order, "x0", False, g.k.tolist())
    ab = AB[g.k]
    sch.sigmas = torch.cat([((1 - ab) / ab).sqrt(), torch.zeros(1, dtype=torch.float64)])
    return sch


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("grid,steps", [("uniform", 10), ("uniform", 200), ("logsnr", 15), ("logsnr", 60)])
def test_float64_trajectory_matches_diffusers_updates(order, grid, steps):
    """float64 end to end: diffusers' update functions drive their own trajectory (the same order
    schedule as step(): warm-up, then `order`, first order into sigma = 0). Measured rel diff < 1e-13."""
    xs, _, out = meddiff_trajectory(Float64MixtureDenoiser(), torch.zeros(SHAPE, dtype=torch.float64),
                                    steps=steps, order=order, grid=grid, clip=False)
    sch = float64_reference(order, grid, steps)
    x, history = x_T(torch.float64), []
    n = len(sch.timesteps)
    for i, t in enumerate(sch.timesteps.tolist()):
        history.append(mixture_posterior_mean(x, *alpha_sigma(t)))
        x = diffusers_update(sch, i, x, history, 1 if i == n - 1 else min(order, i + 1))
        assert x.dtype == torch.float64
        torch.testing.assert_close(xs[i], x, rtol=1e-11, atol=1e-12, msg=lambda m: f"step {i}: {m}")
    torch.testing.assert_close(out, x, rtol=1e-11, atol=1e-12)


def missing_half_of_the_quadratic_term(g, i: int, m0, m1, m2) -> torch.Tensor:
    """alpha_t (h^2/2 - h + 1 - e^{-h}) f[l_i, l_{i-1}, l_{i-2}]: the exact integral of e^{l - l_t}
    times f012 (l - l_i)^2 over [l_i, l_t] is 2x this; diffusers' phi_3 D2 term contributes 1x."""
    lam = g.lam.tolist()
    h, h0, h1 = lam[i + 1] - lam[i], lam[i] - lam[i - 1], lam[i - 1] - lam[i - 2]
    f012 = ((m0 - m1) / h0 - (m1 - m2) / h1) / (h0 + h1)
    return float(g.alpha[i + 1]) * (h * h / 2 - h - math.expm1(-h)) * f012


@pytest.mark.parametrize("grid,steps", [("uniform", 10), ("logsnr", 12), ("logsnr", 40)])
def test_3m_step_is_diffusers_3m_plus_the_other_half_of_the_quadratic_term(grid, steps):
    """From meddiff's own states, float64: steps 0, 1 (warm-up) and the last step equal diffusers'
    update; every 3M step equals diffusers' 3M update + missing_half_of_the_quadratic_term, and
    that term is not negligible."""
    xs, x0s, _ = meddiff_trajectory(Float64MixtureDenoiser(), torch.zeros(SHAPE, dtype=torch.float64),
                                    steps=steps, order=3, grid=grid, clip=False)
    g = time_grid(SCHED, steps, grid)
    sch = float64_reference(3, grid, steps)
    prev = [x_T(torch.float64), *xs[:-1]]
    n, largest = len(g), 0.0
    for i in range(n):
        if i == n - 1:
            torch.testing.assert_close(xs[i], diffusers_update(sch, i, prev[i], x0s[: i + 1], 1), rtol=0, atol=1e-12)
            continue
        ref = diffusers_update(sch, i, prev[i], x0s[: i + 1], min(3, i + 1))
        extra = missing_half_of_the_quadratic_term(g, i, x0s[i], x0s[i - 1], x0s[i - 2]) if i >= 2 else 0.0
        torch.testing.assert_close(xs[i], ref + extra, rtol=1e-10, atol=1e-12, msg=lambda m: f"step {i}: {m}")
        if i >= 2:
            largest = max(largest, (xs[i] - ref).abs().max().item())
    assert largest > 1e-3, largest


def lambda_uniform_schedule(n: int) -> DiscreteSchedule:
    """n timesteps exactly uniform in lambda = log(alpha/sigma), from lambda(T-1) to lambda(0) of SCHED:
    alpha_bar_k = sigmoid(2 lambda_k), beta_k = 1 - alpha_bar_k / alpha_bar_{k-1}."""
    lam_ends = 0.5 * SCHED.log_snr
    lam = torch.linspace(float(lam_ends[0]), float(lam_ends[-1]), n, dtype=torch.float64)
    ab = torch.sigmoid(2 * lam)
    return DiscreteSchedule(1 - ab / torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]]))


def gaussian_flow_error(n: int, solver: str) -> float:
    """max |x - exact| at lambda(0), the last point before the clean end, after n - 1 steps of
    order 3 on a grid uniform in lambda (float64). For N(m, s^2) data the probability-flow ODE
    maps x_T to alpha m + sqrt(alpha^2 s^2 + sigma^2) z, z = (x_T - alpha_T m) / sqrt(alpha_T^2 s^2 + sigma_T^2)."""
    m, s = 0.3, 0.5
    sched = lambda_uniform_schedule(n)
    g = time_grid(sched, None)
    a, sg = g.alpha.tolist(), g.sigma.tolist()
    xT = x_T(torch.float64)
    z = (xT - a[0] * m) / math.sqrt(a[0] ** 2 * s * s + sg[0] ** 2)
    exact = a[n - 1] * m + math.sqrt(a[n - 1] ** 2 * s * s + sg[n - 1] ** 2) * z

    def x0_hat(x, i):  # E[x0 | x_t] at grid point i
        return m + s * s * a[i] / (a[i] ** 2 * s * s + sg[i] ** 2) * (x - a[i] * m)

    if solver == "meddiff":
        class Gaussian:
            def time_grid(self, steps, kind="uniform"):  # the Denoiser contract: its own grid
                return time_grid(self.sched, steps, kind)

            def from_diffused(self, z0, cond):
                return z0.double()

            def __call__(self, x, k, cond):
                return x0_hat(x.double(), n - 1 - int(k[0]))
        den = Gaussian()
        den.sched = sched
        xs, _, _ = meddiff_trajectory(den, torch.zeros(SHAPE, dtype=torch.float64), order=3, clip=False)
        x = xs[n - 2]
    else:
        sch = reference_scheduler(3, timesteps=g.k.tolist())
        sch.sigmas = g.sigma / g.alpha  # float64, last entry 0
        x, history = xT, []
        for i in range(n - 1):
            history.append(x0_hat(x, i))
            x = diffusers_update(sch, i, x, history, min(3, i + 1))
    return (x - exact).abs().max().item()


def test_3m_converges_at_third_order_and_diffusers_3m_at_second():
    """Which 3M is right: on an ODE with a known solution, halving the step (uniform in lambda,
    40 -> 80 -> 160 -> 320 points) divides meddiff's error by > 7 (order >= 2.8; measured 15-17 on
    this problem), diffusers' by 3..6 (order 2; measured 5.1, 4.3, 4.1)."""
    errs = {s: [gaussian_flow_error(n, s) for n in (40, 80, 160, 320)] for s in ("meddiff", "diffusers")}
    ratios = {s: [e[j] / e[j + 1] for j in range(3)] for s, e in errs.items()}
    assert all(r > 7 for r in ratios["meddiff"]), (errs, ratios)
    assert all(3 < r < 6 for r in ratios["diffusers"]), (errs, ratios)
    assert errs["meddiff"][-1] < 0.1 * errs["diffusers"][-1]
