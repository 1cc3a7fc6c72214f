"""The old import path of meddiff.restore.restorers, kept only until commands/sample.py imports from there.

Not a documented path (docs/python_api.md and docs/api.md never named it): the rename landed while
commands/sample.py was being edited on another branch, whose `from ..restore.models import CLASSICAL`
this keeps working. Import from meddiff.restore (or meddiff.restore.restorers); remove this file once
commands/sample.py does.
"""

from .restorers import (CLASSICAL, DEFAULT_NOISE, DomainCheck, Restorer, baseline_restorer, classical_restorer,
                        ddpm_restorer, located, memory_options, restore, restorer_for, sampling_spec, sr_task,
                        validate_request, vdm_restorer, vdm_restorer_of)

__all__ = ["CLASSICAL", "DEFAULT_NOISE", "DomainCheck", "Restorer", "baseline_restorer", "classical_restorer",
           "ddpm_restorer", "located", "memory_options", "restore", "restorer_for", "sampling_spec", "sr_task",
           "validate_request", "vdm_restorer", "vdm_restorer_of"]
