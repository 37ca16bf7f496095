"""Metrics from graded sample records: coverage@k, diversity@k, false positives, maj@k, costs.

papers.md §1(b)5. A record is a plain dict with at least `problem_id`, `sample_index`, `model`,
`text`, `answer` (extracted; str or None), `correct` (bool), `steps_valid` (bool, or None when no
judge saw the reasoning) and `flops`; optionally `answer_key` (the grader's canonical form of the
answer, which majority votes use) and `tokens`. The functions take one model's records in any
order and any iterable; `split_by_model` separates a mixed list. Nothing here knows where records
come from or which experiment they belong to.

Every @k metric is the exact expectation over k samples drawn without replacement from the whole
pool of n samples per problem (papers.md §1(e): sample once, subsample for every k), so k runs
from 1 to the smallest pool. Every metric keeps its per-problem terms, so `paired_difference`
can bootstrap a difference between two models over the same resampled problems.
"""
from __future__ import annotations

import collections
import dataclasses
import re
from typing import Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

from wcse_jax.eval import bootstrap
from wcse_jax.eval import passk

Record = Mapping[str, Any]

# Uniqueness of correct solutions for diversity@k: name -> (key function, definition for reports).
UNIQUENESS: dict[str, tuple[Callable[[Record], Hashable], str]] = {
    "normalized_text": (
        lambda r: " ".join(r["text"].split()),
        "solution text with every whitespace run collapsed to one space and the ends stripped "
        "(case and punctuation kept: they carry meaning in maths and code)"),
    "exact": (lambda r: r["text"], "solution text, byte for byte"),
    "answer_and_numbers": (
        lambda r: (r["answer"], tuple(re.findall(r"\d+(?:\.\d+)?", r["text"]))),
        "final answer plus the sequence of numbers written in the solution (two rewordings of "
        "the same calculation count once)"),
}


@dataclasses.dataclass(frozen=True)
class Curve:
  """A metric at each k, kept as per-problem terms so that it can be bootstrapped over problems.

  value at k = sum_i numerator[i, k] / sum_i denominator[i, k]; a plain mean over problems has
  denominator 1. Rows follow `problem_ids`, columns `ks`.
  """
  name: str
  ks: tuple[int, ...]
  problem_ids: tuple[Any, ...]
  numerator: np.ndarray
  denominator: np.ndarray

  def values(self) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
      return self.numerator.sum(axis=0) / self.denominator.sum(axis=0)

  def at(self, k: int) -> float:
    return float(self.values()[self._column(k)])

  def as_dict(self) -> dict[int, float]:
    return {k: float(v) for k, v in zip(self.ks, self.values())}

  def interval(self, k: int, **bootstrap_kwargs) -> bootstrap.Interval:
    """Bootstrap interval over problems of the value at k (kwargs: see bootstrap_interval)."""
    column = self._column(k)
    rows = np.stack([self.numerator[:, column], self.denominator[:, column]], axis=1)
    return bootstrap.bootstrap_interval(
        rows, lambda r: r[:, 0].sum() / r[:, 1].sum() if r[:, 1].sum() else np.nan,
        **bootstrap_kwargs)

  def _column(self, k: int) -> int:
    if k not in self.ks:
      raise KeyError(f"{self.name} was computed for k in {self.ks}, not k={k}")
    return self.ks.index(k)


@dataclasses.dataclass(frozen=True)
class FalsePositiveRate:
  """Among final-answer-correct samples, the share whose reasoning is wrong.

  Correct samples whose `steps_valid` is None (no judge) are left out of the rate and counted in
  `unjudged`. `per_problem` rows are (false positives, judged) for bootstrapping.
  """
  false_positives: int
  judged: int
  unjudged: int
  per_problem: np.ndarray
  problem_ids: tuple[Any, ...] = ()

  @property
  def rate(self) -> float:
    return self.false_positives / self.judged if self.judged else float("nan")

  def interval(self, **bootstrap_kwargs) -> bootstrap.Interval:
    return bootstrap.bootstrap_interval(
        self.per_problem, lambda r: r[:, 0].sum() / r[:, 1].sum() if r[:, 1].sum() else np.nan,
        **bootstrap_kwargs)


