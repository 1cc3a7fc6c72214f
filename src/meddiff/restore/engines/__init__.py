"""Engines that run an archive's units: each takes the units to do and reports every UnitResult.

local  one process, the model loaded once (restore.engines.local)
ray    Ray actors, the model loaded once per actor, on a local or multi-node cluster
       (restore.engines.ray_engine; needs the optional extra ``pip install 'meddiff[ray]'``)

An engine retries a unit whose failure may pass (a lost worker, an unexpected error) up to
`retries` more times, never one that failed on its input or settings (UnitResult.final).
"""

from __future__ import annotations

from typing import Callable, Protocol

from ..manifest import Unit
from ..units import UnitResult

OnResult = Callable[[UnitResult], None]


class Engine(Protocol):
    def run(self, units: list[Unit], on_result: OnResult) -> None:
        """Restore `units`, calling on_result once per unit with its final result (done or failed)."""
