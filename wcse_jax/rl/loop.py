"""Rollouts feeding THE train step: every BoN-aware method is a batch source for `fit` (DESIGN §9).

At step s the source reads the current parameters from the state, draws a fresh rollout of P
prompts x n samples (rollout.py, seeded by s), turns rewards into per-sequence weights with the
method's estimator (weights.py), optionally adds the KL penalty's score-function weights, and
returns a weighted_nll batch: one row per sample (and, for BoN-SFT, one per expert solution), the
weight on the completion tokens. Rollouts are written per step for analysis, and the rollout's
numbers (reward, pass@N estimate, KL, clip and skip fractions) reach TensorBoard through the
batch's `host_metrics` (training/loop.py).

Methods (`METHODS`; papers.md §3(b), (c), (f); weights.py says which gradient each estimates):
  sft                 SFT on the correct samples (rejection-sampling fine-tuning)
  rl                  standard RL, N' = 1: REINFORCE with the per-prompt mean baseline
  bon_rl_v            exact BoN-RL-V: verifier-selected reward of groups of N, leave-one-group-out
  bon_rl_v_selected   paper-style BoN-RL-V: policy gradient on the verifier-selected samples
  bon_rl_s            exact BoN-RL-S: the oracle-selected reward, i.e. pass@N
  bon_rlb_p           BoN-RLB(P): g_N(p) on the correct samples
  bon_rlb_two_sided   two-sided BoN-RLB (UNVERIFIED as a gradient; behind its own name)
  bon_sft             BoN-SFT, exact BoN likelihood of the reference solution (the expert)
  bon_sft_variational BoN-SFT, variational (exponential-tilt) form with lambda_N
  pkpo, pass_at_k     the pass@k-training estimators with k = N (PKPO; Chen et al.)
  best_sample_only    the best-sample-only heuristic (Tang et al.)
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import numpy as np

from wcse_jax.data import prompts as prompts_lib
from wcse_jax.data.example import Example, Task
from wcse_jax.eval import passk
from wcse_jax.rl import rollout as rollout_lib
from wcse_jax.rl import weights as weights_lib
from wcse_jax.sampling.score import Scorer
from wcse_jax.sampling.text import TextSampler
from wcse_jax.training import batching
from wcse_jax.verifiers import base

Estimator = Callable[[rollout_lib.Rollouts, int, float | None], weights_lib.Weights]


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  estimator: Estimator
  verifier: bool = False  # needs verifier scores
  expert: bool = False  # adds the expert (reference) solution as a weighted sequence


METHODS = {m.name: m for m in (
    Method("sft", lambda r, n, clip: weights_lib.sft_on_correct(r.correct)),
    Method("rl", lambda r, n, clip: weights_lib.reinforce(r.correct, clip=clip)),
    Method("bon_rl_v", lambda r, n, clip: weights_lib.bon_rl_v(r.correct, r.scores, n, clip=clip),
           verifier=True),
    Method("bon_rl_v_selected", lambda r, n, clip: weights_lib.bon_rl_v_selected(
        r.correct, r.scores, n, clip=clip), verifier=True),
    Method("bon_rl_s", lambda r, n, clip: weights_lib.bon_rl_s(r.correct, n, clip=clip)),
    Method("bon_rlb_p", lambda r, n, clip: weights_lib.bon_rlb_p(r.correct, n, clip=clip)),
    Method("bon_rlb_two_sided", lambda r, n, clip: weights_lib.bon_rlb_two_sided(
        r.correct, n, clip=clip)),
    Method("bon_sft", lambda r, n, clip: weights_lib.bon_sft_exact(
        r.scores[:, -1], r.scores[:, :-1], n, clip=clip), verifier=True, expert=True),
    Method("bon_sft_variational", lambda r, n, clip: weights_lib.bon_sft_variational(
        r.scores[:, -1], r.scores[:, :-1], n, clip=clip), verifier=True, expert=True),
    Method("pkpo", lambda r, n, clip: weights_lib.pkpo(r.correct, n, clip=clip)),
    Method("pass_at_k", lambda r, n, clip: weights_lib.pass_at_k_chen(r.correct, n, clip=clip)),
    Method("best_sample_only", lambda r, n, clip: weights_lib.best_sample_only(r.correct,
                                                                               clip=clip)),
)}


@dataclasses.dataclass
class RolloutSource:
  """The batch source of one method (training/loop.BatchSource: `source(index, state)`).

  rows = P x n samples (+ P experts for BoN-SFT), each padded to `length` tokens, plus empty rows
  up to a multiple of `row_multiple`.
  """
  method: Method
  sampler: TextSampler
  task: Task
  problems: Sequence[Example]  # the training pool prompts are drawn from
  prompts_per_step: int
  samples: int  # n per prompt
  n_bon: int  # N of the BoN objective
  max_new_tokens: int
  temperature: float
  length: int
  seed: int
  verifier: base.Verifier | None = None
  reference: tuple[Scorer, Any] | None = None
  kl_coef: float = 0.0
  clip: float | None = None
  rollout_dir: str | None = None
  row_multiple: int = 1  # rows are padded to a multiple (data-parallel devices x microbatches)

  @property
  def rows(self) -> int:
    used = self.prompts_per_step * (self.samples + int(self.method.expert))
    return -(-used // self.row_multiple) * self.row_multiple

  def __call__(self, index: int, state) -> dict[str, Any]:
    rng = np.random.default_rng((self.seed, index))
    picks = sorted(rng.choice(len(self.problems), self.prompts_per_step, replace=False).tolist())
    problems = [self.problems[i] for i in picks]
    roll = self._rollout(state, problems, picks, index)
    w = self.method.estimator(roll, self.n_bon, self.clip)
    weights = np.array(w.weights, np.float64)
    if self.kl_coef and roll.reference_logprob is not None:
      # Score-function gradient of -kl_coef KL(pi || pi_ref): E[(log pi - log pi_ref) grad log pi]
      # per sample, averaged over the prompt's n samples.
      kl = roll.logprob[:, :self.samples] - roll.reference_logprob[:, :self.samples]
      weights[..., :self.samples] -= self.kl_coef * kl / self.samples
    examples = []
    tok = self.sampler.tokenizer
    for i, (ids, row) in enumerate(zip(roll.prompt_ids, roll.completions)):
      for j, c in enumerate(row[:self.samples]):
        examples.append(batching.completion_example(ids, c.tokens, float(weights[i, j])))
      if self.method.expert:
        expert = tok.encode(prompts_lib.target(self.task, problems[i].solution), add_eos=True)
        examples.append(batching.completion_example(ids, expert, float(w.expert[i])))
    if self.rollout_dir:
      rollout_lib.write(roll, os.path.join(self.rollout_dir, f"step_{index:06d}.jsonl.gz"),
                        index, weights[..., :self.samples])
    batch = batching.pad_rows(examples, self.length, self.rows)
    batch["host_metrics"] = self._metrics(roll, w)
    return batch

  def _rollout(self, state, problems, picks, index) -> rollout_lib.Rollouts:
    """The step's rollout; for BoN-SFT its scores carry one more column, the expert's."""
    roll = rollout_lib.rollout(
        self.sampler, state.params["model"], self.task, problems, picks, samples=self.samples,
        max_new_tokens=self.max_new_tokens, temperature=self.temperature,
        seed=(self.seed * 1_000_003 + index) % (1 << 31),
        verifier=self.verifier if self.method.verifier else None,
        reference=self.reference if self.kl_coef else None)
    if not self.method.expert:
      return roll
    expert = self.verifier.score([base.Candidate(ex.id, -1, ex.question, ex.solution)
                                  for ex in problems])
    return dataclasses.replace(roll, scores=np.concatenate([roll.scores,
                                                            expert.scores[:, None]], axis=1))

  def _metrics(self, roll: rollout_lib.Rollouts, w: weights_lib.Weights) -> dict[str, float]:
    correct = roll.correct[:, :self.samples]
    out = {"reward": float(correct.mean()),
           # pass@N of the current policy, estimated without bias from the n samples
           "pass_at_n": float(np.mean([passk.pass_at_k(self.samples, int(c),
                                                                   min(self.n_bon, self.samples))
                                       for c in correct.sum(axis=1)])),
           "active_prompts": float(np.mean(w.active)),
           "clipped_fraction": float(w.clipped_fraction),
           "rollout_flops": roll.flops}
    if roll.token_kl is not None:
      out["kl"] = float(roll.token_kl.mean())
    return out


__all__ = ["Method", "METHODS", "RolloutSource"]
