"""A small training run for the kill-and-resume test: python resume_run.py WORKDIR STEPS DELAY.

Trains the "test" preset on a deterministic packed SFT stream on one CPU device, logging every
step's loss to WORKDIR/metrics.jsonl, checkpointing every 3 steps and "evaluating" every 4;
DELAY seconds of sleep per batch give the test time to kill it between checkpoints.
"""
import itertools
import sys
import time

import jax
import numpy as np

from wcse_jax import parallel
from wcse_jax.models import gemma2, presets
from wcse_jax.training import batching, flops, loop, objectives, optim
from wcse_jax.training import state as train_state
from wcse_jax.training import step as train_step


def stream():
  rng = np.random.default_rng(0)
  while True:
    n = int(rng.integers(4, 16))
    yield batching.completion_example(rng.integers(3, 64, n // 2), rng.integers(3, 64, n - n // 2))


def main(workdir, num_steps, delay):
  model = gemma2.make_model(presets.get_preset("test"))
  obj = objectives.make_objective("weighted_nll", model)
  cfg = optim.OptimizerConfig(learning_rate=3e-3, warmup_steps=2, total_steps=num_steps)
  opt = optim.make_optimizer(cfg)
  mesh = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  shardings = train_state.state_shardings(obj, opt, mesh)
  step = train_step.make_train_step(obj, opt, 2, shardings, schedule=optim.make_schedule(cfg))

  def batches(start):
    for batch in itertools.islice(batching.batches(stream(), 4, 32), start, None):
      time.sleep(delay)
      yield batch

  loop.train(step,
             lambda: train_state.create_train_state(obj, opt, shardings, rng=jax.random.key(0)),
             train_state.abstract_train_state(obj, opt, shardings), batches, num_steps=num_steps,
             workdir=workdir, save_every=3, log_every=1, progress=False,
             eval_fn=lambda state: {"step_parity": float(int(state.step) % 2)}, eval_every=4,
             flops_fn=lambda b: flops.train_flops(model.config, b["positions"]), peak_flops=1e12)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
