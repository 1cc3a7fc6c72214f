"""Evaluation of restored images against ground truth (what `meddiff evaluate` runs): pairing,
geometry checks, per-image metrics with patient-level bootstrap CIs and paired tests, LPIPS,
FID/KID, Dice and accuracy of downstream models, uncertainty calibration, tables and report.

    pairing.py  pairing keys, `meddiff sample` products, method / group specifications, geometry
    collect.py  one group's files -> per-slice arrays (Collected), intensity range and window
    scores.py   LPIPS, FID/KID, Dice, classifier accuracy, calibration rows
    request.py  EvaluationRequest: what to score and how (the options of `meddiff evaluate`)
    report.py   score_group (tables), evaluate (every group, report.html)

The image metrics, statistics and table writers themselves live in meddiff.metrics.
"""

from .collect import Collected, collect, to_unit_range
from .pairing import GroupSpec, find_images, group_factor, pair_files, parse_groups
from .report import GroupResult, evaluate, score_group
from .request import EvaluationRequest

__all__ = ["Collected", "EvaluationRequest", "GroupResult", "GroupSpec", "collect", "evaluate", "find_images", "group_factor", "pair_files",
           "parse_groups", "score_group", "to_unit_range"]
