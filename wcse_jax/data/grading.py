"""Grading: extract the final answer, decide equivalence with the gold answer, check the steps.

How equivalence is decided, per answer format:
  answer_is (synthetic)  numerically when both sides are numbers, else the exact string after
                         trimming (no math-verify: these answers are integers or words).
  gsm                    the extracted number equals the gold number exactly (as fractions, so
                         "18.00" == "18"); answers.py reads digit groups ("1 000 000"),
                         decimals and scientific notation ("1.5e3", "2.5 \\times 10^{3}")
                         exactly; no math-verify.
  math                   1. equal after a light LaTeX canonicalisation (\\dfrac -> \\frac, spaces,
                            \\left/\\right) -> equivalent;
                         2. both plain exact numbers without decimals (integers, a/b, \\frac{a}{b})
                            -> compared as fractions;
                         3. anything else -> math-verify (`verify(gold, pred)` on both answers
                            wrapped in \\boxed{}) in a worker process with a hard per-item
                            deadline: a worker still busy at the deadline is SIGKILLed and
                            replaced, and the item counts as not equivalent with
                            `timed_out=True`. So adversarial strings (10^{10^{10^{10}}}!, deep
                            nesting) cannot hang the caller. Results are cached per
                            (gold, answer) pair, since sampled answers repeat a lot.
  code (HumanEval)       the problem's tests pass against the completion's function in the
                         sandbox (sandbox.py): the program (prompt + completion) and the tests
                         run in separate processes, so the completion cannot forge the verdict.
Robustness: grading never raises because of one text. A number too long to be anyone's answer
(answers.PathologicalNumber: over answers.MAX_DIGITS digits, e.g. past Python's 4,300-digit
int-string limit) is graded not equivalent with the note "pathological number: ..." in
`Grade.detail`; any other exception while grading one item is caught the same way ("not graded:
<exception>"), and the rest of the batch is graded normally. Failures of the machinery itself
(math-verify or the sandbox cannot start) are not any one text's fault and do raise, rather than
silently grading a whole batch wrong.
For synthetic tasks `steps_valid` comes from the task's step checker (exact false-positive
detection: `correct and steps_valid is False`); for real data it is None.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from wcse_jax.data import answers, prompts
from wcse_jax.data.example import Example, Task
from wcse_jax.data.mathverify import math_verify_pool


@dataclasses.dataclass(frozen=True)
class Grade:
  """The verdict on one completion. `step_marks` has one entry per checked step."""
  extracted: str | None
  correct: bool
  steps_valid: bool | None = None
  step_marks: tuple[bool, ...] = ()
  timed_out: bool = False
  detail: str = ""

  @property
  def false_positive(self) -> bool:
    """Right final answer reached through at least one wrong step."""
    return self.correct and self.steps_valid is False


def _math_fast(pred: str, gold: str) -> bool | None:
  if answers.canonical_latex(pred) == answers.canonical_latex(gold):
    return True
  a, b = answers.number(pred), answers.number(gold)
  if a is not None and b is not None:
    if a == b:
      return True
    if "." not in pred and "." not in gold:
      return False
  return None


def _step_fields(task: Task, example: Example, text: str) -> dict:
  report = task.check_steps(example, text) if example.steps else None
  if report is None:
    return {}
  return {"steps_valid": report.valid, "step_marks": report.marks}


def _grade_fast(fmt: str, example: Example, got: str | None, steps: dict) -> Grade | None:
  """The in-process verdict on one extracted answer; None when it needs math-verify."""
  if got is None:
    return Grade(extracted=None, correct=False, **steps)
  if fmt == "answer_is":
    return Grade(got, answers.same_plain_answer(got, example.answer), **steps)
  if fmt == "gsm":
    gold = answers.number(example.answer, percent="strip")
    return Grade(got, gold is not None and answers.number(got) == gold, **steps)
  fast = _math_fast(got, example.answer)
  return None if fast is None else Grade(got, fast, detail="exact", **steps)


def _not_graded(extracted: str | None, error: Exception) -> Grade:
  """An item whose grading raised: not equivalent, with the reason (see the module doc)."""
  if isinstance(error, answers.PathologicalNumber):
    return Grade(extracted, False, detail=f"pathological number: {error}")
  return Grade(extracted, False, detail=f"not graded: {type(error).__name__}: {error}"[:300])


def grade_many(task: Task, examples: Sequence[Example], texts: Sequence[str], *,
               timeout_s: float = 5.0, sandbox_limits=None, workers: int | None = None
               ) -> list[Grade]:
  """Grades texts[i] as an answer to examples[i]. `timeout_s` bounds each math-verify call;
  `sandbox_limits` (a sandbox.Limits) and `workers` apply to code tasks."""
  if len(examples) != len(texts):
    raise ValueError(f"grade_many: {len(examples)} examples but {len(texts)} texts")
  fmt = task.answer_format
  if fmt == "code":
    return _grade_code(task, examples, texts, sandbox_limits, workers)
  if fmt not in ("answer_is", "gsm", "math"):
    raise ValueError(f"task {task.name!r}: unknown answer format {fmt!r}")
  stops = prompts.stop_strings(task)
  grades: list[Grade | None] = [None] * len(texts)
  extracted: list[str | None] = [None] * len(texts)
  step_fields: list[dict] = [{}] * len(texts)
  slow = []
  for i, (ex, text) in enumerate(zip(examples, texts)):
    try:
      text = answers.truncate_at_stop(text, stops)
      extracted[i] = answers.extract(fmt, text)
      step_fields[i] = _step_fields(task, ex, text)
      grades[i] = _grade_fast(fmt, ex, extracted[i], step_fields[i])
    except Exception as e:  # One bad text never fails its batch.
      grades[i] = _not_graded(extracted[i], e)
      continue
    if grades[i] is None:
      slow.append(i)
  if slow:
    verdicts = math_verify_pool().compare([(examples[i].answer, extracted[i]) for i in slow],
                                          timeout_s=timeout_s)
    for i, v in zip(slow, verdicts):
      grades[i] = Grade(extracted[i], bool(v), timed_out=v is None,
                        detail="math-verify timeout" if v is None else "math-verify",
                        **step_fields[i])
  return grades


def grade(task: Task, example: Example, text: str, **kwargs) -> Grade:
  """Grades one completion; see `grade_many`."""
  return grade_many(task, [example], [text], **kwargs)[0]


def _grade_code(task, examples, texts, limits, workers) -> list[Grade]:
  from wcse_jax.data import sandbox
  stops = prompts.stop_strings(task)
  grades: list[Grade | None] = [None] * len(texts)
  jobs = []  # (index, completion, program, checker)
  for i, (ex, text) in enumerate(zip(examples, texts)):
    code = None
    try:
      code = answers.fenced_code(text)
      fenced = code is not None
      if not fenced:  # A raw completion ends at the first new top-level statement (Codex stops).
        code = answers.truncate_at_stop(text, stops)
      program, checker = sandbox.humaneval_program(ex, code, fenced=fenced)
    except Exception as e:  # One bad text never fails its batch.
      grades[i] = _not_graded(code, e)
      continue
    jobs.append((i, code, program, checker))
  results = sandbox.run_programs([j[2] for j in jobs], limits or sandbox.Limits(),
                                 workers=workers, checkers=[j[3] for j in jobs])
  for (i, code, _, _), r in zip(jobs, results):
    grades[i] = Grade(extracted=code, correct=r.outcome == "pass",
                      timed_out=r.outcome == "timeout",
                      detail=f"{r.outcome}: {r.output_tail[-500:]}")
  return grades
