"""The one verifier interface (DESIGN §8) and the token layout every verifier shares.

A verifier turns candidates (a problem's question and one solution) into scores, each with the
FLOPs it cost: `verifier.score(candidates) -> Scores`. Best-of-N, weighted self-consistency and
BoN-aware RL take any of them.

Token layout. Texts are encoded segment by segment (sampling/text.encode_segments) and the ids
concatenated, so a segment has the same ids whatever precedes it and training examples, sampling
prompts and scored sequences agree token for token:
  [BOS + the task's zero-shot prompt] [the solution as the policy wrote it] [verifier segments...]
`problem_ids` and `solution_ids` give the first two; the problem segment is the prefix every
candidate of a problem shares (scored once, sampling/score.py).
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Protocol, Sequence

import numpy as np

from wcse_jax.data import prompts
from wcse_jax.data.example import Task
from wcse_jax.sampling import flops as flops_lib
from wcse_jax.sampling.score import ScoreOutput, Scorer


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One solution to score. `question` is the problem's text, never its reference solution."""
  problem_id: str
  sample_index: int
  question: str
  solution: str


@dataclasses.dataclass(frozen=True)
class Scores:
  scores: np.ndarray  # [candidates] float64, higher = more likely correct
  flops: np.ndarray  # [candidates] float64, what scoring each one cost


class Verifier(Protocol):
  name: str

  def score(self, candidates: Sequence[Candidate]) -> Scores: ...


def problem_ids(tokenizer, task: Task, question: str) -> list[int]:
  """BOS + the zero-shot prompt: the segment all candidates of a problem share."""
  return [tokenizer.bos_id] + list(tokenizer.encode(prompts.query(task, question)))


def solution_ids(tokenizer, task: Task, solution: str) -> list[int]:
  """The solution as the policy wrote it after the prompt (prompts.target adds the space)."""
  return list(tokenizer.encode(prompts.target(task, solution)))


def by_problem(candidates: Sequence[Candidate]) -> list[tuple[str, list[int]]]:
  """(question, indices of its candidates) per distinct question, in first-seen order."""
  groups: dict[str, list[int]] = collections.defaultdict(list)
  for i, c in enumerate(candidates):
    groups[c.question].append(i)
  return list(groups.items())


def score_solutions(loaded, scorer: Scorer, task: Task, candidates: Sequence[Candidate],
                    suffix: Sequence[int] = (), **read: Any) -> tuple[ScoreOutput, np.ndarray,
                                                                       np.ndarray]:
  """One teacher-forced pass over [problem][solution][suffix] for every candidate, each problem
  prefilled once (sampling/score.py); `read` goes to `Scorer.score` (next_token_ids,
  return_hidden). Returns the output, the output row of each candidate, and each candidate's
  FLOPs (its share of its problem's prefill plus its own solution and suffix)."""
  tok, cfg = loaded.tokenizer, loaded.config
  groups = by_problem(candidates)
  prefixes = [problem_ids(tok, task, q) for q, _ in groups]
  conts = [[solution_ids(tok, task, candidates[i].solution) for i in members]
           for _, members in groups]
  out = scorer.score(loaded.params, prefixes, conts, suffix=suffix, **read)
  rows, flops = np.zeros(len(candidates), np.int64), np.zeros(len(candidates))
  for g, (_, members) in enumerate(groups):
    rows[members] = np.arange(out.rows(g).start, out.rows(g).stop)
    share = flops_lib.prefill_flops(cfg, [len(prefixes[g])]) / len(members)
    for i, cont in zip(members, conts[g]):
      flops[i] = share + flops_lib.continuation_flops(cfg, [len(prefixes[g])],
                                                      [len(cont) + len(suffix)])
  return out, rows, flops


__all__ = ["Candidate", "Scores", "Verifier", "problem_ids", "solution_ids", "by_problem",
           "score_solutions"]
