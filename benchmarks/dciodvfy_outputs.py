"""Run dicom3tools' ``dciodvfy`` on meddiff's DICOM output of every DICOM file in pydicom's test files and
pydicom-data: ``meddiff sample --method median`` on each (colour files with --allow-rgb), then count the
validator's errors (and Modality LUT warnings in MR images) per message. Sources meddiff refuses (not
images, unsupported encodings) are counted separately.

    OMP_NUM_THREADS=1 python benchmarks/dciodvfy_outputs.py [NAME_SUBSTRING ...]
"""

from __future__ import annotations

import collections
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pydicom.data import get_testdata_file

from meddiff.cli import main


def sources() -> list[Path]:
    found = sorted(Path(get_testdata_file("CT_small.dcm")).parent.glob("*.dcm"))
    try:
        import data_store
        found += sorted((Path(data_store.__file__).parent / "data").glob("*.dcm"))
    except ImportError:
        print("pydicom-data not installed: pydicom's own test files only")
    return found


def main_(argv: list[str]) -> int:
    if shutil.which("dciodvfy") is None:
        print("dciodvfy not found (apt-get install dicom3tools)")
        return 1
    srcs = [s for s in sources() if not argv or any(a in s.name for a in argv)]
    logging.disable(logging.CRITICAL)
    errors: collections.Counter[str] = collections.Counter()
    refused = outputs = bad_files = 0
    with tempfile.TemporaryDirectory() as tmp:
        for s in srcs:
            out = Path(tmp) / s.stem
            if main(["sample", "--method", "median", "-i", str(s), "-o", str(out), "--no-progress", "--allow-rgb"]) != 0:
                refused += 1
                continue
            for f in sorted(out.rglob("*.dcm")):
                outputs += 1
                r = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True)
                found = [ln for ln in r.stderr.splitlines() if ln.startswith("Error") or "Modality LUT" in ln]
                bad_files += bool(found)
                for ln in found:
                    errors[ln[:160]] += 1
                    print(f"{s.name}: {ln[:200]}")
    print(f"| sources | refused by meddiff | DICOM files written | files with dciodvfy errors |")
    print(f"| {len(srcs)} | {refused} | {outputs} | {bad_files} |")
    for msg, n in errors.most_common():
        print(n, msg)
    return 0


if __name__ == "__main__":
    sys.exit(main_(sys.argv[1:]))