def split_by_model(records: Iterable[Record]) -> dict[str, list[Record]]:
  """Records grouped by their `model` field."""
  by_model: dict[str, list[Record]] = collections.defaultdict(list)
  for i, record in enumerate(records):
    _require(record, i, ("model",))
    by_model[record["model"]].append(record)
  return dict(by_model)


def pools(records: Iterable[Record], keys: Sequence[str] = ("correct",)) -> dict[Any, list[Record]]:
  """One model's records grouped by problem, each pool in sample order, problems sorted by id.

  Refuses records that lack `keys` (or the identifying fields), mix models, or repeat a
  (problem, sample index) pair, since any of those would silently skew every metric.
  """
  grouped: dict[Any, dict[int, Record]] = collections.defaultdict(dict)
  models = set()
  for i, record in enumerate(records):
    _require(record, i, ("problem_id", "sample_index", "model", *keys))
    if not isinstance(record["correct"], (bool, np.bool_)):
      raise TypeError(f"record {i} (problem {record['problem_id']!r}): `correct` must be a bool, "
                      f"got {record['correct']!r}")
    models.add(record["model"])
    pool = grouped[record["problem_id"]]
    if record["sample_index"] in pool:
      raise ValueError(f"problem {record['problem_id']!r} has sample {record['sample_index']} "
                       f"twice (model {record['model']!r})")
    pool[record["sample_index"]] = record
  if len(models) > 1:
    raise ValueError(f"records mix models {sorted(models)}; split them with split_by_model")
  if not grouped:
    raise ValueError("no records")
  return {pid: [pool[j] for j in sorted(pool)] for pid, pool in sorted(grouped.items(),
                                                                      key=lambda kv: repr(kv[0]))}


def coverage(records: Iterable[Record], ks: Sequence[int] | None = None) -> Curve:
  """coverage@k: mean over problems of the unbiased pass@k (Chen et al. 2021) of each pool.

  pass@1 is the mean per-problem accuracy, which is also how fine-tuned students are scored.
  """
  grouped = pools(records)
  ks = pool_ks(grouped, ks)
  rows = [passk.pass_at_k(len(p), sum(bool(r["correct"]) for r in p), np.array(ks))
          for p in grouped.values()]
  return make_curve("coverage", grouped, ks, np.array(rows), np.ones((len(rows), len(ks))))


def diversity(records: Iterable[Record], ks: Sequence[int] | None = None,
              uniqueness: str | Callable[[Record], Hashable] = "normalized_text",
              solved_by: str = "correct") -> Curve:
  """diversity@k: expected number of unique correct solutions per solved problem among k drawn.

  In a pool of n whose correct solutions fall into unique classes of sizes m_j, k draws without
  replacement contain E[U_k] = sum_j (1 - C(n - m_j, k) / C(n, k)) unique correct solutions
  (pass@k of each class) and solve the problem with probability P(U_k >= 1) = pass@k(n, sum_j m_j).
  Following the paper's "average over questions with at least one correct solution", the value is
  the ratio of expectations sum_i E[U_ik] / sum_i P(U_ik >= 1): unique correct solutions per
  solved question, summed over problems. nan when no problem can be solved.

  Args:
    uniqueness: a name in UNIQUENESS or a function record -> hashable key; correct records with
      equal keys count once. State it in any report (describe_uniqueness).
    solved_by: which solutions count: "correct" (the final answer is right, as the paper's
      filter keeps them) or "steps_valid" (right answer and every step right: the solutions
      whose reasoning differs for real, not by a false positive). With "steps_valid", records
      whose steps nobody judged (steps_valid None) make the metric undefined: a ValueError.
  """
  key_fn = uniqueness_key(uniqueness)
  if solved_by not in ("correct", "steps_valid"):
    raise ValueError(f"solved_by must be 'correct' or 'steps_valid', got {solved_by!r}")
  grouped = pools(records, keys=("correct", "text", "answer") + (
      ("steps_valid",) if solved_by == "steps_valid" else ()))
  if solved_by == "steps_valid" and any(r["correct"] and r["steps_valid"] is None
                                        for pool in grouped.values() for r in pool):
    raise ValueError("diversity over step-valid solutions needs every correct record's "
                     "steps_valid judged; some are None")
  counts = ((lambda r: r["correct"]) if solved_by == "correct"
            else (lambda r: r["correct"] and r["steps_valid"]))
  ks = np.array(pool_ks(grouped, ks))
  expected_unique, solved = [], []
  for pool in grouped.values():
    classes = collections.Counter(key_fn(r) for r in pool if counts(r))
    sizes = np.array(list(classes.values()), dtype=np.int64)
    expected_unique.append(passk.pass_at_k(len(pool), sizes[:, None], ks[None, :]).sum(axis=0)
                           if len(sizes) else np.zeros(len(ks)))
    solved.append(passk.pass_at_k(len(pool), int(sizes.sum()), ks))
  return make_curve("diversity", grouped, tuple(ks.tolist()), np.array(expected_unique),
                np.array(solved))


