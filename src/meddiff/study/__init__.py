"""Two-alternative forced-choice (2AFC) reader studies: real vs generated images.

- :mod:`meddiff.study.create` builds a study folder (PNG pairs, ``study.json`` manifest,
  ``study.sqlite`` with pairs, readers and their presentation order) from folders of images.
- :mod:`meddiff.study.server` serves it to readers (Flask; every answer committed at once).
- :mod:`meddiff.study.results` computes accuracy with exact binomial intervals, binomial
  tests against 50% and inter-reader agreement, and writes CSV and HTML reports.
"""

from meddiff.study.db import STUDY_DB, STUDY_JSON

__all__ = ["STUDY_DB", "STUDY_JSON"]
