"""LLM-as-judge for false positives where no step checker exists (real data).

papers.md §1(b)5: the paper had Gemini-1.5-Pro check the reasoning of 500 random answer-correct
solutions per model. Here the judge is any model the config names (`grading.judge`), prompted
with the problem and the solution and asked for a Yes/No verdict, read greedily. Only records
whose reasoning is unknown (`steps_valid is None`) and whose answer is correct are judged; a
seeded random subset of at most `max_records` per model, so the FPR estimate says how many it
rests on (the others stay unjudged and are counted as such).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from wcse_jax.models.loading import LoadedModel
from wcse_jax.sampling.choosers import Greedy
from wcse_jax.sampling.sampler import Sampler

PROMPT = ("Below is a problem and a solution whose final answer is correct. Check every step of "
          "the reasoning.\n\nProblem: {question}\n\nSolution: {solution}\n\n"
          "Is every step of the reasoning correct (Yes/No)? ")


def judge_reasoning(judge: LoadedModel, sampler: Sampler, recs: Sequence[dict],
                    questions: Mapping[str, str], *, max_records: int, seed: int,
                    max_new_tokens: int = 4, batch: int = 32) -> int:
  """Sets `steps_valid` (and `judged_by`) on a random subset of answer-correct, unjudged records.

  Returns how many records were judged.
  """
  candidates = [r for r in recs if r.get("correct") and r.get("steps_valid") is None]
  order = np.random.default_rng(seed).permutation(len(candidates))[:max_records]
  chosen = [candidates[i] for i in sorted(order)]
  tok = judge.tokenizer
  for start in range(0, len(chosen), batch):
    part = chosen[start:start + batch]
    prompts = [tok.encode(PROMPT.format(question=questions[r["problem_id"]], solution=r["text"]),
                          add_bos=True) for r in part]
    out = sampler.sample(judge.params, prompts, 1, max_new_tokens, chooser=Greedy())
    for i, r in enumerate(part):
      verdict = tok.decode(out.tokens[i, 0, :out.lengths[i, 0]].tolist()).strip().lower()
      r["steps_valid"] = verdict.startswith("yes")
      r["judged_by"] = judge.name
  return len(chosen)


__all__ = ["judge_reasoning", "PROMPT"]
