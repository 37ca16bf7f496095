"""Percentile bootstrap intervals over problems: numpy only, and seeded so reports reproduce."""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import numpy as np


@dataclasses.dataclass(frozen=True)
class Interval:
  """A point estimate and its bootstrap confidence interval."""
  value: float
  low: float
  high: float
  confidence: float

  def __str__(self) -> str:
    return f"{self.value:.4f} [{self.low:.4f}, {self.high:.4f}]"

  def as_dict(self) -> dict[str, Any]:
    """For JSON reports: an undefined (nan) bound is None, since JSON has no NaN."""
    num = lambda x: None if x is None or math.isnan(x) else float(x)
    return {"value": num(self.value), "low": num(self.low), "high": num(self.high),
            "confidence": self.confidence}


def format_interval(d: Mapping[str, Any] | None, digits: int = 4) -> str:
  """"value [low, high]" of an `Interval.as_dict()`; "n/a" when it is missing or undefined."""
  if d is None or d["value"] is None:
    return "n/a"
  bound = lambda x: "n/a" if x is None else f"{x:.{digits}f}"
  return f"{d['value']:.{digits}f} [{bound(d['low'])}, {bound(d['high'])}]"


def bootstrap_interval(per_problem, statistic: Callable[[np.ndarray], float] | None = None, *,
                       num_resamples: int = 1000, confidence: float = 0.95,
                       seed: int = 0) -> Interval:
  """Percentile interval of `statistic` when the problems (rows) are resampled with replacement.

  Args:
    per_problem: array whose first axis is the problem; one row per problem.
    statistic: maps such an array (resampled rows) to a number; default the mean of a 1-D array.
      A ratio metric passes e.g. `lambda rows: rows[:, 0].sum() / rows[:, 1].sum()`.
    num_resamples: bootstrap resamples.
    confidence: central probability of the interval (0.95: the 2.5% and 97.5% quantiles).
    seed: seed of the resampling; the same inputs and seed give the same interval.

  Resamples where the statistic is undefined (nan, e.g. a ratio whose resampled denominator is 0)
  are left out of the quantiles.
  """
  rows = np.asarray(per_problem, dtype=np.float64)
  if rows.shape[0] == 0:
    raise ValueError("a bootstrap interval needs at least one problem")
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
  statistic = statistic or (lambda x: float(np.mean(x)))
  rng = np.random.default_rng(seed)
  picks = rng.integers(0, rows.shape[0], size=(num_resamples, rows.shape[0]))
  stats = np.array([statistic(rows[p]) for p in picks], dtype=np.float64)
  tail = (1 - confidence) / 2
  low, high = np.nanquantile(stats, [tail, 1 - tail])
  return Interval(value=float(statistic(rows)), low=float(low), high=float(high),
                  confidence=confidence)
