"""The samplers by name and the one place their settings are resolved and checked.

    spec = resolve(SamplingDefaults.of_ddpm(cfg), sampler="ddim", steps=20)   # validated once
    x0 = spec.function(denoiser, cond, spec.time_grid(denoiser), generators=gens, **spec.options())

`SAMPLERS` maps a name to its entry: the function, the options it takes (ancestral: the reverse
variance; ddim: eta and the time grid; dpm_solver_pp: the time grid), whether it is one network
call whatever the steps (`one_call`: the posterior mean, a distilled student) and whether it runs
RePaint (`repaint_ok`: the ancestral chain only).

`resolve(defaults, **overrides)` applies the overrides (None = keep the checkpoint's default) to a
checkpoint's stored defaults (`SamplingDefaults`: its config's sampler section, or what a family
such as the VDM stores) and returns a frozen `SamplingSpec`; it is the only code that says which
sampler names exist, that one-call samplers take one step, that RePaint needs the ancestral sampler,
that eta is DDIM's and the grid DDIM's and DPM-Solver++'s. Its errors are `FieldError`s naming the
setting (``steps``, ``eta``, ...); the commands name them as flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor

from ..errors import FieldError
from .ancestral import sample_ancestral
from .ddim import sample_ddim
from .dpm_solver import sample_dpm_solver_pp
from .posterior_mean import sample_posterior_mean
from .student import sample_student

GRIDS = ("auto", "uniform", "logsnr")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")


@dataclass(frozen=True)
class SamplerEntry:
    """One sampler: its function (samplers/__init__.py's signature), the options it takes, whether it is
    one network call whatever the steps, whether it runs RePaint."""

    function: Callable[..., Tensor]
    options: tuple[str, ...] = ()
    one_call: bool = False
    repaint_ok: bool = False


SAMPLERS: dict[str, SamplerEntry] = {
    "ancestral": SamplerEntry(sample_ancestral, ("variance",), repaint_ok=True),
    "ddim": SamplerEntry(sample_ddim, ("eta", "grid")),
    "dpm_solver_pp": SamplerEntry(sample_dpm_solver_pp, ("grid",)),
    "posterior_mean": SamplerEntry(sample_posterior_mean, one_call=True),  # the MMSE estimate (posterior_mean.py)
    "student": SamplerEntry(sample_student, one_call=True),  # a distilled student: one call from x_T (student.py)
}
ONE_CALL = tuple(name for name, e in SAMPLERS.items() if e.one_call)


def entry(name: str) -> SamplerEntry:
    """The registry entry of `name`; FieldError("sampler") for an unknown name."""
    if name not in SAMPLERS:
        raise FieldError("sampler", name, f"expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def time_grid_kind(name: str, grid: str = "auto") -> str:
    """The time grid a sampler runs on: grid "auto" is log-SNR for DPM-Solver++ (measured closer to the
    2000-step chain at 5-20 steps, benchmarks/sampling.py) and uniform for every other sampler."""
    if grid not in GRIDS:
        raise FieldError("grid", grid, f"expected one of {', '.join(GRIDS)}")
    if grid != "auto":
        return grid
    return "logsnr" if name == "dpm_solver_pp" else "uniform"


def sampler_options(sampler: str, variance: str, eta: float, grid: str = "auto") -> dict[str, object]:
    """The keyword arguments of a sampler: ancestral takes the reverse variance (beta | beta_tilde),
    DDIM its eta and time grid, DPM-Solver++ its time grid (time_grid_kind resolves "auto")."""
    kind = time_grid_kind(sampler, grid)
    values = {"variance": variance, "eta": eta, "grid": kind}
    return {key: values[key] for key in SAMPLERS[sampler].options} if sampler in SAMPLERS else {}


@dataclass(frozen=True)
class SamplingDefaults:
    """What a checkpoint stores about sampling it: sampler name, steps, eta, grid, precision; the reverse
    variance its ancestral chain uses and the number of timesteps of its grid (the largest `steps`)."""

    name: str = "ancestral"
    steps: int = 50
    eta: float = 1.0
    grid: str = "auto"
    precision: str = "fp32"
    variance: str = "beta"
    timesteps: int = 1000
    where: str = "the checkpoint's grid"  # what bounds steps, for the error message

    @classmethod
    def of_ddpm(cls, cfg) -> "SamplingDefaults":
        """A DDPM (or distilled student) config's sampler section and diffusion schedule."""
        s = cfg.sampler
        return cls(s.name, s.steps, s.eta, s.grid, s.precision, cfg.diffusion.variance, cfg.diffusion.timesteps,
                   "diffusion.timesteps")


@dataclass(frozen=True)
class SamplingSpec:
    """How to sample, resolved and validated (resolve): the sampler's name, its network calls per image
    (`steps`; RePaint adds its resamples), the time grid kind ("uniform" | "logsnr"), DDIM's eta, the
    ancestral chain's variance, the network's precision ("auto" is resolved on the device), the samples per
    image and the data consistency mode (none | project | repaint) with RePaint's resamples."""

    name: str
    steps: int
    grid: str = "uniform"
    eta: float = 0.0
    variance: str = "beta"
    precision: str = "fp32"
    samples: int = 1
    consistency: str = "none"
    resample: int = 1
    requested_grid: str = field(default="auto", compare=False)  # the grid asked ("auto" kept for the record)

    @property
    def entry(self) -> SamplerEntry:
        return SAMPLERS[self.name]

    @property
    def function(self) -> Callable[..., Tensor]:
        return self.entry.function

    def options(self) -> dict[str, object]:
        """The sampler's keyword arguments (without the grid, which is the time grid's kind)."""
        values = {"variance": self.variance, "eta": self.eta}
        return {key: values[key] for key in self.entry.options if key != "grid"}

    def time_grid(self, denoiser):
        """The denoiser's grid of `steps` points of this spec's kind (diffusion.grid)."""
        return denoiser.time_grid(self.steps, self.grid)

    def describe(self) -> str:
        """e.g. 'ddim 20 steps' (what the progress bar and the outputs' provenance say)."""
        return f"{self.name} {self.steps} steps"


OVERRIDES = ("sampler", "steps", "eta", "grid", "precision", "samples", "consistency", "resample")


def resolve(defaults: SamplingDefaults, **overrides: Any) -> SamplingSpec:
    """The SamplingSpec of a checkpoint's `defaults` with `overrides` (sampler, steps, eta, grid, precision,
    samples, consistency, resample; None = the default) applied and checked, once:

    - the sampler is a known name; a one-call sampler takes one step whatever (positive) `steps` says;
    - 1 <= steps <= defaults.timesteps; eta (DDIM only) in [0, 1]; grid for ddim / dpm_solver_pp only;
    - consistency "repaint" needs a sampler that runs it (the ancestral chain); resample >= 2 is RePaint's.
    """
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        raise TypeError(f"resolve() got unknown settings {unknown}; expected some of {list(OVERRIDES)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    name = given.get("sampler", defaults.name)
    e = entry(name)
    if "steps" in given and int(given["steps"]) < 1:  # refused for one-call samplers too (they would ignore it)
        raise FieldError("steps", given["steps"], f"expected 1..{defaults.timesteps} ({defaults.where})")
    steps = 1 if e.one_call else int(given.get("steps", defaults.steps))  # one network call whatever steps says
    if not e.one_call and not 1 <= steps <= defaults.timesteps:
        raise FieldError("steps", steps, f"expected 1..{defaults.timesteps} ({defaults.where})")
    if "eta" in given and "eta" not in e.options:
        raise FieldError("eta", None, f"applies to {{sampler}} ddim only, not {name}")
    eta = float(given.get("eta", defaults.eta))
    if "eta" in e.options and not 0 <= eta <= 1:
        raise FieldError("eta", eta, "expected a number in [0, 1]")
    if "grid" in given and "grid" not in e.options:
        raise FieldError("grid", None, f"applies to {{sampler}} ddim or dpm_solver_pp, not {name}")
    requested = given.get("grid", defaults.grid)
    precision = given.get("precision", defaults.precision)
    if precision not in PRECISIONS:
        raise FieldError("precision", precision, f"expected one of {', '.join(PRECISIONS)}")
    samples = int(given.get("samples", 1))
    if samples < 1:
        raise FieldError("samples", samples, "expected >= 1")
    consistency, resample = given.get("consistency", "none"), int(given.get("resample", 1))
    if consistency == "repaint" and not e.repaint_ok:
        raise FieldError("consistency", None, f"repaint needs {{sampler}} ancestral, not {name}")
    return SamplingSpec(name, steps, time_grid_kind(name, requested), eta, defaults.variance, precision, samples,
                        consistency, resample, requested)


__all__ = ["GRIDS", "ONE_CALL", "OVERRIDES", "PRECISIONS", "SAMPLERS", "SamplerEntry", "SamplingDefaults", "SamplingSpec",
           "entry", "resolve", "sampler_options", "time_grid_kind"]
