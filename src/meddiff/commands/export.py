"""`meddiff export --checkpoint CKPT --format torchscript|onnx -o FILE`: a DDPM denoiser network for deployment."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export a trained DDPM denoiser network to TorchScript or ONNX (checked against PyTorch)",
        description="Write the U-Net of a DDPM checkpoint as TorchScript or ONNX: inputs x [B, 1 + C_cond, H, W] "
                    "(cat of x_t and the condition planes) and k [B] (int64 timestep), output the raw prediction "
                    "[B, 1, H, W]; the config (schedule, parameterisation) is stored in the file. The export is checked "
                    "against PyTorch on an input of another batch and size (see meddiff.export).")
    p.add_argument("--checkpoint", required=True,
                   help="a model name (see `meddiff models`), model.safetensors, a checkpoint folder or a run folder")
    p.add_argument("--format", choices=("torchscript", "onnx", "monai-bundle"), default="torchscript",
                   help="torchscript (.pt, needs only PyTorch), onnx (.onnx, needs the onnx package) or monai-bundle "
                        "(a MONAI bundle folder around the TorchScript network; default torchscript)")
    p.add_argument("-o", "--output", "--out", dest="output", type=Path, required=True,
                   help="file to write (a new one unless --overwrite); for monai-bundle a new folder")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output file (monai-bundle: a bundle folder meddiff wrote)")
    p.add_argument("--onnx-attention", choices=("fused", "standard"), default="fused",
                   help="onnx: attention as one onnxruntime MultiHeadAttention node (fused, default: flash kernel, "
                        "memory linear in pixels; needs onnxruntime) or plain ONNX MatMul/Softmax (standard: any "
                        "runtime, memory grows with pixels squared)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..export import TOLERANCE, export_denoiser

    if args.format == "monai-bundle":
        from ..export.bundle import export_monai_bundle

        res = export_monai_bundle(args.checkpoint, args.output, overwrite=args.overwrite)
    else:
        res = export_denoiser(args.checkpoint, args.output, args.format, onnx_attention=args.onnx_attention,
                              overwrite=args.overwrite)
    print(f"wrote {res.path} ({res.format}); largest difference from PyTorch on a {list(res.check_shape)} input: "
          f"{res.max_abs_diff:.2e} (tolerance {TOLERANCE:g})")
    return 0
