"""pass@k and majority vote against hand-computed values and exhaustive enumeration."""
import collections
import itertools
import math
import random

import numpy as np
import pytest

from wcse_jax.eval import passk


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 2, 1 - 3 / 10),   # 1 - C(3,2)/C(5,2)
    (4, 1, 1, 0.25),         # pass@1 = c/n
    (10, 3, 4, 1 - 35 / 210),  # 1 - C(7,4)/C(10,4)
    (5, 0, 3, 0.0),
    (5, 4, 2, 1.0),          # n - c < k: every 2-subset holds a correct sample
    (3, 3, 3, 1.0),
])
def test_pass_at_k_hand_values(n, c, k, expected):
  assert passk.pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-15)


def test_pass_at_k_table_matches_binomials():
  for n in range(1, 13):
    table = passk.pass_at_k_table(n)
    for c in range(n + 1):
      for k in range(1, n + 1):
        assert table[c, k] == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_k_is_stable_for_large_pools():
  # 1 - C(999, 500) / C(1000, 500) = 1 - 500/1000; the binomials themselves are ~1e299.
  assert passk.pass_at_k(1000, 1, 500) == pytest.approx(0.5, abs=1e-12)


def test_pass_at_k_broadcasts():
  got = passk.pass_at_k(4, np.array([[0], [1], [4]]), np.array([1, 2]))
  np.testing.assert_allclose(got, [[0, 0], [0.25, 0.5], [1, 1]])


@pytest.mark.parametrize("c,k", [(6, 1), (-1, 1), (2, 0), (2, 6)])
def test_pass_at_k_rejects_out_of_range(c, k):
  with pytest.raises(ValueError, match="must lie in"):
    passk.pass_at_k(5, c, k)


@pytest.mark.parametrize("correct,wrong,abstain,k,expected", [
    (2, [1], 0, 1, 2 / 3),
    (2, [1], 0, 2, 2 / 3),   # {C,C} wins, {C,a} twice is a tie worth 1/2: (1 + 1/2 + 1/2) / 3
    (2, [1], 0, 3, 1.0),
    (1, [], 2, 2, 2 / 3),    # the only vote wins; two abstentions alone are wrong
    (1, [3], 0, 4, 0.0),
    (0, [2, 1], 1, 2, 0.0),
    (1, [1, 1], 0, 3, 1 / 3),  # three-way tie
])
def test_majority_hand_values(correct, wrong, abstain, k, expected):
  assert passk.majority_at_k(correct, wrong, abstain, k) == pytest.approx(expected, abs=1e-12)


def _enumerate_majority(labels, k):
  total = 0.0
  subsets = list(itertools.combinations(labels, k))
  for subset in subsets:
    votes = collections.Counter(x for x in subset if x is not None)
    if votes:
      top = max(votes.values())
      winners = [a for a, v in votes.items() if v == top]
      total += ("correct" in winners) / len(winners)
  return total / len(subsets)


def test_majority_matches_enumeration_of_all_subsets():
  rng = random.Random(0)
  for _ in range(150):
    n = rng.randint(1, 10)
    labels = [rng.choice(["correct", "a", "b", "c", None]) for _ in range(n)]
    k = rng.randint(1, n)
    got = passk.majority_at_k(labels.count("correct"), [labels.count(x) for x in "abc"],
                              labels.count(None), k)
    assert got == pytest.approx(_enumerate_majority(labels, k), abs=1e-12), (labels, k)


def test_majority_at_one_is_pass_at_one():
  assert passk.majority_at_k(3, [4, 2], 1, 1) == pytest.approx(3 / 10)
