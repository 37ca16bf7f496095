"""Accuracy averaged over random seeds, with both kinds of uncertainty (papers.md §10(e)).

A many-shot ICL point (a method at a shot count) is evaluated once per seed, each seed a different
random subset of exemplars, on the same problems. Two things vary: the problems (a finite test
set) and the exemplars (the seed). The point's accuracy is the mean over problems of each
problem's mean over seeds; its interval is a percentile bootstrap over problems of that mean (a
problem keeps all its seeds' outcomes when drawn). The spread over seeds (each seed's accuracy,
their min, max and standard deviation) is reported beside it, not folded in: it says how much the
choice of exemplars moves the figure.

A missing outcome (nan: the problem was not evaluated under that seed, e.g. its prompt did not
fit the cache) is left out of that problem's mean and of that seed's accuracy; a problem with no
outcome at all is left out and counted.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from wcse_jax.eval import bootstrap


@dataclasses.dataclass(frozen=True)
class SeedAveraged:
  accuracy: bootstrap.Interval  # mean over problems of the per-problem mean over seeds
  per_seed: tuple[float | None, ...]  # each seed's accuracy on its evaluated problems (None: none)
  seed_min: float | None
  seed_max: float | None
  seed_std: float | None  # sample standard deviation over seeds (None with fewer than two)
  problems: int  # problems with at least one outcome
  unevaluated: int  # problems with none

  def as_dict(self) -> dict[str, Any]:
    return {"accuracy": self.accuracy.as_dict(), "per_seed": list(self.per_seed),
            "seed_min": self.seed_min, "seed_max": self.seed_max, "seed_std": self.seed_std,
            "problems": self.problems, "unevaluated": self.unevaluated}


def over_seeds(outcomes, *, num_resamples: int = 1000, confidence: float = 0.95,
               seed: int = 0) -> SeedAveraged | None:
  """Summarises outcomes [seeds, problems] (values in [0, 1], nan where not evaluated); None when
  no problem has an outcome."""
  table = np.asarray(outcomes, dtype=np.float64)
  if table.ndim != 2 or 0 in table.shape:
    raise ValueError(f"over_seeds: outcomes must be a non-empty [seeds, problems] array, got "
                     f"shape {table.shape}")
  seen = ~np.isnan(table)
  if np.any((table[seen] < 0) | (table[seen] > 1)):
    raise ValueError("over_seeds: outcomes must lie in [0, 1] (or be nan)")
  evaluated = seen.any(axis=0)
  if not evaluated.any():
    return None
  per_problem = np.nanmean(table[:, evaluated], axis=0)
  per_seed = tuple(float(np.mean(row[~np.isnan(row)])) if (~np.isnan(row)).any() else None
                   for row in table)
  values = [v for v in per_seed if v is not None]
  return SeedAveraged(
      accuracy=bootstrap.bootstrap_interval(per_problem, num_resamples=num_resamples,
                                            confidence=confidence, seed=seed),
      per_seed=per_seed, seed_min=min(values), seed_max=max(values),
      seed_std=float(np.std(values, ddof=1)) if len(values) > 1 else None,
      problems=int(evaluated.sum()), unevaluated=int((~evaluated).sum()))


__all__ = ["SeedAveraged", "over_seeds"]
