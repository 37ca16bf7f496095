"""Generative verifiers (GenRM, papers.md §2): verification data, training examples, and the
direct and CoT verifiers that read p(" Yes").

Data (`select_balanced`): from one policy's graded samples, per problem up to M distinct correct
and M distinct incorrect solutions (papers.md §2(c): up to 16 + 16 on GSM8K), then the larger class
subsampled to the smaller one's size, so the training set is balanced (stated for the
discriminative RM in the paper and advisable for all verifiers). Labels are final-answer
correctness, as the paper's.

Training examples (weighted_nll through fit; layout in base.py):
  direct      [problem][solution][VERIFY] -> verdict                        (loss on the verdict)
  CoT         [problem][solution][VERIFY_COT] -> [rationale][VERIFY] verdict (loss on all three)
  generation  [problem] -> [solution][EOS]                 (loss weight lambda: the SFT mix-in)
so L_GenRM = L_SFT(D_verify) + lambda L_SFT(D_correct), lambda = 1/3 on the algorithmic tasks
and 1/4 on GSM8K (papers.md §2(b)).

Scoring: the direct verifier reads p(" Yes") after [VERIFY] with one teacher-forced pass per
problem (the problem segment prefilled once for all its solutions). The CoT verifier samples K
rationales per solution (the sampler's N-samples path: [problem][solution][VERIFY_COT] prefilled
once per solution), cuts each where it starts writing the question itself, then reads p(" Yes")
after [rationale][VERIFY] and averages over the K (MajV@K) — never the verdict it sampled. The
probability is over the full vocabulary, or renormalised over {Yes, No} (`renormalise`).
"""
from __future__ import annotations

import collections
import dataclasses
import zlib
from typing import Any, Mapping, Sequence

import numpy as np

from wcse_jax.data import prompts
from wcse_jax.data.example import Task
from wcse_jax.loading import LoadedModel
from wcse_jax.sampling import flops as flops_lib
from wcse_jax.sampling.choosers import Temperature
from wcse_jax.sampling.score import Scorer
from wcse_jax.sampling.text import TextSampler
from wcse_jax.verifiers import base
from wcse_jax.verifiers.formats import RATIONALE_STOP, VERIFY_COT, VerdictTokens


def select_balanced(records: Sequence[Mapping[str, Any]], per_problem: int, seed: int,
                    balance: bool = True) -> list[Mapping[str, Any]]:
  """Up to `per_problem` distinct correct and incorrect solutions per problem, then (balance)
  the larger class subsampled to the smaller's size. Distinct: whitespace-normalised text."""
  rng = np.random.default_rng(seed)
  by_problem: dict[str, dict[bool, dict[str, Mapping]]] = collections.defaultdict(
      lambda: {True: {}, False: {}})
  for r in records:
    by_problem[r["problem_id"]][bool(r["correct"])].setdefault(" ".join(r["text"].split()), r)
  chosen: dict[bool, list[Mapping]] = {True: [], False: []}
  for pid in sorted(by_problem):
    for label, distinct in by_problem[pid].items():
      pool = list(distinct.values())
      for i in sorted(rng.permutation(len(pool))[:per_problem]):
        chosen[label].append(pool[i])
  if balance:
    n = min(len(chosen[True]), len(chosen[False]))
    for label in (True, False):
      keep = sorted(rng.permutation(len(chosen[label]))[:n])
      chosen[label] = [chosen[label][i] for i in keep]
  return sorted(chosen[True] + chosen[False],
                key=lambda r: (r["problem_id"], r["sample_index"]))


def _example(segments: Sequence[tuple[Sequence[int], float]]) -> dict:
  tokens = np.concatenate([np.asarray(ids, np.int32) for ids, _ in segments])
  weight = np.concatenate([np.full(len(ids), w, np.float32) for ids, w in segments])
  return {"tokens": tokens, "loss_weight": weight}


def direct_example(tokenizer, task: Task, verdict: VerdictTokens, question: str,
                   solution: str, label: bool) -> dict:
  """[problem][solution][VERIFY] -> verdict, the loss on the verdict only."""
  return _example([(base.problem_ids(tokenizer, task, question), 0.0),
                   (base.solution_ids(tokenizer, task, solution), 0.0),
                   (verdict.question, 0.0), (verdict.target(label), 1.0)])


def cot_example(tokenizer, task: Task, verdict: VerdictTokens, question: str, solution: str,
                rationale: str, label: bool) -> dict:
  """[problem][solution][VERIFY_COT] -> [rationale][VERIFY] verdict, the loss on all three."""
  return _example([(base.problem_ids(tokenizer, task, question), 0.0),
                   (base.solution_ids(tokenizer, task, solution), 0.0),
                   (tokenizer.encode(VERIFY_COT), 0.0), (tokenizer.encode(rationale), 1.0),
                   (verdict.question, 1.0), (verdict.target(label), 1.0)])


