"""The one restore pipeline: files -> slices -> samples -> files, for every kind of model.

    from pathlib import Path
    from meddiff.restore import Request, restore

    written = restore(Request(output=Path("out"), input=Path("scan.nii.gz"),
                              checkpoint="sr_x4_general"))  # its stored sampler: the posterior mean

files.py      Request (what `meddiff sample` takes), restore_files (read, normalise, slice, condition
              planes, restore, denormalise, write with the input's geometry), output naming
restorers.py  the restorers (`Restorer(task, restore_slices, describe, domain_check)` of a DDPM's sampler,
              an image-conditional VDM, learned and classical baselines) and `restore`, which resolves the
              checkpoint once (checkpointing.ModelSource) and picks one from its format

Batching, padding and per-image seeds of the slices live in `meddiff.samplers.run.sample_slices` (DDPM/VDM
samplers) and the baselines' `restore_baseline`, which share its batch loop.
"""

from .files import Request, output_path, restore_files, safe_folder_name, scaled_geometry
from .restorers import (CLASSICAL, DomainCheck, Restorer, baseline_restorer, classical_restorer, ddpm_restorer, located, restore,
                     restorer_for, sr_task, vdm_restorer)

__all__ = ["CLASSICAL", "DomainCheck", "Request", "Restorer", "baseline_restorer", "classical_restorer", "ddpm_restorer",
           "located", "output_path", "restore", "restore_files", "restorer_for", "safe_folder_name", "scaled_geometry",
           "sr_task", "vdm_restorer"]
