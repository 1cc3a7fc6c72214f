"""The denoiser contract (`Denoiser`, the one place it is written): a trained network plus its
parameterisation, seen by samplers as

    x0_hat = denoiser(x_t, k, cond)

with x_t, x0_hat ``[B, C, *spatial]`` in the *diffused* space (a sampler that needs the noise derives
it, eps_hat = (x_t - alpha_t x0_hat) / sigma_t, as DDIM does), ``k`` ``[B]`` the times of
the denoiser's own grid (`denoiser.time_grid(steps, kind)`: int64 timestep indices for a DDPM,
float64 times in (0, 1] for a continuous-time VDM), and ``cond`` the condition planes
``[B, C_cond, *spatial]`` (degraded image, and for inpainting the mask) that are concatenated to x_t
as network input. Implemented by `DDPMDenoiser` here and `meddiff.vdm.sampling.VDMDenoiser`.

Residual mode (an option meddiff adds; the paper diffuses the image itself): the diffused
variable is the detail the condition lacks, r = x0 - y (y = first condition plane, the degraded
image at full size), so a sample is x0 = y + r. This is the formulation of SRDiff (Li et al.
2022); it makes the model useful after far fewer training steps.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from dataclasses import dataclass
from typing import Iterator, Protocol

import torch
from torch import Tensor, nn

from .ddpm import Prediction, x0_of_prediction
from .grid import TimeGrid, time_grid
from .schedule import DiscreteSchedule


class Denoiser(Protocol):
    """What every sampler (meddiff.samplers) and meddiff.samplers.run.restore see of a model."""

    def __call__(self, x_t: Tensor, k: Tensor, cond: Tensor) -> Tensor:
        """x0_hat [B, C, *spatial] in the diffused space at times k [B] of time_grid."""
        ...

    def from_diffused(self, z0: Tensor, cond: Tensor) -> Tensor:
        """Diffused variable -> image in [-1, 1] (identity unless residual)."""
        ...

    def time_grid(self, steps: int | None, kind: str = "uniform") -> TimeGrid:
        """The grid of `steps` evaluations (None: the finest), "uniform" or "logsnr" (diffusion.grid)."""
        ...

    @property
    def size_multiple(self) -> int:
        """Spatial sizes must be multiples of this (restore pads to it)."""
        ...

    def call_bytes(self, batch: int, spatial: tuple[int, ...], device: torch.device) -> int | None:
        """Estimated peak bytes one call on `batch` images of `spatial` size adds (None: no estimate;
        meddiff.samplers.tiling plans batches and windows from it)."""
        ...


def bf16_native(device: torch.device) -> bool:
    """Whether `device` computes bf16 in hardware: CUDA's bf16 support, or a CPU with
    AVX512-BF16 or AMX-BF16 (flags of /proc/cpuinfo; elsewhere PyTorch's private probes if present)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
        return "avx512_bf16" in flags or "amx_bf16" in flags
    except OSError:
        probe = getattr(torch._C, "_cpu", None)
        return bool(probe and (getattr(probe, "_is_avx512_bf16_supported", lambda: False)()
                               or getattr(probe, "_is_amx_tile_supported", lambda: False)()))


def resolve_precision(precision: str, device: torch.device, *, training: bool = False) -> str:
    """The one precision rule: "fp32" | "bf16" | "fp16" as given; "auto" -> "bf16" where `device` computes
    bf16 natively (bf16_native; measured within 0.01 dB PSNR of fp32 on the shipped model), else "fp32".
    Training (`training=True`) keeps fp32 off CUDA, so a CPU run stays bit-exact whatever the CPU."""
    if precision != "auto":
        return precision
    if training and device.type != "cuda":
        return "fp32"
    return "bf16" if bf16_native(device) else "fp32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Mixed precision for network calls: "bf16"/"fp16" autocast, "fp32" none, "auto" = bf16
    where the device runs it natively (resolve_precision), fp32 elsewhere."""
    precision = resolve_precision(precision, device)
    if precision == "fp32":
        yield
        return
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


#: net -> (key, copy in a low precision): cast_network's cache (weak: it goes with the net)
_CAST: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()


def cast_network(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of `net` with its floating parameters and buffers in `dtype`, for sampling in bf16
    with weights cast once instead of autocast re-casting every weight at every call (measured in
    benchmarks/unet_calls.py). Made on first use and reused while `net`'s parameters are the same
    tensors with the same version counters in the same train/eval mode (an optimiser step,
    load_state_dict or .train() makes a new copy).
    Compiled networks (torch.compile) are returned unchanged: their callers keep autocast."""
    if hasattr(net, "_orig_mod"):  # torch.compile's wrapper (not isinstance: importing torch._dynamo takes seconds)
        return net
    params = list(net.parameters()) + list(net.buffers())
    key = (dtype, net.training, tuple((p.data_ptr(), p._version) for p in params))
    hit = _CAST.get(net)
    if hit is not None and hit[0] == key:
        return hit[1]
    low = copy.deepcopy(net).to(dtype).requires_grad_(False)  # same train/eval mode as net
    _CAST[net] = (key, low)
    return low


def compile_network(net: nn.Module, backend: str = "inductor") -> nn.Module:
    """torch.compile for sampling (static shapes: a new shape compiles again); `backend` "eager"
    runs the same wrapping without code generation (tests)."""
    return torch.compile(net, backend=backend, dynamic=False)


@dataclass
class DDPMDenoiser:
    net: nn.Module
    sched: DiscreteSchedule
    prediction: Prediction = "eps"
    residual: bool = False
    precision: str = "fp32"

    def base(self, cond: Tensor) -> Tensor:
        """The image the residual is measured from: y, the first condition plane (zeros if not residual)."""
        return cond[:, :1] if self.residual else torch.zeros_like(cond[:, :1])

    def to_diffused(self, x0: Tensor, cond: Tensor) -> Tensor:
        """Image x0 in [-1,1] -> diffused variable (x0, or x0 - y in residual mode)."""
        return x0 - self.base(cond)

    def from_diffused(self, z0: Tensor, cond: Tensor) -> Tensor:
        """Diffused variable -> image (inverse of to_diffused)."""
        return z0 + self.base(cond)

    @property
    def size_multiple(self) -> int:
        return getattr(self.net, "size_multiple", 1)

    def time_grid(self, steps: int | None, kind: str = "uniform") -> TimeGrid:
        """`steps` timesteps of this schedule (None = all T), see diffusion.grid.time_grid."""
        return time_grid(self.sched, steps, kind)

    def net_output(self, x_t: Tensor, k: Tensor, cond: Tensor) -> Tensor:
        """Raw network output for input cat(x_t, cond), in float32. bf16 without autograd (sampling):
        a bf16 copy of the network (cast_network) on bf16 input, weights cast once; otherwise
        autocast (training, fp16, compiled networks)."""
        x = torch.cat([x_t, cond], dim=1)
        precision = resolve_precision(self.precision, x.device)
        if precision == "bf16" and not torch.is_grad_enabled():
            net = cast_network(self.net, torch.bfloat16)
            if net is not self.net:
                return net(x.to(torch.bfloat16), k).float()
        with autocast(x_t.device, precision):
            out = self.net(x, k)
        return out.float()

    def call_bytes(self, batch: int, spatial: tuple[int, ...], device: torch.device) -> int | None:
        """The memory estimate of one call of its network (meddiff.nn.memory.network_call_bytes)."""
        from ..nn.memory import network_call_bytes

        return network_call_bytes(self.net, batch, spatial, device)

    def __call__(self, x_t: Tensor, k: Tensor, cond: Tensor) -> Tensor:
        """x0_hat [B, C, *spatial] (diffused space) from the network's eps / x0 / v prediction."""
        out = self.net_output(x_t, k, cond)
        return x0_of_prediction(self.sched, self.prediction, out, x_t, k)
