"""The training state and its shardings.

TrainState holds the step, the trainable parameters (a dict of named trees: "model", and "head"
for a scalar head), the optimizer state, and `frozen` trees the objective reads but never updates
(the DPO reference model; {} otherwise). Parameters are float32 master weights whatever the
model's compute dtype.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wcse_jax import parallel
from wcse_jax.training.objectives import Objective


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: updates applied so far (= batches consumed)
  params: dict[str, Any]
  opt_state: optax.OptState
  frozen: dict[str, Any]


def state_shardings(objective: Objective, optimizer: optax.GradientTransformation, mesh: Mesh,
                    rules=parallel.DEFAULT_RULES) -> TrainState:
  """NamedShardings for every leaf of the TrainState: parameters by their logical axes, optimizer
  moments like the parameters they track, counters replicated."""
  replicated = NamedSharding(mesh, PartitionSpec())
  params = parallel.logical_shardings(objective.abstract_params(), mesh, rules)
  frozen = parallel.logical_shardings(objective.abstract_frozen(), mesh, rules)
  abstract_params = flax.linen.meta.unbox(objective.abstract_params())
  opt_state = optax.tree_map_params(
      optimizer, lambda _, sharding: sharding, jax.eval_shape(optimizer.init, abstract_params),
      params, transform_non_params=lambda _: replicated)
  return TrainState(step=replicated, params=params, opt_state=opt_state, frozen=frozen)


def create_train_state(objective: Objective, optimizer: optax.GradientTransformation,
                       shardings: TrainState, params: dict[str, Any] | None = None,
                       frozen: dict[str, Any] | None = None,
                       rng: jax.Array | None = None) -> TrainState:
  """A step-0 state placed on `shardings`.

  params: the trainable trees (e.g. {"model": restored checkpoint}); entries missing from it are
    freshly initialised from `rng` (e.g. a scalar head on a pretrained model).
  frozen: the objective's frozen trees (e.g. {"reference": ...} for DPO).
  """
  params = dict(params or {})
  wanted = set(objective.abstract_params())
  unknown = set(params) - wanted
  if unknown:
    raise ValueError(f"objective {objective.name!r}: unknown parameter trees {sorted(unknown)}; "
                     f"it trains {sorted(wanted)}")
  frozen = dict(frozen or {})
  if set(frozen) != set(objective.abstract_frozen()):
    raise ValueError(f"objective {objective.name!r}: frozen trees must be "
                     f"{sorted(objective.abstract_frozen())}, got {sorted(frozen)}")
  missing = sorted(wanted - set(params))
  if missing:
    if rng is None:
      raise ValueError(f"objective {objective.name!r}: no values for {missing} and no rng to "
                       "initialise them")
    # Only the missing trees are outputs, so XLA drops the initialisation of the others.
    init = lambda r: {k: v for k, v in objective.init_params(r).items() if k in missing}
    params.update(jax.jit(init, out_shardings={k: shardings.params[k] for k in missing})(rng))
  # One jit that copies the trees (so the state owns its buffers: the step donates them, and the
  # caller's arrays, often the same ones for params["model"] and DPO's frozen["reference"], must
  # stay valid) and initialises the optimizer.
  def place(params, frozen):
    copy = lambda t: jax.tree.map(jnp.copy, t)
    return TrainState(step=jnp.zeros((), jnp.int32), params=copy(params),
                      opt_state=optimizer.init(params), frozen=copy(frozen))
  return jax.jit(place, out_shardings=shardings)(jax.device_put(params, shardings.params),
                                                 jax.device_put(frozen, shardings.frozen))


def abstract_train_state(objective: Objective, optimizer: optax.GradientTransformation,
                         shardings: TrainState) -> TrainState:
  """ShapeDtypeStructs carrying the shardings: the target a checkpoint is restored into."""
  params = flax.linen.meta.unbox(objective.abstract_params())
  shapes = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                      opt_state=jax.eval_shape(optimizer.init, params),
                      frozen=flax.linen.meta.unbox(objective.abstract_frozen()))
  return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                      shapes, shardings)


__all__ = ["TrainState", "state_shardings", "create_train_state", "abstract_train_state"]
