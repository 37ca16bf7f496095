"""Quality of sampled data, from sample records: coverage@k, diversity@k, false positives, maj@k.

papers.md §1(b)5. A record is a plain dict with at least `problem_id`, `sample_index`, `model`,
`text`, `answer` (extracted; str or None), `correct` (bool), `steps_valid` (bool, or None when no
judge saw the reasoning) and `flops`. The functions take one model's records in any order and any
iterable; `split_by_model` separates a mixed list. Nothing here knows where records come from.

Every @k metric is the exact expectation over k samples drawn without replacement from the whole
pool of n samples per problem (papers.md §1(e): sample once, subsample for every k), so k runs
from 1 to the smallest pool.
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
  ks = _ks(grouped, ks)
  rows = [passk.pass_at_k(len(p), sum(bool(r["correct"]) for r in p), np.array(ks))
          for p in grouped.values()]
  return _curve("coverage", grouped, ks, np.array(rows), np.ones((len(rows), len(ks))))


def diversity(records: Iterable[Record], ks: Sequence[int] | None = None,
              uniqueness: str | Callable[[Record], Hashable] = "normalized_text") -> Curve:
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
  """
  key_fn = uniqueness_key(uniqueness)
  grouped = pools(records, keys=("correct", "text", "answer"))
  ks = np.array(_ks(grouped, ks))
  expected_unique, solved = [], []
  for pool in grouped.values():
    classes = collections.Counter(key_fn(r) for r in pool if r["correct"])
    sizes = np.array(list(classes.values()), dtype=np.int64)
    expected_unique.append(passk.pass_at_k(len(pool), sizes[:, None], ks[None, :]).sum(axis=0)
                           if len(sizes) else np.zeros(len(ks)))
    solved.append(passk.pass_at_k(len(pool), int(sizes.sum()), ks))
  return _curve("diversity", grouped, tuple(ks.tolist()), np.array(expected_unique),
                np.array(solved))


def majority_vote(records: Iterable[Record], ks: Sequence[int] | None = None) -> Curve:
  """maj@k: mean over problems of the exact probability that majority vote over k is correct.

  Votes: all correct samples vote for the one correct answer (the grader found each equivalent to
  the gold answer); wrong samples vote by their extracted `answer` string; samples without an
  answer abstain. Ties are broken uniformly (passk.majority_at_k).
  """
  grouped = pools(records, keys=("correct", "answer"))
  ks = _ks(grouped, ks)
  rows = []
  for pool in grouped.values():
    wrong = collections.Counter(r["answer"] for r in pool
                                if not r["correct"] and r["answer"] is not None)
    correct = sum(bool(r["correct"]) for r in pool)
    abstain = sum(1 for r in pool if not r["correct"] and r["answer"] is None)
    rows.append([passk.majority_at_k(correct, list(wrong.values()), abstain, k) for k in ks])
  return _curve("maj", grouped, ks, np.array(rows), np.ones((len(rows), len(ks))))


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
                           per_problem=per_problem)


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


def _ks(grouped: Mapping[Any, list[Record]], ks: Sequence[int] | None) -> tuple[int, ...]:
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


def _curve(name, grouped, ks, numerator, denominator) -> Curve:
  return Curve(name=name, ks=tuple(ks), problem_ids=tuple(grouped),
               numerator=numerator.astype(np.float64), denominator=denominator.astype(np.float64))


def _require(record: Record, index: int, keys: Iterable[str]) -> None:
  for key in keys:
    if key not in record:
      where = f" (problem {record['problem_id']!r})" if "problem_id" in record else ""
      raise KeyError(f"record {index}{where} has no {key!r} field")
