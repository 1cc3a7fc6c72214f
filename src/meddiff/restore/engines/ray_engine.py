"""The Ray engine: units on Ray actors, the model loaded once per actor (optional extra: ``pip install 'meddiff[ray]'``).

Each actor (`MeddiffUnitActor`, one per worker) builds the restorer in its constructor and
restores the units it is sent, at most `depth` queued at a time. The driver keeps the queue
(no unit is handed to Ray's own task retries, so a unit cannot run twice behind our back):

- an actor that dies (kill -9, out of memory, a lost node) is restarted by Ray (max_restarts=-1:
  the model loads again); the units it held are queued again, up to `retries` more attempts;
- a unit whose own run failed is retried the same way unless the failure is final (a bad input);
- a unit out of attempts is reported failed with the reason; the others go on.

Results only depend on (seed, unit, slice) (meddiff.samplers.run.image_seed), so which actor ran a
unit, and how many actors there were, changes no pixel. Why actors and not Ray Data's
map_batches: a unit (a DICOM series) is a file group, not a row; per-unit retries, failures and
done-marks are what an archive needs, and Ray core gives them without a dataset copy of the inputs.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import replace

from ..files import Request
from ..manifest import Unit
from ..units import UnitResult
from . import OnResult

log = logging.getLogger(__name__)


class MeddiffUnitActor:
    """One worker: the model loaded once; `run(unit)` restores a unit (restore.units.UnitWorker)."""

    def __init__(self, args: Request, key: dict, device: str, threads: int):
        import torch

        from ...config.device import pick_device
        from ..units import UnitWorker

        torch.set_num_threads(max(1, threads))
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        self.error: Exception | None = None
        try:
            self.worker = UnitWorker(args, key, pick_device(device))
        except Exception as e:  # noqa: BLE001 - returned by ready() so the driver raises it as itself
            self.error = e

    def ready(self) -> tuple[Exception | None, int]:
        return self.error, os.getpid()

    def run(self, unit: Unit) -> UnitResult:
        if self.error is not None:
            return UnitResult(unit.id, False, reason=f"worker could not start: {self.error}", final=True)
        return self.worker.run(unit)


def default_workers(resources: dict, gpus_per_worker: float, cpus_per_worker: float) -> int:
    """Actors the cluster holds: its GPUs / gpus_per_worker, else its CPUs / cpus_per_worker (>= 1)."""
    if gpus_per_worker > 0:
        return max(1, int(resources.get("GPU", 0) // gpus_per_worker))
    return max(1, int(resources.get("CPU", 1) // cpus_per_worker))


class RayEngine:
    """address: None = a new local cluster (or the one ray.init already joined), 'auto' = the running
    cluster of this node, 'HOST:PORT' = a remote head. workers: None = as many as the cluster holds."""

    def __init__(self, args: Request, key: dict, *, address: str | None = None, workers: int | None = None,
                 gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, retries: int = 2, device: str = "auto",
                 depth: int = 2):
        self.args, self.key, self.address, self.workers = args, key, address, workers
        self.gpus, self.cpus, self.retries, self.depth = gpus_per_worker, cpus_per_worker, retries, depth
        if device.startswith("cuda") and gpus_per_worker <= 0:
            from ...errors import FieldError

            raise FieldError("device", device, text=f"{{device}} {device} with {{engine}} ray: give {{gpus_per_worker}} "
                             "(e.g. 1) so that Ray gives each worker a GPU")
        self.device = ("cuda" if gpus_per_worker > 0 else "cpu") if device == "auto" else device
        self.lost = 0  # attempts lost with a dead worker
        self.pids: list[int] = []

    def run(self, units: list[Unit], on_result: OnResult) -> None:
        import ray

        if not units:
            return
        started = not ray.is_initialized()
        if started:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        actors = []
        try:
            n = min(len(units), self.workers or default_workers(ray.cluster_resources(), self.gpus, self.cpus))
            cls = ray.remote(MeddiffUnitActor)
            actors = [cls.options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=-1, max_task_retries=0)
                      .remote(self.args, self.key, self.device, int(max(1, self.cpus))) for _ in range(n)]
            for error, pid in ray.get([a.ready.remote() for a in actors]):
                if error is not None:
                    raise error
                self.pids.append(pid)
            log.info("ray: %d workers (%s CPU, %s GPU each)", n, self.cpus, self.gpus)
            self._schedule(ray, actors, units, on_result)
        finally:
            for a in actors:
                ray.kill(a, no_restart=True)
            if started:
                ray.shutdown()

    def _schedule(self, ray, actors: list, units: list[Unit], on_result: OnResult) -> None:
        """Units to actors, at most `depth` each; an actor whose unit died with it gets no more work
        until its restart answers ready() (the others drain the queue meanwhile)."""
        queue = deque((u, 1) for u in units)
        inflight: dict = {}  # ObjectRef -> (actor index, unit, attempt)
        probes: dict = {}  # ObjectRef of ready() -> actor index, for actors being restarted
        load = [0] * len(actors)
        usable = [True] * len(actors)

        def submit() -> None:
            for i, actor in enumerate(actors):
                while usable[i] and queue and load[i] < self.depth:
                    unit, attempt = queue.popleft()
                    inflight[actor.run.remote(unit)] = (i, unit, attempt)
                    load[i] += 1

        def finish(unit: Unit, result: UnitResult, attempt: int) -> None:
            if not result.ok and not result.final and attempt <= self.retries:
                queue.append((unit, attempt + 1))
            else:
                on_result(result)

        submit()
        while inflight or (queue and probes):
            [ref], _ = ray.wait([*inflight, *probes], num_returns=1)
            if ref in probes:
                i = probes.pop(ref)
                try:
                    error, pid = ray.get(ref)
                    usable[i] = error is None  # a restart that cannot load the model stays out
                    self.pids.append(pid)
                except ray.exceptions.RayError:
                    probes[actors[i].ready.remote()] = i  # still restarting
            else:
                i, unit, attempt = inflight.pop(ref)
                load[i] -= 1
                try:
                    result = replace(ray.get(ref), attempts=attempt)
                except ray.exceptions.RayError as e:  # the worker died (or its node): the unit did not finish
                    self.lost += 1
                    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                    result = UnitResult(unit.id, False, reason=f"worker lost: {type(e).__name__}: {first}", attempts=attempt)
                    if usable[i]:
                        usable[i] = False
                        probes[actors[i].ready.remote()] = i
                finish(unit, result, attempt)
            if not any(usable) and not probes:  # no worker can start: what is left fails
                while queue:
                    unit, attempt = queue.popleft()
                    on_result(UnitResult(unit.id, False, reason="no worker could start (see the first failure)",
                                         final=True, attempts=attempt))
            submit()
