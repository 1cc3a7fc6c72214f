"""Downstream tasks of Med-cDiff: does a restored image serve a segmenter and a classifier as well as the truth?

- :class:`Segmenter` -- brain tissue (0 other/background, 1 grey matter, 2 white matter),
  trained on MNI152 2009a slices; ``Segmenter.load()`` is the shipped model.
- :class:`Classifier` -- slice orientation (axial, coronal, sagittal); ``Classifier.load()``.
- :func:`dice`, :func:`mean_dice`, :func:`accuracy` -- their scores.

Training data and recipes: :mod:`meddiff.downstream.slices`, :mod:`meddiff.downstream.train`,
``scripts/train_downstream.py``.
"""

from .metrics import EMPTY_DICE, accuracy, dice, mean_dice
from .models import CLS_FORMAT, SEG_FORMAT, Classifier, Segmenter

__all__ = ["Segmenter", "Classifier", "dice", "mean_dice", "accuracy", "EMPTY_DICE", "SEG_FORMAT", "CLS_FORMAT"]
