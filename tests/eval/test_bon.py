"""Best-of-k and weighted self-consistency against brute-force enumeration of every k-subset."""
import collections
import itertools
import math

import numpy as np
import pytest

from wcse_jax.eval import bon
from wcse_jax.eval import passk


def _enumerate_best_of_k(scores, correct, k):
  """Mean over all k-subsets of the correct share among the subset's top-scored (tied) samples."""
  total, subsets = 0.0, list(itertools.combinations(range(len(scores)), k))
  for subset in subsets:
    best = max(scores[i] for i in subset)
    tied = [i for i in subset if scores[i] == best]
    total += sum(correct[i] for i in tied) / len(tied)  # uniform tie-break, exactly
  return total / len(subsets)


def _random_pool(rng, n):
  # Scores from a few levels, so that ties (within and across correctness) are common.
  return rng.integers(0, 4, n) / 4.0, rng.random(n) < 0.5


@pytest.mark.parametrize("seed", range(6))
def test_best_of_k_matches_enumeration_with_ties(seed):
  rng = np.random.default_rng(seed)
  for n in range(1, 9):
    for _ in range(4):
      scores, correct = _random_pool(rng, n)
      got = bon.best_of_k(scores, correct, np.arange(1, n + 1))
      want = [_enumerate_best_of_k(scores, correct, k) for k in range(1, n + 1)]
      np.testing.assert_allclose(got, want, atol=1e-12, err_msg=f"{scores} {correct}")


def test_best_of_k_without_ties_is_the_sorted_formula():
  rng = np.random.default_rng(7)
  n = 9
  scores, correct = rng.permutation(n).astype(float), rng.random(n) < 0.4
  hits = correct[np.argsort(-scores)]
  for k in range(1, n + 1):
    formula = sum(math.comb(n - i, k - 1) / math.comb(n, k) * hits[i - 1]
                  for i in range(1, n - k + 2))
    assert bon.best_of_k(scores, correct, k) == pytest.approx(formula, abs=1e-12)


def test_best_of_k_edge_cases():
  scores, correct = np.array([0.9, 0.2, 0.5, 0.9, 0.1]), np.array([0, 1, 1, 1, 0])
  assert bon.best_of_k(scores, correct, 1) == pytest.approx(correct.mean())
  assert bon.best_of_k(scores, correct, 5) == pytest.approx(0.5)  # the two 0.9s, one correct
  tied = np.full(6, 0.3)
  flags = np.array([1, 0, 0, 1, 1, 0])
  np.testing.assert_allclose(bon.best_of_k(tied, flags, np.arange(1, 7)), 0.5, atol=1e-15)
  assert isinstance(bon.best_of_k(scores, correct, 2), float)


def test_best_of_k_is_stable_for_large_pools():
  # Only the top sample is correct: Best-of-k = P(it is drawn) = k / N, with binomials ~1e299.
  n = 1000
  scores, correct = -np.arange(n, dtype=float), np.r_[1.0, np.zeros(n - 1)]
  np.testing.assert_allclose(bon.best_of_k(scores, correct, np.array([1, 500, 1000])),
                             [1 / n, 0.5, 1.0], atol=1e-12)


@pytest.mark.parametrize("scores,correct,k", [
    ([0.1, np.nan], [1, 0], 1), ([0.1, 0.2], [1, 0], 0), ([0.1, 0.2], [1, 0], 3),
    ([0.1, 0.2], [1], 1), ([0.1, 0.2], [1, 0], 1.5)])
def test_best_of_k_rejects_bad_input(scores, correct, k):
  with pytest.raises(ValueError):
    bon.best_of_k(scores, correct, k)


def _enumerate_weighted_sc(scores, answers, correct, k, top):
  total, subsets = 0.0, list(itertools.combinations(range(len(scores)), k))
  for subset in subsets:
    by_answer = collections.defaultdict(list)
    for i in subset:
      if correct[i]:
        by_answer["__correct__"].append(scores[i])
      elif answers[i] is not None:
        by_answer[answers[i]].append(scores[i])
    if not by_answer:
      continue
    sums = {a: sum(sorted(s, reverse=True)[:top]) for a, s in by_answer.items()}
    best = max(sums.values())
    winners = [a for a, s in sums.items() if math.isclose(s, best, rel_tol=1e-12, abs_tol=1e-12)]
    total += ("__correct__" in winners) / len(winners)
  return total / len(subsets)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("top", [None, 1, 2])
