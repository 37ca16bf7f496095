"""Shared machinery of the synthetic tasks: seeded split generation and the step checker.

Splits are generated in the order test, validation, train, each from its own stream
`random.Random(f"{name}:{seed}:{split}")` (string seeds are hashed with SHA-512, so they are stable
across runs and Python versions), and a question already used by an earlier split is drawn again.
So the test set does not change when the train size changes, and no question is in two splits.

Step checking compares the step lines of a solution with the ground truth one by one (parsed, so
spacing does not matter). A step is right only when it equals the ground-truth step at the same
position; a missing step and an extra step are wrong. Hence "final answer right, some step wrong"
(a false positive) is detected exactly.
"""
from __future__ import annotations

import abc
import random
from typing import Hashable, Sequence

from wcse_jax.data import answers
from wcse_jax.data.example import Example, StepReport, Task


class SyntheticTask(Task):
  """Base of the generated tasks. Subclasses say how to draw one example and how to read a step."""
  answer_format = "answer_is"
  prompt_style = "qa"

  def __init__(self, seed: int = 0):
    self.seed = int(seed)
    self._generated: dict[str, list[Example]] | None = None

  # --- generation ---------------------------------------------------------------------------

  @abc.abstractmethod
  def _plan(self, split: str) -> list[dict]:
    """Returns one dict of drawing arguments per example to generate for `split`."""

  @abc.abstractmethod
  def _draw(self, rng: random.Random, split: str, index: int, **plan) -> Example:
    """Draws one example; it may repeat an earlier question (the caller redraws)."""

  def _build(self, split: str) -> list[Example]:
    if self._generated is None:
      self._generated = self._generate_all()
    return self._generated[split]

  def _generate_all(self) -> dict[str, list[Example]]:
    seen: set[str] = set()
    out: dict[str, list[Example]] = {}
    for split in ("test", "validation", "train"):
      rng = random.Random(f"{self.name}:{self.seed}:{split}")
      examples = []
      for index, plan in enumerate(self._plan(split)):
        for _ in range(1000):
          example = self._draw(rng, split, index, **plan)
          if self._dedupe_key(example) not in seen:
            break
        else:
          raise ValueError(
              f"task {self.name!r}: cannot draw {len(self._plan(split))} distinct {split} "
              f"questions with {plan or 'these knobs'}; the knobs leave too few possible "
              f"questions (make the task larger or ask for fewer examples)")
        seen.add(self._dedupe_key(example))
        examples.append(example)
      out[split] = examples
    return out

  def _dedupe_key(self, example: Example) -> str:
    """What must differ between any two examples of the task (across all splits)."""
    return example.question

  # --- step checking --------------------------------------------------------------------------

  @abc.abstractmethod
  def _is_step_line(self, line: str) -> bool:
    """Whether a solution line is meant as a step (so a malformed step still counts as one)."""

  @abc.abstractmethod
  def _step_key(self, line: str) -> Hashable | None:
    """A canonical, comparable form of a step line; None when the line does not parse."""

  def _step_lines(self, text: str) -> list[str]:
    return [l.strip() for l in text.splitlines() if self._is_step_line(l.strip())]

  def check_steps(self, example: Example, text: str) -> StepReport:
    got = self._step_lines(text)
    want = [s.text for s in example.steps]
    n = max(len(got), len(want))
    marks, lines = [], []
    for i in range(n):
      line = got[i] if i < len(got) else ""
      ok = (i < len(got) and i < len(want)
            and self._step_key(line) is not None
            and self._step_key(line) == self._step_key(want[i]))
      marks.append(ok)
      lines.append(line)
    return StepReport(marks=tuple(marks), lines=tuple(lines), expected=tuple(want))

  def verification_rationale(self, example: Example, text: str) -> str:
    """Step-by-step verification of `text` against the ground truth, one line per step, then the
    final answer; it does not contain the verdict line (the GenRM prompt appends
    "Verification: Is the answer correct (Yes/No)?" itself). GenRM makes these rationales
    programmatically for its algorithmic tasks, but their wording is not known (papers.md 2(b));
    this wording is ours. A step position with no expected step (past the ground truth, or ""
    from a checker that marks extra steps so) is an extra step."""
    report = self.check_steps(example, text)
    out = []
    for i, (ok, line) in enumerate(zip(report.marks, report.lines)):
      want = report.expected[i] if i < len(report.expected) else ""
      if not want:
        out.append(f"{line} is not needed; the solution should have stopped before it.")
      elif not line:
        out.append(f"Step {i + 1} is missing; it should be: {want}")
      elif ok:
        out.append(f"{line} is correct.")
      else:
        out.append(f"{line} is incorrect; it should be: {want}")
    got = answers.extract_answer_is(text)
    if got is None:
      out.append(f"The solution gives no final answer; the answer is {example.answer}.")
    elif answers.same_plain_answer(got, example.answer):
      out.append(f"The final answer {got} is correct.")
    else:
      out.append(f"The final answer {got} is incorrect; the answer is {example.answer}.")
    return "\n".join(out)


def counts_by_length(lengths: Sequence[int], per_length: int) -> list[dict]:
  """The generation plan of the word tasks: `per_length` examples of each list length."""
  return [{"length": n} for n in lengths for _ in range(per_length)]
