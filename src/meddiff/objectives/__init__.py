"""The training objectives of every model family behind one protocol, and the registry that picks one.

protocol.py   the Objective protocol the training loop sees (build, step, validation, checkpoint metadata;
              Runtime, StepContext, the optional hooks with their defaults); the only module of this
              package the loop imports
registry.py   config ``objective`` -> its class (OBJECTIVES, objective_class; `meddiff train` picks it and
              passes it to the loop), training_data, check_sizes
ddpm.py, vdm.py, baseline.py, distill.py   the four family adapters (DDPMObjective, VDMObjective,
              BaselineObjective, DistillObjective) over diffusion/, vdm/, baselines/, distill/

The registry's names are importable from here (`from meddiff.objectives import objective_class`); they are
loaded on first use, so importing the protocol (as train/loop.py does) loads no model family.
"""

_REGISTRY = ("OBJECTIVES", "check_sizes", "objective_class", "training_data")

__all__ = list(_REGISTRY)


def __getattr__(name: str):
    if name in _REGISTRY:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
