"""The training loop: batch source -> step -> metrics (TensorBoard + JSONL) -> eval -> checkpoints.

`train` resumes from the newest checkpoint in <workdir>/checkpoints when there is one (state and
data position), otherwise starts from `init_state()`.

The batch source is called once per step as `source(index, state)`: `index` is the 0-based batch
index (the number of updates the state has taken) and `state` the current TrainState, so on-policy
data (rollouts sampled from `state.params` with randomness seeded by `index`) feeds the same loop
as a fixed data set. It returns a host-local numpy batch, or None when the data has run out. A
batch may carry `host_metrics`, a dict of floats about how it was made (a rollout's reward, say),
logged as rollout/* at that step and not passed to the step function. A resumed run calls the
source with the restored state and index, so a source that depends only on (index, state)
regenerates exactly the batches the uninterrupted run saw. `from_stream` adapts an
ordinary iterator factory `make(start)` (e.g. `itertools.islice(stream(), start, None)`).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Iterator, Mapping, Optional

import jax
import numpy as np

from wcse_jax import parallel
from wcse_jax import progress as progress_lib
from wcse_jax.training import checkpointing
from wcse_jax.training.flops import measure_matmul_flops
from wcse_jax.training.metrics import MetricWriter
from wcse_jax.training.state import TrainState

Batch = Mapping[str, np.ndarray]
BatchSource = Callable[[int, TrainState], Optional[Batch]]


def from_stream(make: Callable[[int], Iterator[Batch]]) -> BatchSource:
  """A BatchSource over `make(start)`, an iterator of the batches from index `start` on.

  The iterator is created at the first index asked for and then read in order; asking for any
  other index than the next one is an error (the loop never does).
  """
  current: dict = {}

  def source(index: int, state: TrainState) -> Batch | None:
    del state  # off-policy: the data does not depend on the parameters
    if "it" not in current:
      current.update(it=make(index), next=index)
    if index != current["next"]:
      raise ValueError(f"from_stream: batch {index} asked for, but the stream is at "
                       f"{current['next']}")
    current["next"] += 1
    return next(current["it"], None)

  return source


def train(step_fn: Callable, init_state: Callable[[], TrainState], abstract_state: TrainState,
          source: BatchSource, *, num_steps: int, workdir: str, save_every: int = 1000,
          keep_checkpoints: int = 3, log_every: int = 10,
          eval_fn: Callable[[TrainState], Mapping[str, float]] | None = None, eval_every: int = 0,
          flops_fn: Callable[[Batch], float] | None = None,
          peak_flops: float | None = None, progress: bool = True,
          desc: str = "train") -> TrainState:
  """Runs `step_fn` until the state has taken `num_steps` steps; returns the final state.

  abstract_state: ShapeDtypeStructs with shardings (`state.abstract_train_state`), the restore
    target; its shardings fix the mesh the host batches are placed on.
  source: the batch source (see the module docstring).
  eval_fn: called every `eval_every` steps on the state, its numbers logged as eval/*.
  flops_fn: FLOPs of one step on a host batch (e.g. `flops.train_flops(cfg, b["positions"])`),
    for the MFU column; peak_flops: the devices' total peak FLOP/s (default: the measured rate
    of a large float32 matmul on one device times the device count).
  """
  mesh = jax.tree.leaves(abstract_state)[0].sharding.mesh
  manager = checkpointing.checkpoint_manager(os.path.join(workdir, "checkpoints"),
                                             max_to_keep=keep_checkpoints, save_every=save_every)
  restored = checkpointing.restore_latest(manager, abstract_state)
  state, start = restored if restored is not None else (init_state(), 0)
  # Metrics logged after the restored checkpoint by the killed run are dropped: this run logs
  # those steps again, and a step must appear once.
  writer = MetricWriter(workdir, resume_step=start)
  if flops_fn is not None and peak_flops is None:
    peak_flops = measure_matmul_flops() * mesh.size
  bar = progress_lib.bar(num_steps, desc=desc, unit="step", enabled=progress)
  bar.update(start)
  tokens = flops = 0.0
  clock = None  # starts after the first step, so compilation is not counted as throughput
  step = saved = start
  for step in range(start + 1, num_steps + 1):
    batch = source(step - 1, state)
    if batch is None:
      logging.warning("train: the batches ran out at step %d of %d", step - 1, num_steps)
      step -= 1
      break
    batch = dict(batch)
    host_metrics = batch.pop("host_metrics", None)
    if host_metrics:
      writer.write(step, {f"rollout/{k}": float(v) for k, v in host_metrics.items()})
    tokens += float((np.asarray(batch["positions"]) >= 0).sum())
    flops += flops_fn(batch) if flops_fn else 0.0
    state, metrics = step_fn(state, parallel.global_batch(batch, mesh))
    if clock is None or step % log_every == 0 or step == num_steps:
      scalars = {f"train/{k}": float(v) for k, v in jax.device_get(metrics).items()}
      if clock is not None:
        elapsed = time.perf_counter() - clock
        scalars["perf/tokens_per_s"] = tokens / elapsed
        if flops_fn:
          scalars["perf/mfu"] = flops / elapsed / peak_flops
      writer.write(step, scalars)
      bar.set_postfix(loss=f"{scalars['train/loss']:.4g}",
                      tok_s=f"{scalars.get('perf/tokens_per_s', 0):.4g}",
                      mfu=f"{scalars.get('perf/mfu', 0):.1%}")
      tokens = flops = 0.0
      clock = time.perf_counter()
    # Evaluate before saving: a checkpoint at an evaluation step then implies its evaluation
    # happened, so a run resumed from it never skips one.
    if eval_fn is not None and eval_every and step % eval_every == 0:
      writer.write(step, {f"eval/{k}": float(v) for k, v in eval_fn(state).items()})
    if checkpointing.save(manager, step, state):
      saved = step
    bar.update(1)
  if saved != step:
    checkpointing.save(manager, step, state, force=True)
  manager.wait_until_finished()
  manager.close()
  writer.close()
  bar.close()
  return state


__all__ = ["Batch", "BatchSource", "from_stream", "train"]
