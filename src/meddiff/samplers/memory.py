"""The memory of a sampling run: what it may use (--max-memory), what the process holds and has held
at its peak, and sizes as the user writes and reads them. The estimate of one network call is
meddiff.nn.memory's (a leaf that diffusion and vdm import without importing the samplers).
"""

from __future__ import annotations

import os
import re
import resource
import sys
from pathlib import Path

import torch


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (VmHWM on Linux; ru_maxrss elsewhere)."""
    status = Path("/proc/self/status")
    if status.exists():
        m = re.search(r"VmHWM:\s+(\d+) kB", status.read_text())
        if m:
            return int(m.group(1)) * 1024
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def current_rss_bytes() -> int:
    """This process's resident set now (0 if unknown)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def available_bytes(device: torch.device) -> int:
    """Memory free for this run: CUDA's free device memory, or MemAvailable of /proc/meminfo
    (the physical memory as a fallback)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        m = re.search(r"MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text())
        if m:
            return int(m.group(1)) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def used_bytes(device: torch.device) -> int:
    """Memory this process already holds on the device (counted inside --max-memory)."""
    return int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else current_rss_bytes()


def default_max_memory(device: torch.device, share: float = 0.6) -> int:
    """--max-memory when not given: what the process holds plus `share` of the free memory."""
    return used_bytes(device) + int(share * available_bytes(device))


def parse_size(text: str) -> int:
    """'3GB', '3G', '512MiB', '2.5gb', '1000000' -> bytes (GB = 1e9, GiB = 2**30)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(i?)[bB]?\s*", text)
    if not m:
        raise ValueError(f"memory size {text!r}: expected a number with an optional unit, e.g. 3GB, 512MiB")
    base = 1024 if m.group(3) else 1000
    power = " KMGT".index(m.group(2).upper() or " ")
    return int(float(m.group(1)) * base**power)


def format_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.0f} MB"
