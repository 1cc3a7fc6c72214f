"""Training records: CSV logs (appended and flushed as they are written) and the loss-curve PNG."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Sequence

from ..io.atomic import atomic_write_text, atomic_write_with

TRAIN_FIELDS = ("step", "loss", "lr", "images_per_s", "elapsed_s")
VAL_FIELDS = ("step", "val_loss")


class CsvLog:
    """Append rows to a CSV file with a fixed header; each row is flushed to disk when written."""

    def __init__(self, path: str | Path, fields: Sequence[str]):
        self.path = Path(path)
        self.fields = tuple(fields)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self._f = open(self.path, "a", newline="")
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(self.fields)
            self._f.flush()

    def write(self, **row: float | int) -> None:
        self._w.writerow([_fmt(row[k]) for k in self.fields])
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TeeLog:
    """A CsvLog whose rows also go to TensorBoard as scalars ``<tag>/<field>`` at their ``step``."""

    def __init__(self, csv_log: CsvLog, folder: Path, tag: str):
        from torch.utils.tensorboard import SummaryWriter

        self.csv, self.tag = csv_log, tag
        self.writer = SummaryWriter(log_dir=str(folder), filename_suffix=f".{tag}")

    @property
    def path(self) -> Path:
        return self.csv.path

    def write(self, **row: float | int) -> None:
        self.csv.write(**row)
        step = int(row["step"])
        for k, v in row.items():
            if k != "step":
                self.writer.add_scalar(f"{self.tag}/{k}", float(v), step)
        self.writer.flush()

    def close(self) -> None:
        self.csv.close()
        self.writer.close()


def with_tensorboard(csv_log: CsvLog, folder: Path | None, tag: str) -> CsvLog | TeeLog:
    """`csv_log`, teed to TensorBoard event files in `folder` when it is given (train.tensorboard)."""
    if folder is None:
        return csv_log
    try:
        import tensorboard  # noqa: F401  (torch.utils.tensorboard needs it)
    except ImportError:
        csv_log.close()
        from ..errors import ConfigError

        raise ConfigError("train.tensorboard: true needs the tensorboard package (pip install 'meddiff[tensorboard]'), "
                          "or set train.tensorboard=false") from None
    return TeeLog(csv_log, folder, tag)


def _fmt(v: float | int) -> str:
    return str(v) if isinstance(v, int) else f"{v:.6g}"


def read_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a CSV log as dicts of floats ([] if the file does not exist)."""
    p = Path(path)
    if not p.is_file():
        return []
    with open(p, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def truncate_log(path: str | Path, last_step: int) -> None:
    """Drop rows logged after `last_step` (a resumed run re-does those steps), atomically."""
    p = Path(path)
    if not p.is_file():
        return
    with open(p, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= last_step]
    buf = io.StringIO()
    csv.writer(buf).writerows(kept)
    atomic_write_text(p, buf.getvalue())


def plot_loss(train_csv: str | Path, png: str | Path, val_csv: str | Path | None = None) -> Path:
    """Loss (log scale) against step from the CSV logs, written atomically to `png`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = read_log(train_csv)
    val = read_log(val_csv) if val_csv is not None else []
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if rows:
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="train loss (mean over log window)")
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="validation loss (EMA weights)")
    if any(r["loss"] > 0 for r in rows) or val:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    atomic_write_with(png, lambda tmp: fig.savefig(tmp, format="png"))
    return Path(png)
