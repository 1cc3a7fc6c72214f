"""The old import path of meddiff.samplers.run (sample_slices, summarise, the deprecated restore).

Kept one release because docs/python_api.md and docs/api.md named it; import from meddiff.samplers.run.
"""

from .samplers.run import restore, sample_slices, summarise

__all__ = ["restore", "sample_slices", "summarise"]
