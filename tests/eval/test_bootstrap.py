import numpy as np
import pytest

from wcse_jax.eval import bootstrap


def test_constant_values_give_a_point_interval():
  interval = bootstrap.bootstrap_interval(np.full(20, 0.25))
  assert (interval.value, interval.low, interval.high) == (0.25, 0.25, 0.25)


def test_mean_interval_matches_the_normal_approximation():
  values = np.array([0.0, 1.0] * 200)  # mean 0.5, standard error 0.025
  interval = bootstrap.bootstrap_interval(values, num_resamples=2000, seed=1)
  assert interval.value == 0.5
  assert interval.low == pytest.approx(0.5 - 1.96 * 0.025, abs=0.01)
  assert interval.high == pytest.approx(0.5 + 1.96 * 0.025, abs=0.01)


def test_seed_makes_it_reproducible_and_changes_with_the_seed():
  values = np.random.default_rng(0).random(30)
  a = bootstrap.bootstrap_interval(values, seed=3)
  assert a == bootstrap.bootstrap_interval(values, seed=3)
  assert a != bootstrap.bootstrap_interval(values, seed=4)


def test_ratio_statistic_resamples_whole_rows():
  # Each row is (unique solutions, solved); the ratio is 2 in every resample.
  rows = np.array([[2.0, 1.0], [4.0, 2.0], [6.0, 3.0]])
  interval = bootstrap.bootstrap_interval(rows, lambda r: r[:, 0].sum() / r[:, 1].sum())
  assert (interval.value, interval.low, interval.high) == (2.0, 2.0, 2.0)


def test_rejects_empty_input_and_bad_confidence():
  with pytest.raises(ValueError, match="at least one problem"):
    bootstrap.bootstrap_interval(np.zeros(0))
  with pytest.raises(ValueError, match="confidence"):
    bootstrap.bootstrap_interval(np.zeros(3), confidence=95)
