"""Export a trained DDPM denoiser network to TorchScript or ONNX, checked against eager PyTorch.

The exported graph is the U-Net alone, with meddiff's network contract:

    y = net(x, k)     x: float32 [B, 1 + C_cond, H, W] = cat(x_t, condition planes), [-1, 1] units
                      k: int64 [B], timestep indices 0..T-1 of the discrete schedule
                      y: float32 [B, 1, H, W], the raw prediction (diffusion.prediction: eps, x0 or v;
                         of the residual x0 - y_cond when diffusion.residual)
                      H, W: multiples of 2 ** (levels - 1)

The schedule, parameterisation and sampler stay outside the graph (they are a few lines of
arithmetic, meddiff.diffusion and meddiff.samplers); the resolved config travels with the file
(TorchScript: extra file ``meddiff.json``; ONNX: metadata property ``meddiff``), so
:func:`exported_denoiser` rebuilds a DDPMDenoiser around the exported network and meddiff's
samplers run through it unchanged. Every export is checked on a second input of another batch
size and image size: the largest difference from eager PyTorch must be below ``TOLERANCE``.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, InputError
from .. import __version__, config as config_mod
from ..checkpointing import resolve_model_file
from ..checkpointing.named import resolve_checkpoint
from ..diffusion.checkpoint import load_model
from ..diffusion.denoiser import DDPMDenoiser
from ..diffusion.schedule import build_schedule
from ..io.atomic import atomic_path, check_writable_dir
from ..io.provenance import file_sha256
from ..nn.unet import build_unet
from .attention import ORT_DOMAIN, ORT_DOMAIN_VERSION, fused_attention_copy

FORMATS = ("torchscript", "onnx")
#: how attention is written into an ONNX graph: "fused" = one onnxruntime MultiHeadAttention node
#: (flash kernel, memory linear in pixels; meddiff.export.attention), "standard" = plain ONNX
#: MatMul/Softmax (any runtime; the score matrix grows with pixels squared)
ONNX_ATTENTION = ("fused", "standard")
TOLERANCE = 1e-4  # max |exported - eager| over a check input, in the network's output units
ONNX_OPSET = 17


@dataclass(frozen=True)
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float  # exported vs eager on the check input
    check_shape: tuple[int, ...]


def _portable(net: nn.Module) -> nn.Module:
    """A copy of the U-Net on its plain path (standard operators only: no CPU channels-last tricks)."""
    net = copy.deepcopy(net).cpu().float().eval()
    for m in net.modules():
        if hasattr(m, "fast_path"):
            m.fast_path = False
    return net


def example_inputs(net: nn.Module, batch: int, size_multiples: int, seed: int) -> tuple[Tensor, Tensor]:
    """A random (x, k) for tracing or checking: [batch, in_channels, H, H] with H = size_multiple * n."""
    g = torch.Generator().manual_seed(seed)
    side = getattr(net, "size_multiple", 1) * size_multiples
    x = torch.randn(batch, net.in_channels, side, side, generator=g)
    k = torch.randint(0, 1000, (batch,), generator=g)
    return x, k


def contract(cfg, net: nn.Module, checkpoint: Path) -> dict:
    """What a deployer needs besides the graph: shapes, parameterisation, schedule, the config."""
    d = cfg.diffusion
    return {"meddiff_version": __version__, "checkpoint": checkpoint.name, "checkpoint_sha256": file_sha256(checkpoint),
            "inputs": {"x": f"float32 [B, {net.in_channels}, H, W]: cat(x_t, condition planes)",
                       "k": f"int64 [B]: timestep index 0..{d.timesteps - 1}"},
            "output": f"float32 [B, {net.out_channels}, H, W]: {d.prediction} prediction" + (" of the residual" if d.residual else ""),
            "size_multiple": int(getattr(net, "size_multiple", 1)), "task": cfg.task.kind,
            "in_channels": int(net.in_channels), "out_channels": int(net.out_channels),
            "config": config_mod.to_dict(cfg)}


def check_destination(dest: Path) -> None:
    """InputError naming `dest` (the path the user gave, not a temporary file) unless a file can be written there:
    checked before the model is loaded and traced."""
    if dest.is_dir():
        raise InputError(f"-o {dest} is a folder; expected the path of the file to write (e.g. {dest / 'model.ts'})")
    try:
        check_writable_dir(dest.parent, f"folder of {dest.name}")
    except InputError as e:
        raise InputError(f"-o {dest}: cannot write the export file there: {e}") from None


def export_denoiser(checkpoint: str | Path, dest: str | Path, fmt: str, *, onnx_attention: str = "fused",
                    overwrite: bool = False) -> ExportResult:
    """Export the network of a DDPM checkpoint (file, folder, run folder or shipped name) to `dest`,
    written atomically, and check it (module docstring). CheckpointError if the check fails;
    InputError if `dest` exists and not `overwrite`. onnx_attention: see ONNX_ATTENTION."""
    if fmt not in FORMATS:
        raise InputError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if onnx_attention not in ONNX_ATTENTION:
        raise InputError(f"--onnx-attention {onnx_attention}: expected one of {', '.join(ONNX_ATTENTION)}")
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise InputError(f"{dest} exists: give --overwrite to replace it, or another -o")
    check_destination(dest)
    file = resolve_model_file(resolve_checkpoint(checkpoint))
    cfg, net, _ = load_model(file)
    eager = _portable(net)
    info = contract(cfg, eager, file)
    if fmt == "onnx":
        info["attention"] = onnx_attention
    try:
        with torch.no_grad(), atomic_path(dest) as tmp, warnings.catch_warnings():
            # the U-Net's input checks (channels, size multiple) become constants of the trace: expected
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            x, k = example_inputs(eager, 1, 4, seed=0)
            if fmt == "torchscript":
                traced = torch.jit.trace(eager, (x, k), check_trace=False)
                torch.jit.save(traced, str(tmp), _extra_files={"meddiff.json": json.dumps(info)})
            else:
                _export_onnx(eager, (x, k), tmp, info, onnx_attention)
            diff, shape = check_export(tmp, fmt, net)
    except OSError as e:  # the destination's file system failing while writing: name the destination, not the temporary
        raise InputError(f"-o {dest}: cannot write the export file ({e.strerror or e}); expected a writable location "
                         "with room for it") from None
    return ExportResult(dest, fmt, diff, shape)


def _export_onnx(net: nn.Module, example: tuple[Tensor, Tensor], path: Path, info: dict, attention: str = "fused") -> None:
    try:
        import onnx
    except ImportError:
        raise InputError("--format onnx needs the onnx package: pip install 'meddiff[export]'") from None
    spatial = {0: "batch", 2: "height", 3: "width"}
    custom = {}
    if attention == "fused":
        net, custom = fused_attention_copy(net), {ORT_DOMAIN: ORT_DOMAIN_VERSION}
    torch.onnx.export(net, example, str(path), dynamo=False, input_names=["x", "k"], output_names=["y"],
                      dynamic_axes={"x": spatial, "k": {0: "batch"}, "y": spatial}, opset_version=ONNX_OPSET,
                      custom_opsets=custom)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"meddiff": json.dumps(info)})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def check_export(path: Path, fmt: str, eager: nn.Module) -> tuple[float, tuple[int, ...]]:
    """Largest |exported - eager| on a check input of another batch and size than the trace's."""
    runner = load_exported(path, fmt)
    x, k = example_inputs(eager, 2, 6, seed=1)
    with torch.no_grad():
        diff = float((runner(x, k) - eager(x, k)).abs().max())
    if not diff <= TOLERANCE:
        raise CheckpointError(f"{path}: the exported network differs from PyTorch by {diff:.2e} (tolerance {TOLERANCE:g}); "
                              "not written")
    return diff, tuple(x.shape)


