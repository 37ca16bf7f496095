"""The compositional gap estimator (eval/gap.py) and the seed-averaged ICL accuracy (eval/seeds.py)
on hand-built record sets: hand-computed values, and intervals against a brute-force bootstrap
drawn with the same seed."""
import math

import numpy as np
import pytest

from wcse_jax.eval import gap, seeds


def _records(table):
  """Graded records per part from rows (pair key, q1, q2, pair) of 0/1 outcomes."""
  by_part = {part: [] for part in gap.PARTS}
  for key, *outcomes in table:
    for part, correct in zip(gap.PARTS, outcomes):
      by_part[part].append({"problem_id": f"{part}/{key}", "pair": key, "correct": bool(correct)})
  return by_part


HAND = [("a", 1, 1, 1), ("b", 1, 0, 0), ("c", 1, 1, 0), ("d", 0, 0, 0)]


def test_hand_computed_gap():
  keys, table = gap.outcomes(_records(HAND), lambda r: r["pair"])
  assert keys == ["a", "b", "c", "d"]
  np.testing.assert_array_equal(table, [[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]])
  result = gap.reasoning_gap(table, num_resamples=50)
  # S1 = 3/4, S2 = 2/4, S_comp = 1/4: expected 3/8, gap 1/4 - 3/8 = -1/8, sqrt(3/8).
  assert result.pairs == 4
  assert result.s1.value == 0.75 and result.s2.value == 0.5 and result.s_comp.value == 0.25
  assert result.expected.value == pytest.approx(0.375)
  assert result.gap.value == pytest.approx(-0.125)
  assert result.geo_mean.value == pytest.approx(math.sqrt(0.375))


def test_intervals_match_a_brute_force_bootstrap_over_pairs():
  rng = np.random.default_rng(7)
  table = (rng.random((40, 3)) < [0.7, 0.6, 0.35]).astype(float)
  result = gap.reasoning_gap(table, num_resamples=300, confidence=0.9, seed=11)
  picks = np.random.default_rng(11).integers(0, 40, size=(300, 40))
  brute = []
  for p in picks:  # whole pairs are drawn: a pair's three outcomes stay together
    rows = table[p]
    brute.append(rows[:, 2].mean() - rows[:, 0].mean() * rows[:, 1].mean())
  low, high = np.quantile(brute, [0.05, 0.95])
  assert result.gap.low == pytest.approx(low) and result.gap.high == pytest.approx(high)
  geo = [math.sqrt(table[p][:, 0].mean() * table[p][:, 1].mean()) for p in picks]
  assert result.geo_mean.low == pytest.approx(np.quantile(geo, 0.05))
  assert result.geo_mean.high == pytest.approx(np.quantile(geo, 0.95))
  assert result.gap.low <= result.gap.value <= result.gap.high


def test_independent_hops_give_no_gap_and_perfect_chaining_a_positive_one():
  # The pair is right exactly when both hops are: over all four combinations S_comp = S1 * S2.
  table = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0]], float)
  assert gap.reasoning_gap(table, num_resamples=20).gap.value == 0.0
  # Right on every pair although each hop alone fails sometimes: S_comp - S1 S2 = 1 - 1/4.
  table[:, 2] = 1
  assert gap.reasoning_gap(table, num_resamples=20).gap.value == pytest.approx(0.75)


def test_several_samples_per_problem_average_and_a_missing_part_is_an_error():
  by_part = _records(HAND)
  by_part["pair"].append({"pair": "a", "correct": False})  # a second sample of pair a
  _, table = gap.outcomes(by_part, lambda r: r["pair"])
  assert table[0].tolist() == [1.0, 1.0, 0.5]
  by_part["q2"] = [r for r in by_part["q2"] if r["pair"] != "c"]
  with pytest.raises(ValueError, match="'c' has no q2 record"):
    gap.outcomes(by_part, lambda r: r["pair"])
  with pytest.raises(ValueError, match="no records for part"):
    gap.outcomes({"q1": []}, lambda r: r["pair"])
  with pytest.raises(ValueError, match=r"\[pairs, 3\]"):
    gap.reasoning_gap(np.zeros((3, 2)))


def test_seed_averaged_accuracy_and_the_spread_over_seeds():
  nan = np.nan
  table = np.array([[1, 0, 1, nan],
                    [1, 1, 0, nan],
                    [0, 0, 1, nan]])
  result = seeds.over_seeds(table, num_resamples=200, seed=3)
  # Per problem over seeds: 2/3, 1/3, 2/3; problem 4 never evaluated.
  assert result.accuracy.value == pytest.approx(5 / 9)
  assert result.problems == 3 and result.unevaluated == 1
  assert result.per_seed == pytest.approx((2 / 3, 2 / 3, 1 / 3))
  assert (result.seed_min, result.seed_max) == pytest.approx((1 / 3, 2 / 3))
  assert result.seed_std == pytest.approx(np.std([2 / 3, 2 / 3, 1 / 3], ddof=1))
  per_problem = np.array([2 / 3, 1 / 3, 2 / 3])
  picks = np.random.default_rng(3).integers(0, 3, size=(200, 3))
  low, high = np.quantile([per_problem[p].mean() for p in picks], [0.025, 0.975])
  assert result.accuracy.low == pytest.approx(low) and result.accuracy.high == pytest.approx(high)
  assert seeds.over_seeds(np.full((2, 3), nan)) is None
  one = seeds.over_seeds(np.array([[1.0, 0.0]]), num_resamples=10)
  assert one.seed_std is None and one.accuracy.value == 0.5
