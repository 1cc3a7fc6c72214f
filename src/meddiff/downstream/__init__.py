"""Downstream tasks of Med-cDiff: does a restored image serve a segmenter and a classifier as well as the truth?

- :class:`Segmenter` -- brain tissue (0 other/background, 1 grey matter, 2 white matter),
  trained on MNI152 2009a slices; ``Segmenter.load()`` is the shipped model.
- :class:`Classifier` -- slice orientation (axial, coronal, sagittal); ``Classifier.load()``.
- :class:`ChestFilmClassifier` -- findings on frontal chest films (adult normal / pneumonia, pediatric
  normal / bacterial / viral; :mod:`meddiff.downstream.cxr`), trained on the train split of the
  project's chest-film set; ``ChestFilmClassifier.load()``.
- :func:`dice`, :func:`mean_dice`, :func:`accuracy`, :func:`auroc`, :func:`macro_auroc` -- their scores.

Training data and recipes: :mod:`meddiff.downstream.slices`, :mod:`meddiff.downstream.train`,
``scripts/train_downstream.py``, ``scripts/train_cxr_classifier.py``.
"""

from .cxr import CXR_CLASSES, ChestFilmClassifier
from .metrics import EMPTY_DICE, accuracy, auroc, dice, macro_auroc, mean_dice
from .models import CLS_FORMAT, SEG_FORMAT, Classifier, Segmenter

__all__ = ["Segmenter", "Classifier", "ChestFilmClassifier", "CXR_CLASSES", "dice", "mean_dice", "accuracy", "auroc",
           "macro_auroc", "EMPTY_DICE", "SEG_FORMAT", "CLS_FORMAT"]