def majority_vote(records: Iterable[Record], ks: Sequence[int] | None = None) -> Curve:
  """maj@k: mean over problems of the exact probability that majority vote over k is correct.

  Votes: all correct samples vote for the one correct answer (the grader found each equivalent to
  the gold answer); wrong samples vote by their `answer_key` (the grader's canonical form, so
  "\\frac{1}{2}", "\\dfrac{1}{2}" and "0.5" are one wrong answer), or by the extracted `answer`
  string when the records carry no key; samples without an answer abstain. Ties are broken
  uniformly (passk.majority_at_k).
  """
  grouped = pools(records, keys=("correct", "answer"))
  ks = pool_ks(grouped, ks)
  rows = []
  for pool in grouped.values():
    wrong = collections.Counter(r.get("answer_key", r["answer"]) for r in pool
                                if not r["correct"] and r["answer"] is not None)
    correct = sum(bool(r["correct"]) for r in pool)
    abstain = sum(1 for r in pool if not r["correct"] and r["answer"] is None)
    rows.append([passk.majority_at_k(correct, list(wrong.values()), abstain, k) for k in ks])
  return make_curve("maj", grouped, ks, np.array(rows), np.ones((len(rows), len(ks))))


def false_positive_rate(records: Iterable[Record]) -> FalsePositiveRate:
  """Share of final-answer-correct records with `steps_valid` False (None: unjudged, left out)."""
  grouped = pools(records, keys=("correct", "steps_valid"))
  rows, unjudged = [], 0
  for pool in grouped.values():
    false_positives = judged = 0
    for r in (r for r in pool if r["correct"]):
      if r["steps_valid"] is None:
        unjudged += 1
      elif isinstance(r["steps_valid"], (bool, np.bool_)):
        judged += 1
        false_positives += not r["steps_valid"]
      else:
        raise TypeError(f"problem {r['problem_id']!r} sample {r['sample_index']}: steps_valid "
                        f"must be a bool or None, got {r['steps_valid']!r}")
    rows.append((false_positives, judged))
  per_problem = np.array(rows, dtype=np.float64)
  return FalsePositiveRate(false_positives=int(per_problem[:, 0].sum()),
                           judged=int(per_problem[:, 1].sum()), unjudged=unjudged,
                           per_problem=per_problem, problem_ids=tuple(grouped))


@dataclasses.dataclass(frozen=True)
class Costs:
  """What the first `samples` samples of every problem cost, summed from the records."""
  problems: int
  samples: int  # per problem
  tokens: int  # generated tokens (the ending token included)
  flops: float  # the records' own FLOPs (sampling/flops.py: prefill share + decode)

  @property
  def flops_per_problem(self) -> float:
    return self.flops / self.problems


