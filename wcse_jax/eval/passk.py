"""Estimators over a pool of n samples per problem: unbiased pass@k and exact majority vote.

Both treat the k samples as drawn uniformly without replacement from the n that were sampled up
front (papers.md §1(e)), and return the exact expectation over that draw, so curves over k come
from one pool rather than from re-sampling the model for each k.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np


@functools.lru_cache(maxsize=64)
def pass_at_k_table(n: int) -> np.ndarray:
  """table[c, k] = pass@k for c correct among n, for 0 <= c <= n and 1 <= k <= n (column 0 = 0).

  Chen et al. (2021): pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k/i), the
  product form that needs no large binomials. Running the product down from i = n gives every c at
  once; once i reaches k a factor is 0, which is the n - c < k case (pass@k = 1).
  """
  if n < 1:
    raise ValueError(f"a pool needs at least one sample, got n={n}")
  i = np.arange(n, 0, -1, dtype=np.float64)[:, None]
  k = np.arange(1, n + 1, dtype=np.float64)[None, :]
  table = np.zeros((n + 1, n + 1))
  table[1:, 1:] = 1.0 - np.cumprod(1.0 - k / i, axis=0)
  table.setflags(write=False)
  return table


def pass_at_k(n: int, c, k):
  """Unbiased pass@k for c correct among n samples; c and k may be arrays (broadcast)."""
  c, k = np.asarray(c), np.asarray(k)
  if np.any((c < 0) | (c > n)):
    raise ValueError(f"correct counts {c} must lie in [0, n={n}]")
  if np.any((k < 1) | (k > n)):
    raise ValueError(f"k={k} must lie in [1, n={n}]: pass@k needs k of the n pooled samples")
  return pass_at_k_table(n)[c, k]


def majority_at_k(correct_votes: int, wrong_votes: Sequence[int], abstentions: int,
                  k: int) -> float:
  """Exact probability that majority vote over k of the pooled samples picks a correct answer.

  The pool holds `correct_votes` samples whose answer is correct, wrong answers in groups of
  `wrong_votes` (one entry per distinct wrong answer) and `abstentions` samples with no answer,
  which do not vote. k samples are drawn uniformly without replacement; the most frequent answer
  wins and a tie among t answers is broken uniformly (a tie with the correct answer counts 1/t).
  If all k abstain the vote is wrong.

  Exact, not sampled: for each number t >= 1 of correct votes drawn, a small dynamic programme over
  the wrong answers counts the ways to draw the other k - t samples so that no wrong answer gets
  more than t votes, tracking how many get exactly t (ties). Wrong answers with fewer than t
  samples can never tie or win, so they are pooled with the abstentions.
  """
  wrong_votes = [int(v) for v in wrong_votes if v > 0]
  n = correct_votes + sum(wrong_votes) + abstentions
  if not 1 <= k <= n:
    raise ValueError(f"k={k} must lie in [1, n={n}]")
  ways_correct = 0.0
  for t in range(1, min(correct_votes, k) + 1):
    rest = k - t
    contenders = [v for v in wrong_votes if v >= t]
    free = abstentions + sum(v for v in wrong_votes if v < t)
    # ways[s, e]: draws of s samples from the contenders so far, none above t votes, e at exactly t.
    ways = np.zeros((rest + 1, len(contenders) + 1))
    ways[0, 0] = 1.0
    for v in contenders:
      grown = np.zeros_like(ways)
      for drawn in range(min(v, t, rest) + 1):
        tie = int(drawn == t)
        grown[drawn:, tie:] += math.comb(v, drawn) * ways[:rest + 1 - drawn, :ways.shape[1] - tie]
      ways = grown
    free_ways = np.array([math.comb(free, rest - s) for s in range(rest + 1)], dtype=np.float64)
    share = 1.0 / np.arange(1, len(contenders) + 2)  # e wrong answers tie with the correct one.
    ways_correct += math.comb(correct_votes, t) * float(free_ways @ ways @ share)
  return ways_correct / math.comb(n, k)
