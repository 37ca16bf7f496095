"""A small training run for the kill-and-resume test:
python resume_run.py WORKDIR STEPS DELAY MODE.

Trains the "test" preset on one CPU device, logging every step's loss to WORKDIR/metrics.jsonl,
checkpointing every 3 steps and "evaluating" every 4; DELAY seconds of sleep per batch give the
test time to kill it between checkpoints. MODE "stream": a deterministic packed SFT stream;
"on_policy": each batch is sampled from the CURRENT parameters (4 prompts x 2 samples, keyed by
the batch index) and weighted by a toy reward, as an RL rollout would be.
"""
import itertools
import sys
import time

import jax
import numpy as np

from wcse_jax import parallel
from wcse_jax.models import gemma2, presets
from wcse_jax.sampling.choosers import Temperature
from wcse_jax.sampling.sampler import Sampler
from wcse_jax.training import batching, flops, loop, objectives, optim
from wcse_jax.training import state as train_state
from wcse_jax.training import step as train_step


def stream():
  rng = np.random.default_rng(0)
  while True:
    n = int(rng.integers(4, 16))
    yield batching.completion_example(rng.integers(3, 64, n // 2), rng.integers(3, 64, n - n // 2))


def on_policy(model, mesh, delay):
  """Rollouts from the state's parameters: reward 1 for an even last token, -0.5 otherwise."""
  sampler = Sampler(model, mesh, eos_ids=(1,), pad_id=0, cache_length=32)
  prompts = [[2, 5, 6], [2, 7], [2, 9, 10, 11], [2, 12]]

  def source(index, state):
    time.sleep(delay)
    out = sampler.sample(state.params["model"], prompts, 2, 8, Temperature(1.0), rng=index)
    examples = []
    for i, prompt in enumerate(prompts):
      for j in range(2):
        tokens = out.tokens[i, j, :out.lengths[i, j]]
        examples.append(batching.completion_example(prompt, tokens,
                                                    1.0 if tokens[-1] % 2 == 0 else -0.5))
    return batching.pad_rows(examples, 16)

  return source


def main(workdir, num_steps, delay, mode):
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

  source = loop.from_stream(batches) if mode == "stream" else on_policy(model, mesh, delay)
  loop.train(step,
             lambda: train_state.create_train_state(obj, opt, shardings, rng=jax.random.key(0)),
             train_state.abstract_train_state(obj, opt, shardings), source, num_steps=num_steps,
             workdir=workdir, save_every=3, log_every=1, progress=False,
             eval_fn=lambda state: {"step_parity": float(int(state.step) % 2)}, eval_every=4,
             flops_fn=lambda b: flops.train_flops(model.config, b["positions"]), peak_flops=1e12)


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