def costs(records: Iterable[Record], samples: int | None = None) -> Costs:
  """Realised cost of each problem's first `samples` samples (all of its pool when None)."""
  grouped = pools(records, keys=("correct", "flops"))
  samples = pool_ks(grouped, None)[-1] if samples is None else pool_ks(grouped, (samples,))[0]
  kept = [r for pool in grouped.values() for r in pool[:samples]]
  return Costs(problems=len(grouped), samples=samples,
               tokens=int(sum(len(r.get("tokens", ())) for r in kept)),
               flops=float(sum(r["flops"] for r in kept)))


def paired_difference(a: Curve | FalsePositiveRate, b: Curve | FalsePositiveRate,
                      a_k: int | None = None, b_k: int | None = None,
                      **bootstrap_kwargs) -> bootstrap.Interval:
  """a - b (a at a_k, b at b_k for curves) with a bootstrap interval that resamples the SAME
  problems for both, so the interval is that of a paired difference (tighter than two separate
  intervals when the models find the same problems hard). Both must cover the same problems."""
  def terms(m, k):
    if isinstance(m, FalsePositiveRate):
      return m.problem_ids, m.per_problem[:, 0], m.per_problem[:, 1]
    column = m._column(k)
    return m.problem_ids, m.numerator[:, column], m.denominator[:, column]
  ids_a, num_a, den_a = terms(a, a_k)
  ids_b, num_b, den_b = terms(b, b_k)
  if ids_a != ids_b:
    raise ValueError(f"a paired difference needs the same problems on both sides: "
                     f"{len(set(ids_a) ^ set(ids_b))} problems are on one side only")
  ratio = lambda num, den: num.sum() / den.sum() if den.sum() else np.nan
  rows = np.stack([num_a, den_a, num_b, den_b], axis=1)
  return bootstrap.bootstrap_interval(
      rows, lambda r: ratio(r[:, 0], r[:, 1]) - ratio(r[:, 2], r[:, 3]), **bootstrap_kwargs)


def uniqueness_key(uniqueness: str | Callable[[Record], Hashable]) -> Callable[[Record], Hashable]:
  if callable(uniqueness):
    return uniqueness
  if uniqueness not in UNIQUENESS:
    raise ValueError(f"unknown uniqueness {uniqueness!r}; choose one of {', '.join(UNIQUENESS)} "
                     f"or pass a function record -> key")
  return UNIQUENESS[uniqueness][0]


def describe_uniqueness(uniqueness: str | Callable[[Record], Hashable]) -> str:
  """One sentence defining when two correct solutions are the same, for reports."""
  if callable(uniqueness):
    doc = (uniqueness.__doc__ or "").strip().splitlines()
    return f"custom key {uniqueness.__qualname__}" + (f": {doc[0]}" if doc else "")
  uniqueness_key(uniqueness)
  return f"{uniqueness}: {UNIQUENESS[uniqueness][1]}"


def pool_ks(grouped: Mapping[Any, list[Record]], ks: Sequence[int] | None) -> tuple[int, ...]:
  """The ks to compute (all of 1..smallest pool when None), each checked to fit every pool."""
  smallest = min(len(p) for p in grouped.values())
  if ks is None:
    return tuple(range(1, smallest + 1))
  ks = tuple(int(k) for k in ks)
  for k in ks:
    if not 1 <= k <= smallest:
      pid = min(grouped, key=lambda p: len(grouped[p]))
      raise ValueError(f"k={k} is outside [1, {smallest}]: problem {pid!r} has only {smallest} "
                       f"samples in its pool")
  return ks


def make_curve(name, grouped, ks, numerator, denominator) -> Curve:
  """A Curve over `grouped`'s problems (pools() order) from per-problem [P, K] arrays."""
  return Curve(name=name, ks=tuple(ks), problem_ids=tuple(grouped),
               numerator=numerator.astype(np.float64), denominator=denominator.astype(np.float64))


def _require(record: Record, index: int, keys: Iterable[str]) -> None:
  for key in keys:
    if key not in record:
      where = f" (problem {record['problem_id']!r})" if "problem_id" in record else ""
      raise KeyError(f"record {index}{where} has no {key!r} field")
