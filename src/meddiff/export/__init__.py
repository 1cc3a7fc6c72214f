"""Exporting a trained DDPM denoiser network for deployment, every export checked against eager PyTorch.

    network.py    TorchScript / ONNX export of the U-Net (`export_denoiser`), its contract stored in the file
                  (`read_contract`), and `exported_denoiser`: a DDPMDenoiser over the exported file that
                  meddiff's samplers run unchanged
    attention.py  self-attention written as one onnxruntime MultiHeadAttention node (bounded memory in ONNX)
    bundle.py     a MONAI bundle folder around a checkpoint (`export_monai_bundle`; `meddiff export --format
                  monai-bundle`), checked by MONAI's own tools

The names of network.py are the package's (`from meddiff.export import exported_denoiser`).
`meddiff.checkpointing.export_model` is another thing: it copies a model file out of a run.
"""

from .network import (FORMATS, ONNX_ATTENTION, ONNX_OPSET, TOLERANCE, ExportResult, OnnxNetwork, check_destination,
                      check_export, contract, example_inputs, export_denoiser, exported_denoiser, load_exported,
                      read_contract)

__all__ = ["FORMATS", "ONNX_ATTENTION", "ONNX_OPSET", "TOLERANCE", "ExportResult", "OnnxNetwork", "check_destination",
           "check_export", "contract", "example_inputs", "export_denoiser", "exported_denoiser", "load_exported",
           "read_contract"]
