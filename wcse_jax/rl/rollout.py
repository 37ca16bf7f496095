"""Rollouts: prompts -> n samples each from the current policy -> rewards (DESIGN §9).

`rollout` samples through the text API (so stops, end tokens and FLOPs are the pipelines' own),
grades every sample exactly (`correct`: the task's grader, the reward of BoN-RL-S and BoN-RLB) and,
when a verifier is given, scores it (`scores`: BoN-RL-V's selection signal). With a reference
policy it also reads each sample's log-likelihood under it (sampling/score.py), for the KL term.

Randomness: the rollout of step s draws with seed (seed, s) and keys every sample by its problem
index, so a run resumed at step s regenerates exactly the rollouts of the uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
from typing import Any, Sequence

import numpy as np

from wcse_jax.data import grading
from wcse_jax.data import prompts as prompts_lib
from wcse_jax.data.example import Example, Task
from wcse_jax.sampling.choosers import Temperature
from wcse_jax.sampling.score import Scorer
from wcse_jax.sampling.text import Completion, TextSampler
from wcse_jax.verifiers import base


@dataclasses.dataclass(frozen=True)
class Rollouts:
  """n samples of each of P prompts, with what every estimator needs ([P, n] arrays)."""
  problems: list[Example]
  problem_indices: list[int]
  prompt_ids: list[list[int]]  # BOS + the prompt, as sampled
  completions: list[list[Completion]]  # [P][n]
  correct: np.ndarray  # [P, n] 0/1 final-answer correctness (steps not required)
  scores: np.ndarray | None  # [P, n] verifier scores, when a verifier was given
  logprob: np.ndarray  # [P, n] sum of the sampled tokens' log-probs under the policy
  reference_logprob: np.ndarray | None  # [P, n] the same under the reference policy
  token_kl: np.ndarray | None  # [P, n] sum over tokens of the k3 KL estimate (r - 1 - log r)
  flops: float  # sampling, scoring and verification


def rollout(sampler: TextSampler, params: Any, task: Task, problems: Sequence[Example],
            problem_indices: Sequence[int], *, samples: int, max_new_tokens: int,
            temperature: float, seed: int, verifier: base.Verifier | None = None,
            reference: tuple[Scorer, Any] | None = None) -> Rollouts:
  """n = `samples` completions per problem from `params` (see the module docstring).

  reference: (a Scorer on the reference model, its parameters) for the KL estimate.
  """
  texts = [prompts_lib.build_prompt(task, ex, 0) for ex in problems]
  out = sampler(params, texts, samples, max_new_tokens, Temperature(temperature), seed=seed,
                stop=prompts_lib.stop_strings(task), prompt_ids=list(problem_indices),
                progress=False)
  tok = sampler.tokenizer
  prompt_ids = [[tok.bos_id] + list(tok.encode(t)) for t in texts]
  flat = [c for row in out.completions for c in row]
  grades = grading.grade_many(task, [ex for ex in problems for _ in range(samples)],
                              [c.text for c in flat])
  shape = (len(problems), samples)
  correct = np.array([g.correct for g in grades], np.float64).reshape(shape)
  logprob = np.array([float(np.sum(c.logprobs)) for c in flat]).reshape(shape)
  flops = out.flops
  scores = None
  if verifier is not None:
    result = verifier.score([base.Candidate(ex.id, j, ex.question, c.text)
                             for ex, row in zip(problems, out.completions)
                             for j, c in enumerate(row)])
    scores, flops = result.scores.reshape(shape), flops + float(result.flops.sum())
  reference_logprob = token_kl = None
  if reference is not None:
    scorer, ref_params = reference
    ref = scorer.score(ref_params, prompt_ids, [[list(c.tokens) for c in row]
                                                for row in out.completions])
    reference_logprob = ref.logprob_sum.reshape(shape)
    kl = []
    for i, c in enumerate(flat):
      log_ratio = ref.token_logprobs[i, :len(c.tokens)] - np.asarray(c.logprobs, np.float64)
      kl.append(float(np.sum(np.exp(log_ratio) - 1 - log_ratio)))
    token_kl, flops = np.array(kl).reshape(shape), flops + ref.flops
  return Rollouts(problems=list(problems), problem_indices=list(problem_indices),
                  prompt_ids=prompt_ids, completions=out.completions, correct=correct,
                  scores=scores, logprob=logprob, reference_logprob=reference_logprob,
                  token_kl=token_kl, flops=flops)


def write(rollouts: Rollouts, path: str, step: int, weights: np.ndarray | None = None) -> None:
  """The step's rollouts as one JSON-lines.gz file (atomically; kept if it exists: a resumed run
  regenerates the same rollouts, so the file is already right)."""
  if os.path.exists(path):
    return
  lines = []
  for i, (ex, row) in enumerate(zip(rollouts.problems, rollouts.completions)):
    for j, c in enumerate(row):
      record = {"step": step, "problem_id": ex.id, "sample_index": j, "text": c.text,
                "finish_reason": c.finish_reason.name.lower(),
                "correct": bool(rollouts.correct[i, j]), "logprob": rollouts.logprob[i, j]}
      if rollouts.scores is not None:
        record["score"] = float(rollouts.scores[i, j])
      if rollouts.token_kl is not None:
        record["kl"] = float(rollouts.token_kl[i, j])
      if weights is not None:
        record["weight"] = float(weights[i, j])
      lines.append(json.dumps(record))
  raw = io.BytesIO()
  with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
    gz.write(("\n".join(lines) + "\n").encode())
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + ".tmp", "wb") as f:
    f.write(raw.getvalue())
  os.replace(path + ".tmp", path)


__all__ = ["Rollouts", "rollout", "write"]
