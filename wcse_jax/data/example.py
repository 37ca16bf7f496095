"""The records every task hands out: `Example` (one problem), `Step` (one ground-truth step),
`StepReport` (the step checker's verdict on a model's solution) and the `Task` base class.

Tasks are plain Python objects; nothing here imports tensorflow or seqio.
"""
from __future__ import annotations

import abc
import dataclasses
import functools
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Step:
  """One ground-truth step: the exact line a correct solution writes, and the value it yields."""
  text: str
  value: str


@dataclasses.dataclass(frozen=True, eq=True)
class Example:
  """One problem.

  `answer` is the gold final answer as a string; `solution` is a reference solution written in the
  task's own format (the SFT target); `steps` is the ground-truth chain (empty for real data);
  `meta` holds task-specific extras (MATH level/type, HumanEval test code, the compositional
  pair's parts, ...).
  """
  id: str
  question: str
  answer: str
  solution: str
  steps: tuple[Step, ...] = ()
  split: str = ""
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["steps"] = [dataclasses.asdict(s) for s in self.steps]
    d["meta"] = dict(self.meta)
    return d


@dataclasses.dataclass(frozen=True)
class StepReport:
  """The step checker's verdict: one mark per ground-truth step (plus one False per extra step).

  `valid` is True only when the solution has exactly the ground-truth steps, each right.
  `lines` holds the step lines the checker read from the solution, aligned with `marks`
  ("" where the solution is missing a step).
  """
  marks: tuple[bool, ...]
  lines: tuple[str, ...]
  expected: tuple[str, ...]

  @property
  def valid(self) -> bool:
    return len(self.marks) == len(self.expected) and all(self.marks)


class Task(abc.ABC):
  """A named set of problems with splits, a prompt style and an answer format.

  Subclasses implement `_build(split)`; `examples(split)` caches it. `answer_format` picks the
  extractor in `answers.py` ("answer_is", "gsm", "math" or "code"); `prompt_style` picks the
  layout in `prompts.py` ("qa", "math" or "code").
  """
  name: str = ""
  splits: tuple[str, ...] = ("train", "validation", "test")
  answer_format: str = "answer_is"
  prompt_style: str = "qa"

  def examples(self, split: str) -> list[Example]:
    if split not in self.splits:
      raise ValueError(
          f"task {self.name!r} has no split {split!r}; its splits are {list(self.splits)}")
    return list(self._cached(split))

  @functools.lru_cache(maxsize=None)
  def _cached(self, split: str) -> tuple[Example, ...]:
    examples = tuple(self._build(split))
    ids = [e.id for e in examples]
    if len(set(ids)) != len(ids):
      dup = next(i for i in ids if ids.count(i) > 1)
      raise ValueError(f"task {self.name!r} split {split!r}: duplicate example id {dup!r}")
    return examples

  @abc.abstractmethod
  def _build(self, split: str) -> list[Example]:
    """Returns the examples of one split (called once per split)."""

  def check_steps(self, example: Example, text: str) -> StepReport | None:
    """Marks each step of `text` right or wrong; None where the task has no step ground truth."""
    del example, text
    return None

  def verification_rationale(self, example: Example, text: str) -> str:
    """A programmatic step-by-step verification of `text` (GenRM oracle CoT); synthetic only."""
    raise NotImplementedError(f"task {self.name!r} has no programmatic verification rationale")

  def __repr__(self) -> str:
    return f"<Task {self.name}>"
