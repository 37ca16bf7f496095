"""The compositional reasoning gap (papers.md §9): Δ = S_comp − S1·S2, with bootstrap intervals.

Each pair contributes three outcomes: Q1 alone right, Q2 alone right (the modified Q2 with X's
value written in, papers.md §9(e)), and the composed pair right. S1, S2 and S_comp are their means
over the pairs. Were the two hops independent, the composed accuracy would be S1·S2, so Δ < 0
says that chaining the questions costs more than solving each; the paper plots Δ against the
geometric mean sqrt(S1·S2), the accuracy a model would have per hop.

Intervals resample pairs, never single outcomes: a resample draws pairs with replacement and each
keeps its three outcomes together, so the dependence between a pair's outcomes (an easy Q2 is
easy alone and composed) is in the interval. Every statistic is computed on the same resamples
(the same seed), so the intervals of S1, S2, S_comp, S1·S2, Δ and sqrt(S1·S2) describe one
bootstrap distribution. An outcome is a 0/1 greedy verdict; with several samples per problem it
is their mean (the pair's expected accuracy), and the formulas are unchanged.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Hashable, Iterable, Mapping

import numpy as np

from wcse_jax.eval import bootstrap

PARTS = ("q1", "q2", "pair")  # column order of an outcome array

Record = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Gap:
  """The gap estimate of one model on `pairs` pairs, each figure with its bootstrap interval."""
  pairs: int
  s1: bootstrap.Interval  # accuracy on Q1 alone
  s2: bootstrap.Interval  # accuracy on the modified Q2 alone, X given
  s_comp: bootstrap.Interval  # accuracy on the composed pair
  expected: bootstrap.Interval  # S1·S2: the composed accuracy if the hops were independent
  gap: bootstrap.Interval  # S_comp − S1·S2
  geo_mean: bootstrap.Interval  # sqrt(S1·S2), the paper's x axis

  def as_dict(self) -> dict[str, Any]:
    out: dict[str, Any] = {"pairs": self.pairs}
    for field in dataclasses.fields(self):
      if field.name != "pairs":
        out[field.name] = getattr(self, field.name).as_dict()
    return out


def outcomes(by_part: Mapping[str, Iterable[Record]],
             pair_key: Callable[[Record], Hashable]) -> tuple[list[Hashable], np.ndarray]:
  """Per pair, the three parts' outcomes: ([pair keys, sorted], array [pairs, 3] in PARTS order).

  by_part: each part's graded records (fields `correct`, plus whatever `pair_key` reads).
  pair_key: the pair a record belongs to (the same for its Q1, Q2 and composed records).
  A part's outcome is the mean of `correct` over its records of that pair (one greedy record:
  0 or 1). A pair missing a part is a ValueError naming it: dropping it silently would bias S1,
  S2 and S_comp differently.
  """
  missing_parts = [p for p in PARTS if p not in by_part]
  if missing_parts:
    raise ValueError(f"reasoning gap: no records for part(s) {missing_parts}; need {PARTS}")
  sums: dict[str, dict[Hashable, list[float]]] = {}
  for part in PARTS:
    per_pair: dict[Hashable, list[float]] = {}
    for record in by_part[part]:
      total = per_pair.setdefault(pair_key(record), [0.0, 0.0])
      total[0] += float(bool(record["correct"]))
      total[1] += 1.0
    sums[part] = per_pair
  keys = set().union(*(sums[p] for p in PARTS))
  for part in PARTS:
    absent = sorted(keys - set(sums[part]), key=repr)
    if absent:
      raise ValueError(f"reasoning gap: pair {absent[0]!r} has no {part} record ({len(absent)} "
                       f"pairs lack one); every pair needs its q1, q2 and pair outcomes")
  ordered = sorted(keys, key=repr)
  table = np.array([[sums[p][k][0] / sums[p][k][1] for p in PARTS] for k in ordered],
                   dtype=np.float64).reshape(len(ordered), len(PARTS))
  return ordered, table


def _s1(rows: np.ndarray) -> float:
  return float(rows[:, 0].mean())


def _s2(rows: np.ndarray) -> float:
  return float(rows[:, 1].mean())


def _s_comp(rows: np.ndarray) -> float:
  return float(rows[:, 2].mean())


def _expected(rows: np.ndarray) -> float:
  return _s1(rows) * _s2(rows)


def _gap(rows: np.ndarray) -> float:
  return _s_comp(rows) - _expected(rows)


def _geo_mean(rows: np.ndarray) -> float:
  return math.sqrt(_expected(rows))


STATISTICS = {"s1": _s1, "s2": _s2, "s_comp": _s_comp, "expected": _expected, "gap": _gap,
              "geo_mean": _geo_mean}


def reasoning_gap(table: np.ndarray, *, num_resamples: int = 1000, confidence: float = 0.95,
                  seed: int = 0) -> Gap:
  """S1, S2, S_comp, S1·S2, Δ and sqrt(S1·S2) of an outcome table [pairs, 3] (PARTS order, values
  in [0, 1]), each with a percentile bootstrap interval over pairs (same resamples for all)."""
  rows = np.asarray(table, dtype=np.float64)
  if rows.ndim != 2 or rows.shape[1] != len(PARTS):
    raise ValueError(f"reasoning gap: outcomes must be [pairs, {len(PARTS)}] ({PARTS}), got "
                     f"shape {rows.shape}")
  if rows.shape[0] == 0:
    raise ValueError("reasoning gap: no pairs")
  if np.any((rows < 0) | (rows > 1)) or np.isnan(rows).any():
    raise ValueError("reasoning gap: outcomes must lie in [0, 1]")
  intervals = {name: bootstrap.bootstrap_interval(rows, fn, num_resamples=num_resamples,
                                                  confidence=confidence, seed=seed)
               for name, fn in STATISTICS.items()}
  return Gap(pairs=rows.shape[0], **intervals)


__all__ = ["PARTS", "Gap", "outcomes", "reasoning_gap", "STATISTICS"]
