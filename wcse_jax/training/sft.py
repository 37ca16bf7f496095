"""Supervised fine-tuning in one call: the weighted-NLL objective + THE step + the loop.

Used by the zoo (base models trained from scratch) and by the WC-vs-SE students. The data stream
is a deterministic function of (examples, seed): epoch e is the examples shuffled by seed + e,
packed into fixed [rows, length] batches, so a resumed run sees the same batches.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np

from wcse_jax import checkpoints
from wcse_jax.models import gemma2
from wcse_jax.training import batching, loop, objectives, optim
from wcse_jax.training import state as state_lib
from wcse_jax.training.flops import train_flops
from wcse_jax.training.step import make_train_step


def stream(examples: Sequence[Mapping], rows: int, length: int, seed: int) -> Iterator[dict]:
  """Endless packed batches over shuffled epochs of `examples`."""
  if not examples:
    raise ValueError("no training examples (did the filter keep nothing?)")
  for epoch in itertools.count():
    order = np.random.default_rng(seed + epoch).permutation(len(examples))
    yield from batching.batches((examples[i] for i in order), rows, length)


def finetune(model: gemma2.Gemma2, params: Any | None, examples: Sequence[Mapping], *, mesh,
             workdir: str, steps: int, rows: int, length: int, optimizer: optim.OptimizerConfig,
             seed: int = 0, microbatches: int = 1, save_every: int | None = None,
             select: Callable[[Any], float] | None = None,
             progress: bool = True) -> tuple[Any, dict]:
  """Trains `model` on examples (`batching.completion_example` dicts) for `steps` steps.

  params: starting weights, or None to train from scratch (initialised from `seed`).
  select: when given, scores the params at every checkpoint (e.g. validation accuracy); the best
    scoring params are returned instead of the last ones (papers.md §1: evenly spaced checkpoints,
    selected on validation). Scores are kept in workdir/selection.json so a resumed run keeps them.
  Returns (params, summary) with the chosen step and scores.
  """
  objective = objectives.make_objective("weighted_nll", model)
  tx = optim.make_optimizer(optimizer)
  shardings = state_lib.state_shardings(objective, tx, mesh)
  abstract = state_lib.abstract_train_state(objective, tx, shardings)
  init = lambda: state_lib.create_train_state(
      objective, tx, shardings, params=None if params is None else {"model": params},
      rng=jax.random.key(seed))
  step_fn = make_train_step(objective, tx, microbatches, shardings,
                            schedule=optim.make_schedule(optimizer), seed=seed)
  save_every = save_every or steps
  selection_path, best_path = os.path.join(workdir, "selection.json"), os.path.join(workdir, "best")
  selection = {"scores": {}, "best_step": None}
  if os.path.exists(selection_path):
    with open(selection_path) as f:
      selection = json.load(f)

  def evaluate(state) -> dict[str, float]:
    score = float(select(state.params["model"]))
    scores = selection["scores"]
    scores[str(int(state.step))] = score
    if score >= max(scores.values()):
      # Kept on disk, not in memory, so a run resumed after a crash still returns the best.
      tmp = best_path + ".tmp"
      shutil.rmtree(tmp, ignore_errors=True)
      checkpoints.save(state.params["model"], tmp)
      shutil.rmtree(best_path, ignore_errors=True)
      os.replace(tmp, best_path)
      selection["best_step"] = int(state.step)
    with open(selection_path, "w") as f:
      json.dump(selection, f)
    return {"selection_score": score}

  final = loop.train(
      step_fn, init, abstract,
      lambda start: itertools.islice(stream(examples, rows, length, seed), start, None),
      num_steps=steps, workdir=workdir, save_every=save_every, keep_checkpoints=1,
      eval_fn=evaluate if select else None, eval_every=save_every if select else 0,
      flops_fn=lambda b: train_flops(model.config, b["positions"]), progress=progress)
  summary = {"steps": steps, "examples": len(examples)}
  if not select:
    return final.params["model"], summary
  if str(int(final.step)) not in selection["scores"]:
    evaluate(final)
  summary.update(selected_step=selection["best_step"], scores=selection["scores"])
  model_params = final.params["model"]
  abstract_model = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), model_params)
  shardings_model = jax.tree.map(lambda x: x.sharding, model_params)
  return checkpoints.restore(best_path, abstract_model, shardings_model), summary
