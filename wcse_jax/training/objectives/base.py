"""The objective contract and registry: pure losses over a batch prepared elsewhere.

Contract (DESIGN §6): `objective.loss(params, batch, rng) -> LossOut(total, weight, metrics)`.
`total` is a SUM over the batch and `weight` the count it should be divided by; the train step
adds both over microbatches and divides once, so a loss is exact however the batch is split.
`metrics` maps a name to (sum, count), reduced the same way.

`params` is a dict of named trees: the trainable ones the objective asks for in
`abstract_params()` ("model", and "head" for a scalar head) merged with the frozen ones of
`abstract_frozen()` ("reference" for DPO). An objective gets its model at construction and knows
nothing about where its batch came from; `batch_fields` names what it reads.

Objectives are made by name: `make_objective("weighted_nll", model, **options)`; each objective
module registers itself with `@register(name)`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Protocol

import flax
import jax


@flax.struct.dataclass
class LossOut:
  total: jax.Array  # sum of per-example (or per-token) losses, float32
  weight: jax.Array  # what `total` is divided by after summing over microbatches
  metrics: Mapping[str, tuple[jax.Array, jax.Array]]  # name -> (sum, count)


class Objective(Protocol):
  name: str
  batch_fields: tuple[str, ...]

  def loss(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array],
           rng: jax.Array) -> LossOut: ...

  def abstract_params(self) -> dict[str, Any]:
    """Boxed (logically partitioned) abstract trees of the trainable parameters."""

  def init_params(self, rng: jax.Array) -> dict[str, Any]:
    """Fresh trainable parameters (the "model" entry is usually replaced by a checkpoint)."""

  def abstract_frozen(self) -> dict[str, Any]:
    """Boxed abstract trees of frozen inputs (e.g. a DPO reference model); {} when none."""


_REGISTRY: dict[str, Callable[..., Objective]] = {}


def register(name: str) -> Callable[[Callable[..., Objective]], Callable[..., Objective]]:
  def add(factory):
    if name in _REGISTRY:
      raise ValueError(f"objective {name!r} is registered twice")
    _REGISTRY[name] = factory
    return factory
  return add


def make_objective(name: str, model: Any, **options: Any) -> Objective:
  """The objective `name` over `model`, with its options (e.g. beta for "dpo")."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown objective {name!r}; known objectives: {sorted(_REGISTRY)}")
  return _REGISTRY[name](model, **options)


def objective_names() -> list[str]:
  return sorted(_REGISTRY)


def check_batch(objective: Objective, batch: Mapping[str, Any]) -> None:
  """Raises ValueError naming the fields `objective` needs that `batch` lacks."""
  missing = [k for k in objective.batch_fields if k not in batch]
  if missing:
    raise ValueError(f"objective {objective.name!r}: batch lacks fields {missing}; it has "
                     f"{sorted(batch)} and needs {list(objective.batch_fields)}")


__all__ = ["LossOut", "Objective", "register", "make_objective", "objective_names", "check_batch"]
