"""Progress bars for long stages: throughput in the stage's own unit, shown by process 0 only."""
from __future__ import annotations

import sys
from typing import Iterable, TypeVar

import jax
import tqdm

T = TypeVar("T")


def bar(total: float | None = None, *, desc: str, unit: str = "tok",
        iterable: Iterable[T] | None = None, chief_only: bool = True,
        enabled: bool = True) -> tqdm.tqdm:
  """A tqdm bar counting `unit`s; `bar.update(n)` after each chunk shows e.g. "1.2k tok/s".

  Other processes (and `enabled=False`) get a disabled bar, so code calls `update` everywhere
  without checks. Away from a terminal (log files) it redraws every 30 s rather than flooding
  the log.
  """
  interactive = sys.stderr.isatty()
  return tqdm.tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=True,
                   dynamic_ncols=True, mininterval=0.1 if interactive else 30.0,
                   disable=not enabled or (chief_only and jax.process_index() != 0))
