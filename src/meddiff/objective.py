"""The old import path of meddiff.objectives.protocol (the Objective protocol the training loop sees).

Kept one release because docs/python_api.md named `meddiff.objective.Objective`; import from
meddiff.objectives.protocol.
"""

from .objectives.protocol import (Objective, ObjectiveFamily, Optimisers, OptionalHooks, Runtime, StepContext,
                                  TaskConditioned, optimiser_list)

__all__ = ["Objective", "ObjectiveFamily", "Optimisers", "OptionalHooks", "Runtime", "StepContext", "TaskConditioned",
           "optimiser_list"]