class OnnxNetwork:
    """An ONNX file run by onnxruntime behind the network contract net(x, k) -> y (torch tensors, CPU)."""

    def __init__(self, path: Path):
        try:
            import onnxruntime as ort
        except ImportError:
            raise InputError(f"{path}: running an ONNX export needs onnxruntime: pip install 'meddiff[export]'") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # as many threads as eager PyTorch
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: Tensor, k: Tensor) -> Tensor:
        y = self.session.run(None, {"x": x.detach().float().cpu().numpy(), "k": k.detach().long().cpu().numpy()})[0]
        return torch.from_numpy(y).to(x.device)


def load_exported(path: str | Path, fmt: str | None = None):
    """The exported network as a callable net(x, k) -> y (format from the suffix unless given)."""
    path = Path(path)
    fmt = fmt or ("onnx" if path.suffix == ".onnx" else "torchscript")
    if fmt == "onnx":
        return OnnxNetwork(path)
    return torch.jit.load(str(path), map_location="cpu").eval()


def read_contract(path: str | Path) -> dict:
    """The contract (module docstring) stored in an exported file."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props["meddiff"])
    extra = {"meddiff.json": ""}
    torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra["meddiff.json"])


class _Net(nn.Module):
    """Gives an exported network the attributes meddiff's sampling path reads: size_multiple, and
    memory_model, the U-Net it was exported from built on the meta device (no weights), whose
    memory estimate lets meddiff.samplers.tiling plan batches and windows as `meddiff sample` does."""

    def __init__(self, run, size_multiple: int, memory_model: nn.Module | None = None):
        super().__init__()
        self.run, self.size_multiple = run, size_multiple
        self.__dict__["memory_model"] = memory_model  # not a submodule: no parameters, never called

    def forward(self, x: Tensor, k: Tensor) -> Tensor:
        return self.run(x, k)


def exported_denoiser(path: str | Path):
    """(config, DDPMDenoiser over the exported network): meddiff's samplers run through it unchanged."""
    info = read_contract(path)
    cfg = config_mod.from_dict(info["config"])
    d = cfg.diffusion

    with torch.device("meta"):
        shape = build_unet(cfg.model, info["in_channels"], info["out_channels"])
    net = _Net(load_exported(path), info["size_multiple"], shape)
    return cfg, DDPMDenoiser(net, build_schedule(d), d.prediction, d.residual, "fp32")
