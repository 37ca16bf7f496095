"""`fit`: the one way to train any objective (DESIGN §6).

    result = fit.fit(objectives.make_objective("weighted_nll", model), source, mesh=mesh,
                     optimizer=optim.OptimizerConfig(learning_rate=1e-5, total_steps=600),
                     steps=600, workdir=workdir, params={"model": base}, microbatches=4,
                     save_every=60, select=validation_accuracy)

It builds the state and its shardings, THE step (microbatches, float32 accumulation, one division
by the total weight), runs the loop (batch source, metrics, progress, checkpoints every
`save_every` steps, resume after a kill) and, when `select` is given, scores the trainable
parameters every `select_every` steps and keeps the best on disk. SFT, GenRM, verifiers, DPO and
BoN-aware RL all come through here; they differ in the objective and in the batch source (a
fixed data set through `loop.from_stream`, or on-policy rollouts that read the state).

Selection is resumable: the scores are kept in workdir/selection.json and the best parameters in
workdir/best (written to a temporary folder and renamed), so a run killed after some selections
still returns the best of all of them; a score is never recomputed for a step it already has.
The model's rematerialisation is a property of the model the objective was built on
(`gemma2.make_model(..., remat_policy=...)`).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, Callable, Mapping

import jax

from wcse_jax import checkpoints, parallel
from wcse_jax.files import read_json, write_json
from wcse_jax.training import loop, optim
from wcse_jax.training import state as state_lib
from wcse_jax.training.flops import train_flops
from wcse_jax.training.objectives import Objective
from wcse_jax.training.step import make_train_step


@dataclasses.dataclass(frozen=True)
class FitResult:
  params: dict[str, Any]  # the trainable trees: the best on validation, or the last ones
  steps: int  # updates taken
  selected_step: int | None  # the step whose parameters `params` are (None: no selection)
  scores: dict[int, float]  # selection score per evaluated step


def fit(objective: Objective, source: loop.BatchSource, *, mesh, optimizer: optim.OptimizerConfig,
        steps: int, workdir: str, params: Mapping[str, Any] | None = None,
        frozen: Mapping[str, Any] | None = None, microbatches: int = 1,
        save_every: int | None = None, keep_checkpoints: int = 2,
        select: Callable[[dict[str, Any]], float] | None = None, select_every: int | None = None,
        seed: int = 0, log_every: int = 10, progress: bool = True,
        desc: str = "train") -> FitResult:
  """Trains `objective` for `steps` updates on the batches of `source`.

  params: starting values of the trainable trees (e.g. {"model": checkpoint}); trees it lacks
    are initialised from `seed` (e.g. a scalar head, or a model trained from scratch).
  frozen: the objective's frozen trees (e.g. {"reference": ...} for DPO).
  save_every: checkpoint interval in steps (default: only at the end); a kill resumes from the
    last one.
  select: scores the trainable trees (higher is better, e.g. validation accuracy); the best
    scoring ones are returned instead of the last (papers.md §1: evenly spaced checkpoints,
    selected on validation). Evaluated every `select_every` steps (default: save_every) and at
    the end.
  """
  if steps < 1:
    raise ValueError(f"fit: steps must be >= 1, got {steps}")
  save_every = save_every or steps
  select_every = select_every or save_every
  if save_every < 1 or select_every < 1:
    raise ValueError(f"fit: save_every and select_every must be >= 1, got {save_every} and "
                     f"{select_every}")
  tx = optim.make_optimizer(optimizer)
  shardings = state_lib.state_shardings(objective, tx, mesh)
  abstract = state_lib.abstract_train_state(objective, tx, shardings)
  init = lambda: state_lib.create_train_state(
      objective, tx, shardings, params=dict(params or {}), frozen=dict(frozen or {}),
      rng=jax.random.key(seed))
  step_fn = make_train_step(objective, tx, microbatches, shardings,
                            schedule=optim.make_schedule(optimizer), seed=seed)
  selection = _Selection(workdir, select) if select else None
  config = getattr(getattr(objective, "model", None), "config", None)
  flops_fn = (lambda b: train_flops(config, b["positions"])) if config is not None else None
  final = loop.train(
      step_fn, init, abstract, source, num_steps=steps, workdir=workdir, save_every=save_every,
      keep_checkpoints=keep_checkpoints, log_every=log_every,
      eval_fn=selection.evaluate if selection else None,
      eval_every=select_every if selection else 0, flops_fn=flops_fn, progress=progress,
      desc=desc)
  taken = int(final.step)
  if selection is None:
    return FitResult(params=final.params, steps=taken, selected_step=None, scores={})
  if taken not in selection.scores:
    selection.evaluate(final)
  best = selection.restore(final.params)
  return FitResult(params=best, steps=taken, selected_step=selection.best_step,
                   scores=dict(selection.scores))


class _Selection:
  """Best-on-validation bookkeeping, kept on disk (see the module docstring)."""

  def __init__(self, workdir: str, select: Callable[[dict[str, Any]], float]):
    self.select = select
    self.path = os.path.join(workdir, "selection.json")
    self.best_path = os.path.join(workdir, "best")
    saved = read_json(self.path) if os.path.exists(self.path) else {"scores": {},
                                                                      "best_step": None}
    self.scores = {int(k): float(v) for k, v in saved["scores"].items()}
    self.best_step = saved["best_step"]

  def evaluate(self, state: state_lib.TrainState) -> dict[str, float]:
    step = int(state.step)
    score = float(self.select(state.params))
    self.scores[step] = score
    # Ties go to the later step: with equal validation scores, the longer-trained parameters.
    chief = jax.process_index() == 0
    if self.best_step is None or score >= self.scores[self.best_step]:
      tmp = self.best_path + ".tmp"
      if chief:
        shutil.rmtree(tmp, ignore_errors=True)
      parallel.sync("wcse_jax:fit:best:cleared")
      checkpoints.save(state.params, tmp)  # every process writes its part of the arrays
      if chief:
        shutil.rmtree(self.best_path, ignore_errors=True)
        os.replace(tmp, self.best_path)
      parallel.sync("wcse_jax:fit:best:saved")
      self.best_step = step
    if chief:
      write_json(self.path, {"scores": {str(k): v for k, v in sorted(self.scores.items())},
                             "best_step": self.best_step})
    return {"selection_score": score}

  def restore(self, like: dict[str, Any]) -> dict[str, Any]:
    """The best parameters, restored into the shardings of `like` (the final parameters)."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), like)
    shardings = jax.tree.map(lambda x: x.sharding, like)
    return checkpoints.restore(self.best_path, abstract, shardings)


__all__ = ["FitResult", "fit"]
