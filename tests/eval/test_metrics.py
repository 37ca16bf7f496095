"""Coverage, diversity, false positives and maj@k on hand-computed pools and by enumeration."""
import collections
import itertools
import random

import numpy as np
import pytest

from wcse_jax.eval import metrics


def rec(pid, i, correct, text="t", answer=None, steps_valid=None, model="m"):
  return dict(problem_id=pid, sample_index=i, model=model, text=text,
              answer=answer if answer is not None or not correct else "1",
              correct=correct, steps_valid=steps_valid, flops=1.0)


# Problem "a": three correct solutions, two of them equal after whitespace normalisation.
# Problem "b": nothing correct.
HAND = [rec("a", 0, True, "x = 1"), rec("a", 1, True, " x  =\t1 "), rec("a", 2, True, "X = 1"),
        rec("a", 3, False, "x = 2", answer="2"),
        rec("b", 0, False, answer="3"), rec("b", 1, False, answer="4"),
        rec("b", 2, False, answer="3"), rec("b", 3, False)]


def test_coverage_hand_values():
  curve = metrics.coverage(HAND)
  assert curve.ks == (1, 2, 3, 4)
  # a: pass@1 = 3/4, pass@k>=2 = 1 (only one wrong sample); b: 0.
  np.testing.assert_allclose(curve.values(), [3 / 8, 1 / 2, 1 / 2, 1 / 2])


def test_diversity_hand_values_normalized_text():
  # Classes in "a": sizes {2, 1} ("x = 1" twice, "X = 1" once: case is kept).
  # k=1: E[U] = 2/4 + 1/4 = 3/4, P(solved) = 3/4 -> 1.
  # k=2: E[U] = (1 - C(2,2)/C(4,2)) + (1 - C(3,2)/C(4,2)) = 5/6 + 1/2 = 4/3, P(solved) = 1.
  # k=3: E[U] = 1 + (1 - C(3,3)/C(4,3)) = 7/4, P(solved) = 1.
  # k=4: both classes always drawn -> 2. Problem "b" adds 0 to both sums.
  np.testing.assert_allclose(metrics.diversity(HAND).values(), [1, 4 / 3, 7 / 4, 2])


def test_diversity_exact_counts_every_string():
  curve = metrics.diversity(HAND, uniqueness="exact")
  np.testing.assert_allclose(curve.values(), [1, 3 * 0.5, 3 * 0.75, 3])


def test_diversity_answer_and_numbers_merges_rewordings():
  records = [rec("p", 0, True, "2 + 3 = 5", answer="5"),
             rec("p", 1, True, "Add 2 and 3: 5.", answer="5"),
             rec("p", 2, True, "two plus 3 is 5", answer="5")]
  assert metrics.diversity(records, uniqueness="answer_and_numbers").at(3) == 2
  assert metrics.diversity(records, uniqueness=lambda r: r["answer"]).at(3) == 1


def _enumerate(records, k, key):
  """Exact expectations over every k-subset of every pool: (sum E[U], sum P(U >= 1), coverage)."""
  by_problem = collections.defaultdict(list)
  for r in records:
    by_problem[r["problem_id"]].append(r)
  unique = solved = 0.0
  for pool in by_problem.values():
    subsets = list(itertools.combinations(pool, k))
    unique += sum(len({key(r) for r in s if r["correct"]}) for s in subsets) / len(subsets)
    solved += sum(any(r["correct"] for r in s) for s in subsets) / len(subsets)
  return unique, solved, solved / len(by_problem)


def test_coverage_and_diversity_match_enumeration_of_all_subsets():
  rng = random.Random(0)
  texts = ["a", "a ", "b", "c", "B"]
  records = [rec(pid, i, rng.random() < 0.5, rng.choice(texts))
             for pid in range(6) for i in range(7)]
  coverage = metrics.coverage(records)
  for uniqueness, key in [("normalized_text", lambda r: r["text"].strip()),
                          ("exact", lambda r: r["text"])]:
    diversity = metrics.diversity(records, uniqueness=uniqueness)
    for k in range(1, 8):
      unique, solved, cov = _enumerate(records, k, key)
      assert coverage.at(k) == pytest.approx(cov, abs=1e-12)
      assert diversity.at(k) == pytest.approx(unique / solved, abs=1e-12)


