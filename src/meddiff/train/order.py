"""Moved to `meddiff.data.order` (the stateless data order and per-example seeds, shared by the
objectives); re-exported here for code written against the old place."""

from ..data.order import (DATA, NOISE, STEP, TIME, VAL, Batch, SeededItems, StepBatches, collate, epoch_permutation,
                          index_at, loss_noise, mix_seed, rank_positions, seed_global_rngs)

__all__ = ["DATA", "NOISE", "STEP", "TIME", "VAL", "Batch", "SeededItems", "StepBatches", "collate", "epoch_permutation",
           "index_at", "loss_noise", "mix_seed", "rank_positions", "seed_global_rngs"]
