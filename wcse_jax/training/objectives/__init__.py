"""Objectives: pure losses over a batch whose host-side preparation happened elsewhere.

The contract and the registry are in base.py; each loss is one module that registers itself:
weighted_nll (SFT, GenRM, BoN-aware weights), scalar_head (discriminative reward models), dpo.
`make_objective("weighted_nll", model, **options)` builds one by name.
"""
from wcse_jax.training.objectives import dpo, scalar_head, weighted_nll  # noqa: F401 (registers)
from wcse_jax.training.objectives.base import (LossOut, Objective, check_batch, make_objective,
                                               objective_names, register)

__all__ = ["LossOut", "Objective", "register", "make_objective", "objective_names", "check_batch"]
