"""What `meddiff evaluate` is asked to score (the fields of its options): one frozen dataclass that
evaluation.evaluate, score_group, collect and parse_groups take, so no argparse namespace reaches
the library. Errors name these fields (errors.FieldError); the command names them as its flags."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EvaluationRequest:
    """pred: one or more "[NAME[@GROUP]=]DIR" (a method's predictions); truth: "[GROUP=]DIR" ground truth;
    input / mask / seg_labels: "[GROUP=]PATH" per group (low-resolution inputs for the bicubic and bilinear
    rows, inpainting masks, label images for Dice). The rest as `meddiff evaluate --help` says; out None:
    an `evaluation` folder beside the first prediction."""

    pred: tuple[str, ...] = ()
    truth: tuple[str, ...] = ()
    input: tuple[str, ...] | None = None
    mask: tuple[str, ...] | None = None
    seg_labels: tuple[str, ...] | None = None
    method_name: str | None = None
    reference: str | None = None
    patient_from: str = "subfolder"  # or "file"
    patients: Path | None = None
    keep_patient_tags: bool = False  # names and patients in the outputs as they are (default: pseudonyms, meddiff.io.phi)
    lpips: str = "alex-st"
    lpips_backbone: Path | None = None
    fid: bool = True
    bootstrap: int = 2000
    set_bootstrap: int = 200
    seed: int = 0
    report_images: int = 4
    progress: bool = True
    data_range: str = "auto"
    out: Path | None = None
    overwrite: bool = False
    device: Any = "cpu"  # cpu | cuda | cuda:N | a torch.device (the command resolves --device auto)
    keep_empty: bool = False
    segmenter: str | None = None
    classifier: str | None = None
    labels: Path | None = None

    @classmethod
    def from_namespace(cls, args: Any) -> "EvaluationRequest":
        """The request of parsed `meddiff evaluate` arguments (--no-progress -> progress=False; lists -> tuples)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        values = {k: tuple(map(str, v)) if isinstance(v, list) else v for k, v in values.items()}
        values["progress"] = not getattr(args, "no_progress", False)
        return cls(**values)


__all__ = ["EvaluationRequest"]
