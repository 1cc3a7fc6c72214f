"""meddiff: diffusion models for medical image restoration (Med-cDiff) and generation (Medical VDM).

    import meddiff
    pipe = meddiff.load_pretrained("sr_x4_general")     # a shipped model's name, a model file or a run folder
    restored = pipe.restore(image)                       # as `meddiff sample` restores it (meddiff.restore.pipeline)

The main entry points are attributes of the package, imported when first used (so `meddiff --help`
stays fast): load_pretrained, Pipeline, Request (what `meddiff sample` takes) and restore_files
(meddiff.restore.restore: a Request -> the files written), EvaluationRequest and evaluate
(`meddiff evaluate`), DemoRequest and sr_demo (`meddiff demo`), SamplingSpec and resolve_sampling
(meddiff.samplers.registry). `meddiff.restore` is the restore package.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_pretrained": ("meddiff.restore.pipeline", "load_pretrained"),
    "Pipeline": ("meddiff.restore.pipeline", "Pipeline"),
    "Request": ("meddiff.restore.files", "Request"),
    "restore_files": ("meddiff.restore.restorers", "restore"),
    "EvaluationRequest": ("meddiff.evaluation.request", "EvaluationRequest"),
    "evaluate": ("meddiff.evaluation.report", "evaluate"),
    "DemoRequest": ("meddiff.evaluation.demo", "DemoRequest"),
    "sr_demo": ("meddiff.evaluation.demo", "sr_demo"),
    "SamplingSpec": ("meddiff.samplers.registry", "SamplingSpec"),
    "resolve_sampling": ("meddiff.samplers.registry", "resolve"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # imported once
        return value
    raise AttributeError(f"module 'meddiff' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
