"""The discriminative reward model (papers.md §2, baseline "ORM"): a scalar head on the final-norm
hidden state at the solution's last token, trained with balanced BCE (optionally z-loss 1e-4
log^2 Z, or HL-Gauss bins) by the `scalar_head` objective through fit.

Batches (`batches`): one [problem][solution] sequence per row, right-padded; `score_index` its last
token; `target` the final-answer label; `example_weight` the balanced-BCE weights computed over the
whole batch on the host (training/objectives/scalar_head.balanced_weights). Scoring reads the same
hidden state through sampling/score.py (the problem prefilled once for all its solutions) and
applies the trained head: sigmoid of the logit (BCE), or the bins' expectation (HL-Gauss).
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wcse_jax.data.example import Task
from wcse_jax.loading import LoadedModel
from wcse_jax.sampling.score import Scorer
from wcse_jax.training import batching
from wcse_jax.training.objectives import scalar_head
from wcse_jax.verifiers import base


def example(tokenizer, task: Task, question: str, solution: str, label: bool) -> dict:
  """[problem][solution] and its label."""
  tokens = base.problem_ids(tokenizer, task, question) + base.solution_ids(tokenizer, task,
                                                                           solution)
  return {"tokens": np.asarray(tokens, np.int32), "label": float(label)}


def batches(examples: Sequence[Mapping[str, Any]], rows: int, length: int,
            seed: int) -> Iterator[dict[str, np.ndarray]]:
  """Endless padded batches over shuffled epochs (epoch e shuffled by seed + e)."""
  if not examples:
    raise ValueError("no training examples for the discriminative verifier")
  for epoch in itertools.count():
    order = np.random.default_rng(seed + epoch).permutation(len(examples))
    for start in range(0, len(order), rows):
      chunk = [examples[i] for i in order[start:start + rows]]
      batch = batching.pad_rows([{"tokens": e["tokens"]} for e in chunk], length, rows)
      valid = np.zeros(rows, bool)
      valid[:len(chunk)] = True
      labels = np.zeros(rows, np.float32)
      labels[:len(chunk)] = [e["label"] for e in chunk]
      batch.pop("loss_weight")
      batch.update(score_index=scalar_head.last_token_index(batch["positions"]), target=labels,
                   example_weight=scalar_head.balanced_weights(labels, valid))
      yield batch


@dataclasses.dataclass(frozen=True)
class Discriminative:
  """The head's probability of "correct" at the solution's last token."""
  name: str
  loaded: LoadedModel
  head_params: Any
  objective: scalar_head.ScalarHeadObjective
  scorer: Scorer
  task: Task

  def score(self, candidates: Sequence[base.Candidate]) -> base.Scores:
    out, rows, flops = base.score_solutions(self.loaded, self.scorer, self.task, candidates,
                                            return_hidden=True)
    logits = np.asarray(self.objective.head.apply({"params": self.head_params},
                                                  jnp.asarray(out.hidden[rows])))
    if self.objective.loss_type == "bce":
      probs = np.asarray(jax.nn.sigmoid(logits[:, 0]))
    else:
      centres = np.asarray(scalar_head.bin_centres(self.objective.num_bins, self.objective.v_min,
                                                   self.objective.v_max))
      probs = np.asarray(jax.nn.softmax(logits, axis=-1)) @ centres
    return base.Scores(scores=probs.astype(np.float64), flops=flops)


__all__ = ["example", "batches", "Discriminative"]
