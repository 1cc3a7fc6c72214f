"""The one held-out bits/dim entry point: the negative VLB of a VDM checkpoint's EMA weights on a split
of a prepared folder (what `meddiff evaluate --likelihood` prints and `meddiff evaluate --generated
--checkpoint` adds to its table).

Every slice of the split is centre-cropped to data.crop like the validation set (the size the model
was trained on; a dense score network takes its own data shape), and scored by generate.heldout_bpd:
the mean of `draws` Monte-Carlo draws of (t, eps, eps_0) per slice. Class-conditional models read each
slice's label as at training time (vdm.label_from of the checkpoint's config), mapped by class name;
image-conditional ones get the condition planes of their task's degradation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import FieldError, InputError
from .checkpoint import LoadedVDM, load_vdm
from .generate import HeldoutBPD, heldout_bpd


def heldout_likelihood(checkpoint: "str | Path | LoadedVDM", prepared: str | Path, *, split: str = "test", draws: int = 1,
                       seed: int = 0, batch_size: int = 16, device: torch.device | str = "cpu") -> tuple[LoadedVDM, HeldoutBPD]:
    """(the loaded VDM, its per-slice bits/dim: total and the three VLB terms) on `split` of `prepared`."""
    from ..data.dataset import PairDataset, load_prepared
    from ..data.degrade import build_degradation
    from .build import NoCondition, case_labels, label_indices

    if batch_size < 1:
        raise FieldError("batch_size", batch_size, "expected >= 1")
    if draws < 1:
        raise FieldError("draws", draws, "expected >= 1")
    vdm = checkpoint if isinstance(checkpoint, LoadedVDM) else load_vdm(checkpoint, device=device)
    cfg = vdm.cfg
    prep = load_prepared(prepared)
    if split not in prep.arrays:
        raise FieldError("split", repr(split), f"{prepared} has the splits {sorted(prep.arrays)}")
    deg = build_degradation(cfg.task) if cfg.vdm.image_condition else NoCondition()
    crop = vdm.data_shape[-1] if cfg.vdm.score != "unet" else cfg.data.crop
    size = int(prep.arrays[split].shape[-1])
    if cfg.vdm.score != "unet" and size < crop:
        raise InputError(f"{prepared}: slices are {size}x{size} but the model takes {crop}x{crop} (dense score network)")
    ds = PairDataset(prep, split, deg, crop=crop if 0 < crop < size else 0, train=False, seed=seed)
    labels_of = lambda ids: None  # noqa: E731
    if vdm.class_names:
        by_case = case_labels(prep, [split], cfg.vdm.label_from, cfg.vdm.labels_csv)
        index = dict(zip(by_case, label_indices(list(by_case.values()), vdm.class_names)))
        labels_of = lambda ids: torch.tensor([index[c] for c in ids], dtype=torch.long)  # noqa: E731
    cond_of = (lambda c, m: deg.model_condition(c, m)) if cfg.vdm.image_condition else (lambda c, m: None)
    res = heldout_bpd(vdm.model, ds, timesteps=cfg.vdm.timesteps, vocab_size=cfg.vdm.vocab_size, seed=seed,
                      batch_size=batch_size, labels_of=labels_of, cond_of=cond_of, device=device, draws=draws)
    return vdm, res


def heldout_total(checkpoint: "str | Path | LoadedVDM", prepared: str | Path, *, split: str = "test", draws: int = 1,
                  seed: int = 0) -> tuple[float, float, int]:
    """(mean, standard error, slices) of the total bits/dim of an unconditional VDM (what `meddiff evaluate
    --generated --checkpoint` reports beside FID/KID)."""
    vdm = checkpoint if isinstance(checkpoint, LoadedVDM) else load_vdm(checkpoint)
    if vdm.class_names or vdm.cfg.vdm.image_condition:
        raise InputError(f"{vdm.file}: held-out bits/dim here is for unconditional VDMs; use "
                         "`meddiff evaluate --likelihood` for class- or image-conditional ones")
    _, res = heldout_likelihood(vdm, prepared, split=split, draws=draws, seed=seed)
    return res.mean("total"), res.stderr("total"), len(res.case_ids)


__all__ = ["heldout_likelihood", "heldout_total"]
