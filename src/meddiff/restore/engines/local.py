"""The local engine: one process, the model loaded once, units in manifest order."""

from __future__ import annotations

from dataclasses import replace

from ..files import Request
from ..manifest import Unit
from ..units import UnitWorker
from . import OnResult


class LocalEngine:
    def __init__(self, args: Request, key: dict, device, retries: int = 2):
        self.args, self.key, self.device, self.retries = args, key, device, retries

    def run(self, units: list[Unit], on_result: OnResult) -> None:
        if not units:
            return
        worker = UnitWorker(self.args, self.key, self.device)  # a bad checkpoint or option stops the run here
        for unit in units:
            for attempt in range(1, self.retries + 2):
                result = replace(worker.run(unit), attempts=attempt)
                if result.ok or result.final:
                    break
            on_result(result)
