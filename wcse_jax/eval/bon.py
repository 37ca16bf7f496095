"""Verifier-based selection over a pool of N scored samples per problem: Best-of-k and weighted SC.

A verifier is judged by what selecting with it achieves (papers.md §2(b), §4): draw k candidates,
keep the one the verifier scores highest, and count the problem solved if that one is correct.
Drawing fresh candidates for every k would cost a sampling run per point of the curve and give
one noisy draw each; instead, as for pass@k (passk.py), the k candidates are treated as drawn
uniformly without replacement from one pool of N >= k sampled up front, and every function here
returns the expectation over that draw (papers.md §4(e): "use the unbiased Best-of-k estimator
rather than one draw per k").

- `best_of_k` is exact and closed-form, with ties in score broken uniformly at random.
- `weighted_self_consistency` (papers.md §2(b)) has no closed form; it enumerates the k-subsets
  when there are few enough and otherwise averages over a seeded uniform sample of them.
- Plain self-consistency (majority vote) is `passk.majority_at_k` and the oracle pass@k is
  `passk.pass_at_k`; their curves over problems are `metrics.majority_vote` and
  `metrics.coverage`, in the same `metrics.Curve` form as the curves here.

The curve functions take the same sample records as `metrics` (one model at a time), plus a
verifier score in each record under `score_key`.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np

from wcse_jax.eval import metrics
from wcse_jax.eval import passk

Record = Mapping[str, Any]


def best_of_k(scores, correct, k):
  """Exact expected correctness of the top-scored of k samples drawn from a pool of N.

  papers.md §4: with the pool sorted by score, descending, y_(1) .. y_(N) and no ties,
    Best-of-k = sum_{i=1}^{N-k+1} C(N-i, k-1) / C(N, k) * 1{y_(i) correct},
  the probability that y_(i) is the top of a uniform k-subset times its correctness.

  Ties are broken uniformly at random, and the value is the exact expectation over that choice
  too. Group the pool by distinct score, highest first; let A be the number of samples scored
  strictly above a group of size m. A k-subset's top group is that group with probability
    P = [C(N - A, k) - C(N - A - m, k)] / C(N, k)
  (the subset avoids the A higher samples but not the whole group), and the selected sample is
  then a uniform member of the group, so it is correct with probability (correct in group) / m:
    Best-of-k = sum_groups P * (correct in group) / m.
  Without ties this is the formula above (Pascal's rule); with ties it equals that formula
  applied with each indicator replaced by its group's mean. C(M, k) / C(N, k) comes from
  `passk.pass_at_k_table` (1 - pass@k with N - M correct), whose product form stays finite for
  large pools.

  Args:
    scores: [N] verifier scores (higher is better; -inf allowed, nan refused).
    correct: [N] 1/0 correctness (or any per-sample reward: the result is then the expected
      reward of the selected sample).
    k: an int or an integer array of ks in [1, N].

  Returns:
    A float for an int k, else an array shaped like k.
  """
  scores = np.asarray(scores, dtype=np.float64)
  correct = np.asarray(correct, dtype=np.float64)
  if scores.ndim != 1 or scores.shape != correct.shape or scores.size == 0:
    raise ValueError(f"scores {scores.shape} and correct {correct.shape} must be the same "
                     f"non-empty 1-D shape (one entry per pooled sample)")
  if np.isnan(scores).any():
    raise ValueError("a verifier score is nan; score every sample (or give it -inf)")
  n = scores.size
  ks = np.asarray(k)
  if not np.issubdtype(ks.dtype, np.integer) or np.any((ks < 1) | (ks > n)):
    raise ValueError(f"k={k} must be integers in [1, N={n}]")
  order = np.argsort(-scores, kind="stable")
  ranked, hits = scores[order], correct[order]
  starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
  ends = np.r_[starts[1:], n]
  group_accuracy = np.add.reduceat(hits, starts) / (ends - starts)
  # table[j, k] = 1 - C(N - j, k) / C(N, k): the chance that a k-subset meets the top j samples.
  table = passk.pass_at_k_table(n)
  top_group = table[ends][:, ks] - table[starts][:, ks]
  value = np.tensordot(group_accuracy, top_group, axes=1)
  return float(value) if value.ndim == 0 else value


def weighted_self_consistency(scores, answers: Sequence[Hashable | None], correct, k: int, *,
                              top: int | None = None, max_subsets: int = 20_000,
                              num_draws: int = 4_000, seed: int | Sequence[int] = 0) -> float:
  """Chance that verifier-weighted voting over k of the N pooled samples picks a correct answer.

  papers.md §2(b): for each distinct final answer among the k drawn samples, add up the verifier
  scores of the `top` highest-scored samples that reach it (all of them when top is None; GenRM
  uses top = 4 on MATH and 6 on GSM8K), and output the answer with the largest sum. Ties between
  answers are broken uniformly (an answer tied with t - 1 others counts 1/t); sums within 1e-12
  (relative) of each other count as tied, so that rounding in the addition does not decide. All
  correct samples vote for one answer (the grader found them equivalent), as in
  `metrics.majority_vote`; wrong samples vote by `answers`; a wrong sample with answer None
  abstains; if every drawn sample abstains the vote is wrong. With equal positive scores and
  top=None this is majority vote (`passk.majority_at_k`).

  The value is the expectation over the k samples drawn uniformly without replacement:
  - exact, by enumerating all C(N, k) subsets, when C(N, k) <= max_subsets (always for k = 1,
    k = N, and every k when N <= 16 with the default);
  - otherwise Monte Carlo: the mean over `num_draws` uniform k-subsets drawn with
    `np.random.default_rng(seed)`, unbiased with standard error at most 0.5 / sqrt(num_draws)
    (0.008 for the default). Ties inside a draw still count exactly (1/t), not by a coin.

  Scores are meant to be non-negative (probabilities such as GenRM's p(Yes)); with negative
  scores, such as log-likelihoods, a sum penalises agreement, which is the rule as stated but
  rarely what is wanted.
  """
  scores = np.asarray(scores, dtype=np.float64)
  correct = np.asarray(correct, dtype=bool)
  n = scores.size
  if scores.ndim != 1 or correct.shape != (n,) or len(answers) != n or n == 0:
    raise ValueError(f"scores {scores.shape}, answers ({len(answers)}) and correct "
                     f"{correct.shape} need one entry per pooled sample")
  if np.isnan(scores).any():
    raise ValueError("a verifier score is nan; score every sample")
  if not 1 <= k <= n:
    raise ValueError(f"k={k} must lie in [1, N={n}]")
  if top is not None and top < 1:
    raise ValueError(f"top={top} must be a positive number of samples per answer (or None)")
  if not correct.any():
    return 0.0
  # Vote ids: 0 is the correct answer, 1.. the distinct wrong answers, -1 an abstention.
  wrong_ids: dict[Hashable, int] = {}
  votes = np.array([0 if ok else -1 if a is None else wrong_ids.setdefault(a, len(wrong_ids) + 1)
                    for a, ok in zip(answers, correct)], dtype=np.int64)
  if math.comb(n, k) <= max_subsets:
    subsets = np.array(list(itertools.combinations(range(n), k)), dtype=np.int64)
  else:
    rng = np.random.default_rng(seed)
    subsets = np.argsort(rng.random((num_draws, n)), axis=1)[:, :k]
  return float(_weighted_vote_shares(scores, votes, len(wrong_ids) + 1, subsets,
                                     top or k).mean())


def _weighted_vote_shares(scores: np.ndarray, votes: np.ndarray, num_answers: int,
                          subsets: np.ndarray, top: int) -> np.ndarray:
  """Per subset (rows of sample indices), the share of the weighted vote won by answer 0."""
  rows, k = subsets.shape
  s, v = scores[subsets], votes[subsets]
  # Order each row by answer, and by score (descending) within an answer, so that a sample's
  # rank among its answer's samples is its distance from where that answer's run starts.
  by_score = np.argsort(-s, axis=1, kind="stable")
  s, v = np.take_along_axis(s, by_score, 1), np.take_along_axis(v, by_score, 1)
  by_answer = np.argsort(v, axis=1, kind="stable")
  s, v = np.take_along_axis(s, by_answer, 1), np.take_along_axis(v, by_answer, 1)
  position = np.broadcast_to(np.arange(k), (rows, k))
  run_start = np.maximum.accumulate(
      np.where(np.r_[True, np.zeros(k - 1, bool)] | (v != np.roll(v, 1, axis=1)), position, 0),
      axis=1)
  voting = v >= 0
  counted = voting & (position - run_start < top)
  flat = (np.arange(rows)[:, None] * num_answers + np.where(voting, v, 0)).ravel()
  size = rows * num_answers
  totals = np.bincount(flat, np.where(counted, s, 0.0).ravel(), size).reshape(rows, num_answers)
  present = np.bincount(flat, voting.ravel(), size).reshape(rows, num_answers) > 0
  totals = np.where(present, totals, -np.inf)
  best = totals.max(axis=1, keepdims=True)
  winners = present & (totals >= best - 1e-12 * np.maximum(1.0, np.abs(best)))
  num_winners = winners.sum(axis=1)
  return np.where(num_winners > 0, winners[:, 0] / np.maximum(num_winners, 1), 0.0)


def best_of_k_curve(records: Iterable[Record], ks: Sequence[int] | None = None,
                    score_key: str = "score") -> metrics.Curve:
  """Best-of-k for each k: the mean over problems of `best_of_k` of each problem's pool.

  Records as in `metrics` (`problem_id`, `sample_index`, `model`, `correct`) plus the verifier
  score under `score_key`. ks default to 1 .. the smallest pool. The Curve keeps one row per
  problem (denominator 1), so `curve.interval(k)` bootstraps over problems.
  """
  grouped = metrics.pools(records, keys=("correct", score_key))
  ks = metrics.pool_ks(grouped, ks)
  rows = [best_of_k(_scores(pid, pool, score_key), [r["correct"] for r in pool], np.array(ks))
          for pid, pool in grouped.items()]
  return metrics.make_curve("best_of_k", grouped, ks, np.array(rows), np.ones((len(rows), len(ks))))


def weighted_self_consistency_curve(records: Iterable[Record], ks: Sequence[int] | None = None,
                                    score_key: str = "score", top: int | None = None, *,
                                    max_subsets: int = 20_000, num_draws: int = 4_000,
                                    seed: int = 0) -> metrics.Curve:
  """Weighted self-consistency for each k, the mean over problems (rows kept for bootstrapping).

  Records need `correct`, `answer` and the score under `score_key`. Each (problem, k) is exact or
  Monte Carlo as `weighted_self_consistency` decides from max_subsets; the Monte Carlo draws of
  problem i at k use seed (seed, i, k), so problems are independent and the curve reproduces.
  """
  grouped = metrics.pools(records, keys=("correct", "answer", score_key))
  ks = metrics.pool_ks(grouped, ks)
  rows = []
  for i, (pid, pool) in enumerate(grouped.items()):
    scores = _scores(pid, pool, score_key)
    answers, correct = [r["answer"] for r in pool], [r["correct"] for r in pool]
    rows.append([weighted_self_consistency(scores, answers, correct, k, top=top,
                                           max_subsets=max_subsets, num_draws=num_draws,
                                           seed=(seed, i, k)) for k in ks])
  name = "weighted_sc" if top is None else f"weighted_sc_top{top}"
  return metrics.make_curve(name, grouped, ks, np.array(rows), np.ones((len(rows), len(ks))))


def _scores(problem_id, pool: Sequence[Record], score_key: str) -> np.ndarray:
  scores = np.array([np.nan if r[score_key] is None else r[score_key] for r in pool],
                    dtype=np.float64)
  if np.isnan(scores).any():
    bad = [r["sample_index"] for r, s in zip(pool, scores) if np.isnan(s)]
    raise ValueError(f"problem {problem_id!r}: samples {bad} have no {score_key!r} score")
  return scores


__all__ = ["best_of_k", "weighted_self_consistency", "best_of_k_curve",
           "weighted_self_consistency_curve"]