def test_diversity_of_unsolvable_data_is_nan():
  assert np.isnan(metrics.diversity([rec("p", 0, False), rec("p", 1, False)]).at(2))


def test_false_positive_rate_counts_and_excludes_unjudged():
  records = ([rec("p", i, True, steps_valid=False) for i in range(2)]
             + [rec("p", i, True, steps_valid=True) for i in range(2, 5)]
             + [rec("q", i, True, steps_valid=None) for i in range(4)]
             + [rec("q", i, False, steps_valid=False) for i in range(4, 9)])
  fpr = metrics.false_positive_rate(records)
  assert (fpr.false_positives, fpr.judged, fpr.unjudged) == (2, 5, 4)
  assert fpr.rate == pytest.approx(0.4)
  np.testing.assert_array_equal(fpr.per_problem, [[2, 5], [0, 0]])
  assert fpr.interval().value == pytest.approx(0.4)


def test_false_positive_rate_without_judged_samples_is_nan():
  fpr = metrics.false_positive_rate([rec("p", 0, True, steps_valid=None)])
  assert np.isnan(fpr.rate) and fpr.unjudged == 1


def test_false_positive_rate_rejects_non_bool_steps_valid():
  with pytest.raises(TypeError, match="steps_valid must be a bool or None"):
    metrics.false_positive_rate([rec("p", 0, True, steps_valid="yes")])


def test_majority_vote_merges_equivalent_correct_answers():
  # "1/2" and "0.5" are both graded correct, so they vote together against "3" and an abstention.
  # k=2: {C,C} 1; {C,3} twice, ties, 1/2 each; {C,None} twice, 1 each; {3,None} 0 -> 4/6.
  # k=3: {C,C,3} 1; {C,C,None} 1; {C,3,None} twice, ties, 1/2 each -> 3/4.
  pool = [rec("p", 0, True, answer="1/2"), rec("p", 1, True, answer="0.5"),
          rec("p", 2, False, answer="3"), rec("p", 3, False, answer=None)]
  np.testing.assert_allclose(metrics.majority_vote(pool).values(), [1 / 2, 2 / 3, 3 / 4, 1])


def test_requested_ks_and_pool_limits():
  assert metrics.coverage(HAND, ks=(1, 4)).as_dict() == {1: 3 / 8, 4: 1 / 2}
  with pytest.raises(ValueError, match="k=5 is outside \\[1, 4\\]"):
    metrics.coverage(HAND, ks=(5,))
  with pytest.raises(KeyError, match="not k=3"):
    metrics.coverage(HAND, ks=(1, 4)).at(3)


def test_curve_interval_brackets_the_value():
  records = [rec(p, i, (p + i) % 3 == 0) for p in range(20) for i in range(4)]
  curve = metrics.coverage(records)
  interval = curve.interval(2, seed=0)
  assert interval.low <= curve.at(2) == interval.value <= interval.high
  assert interval.low < interval.high


@pytest.mark.parametrize("records,error,match", [
    ([rec("p", 0, True), rec("p", 0, False)], ValueError, "sample 0 twice"),
    ([rec("p", 0, True), rec("p", 1, True, model="other")], ValueError, "mix models"),
    ([{"problem_id": "p", "sample_index": 0, "model": "m"}], KeyError, "has no 'correct'"),
    ([rec("p", 0, 1)], TypeError, "must be a bool"),
    ([], ValueError, "no records"),
])
def test_bad_records_are_refused(records, error, match):
  with pytest.raises(error, match=match):
    metrics.coverage(records)


def test_split_by_model_and_unknown_uniqueness():
  split = metrics.split_by_model(HAND + [rec("a", 0, True, model="other")])
  assert {m: len(r) for m, r in split.items()} == {"m": 8, "other": 1}
  with pytest.raises(ValueError, match="unknown uniqueness 'fuzzy'"):
    metrics.diversity(HAND, uniqueness="fuzzy")


def test_describe_uniqueness():
  assert metrics.describe_uniqueness("normalized_text").startswith("normalized_text: ")

  def by_answer(r):
    """Final answer only."""
    return r["answer"]

  assert metrics.describe_uniqueness(by_answer).endswith("by_answer: Final answer only.")