def test_weighted_sc_matches_enumeration(seed, top):
  rng = np.random.default_rng(seed)
  for n in range(1, 9):
    scores, correct = _random_pool(rng, n)
    answers = [str(rng.choice(["a", "b", "c", "none"])) for _ in range(n)]
    answers = [None if a == "none" else a for a in answers]
    for k in range(1, n + 1):
      got = bon.weighted_self_consistency(scores, answers, correct, k, top=top)
      want = _enumerate_weighted_sc(scores, answers, correct, k, top or k)
      assert got == pytest.approx(want, abs=1e-12), (scores, answers, correct, k, top)


def test_weighted_sc_with_equal_scores_is_majority_vote():
  rng = np.random.default_rng(3)
  for _ in range(30):
    n = int(rng.integers(1, 11))
    labels = [str(x) for x in rng.choice(["ok", "a", "b", "none"], n)]
    correct = [x == "ok" for x in labels]
    answers = [None if x == "none" else x for x in labels]
    wrong = [labels.count(x) for x in "ab"]
    for k in range(1, n + 1):
      assert bon.weighted_self_consistency(np.ones(n), answers, correct, k) == pytest.approx(
          passk.majority_at_k(labels.count("ok"), wrong, labels.count("none"), k), abs=1e-12)


def test_weighted_sc_top_one_without_ties_is_best_of_k():
  rng = np.random.default_rng(5)
  scores, correct = rng.random(8), rng.random(8) < 0.5
  answers = [str(a) for a in rng.choice(["a", "b"], 8)]
  for k in range(1, 9):
    assert bon.weighted_self_consistency(scores, answers, correct, k, top=1) == pytest.approx(
        bon.best_of_k(scores, correct, k), abs=1e-12)


def test_weighted_sc_monte_carlo_is_unbiased_within_its_error():
  rng = np.random.default_rng(11)
  n = 12
  scores, correct = _random_pool(rng, n)
  answers = [str(a) for a in rng.choice(["a", "b", "c"], n)]
  for k in (3, 6):
    exact = bon.weighted_self_consistency(scores, answers, correct, k, top=2)
    sampled = bon.weighted_self_consistency(scores, answers, correct, k, top=2, max_subsets=0,
                                            num_draws=20_000, seed=1)
    assert sampled == pytest.approx(exact, abs=4 * 0.5 / math.sqrt(20_000))
    assert sampled == bon.weighted_self_consistency(scores, answers, correct, k, top=2,
                                                    max_subsets=0, num_draws=20_000, seed=1)


def _records(pools):
  return [{"problem_id": pid, "sample_index": j, "model": "m", "correct": bool(c), "score": s,
           "answer": a}
          for pid, (scores, correct, answers) in pools.items()
          for j, (s, c, a) in enumerate(zip(scores, correct, answers))]


def test_curves_average_problems_and_bootstrap():
  pools = {"p1": ([0.9, 0.5, 0.5, 0.1], [1, 0, 1, 0], ["4", "5", "4", "6"]),
           "p2": ([0.2, 0.8, 0.3, 0.3], [0, 0, 1, 1], ["1", "2", "3", "3"])}
  curve = bon.best_of_k_curve(_records(pools))
  assert curve.ks == (1, 2, 3, 4) and curve.problem_ids == ("p1", "p2")
  for k in curve.ks:
    want = np.mean([bon.best_of_k(s, c, k) for s, c, _ in pools.values()])
    assert curve.at(k) == pytest.approx(want)
  assert curve.at(4) == pytest.approx((1.0 + 0.0) / 2)
  assert curve.interval(2).low <= curve.at(2) <= curve.interval(2).high
  wsc = bon.weighted_self_consistency_curve(_records(pools), ks=[1, 4], top=1)
  assert wsc.name == "weighted_sc_top1" and wsc.at(1) == pytest.approx(0.5)
  assert wsc.at(4) == pytest.approx((1.0 + 0.0) / 2)


def test_curve_names_a_missing_score():
  records = _records({"p": ([0.3, 0.4], [1, 0], ["1", "2"])})
  records[1]["score"] = None
  with pytest.raises(ValueError, match="problem 'p': samples \\[1\\] have no 'score'"):
    bon.best_of_k_curve(records)
