"""The task registry: `get_task(name, **knobs)` and `known_tasks()`.

Synthetic: arith_chain, compositional_gsm, last_letter_concat, word_sorting (generated from a
seed). Real: gsm8k, math, math500, humaneval (read from local files, TFDS or HF; see real.py).
The same (name, knobs) returns the same task object, so its generated or loaded examples are
built once per process.
"""
from __future__ import annotations

import inspect
import json
from typing import Any

from wcse_jax.data.arith import ArithChain, CompositionalGSM
from wcse_jax.data.example import Example, Step, StepReport, Task
from wcse_jax.data.real import GSM8K, MATH, MATH500, HumanEval
from wcse_jax.data.words import LastLetterConcat, WordSorting

__all__ = ["Example", "Step", "StepReport", "Task", "get_task", "known_tasks", "task_splits"]

_REGISTRY: dict[str, type[Task]] = {
    cls.name: cls for cls in (ArithChain, CompositionalGSM, LastLetterConcat, WordSorting,
                              GSM8K, MATH, MATH500, HumanEval)
}
_CACHE: dict[tuple[str, str], Task] = {}


def known_tasks() -> list[str]:
  return sorted(_REGISTRY)


def accepted_knobs(name: str) -> list[str]:
  """The keyword arguments `get_task(name, ...)` accepts."""
  out = []
  # Classes that take **knobs pass them to their base, so the bases' parameters count too.
  for cls in _REGISTRY[name].__mro__:
    init = vars(cls).get("__init__")
    if init is None:
      continue
    for p in list(inspect.signature(init).parameters.values())[1:]:
      if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in out:
        out.append(p.name)
  return out


def task_splits(name: str, **knobs: Any) -> tuple[str, ...]:
  """The split names of a task, known without generating or reading its data."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(known_tasks())}")
  cls = _REGISTRY[name]
  official = getattr(cls, "official_splits", None)
  if official is None:
    return cls.splits
  return official + (("validation",) if knobs.get("validation_size") else ())


def get_task(name: str, **knobs: Any) -> Task:
  """The task called `name`, configured by `knobs` (see each task class for its knobs)."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(known_tasks())}")
  unknown = sorted(set(knobs) - set(accepted_knobs(name)))
  if unknown:
    raise TypeError(f"task {name!r} has no knob(s) {unknown}; "
                    f"its knobs are {accepted_knobs(name)}")
  key = (name, json.dumps(knobs, sort_keys=True, default=repr))
  if key not in _CACHE:
    _CACHE[key] = _REGISTRY[name](**knobs)
  return _CACHE[key]
