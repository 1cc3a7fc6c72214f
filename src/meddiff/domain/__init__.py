"""What a restoration model was trained on, and whether an input looks like it (issues 13, 29).

card.py    the model's domain card (DomainCard, read_card / write_card, card_from_training) and the
           checks against it: the model-based score, the spectral and noise signals, check_input
           before sampling, check_output (consistency with the measurement) after, fit_thresholds
check.py   the check inside a restore run: domain_precheck / domain_postcheck of each input, the
           run's one summary after the progress bar, the exit status of --strict-domain

The names of card.py are importable from meddiff.domain (`from meddiff.domain import read_card`).
"""

from .card import (DEFAULT_THRESHOLDS, FIT_LEVELS, HISTOGRAM_LIMIT, QUANTILES, SCORE_BATCH, SCORE_LIMIT, SIGNALS,
                   SPACING_MEASURED_MM, DomainCard, DomainReport, card_from_training, check_input, check_output,
                   consistency_ratio, fit_thresholds, flagged_by, foreground_quantiles, histogram_distance, model_score,
                   noise_sigma, read_card, signals, spectral_rolloff, spectrum_edge_ratio, thresholds_of, write_card)

__all__ = ["DEFAULT_THRESHOLDS", "FIT_LEVELS", "HISTOGRAM_LIMIT", "QUANTILES", "SCORE_BATCH", "SCORE_LIMIT", "SIGNALS",
           "SPACING_MEASURED_MM", "DomainCard", "DomainReport", "card_from_training", "check_input", "check_output",
           "consistency_ratio", "fit_thresholds", "flagged_by", "foreground_quantiles", "histogram_distance", "model_score",
           "noise_sigma", "read_card", "signals", "spectral_rolloff", "spectrum_edge_ratio", "thresholds_of", "write_card"]