def generation_example(tokenizer, task: Task, question: str, solution: str,
                       weight: float) -> dict:
  """[problem] -> [solution][EOS] with loss weight `weight` (GenRM's lambda)."""
  return _example([(base.problem_ids(tokenizer, task, question), 0.0),
                   (base.solution_ids(tokenizer, task, solution) + [tokenizer.eos_id], weight)])


def candidate_key(c: base.Candidate) -> int:
  """A stable 32-bit id per candidate: the randomness of its rationales is keyed by it, so
  scoring in any chunking, or resuming, draws the same rationales."""
  return zlib.crc32(f"{c.problem_id}\x00{c.sample_index}".encode())


def _yes(logprobs: np.ndarray, renormalise: bool) -> np.ndarray:
  """p(Yes) from [n, 2] (log p(Yes), log p(No)) over the full vocabulary, or over {Yes, No}."""
  if renormalise:
    return np.exp(logprobs[:, 0] - np.logaddexp(logprobs[:, 0], logprobs[:, 1]))
  return np.exp(logprobs[:, 0])


@dataclasses.dataclass(frozen=True)
class GenRMDirect:
  """p(" Yes") after [problem][solution][VERIFY], one teacher-forced pass per problem."""
  name: str
  loaded: LoadedModel
  scorer: Scorer
  task: Task
  renormalise: bool = False

  def score(self, candidates: Sequence[base.Candidate]) -> base.Scores:
    verdict = VerdictTokens.of(self.loaded.tokenizer)
    out, rows, flops = base.score_solutions(
        self.loaded, self.scorer, self.task, candidates, suffix=verdict.suffix,
        next_token_ids=[verdict.yes_id, verdict.no_id])
    return base.Scores(scores=_yes(out.next_token_logprobs[rows], self.renormalise), flops=flops)


@dataclasses.dataclass(frozen=True)
class GenRMCoT:
  """MajV@K: the mean of p(" Yes") after each of K sampled rationales (see the module docstring).

  preamble: text placed before every problem (the LLM-as-judge's few-shot verification
  exemplars); empty for a trained GenRM.
  """
  name: str
  loaded: LoadedModel
  sampler: TextSampler
  scorer: Scorer
  task: Task
  votes: int = 8
  max_new_tokens: int = 256
  temperature: float = 0.7
  renormalise: bool = False
  seed: int = 0
  preamble: str = ""

  def _prefix(self, c: base.Candidate) -> list[str]:
    return ([self.preamble] if self.preamble else []) + [
        prompts.query(self.task, c.question), prompts.target(self.task, c.solution), VERIFY_COT]

  def rationales(self, candidates: Sequence[base.Candidate]) -> tuple[list[list[str]], np.ndarray]:
    """K rationales per candidate and what sampling them cost per candidate."""
    out = self.sampler(self.loaded.params, [self._prefix(c) for c in candidates], self.votes,
                       self.max_new_tokens, Temperature(self.temperature), seed=self.seed,
                       stop=[RATIONALE_STOP], prompt_ids=[candidate_key(c) for c in candidates],
                       desc=f"rationales {self.name}")
    cost = np.array([sum(r.flops for r in row) for row in out.completions])
    return out.texts, cost

  def score(self, candidates: Sequence[base.Candidate]) -> base.Scores:
    tok, cfg = self.loaded.tokenizer, self.loaded.config
    verdict = VerdictTokens.of(tok)
    rationales, flops = self.rationales(candidates)
    prefixes = [[tok.bos_id] + [t for seg in self._prefix(c) for t in tok.encode(seg)]
                for c in candidates]
    conts = [[list(tok.encode(r)) for r in row] for row in rationales]
    out = self.scorer.score(self.loaded.params, prefixes, conts, suffix=verdict.suffix,
                            next_token_ids=[verdict.yes_id, verdict.no_id])
    scores = np.zeros(len(candidates))
    for i, (prefix, row) in enumerate(zip(prefixes, conts)):
      scores[i] = _yes(out.next_token_logprobs[out.rows(i)], self.renormalise).mean()
      flops[i] += flops_lib.prefill_flops(cfg, [len(prefix)]) + flops_lib.continuation_flops(
          cfg, [len(prefix)] * len(row), [len(c) + len(verdict.suffix) for c in row])
    return base.Scores(scores=scores, flops=flops)


__all__ = ["select_balanced", "direct_example", "cot_example", "generation_example",
           "candidate_key", "GenRMDirect", "GenRMCoT"]
