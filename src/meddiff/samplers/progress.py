"""One progress bar for a whole restore run, counted in network calls (one image through the
network once; a tiled call counts its share of windows), with slices done and an ETA, and a
one-line summary at the end (slices, calls, seconds, peak memory).

Across files the total is what the files read so far need plus, for each file not read yet,
the average of those: the ETA firms up as files are read.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from .memory import format_bytes, peak_rss_bytes


class Progress:
    """A tqdm bar in network calls. files: how many inputs the run has (for the total's estimate)."""

    def __init__(self, enabled: bool = True, files: int = 1, desc: str = "restoring"):
        self.files, self.files_seen, self.known = max(1, files), 0, 0.0
        self.calls, self.slices = 0.0, 0
        self.start = time.perf_counter()
        self.bar = tqdm(total=0, unit="call", desc=desc, disable=not enabled, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| {n:.1f}/{total:.0f} calls [{elapsed}<{remaining}{postfix}]")

    def expect(self, calls: float) -> None:
        """A file's work is known: `calls` more network calls."""
        self.files_seen = min(self.files, self.files_seen + 1)
        self.known += calls
        self.bar.total = self.known + (self.files - self.files_seen) * self.known / self.files_seen
        self.bar.refresh()

    def advance(self, calls: float) -> None:
        self.calls += calls
        self.bar.update(min(calls, max(0.0, (self.bar.total or 0) - self.bar.n)))  # float sums may overshoot

    def slices_done(self, n: int) -> None:
        self.slices += n
        self.bar.set_postfix_str(f"{self.slices} slices", refresh=True)

    def summary(self, device: torch.device | None = None) -> str:
        peak = peak_rss_bytes()
        where = "peak RSS"
        if device is not None and device.type == "cuda":
            peak, where = torch.cuda.max_memory_allocated(device), "peak CUDA memory"
        calls = f"{self.calls:.0f} network calls, " if self.calls else ""  # baselines are not counted
        return f"{self.slices} slices, {calls}{time.perf_counter() - self.start:.1f} s, {where} {format_bytes(peak)}"

    def close(self) -> None:
        self.bar.close()


class CountingDenoiser:
    """The wrapped denoiser, reporting each call's images to on_call (same contract and attributes)."""

    def __init__(self, denoiser, on_call):
        self.inner, self.on_call = denoiser, on_call

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def __call__(self, x, k, cond):
        out = self.inner(x, k, cond)
        self.on_call(x.shape[0])
        return out


def calls_per_slice(steps: int, repaint_resample: int = 1) -> int:
    """Network calls one sample of one slice takes: steps, or RePaint's (steps - 1) U + 1."""
    return (steps - 1) * repaint_resample + 1 if repaint_resample > 1 else steps
