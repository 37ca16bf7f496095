"""The DPO verifier (V-STaR, papers.md §4): DPO on (correct, incorrect) solution pairs of the same
problem, the reference model frozen at the starting point; its score is the DPO model's own
log-likelihood log pi_DPO(y | x), which GenRM's appendix found better than the reference-subtracted
reward.

Pairs (`pairs`): per problem, every correct solution is paired with an incorrect one (cycling
through the incorrect ones), up to `per_problem` pairs, deduplicated by text. Batches: [B, 2, L]
rows of [problem][solution] (index 0 chosen, 1 rejected), `loss_mask` on the solution tokens.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from wcse_jax.data.example import Task
from wcse_jax.loading import LoadedModel
from wcse_jax.sampling.score import Scorer
from wcse_jax.verifiers import base


def pairs(records: Sequence[Mapping[str, Any]], per_problem: int,
          seed: int) -> list[tuple[Mapping, Mapping]]:
  """(correct, incorrect) record pairs of the same problem (see the module docstring)."""
  rng = np.random.default_rng(seed)
  grouped: dict[str, dict[bool, dict[str, Mapping]]] = collections.defaultdict(
      lambda: {True: {}, False: {}})
  for r in records:
    grouped[r["problem_id"]][bool(r["correct"])].setdefault(" ".join(r["text"].split()), r)
  out = []
  for pid in sorted(grouped):
    good, bad = (list(grouped[pid][label].values()) for label in (True, False))
    if not good or not bad:
      continue
    good = [good[i] for i in rng.permutation(len(good))]
    bad = [bad[i] for i in rng.permutation(len(bad))]
    count = min(per_problem, max(len(good), len(bad)))
    out += [(good[i % len(good)], bad[i % len(bad)]) for i in range(count)]
  return out


def example(tokenizer, task: Task, question: str, chosen: str, rejected: str) -> dict:
  """Token ids and solution masks of one pair."""
  prefix = base.problem_ids(tokenizer, task, question)
  rows = []
  for solution in (chosen, rejected):
    ids = base.solution_ids(tokenizer, task, solution)
    rows.append((np.asarray(prefix + ids, np.int32),
                 np.concatenate([np.zeros(len(prefix)), np.ones(len(ids))]).astype(np.float32)))
  return {"rows": rows}


def batches(examples: Sequence[Mapping[str, Any]], rows: int, length: int,
            seed: int) -> Iterator[dict[str, np.ndarray]]:
  """Endless [rows, 2, length] batches over shuffled epochs (epoch e shuffled by seed + e)."""
  if not examples:
    raise ValueError("no preference pairs for the DPO verifier (no problem has both a correct "
                     "and an incorrect solution)")
  for epoch in itertools.count():
    order = np.random.default_rng(seed + epoch).permutation(len(examples))
    for start in range(0, len(order), rows):
      tokens = np.zeros((rows, 2, length), np.int32)
      positions = np.full((rows, 2, length), -1, np.int32)
      mask = np.zeros((rows, 2, length), np.float32)
      for b, i in enumerate(order[start:start + rows]):
        for side, (ids, m) in enumerate(examples[i]["rows"]):
          if len(ids) > length:
            raise ValueError(f"a preference pair of {len(ids)} tokens does not fit rows of "
                             f"length {length}")
          tokens[b, side, :len(ids)], mask[b, side, :len(ids)] = ids, m
          positions[b, side, :len(ids)] = np.arange(len(ids))
      yield {"tokens": tokens, "positions": positions, "loss_mask": mask}


@dataclasses.dataclass(frozen=True)
class DPOVerifier:
  """log pi_DPO(solution | problem), one teacher-forced pass per problem."""
  name: str
  loaded: LoadedModel
  scorer: Scorer
  task: Task

  def score(self, candidates: Sequence[base.Candidate]) -> base.Scores:
    out, rows, flops = base.score_solutions(self.loaded, self.scorer, self.task, candidates)
    return base.Scores(scores=out.logprob_sum[rows].astype(np.float64), flops=flops)


__all__ = ["pairs", "example", "batches", "DPOVerifier"]
