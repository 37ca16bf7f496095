"""THE train step (DESIGN §6): one jitted function for every objective.

step(state, batch) -> (state, metrics):
1. the batch ([B, ...] per field, sharded over the batch mesh axes) is split into `microbatches`
   strided slices (microbatch m holds rows m, m + M, m + 2M, ...: each device keeps its own rows,
   so no data moves);
2. a `lax.scan` over them accumulates, in float32, the gradient of the objective's loss SUM, the
   loss sum, the weight and every metric's (sum, count);
3. the sums are divided ONCE by the total weight, so the update equals the full-batch update
   for any split, however ragged the rows (a batch of total weight 0 gives a zero gradient);
4. optax turns the mean gradient into the update.
It is jitted once, with the state donated and explicit shardings on both sides; objectives read
`params` = trainable trees merged with the state's frozen ones and differentiate only the former.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec

from wcse_jax import parallel
from wcse_jax.training.objectives import Objective, check_batch
from wcse_jax.training.state import TrainState

Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, Any], tuple[TrainState, Metrics]]


def split_microbatches(batch: Mapping[str, jax.Array], microbatches: int, data_axes: Any,
                       data_size: int) -> dict[str, jax.Array]:
  """[B, ...] -> [M, B / M, ...] per field, microbatch m = rows m, m + M, ..."""
  out = {}
  for key, x in batch.items():
    rows = x.shape[0]
    if rows % microbatches or (rows // microbatches) % data_size:
      raise ValueError(
          f"batch[{key!r}] has {rows} rows: it must split into {microbatches} microbatches whose "
          f"row count is a multiple of the {data_size} data-parallel devices")
    x = x.reshape(rows // microbatches, microbatches, *x.shape[1:]).swapaxes(0, 1)
    out[key] = jax.lax.with_sharding_constraint(x, PartitionSpec(None, data_axes))
  return out


def make_train_step(objective: Objective, optimizer: optax.GradientTransformation,
                    microbatches: int, shardings: TrainState, *,
                    schedule: optax.Schedule | None = None, seed: int = 0,
                    rules=parallel.DEFAULT_RULES) -> StepFn:
  """The jitted step for `objective` (whose model it came with; see the module docstring).

  shardings: the TrainState's shardings (`state.state_shardings`), which also fix the mesh.
  schedule: when given, its value at the step is reported as metrics["learning_rate"].
  seed: the objective's rng at step s, microbatch m is fold_in(fold_in(key(seed), s), m), so a
    resumed run draws the same numbers.
  The returned function carries the jitted one as `.jitted` (for lowering and cost analysis).
  """
  if microbatches < 1:
    raise ValueError(f"microbatches must be >= 1, got {microbatches}")
  mesh = jax.tree.leaves(shardings)[0].mesh
  data_axes = nn.logical_to_mesh_axes(("batch",), rules)[0]
  data_size = math.prod(mesh.shape[a] for a in _axes_tuple(data_axes))
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sharding = NamedSharding(mesh, PartitionSpec(data_axes))

  def step(state: TrainState, batch: Mapping[str, jax.Array]) -> tuple[TrainState, Metrics]:
    check_batch(objective, batch)
    micro = split_microbatches(batch, microbatches, data_axes, data_size)
    rng = jax.random.fold_in(jax.random.key(seed), state.step)

    def grad_of_sum(index, mb):
      def total(trainable):
        out = objective.loss({**trainable, **state.frozen}, mb, jax.random.fold_in(rng, index))
        return out.total.astype(jnp.float32), out
      (_, out), grads = jax.value_and_grad(total, has_aux=True)(state.params)
      return jax.tree.map(lambda g: g.astype(jnp.float32), grads), out

    def accumulate(carry, xs):
      grads, out = grad_of_sum(*xs)
      sums = (grads, out.total, out.weight, dict(out.metrics))
      return jax.tree.map(lambda a, b: a + b.astype(jnp.float32), carry, sums), None

    first = jax.tree.map(lambda x: x[0], micro)
    shapes = jax.eval_shape(lambda mb: grad_of_sum(0, mb), first)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32),
                         (shapes[0], shapes[1].total, shapes[1].weight, dict(shapes[1].metrics)))
    if microbatches == 1:
      # The same sums without a one-trip loop, which on CPU costs copies in and out of it.
      sums, _ = accumulate(zeros, (0, first))
    else:
      sums, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(microbatches), micro))
    grad_sum, loss_sum, weight, metric_sums = sums

    denom = jnp.where(weight > 0, weight, 1.0)
    grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grad_sum, state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {k: s / jnp.where(c > 0, c, 1.0) for k, (s, c) in metric_sums.items()}
    metrics.update(loss=loss_sum / denom, weight=weight, grad_norm=optax.tree.norm(grads))
    if schedule is not None:
      metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  jitted = jax.jit(step, in_shardings=(shardings, batch_sharding),
                   out_shardings=(shardings, replicated), donate_argnums=0)

  def run(state: TrainState, batch: Any) -> tuple[TrainState, Metrics]:
    # The mesh and rules must be current while tracing, so the model's activation constraints
    # are real; entering them on every call keeps the jit cache key the same.
    with parallel.activate(mesh, rules):
      return jitted(state, batch)
  run.jitted = jitted
  return run


def _axes_tuple(axes: Any) -> tuple[str, ...]:
  return (axes,) if isinstance(axes, str) else tuple(axes or ())


__all__ = ["make_train_step", "split_microbatches"]
