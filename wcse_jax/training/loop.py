"""The training loop: batches -> step -> metrics (TensorBoard + JSONL) -> eval -> checkpoints.

`train` resumes from the newest checkpoint in <workdir>/checkpoints when there is one (state and
data position), otherwise starts from `init_state()`. `batches(start)` must yield the host-local
numpy batches from batch index `start` on (e.g. `itertools.islice(stream(), start, None)`), so a
resumed run sees exactly the batches the uninterrupted one would have.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Callable, Iterable, Mapping

import jax
import numpy as np
import tqdm

from wcse_jax import parallel
from wcse_jax.training import checkpointing
from wcse_jax.training.flops import measure_matmul_flops
from wcse_jax.training.metrics import MetricWriter
from wcse_jax.training.state import TrainState


def train(step_fn: Callable, init_state: Callable[[], TrainState], abstract_state: TrainState,
          batches: Callable[[int], Iterable[Mapping[str, np.ndarray]]], *, num_steps: int,
          workdir: str, save_every: int = 1000, keep_checkpoints: int = 3, log_every: int = 10,
          eval_fn: Callable[[TrainState], Mapping[str, float]] | None = None, eval_every: int = 0,
          flops_fn: Callable[[Mapping[str, np.ndarray]], float] | None = None,
          peak_flops: float | None = None, progress: bool = True) -> TrainState:
  """Runs `step_fn` until the state has taken `num_steps` steps; returns the final state.

  abstract_state: ShapeDtypeStructs with shardings (`state.abstract_train_state`), the restore
    target; its shardings fix the mesh the host batches are placed on.
  flops_fn: FLOPs of one step on a host batch (e.g. `flops.train_flops(cfg, b["positions"])`),
    for the MFU column; peak_flops: the devices' total peak FLOP/s (default: the measured rate
    of a large float32 matmul on one device times the device count).
  """
  mesh = jax.tree.leaves(abstract_state)[0].sharding.mesh
  manager = checkpointing.checkpoint_manager(os.path.join(workdir, "checkpoints"),
                                             max_to_keep=keep_checkpoints, save_every=save_every)
  restored = checkpointing.restore_latest(manager, abstract_state)
  state, start = restored if restored is not None else (init_state(), 0)
  writer = MetricWriter(workdir)
  if flops_fn is not None and peak_flops is None:
    peak_flops = measure_matmul_flops() * mesh.size
  bar = tqdm.tqdm(total=num_steps, initial=start, disable=not progress or jax.process_index() != 0)
  tokens = flops = 0.0
  clock = None  # starts after the first step, so compilation is not counted as throughput
  step = saved = start
  for step, batch in zip(range(start + 1, num_steps + 1), batches(start)):
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
    if checkpointing.save(manager, step, state):
      saved = step
    if eval_fn is not None and eval_every and step % eval_every == 0:
      writer.write(step, {f"eval/{k}": float(v) for k, v in eval_fn(state).items()})
    bar.update(1)
  if step < num_steps:
    logging.warning("train: the batches ran out at step %d of %d", step, num_steps)
  if saved != step:
    checkpointing.save(manager, step, state, force=True)
  manager.wait_until_finished()
  manager.close()
  writer.close()
  bar.close()
  return state


__all__ = ["train"]
