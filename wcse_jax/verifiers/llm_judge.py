"""LLM-as-judge of the reasoning of answer-correct solutions (false positives on real data).

papers.md §1(b)5: the paper had Gemini-1.5-Pro check the reasoning of 500 random answer-correct
solutions per model. Here the judge is any model the config names (`grading.judge`), prompted
with the problem and the solution (PROMPT below) and asked for a Yes/No verdict, read greedily
through the text API. Only records whose reasoning is unknown (`steps_valid is None`) and whose
answer is correct are judged: a seeded random subset of at most `max_records` per model, so the
FPR estimate says how many it rests on. A verdict that starts with neither "yes" nor "no" leaves
the record unjudged (`steps_valid` None, counted as unjudged by the FPR) with the judge's words
kept in `judge_verdict`; it is never read as a false positive.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from wcse_jax.loading import LoadedModel
from wcse_jax.sampling.choosers import Greedy
from wcse_jax.sampling.text import TextSampler

PROMPT = ("Below is a problem and a solution whose final answer is correct. Check every step of "
          "the reasoning.\n\nProblem: {question}\n\nSolution: {solution}\n\n"
          "Is every step of the reasoning correct (Yes/No)? ")


def parse_verdict(text: str) -> bool | None:
  """True for a verdict starting "yes", False for "no" (any case), None for anything else."""
  words = text.strip().lower().split()
  first = words[0].strip(".,:;!") if words else ""
  return {"yes": True, "no": False}.get(first)


def judge_reasoning(judge: LoadedModel, sampler: TextSampler, recs: Sequence[dict],
                    questions: Mapping[str, str], *, max_records: int, seed: int,
                    max_new_tokens: int = 4) -> int:
  """Sets `steps_valid`, `judged_by` and `judge_verdict` on a random subset of answer-correct,
  unjudged records. Returns how many records got a Yes or No verdict."""
  candidates = [r for r in recs if r.get("correct") and r.get("steps_valid") is None]
  order = np.random.default_rng(seed).permutation(len(candidates))[:max_records]
  chosen = [candidates[i] for i in sorted(order)]
  if not chosen:
    return 0
  prompts = [PROMPT.format(question=questions[r["problem_id"]], solution=r["text"])
             for r in chosen]
  out = sampler(judge.params, prompts, 1, max_new_tokens, Greedy(), desc=f"judge {judge.name}")
  verdicts = 0
  for r, (text,) in zip(chosen, out.texts):
    verdict = parse_verdict(text)
    r.update(steps_valid=verdict, judged_by=judge.name, judge_verdict=text)
    verdicts += verdict is not None
  return verdicts


__all__ = ["judge_reasoning", "parse_verdict", "PROMPT"]
