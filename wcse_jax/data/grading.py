"""Grading: extract the final answer, decide equivalence with the gold answer, check the steps.

How equivalence is decided, per answer format:
  answer_is (synthetic)  numerically when both sides are numbers, else the exact string after
                         trimming (no math-verify: these answers are integers or words).
  gsm                    the extracted number equals the gold number exactly (as fractions, so
                         "18.00" == "18"); no math-verify.
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
  code (HumanEval)       the program (prompt + completion + tests + check(entry_point)) passes
                         in the sandbox (sandbox.py).
For synthetic tasks `steps_valid` comes from the task's step checker (exact false-positive
detection: `correct and steps_valid is False`); for real data it is None.
"""
from __future__ import annotations

import atexit
import collections
import dataclasses
import json
import os
import select
import selectors
import subprocess
import sys
import threading
import time
from typing import Sequence

from wcse_jax.data import answers, prompts
from wcse_jax.data.example import Example, Task

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mathverify_worker.py")


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


class _Worker:
  def __init__(self):
    self.proc = subprocess.Popen(
        [sys.executable, "-I", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, bufsize=0)
    self.buffer = b""
    os.set_blocking(self.proc.stdout.fileno(), False)

  def read_lines(self) -> list[bytes] | None:
    """Complete lines read so far; None when the worker has exited."""
    try:
      chunk = os.read(self.proc.stdout.fileno(), 65536)
    except BlockingIOError:
      return []
    if not chunk:
      return None
    self.buffer += chunk
    *lines, self.buffer = self.buffer.split(b"\n")
    return lines

  def send(self, gold: str, pred: str):
    self.proc.stdin.write((json.dumps({"gold": gold, "pred": pred}) + "\n").encode())

  def kill(self):
    self.proc.kill()
    self.proc.wait()


class MathVerifyPool:
  """A few math-verify worker processes, each item under a hard deadline (see module doc)."""

  def __init__(self, workers: int = 2, startup_timeout_s: float = 120.0):
    self.size = max(1, workers)
    self.startup_timeout_s = startup_timeout_s
    self._idle: list[_Worker] = []
    self._lock = threading.Lock()
    self._cache: dict[tuple[str, str], bool] = {}

  def _start(self, n: int) -> list[_Worker]:
    new = [_Worker() for _ in range(n)]
    deadline = time.monotonic() + self.startup_timeout_s
    for w in new:
      lines = []
      while not lines:
        if time.monotonic() > deadline:
          for x in new:
            x.kill()
          raise RuntimeError(f"math-verify worker did not start in {self.startup_timeout_s}s")
        select.select([w.proc.stdout], [], [], 0.5)
        lines = w.read_lines()
        if lines is None:
          raise RuntimeError("math-verify worker exited at start (is math-verify installed?)")
    return new

  def compare(self, pairs: Sequence[tuple[str, str]], timeout_s: float = 5.0
              ) -> list[bool | None]:
    """For each (gold, pred): True/False, or None when math-verify ran past `timeout_s`."""
    with self._lock:
      results: list[bool | None] = [None] * len(pairs)
      todo = collections.deque()
      for i, key in enumerate(pairs):
        if key in self._cache:
          results[i] = self._cache[key]
        else:
          todo.append(i)
      busy: dict[_Worker, tuple[int, float]] = {}
      sel = selectors.DefaultSelector()
      try:
        while todo or busy:
          want = min(len(todo), self.size - len(busy)) - len(self._idle)
          if want > 0:
            self._idle += self._start(want)
          while todo and self._idle:
            w, i = self._idle.pop(), todo.popleft()
            try:
              w.send(*pairs[i])
            except BrokenPipeError:
              w.kill()
              todo.appendleft(i)
              continue
            busy[w] = (i, time.monotonic() + timeout_s)
            sel.register(w.proc.stdout, selectors.EVENT_READ, w)
          if not busy:
            continue
          next_deadline = min(d for _, d in busy.values())
          for key, _ in sel.select(timeout=max(0.0, next_deadline - time.monotonic())):
            w = key.data
            lines = w.read_lines()
            i = busy[w][0]
            if lines is None:  # The worker died on this item: count it as not equivalent.
              sel.unregister(w.proc.stdout)
              del busy[w]
              w.kill()
              results[i] = False
            elif lines:
              sel.unregister(w.proc.stdout)
              del busy[w]
              results[i] = bool(json.loads(lines[-1])["equal"])
              self._cache[pairs[i]] = results[i]
              self._idle.append(w)
          now = time.monotonic()
          for w, (i, deadline) in list(busy.items()):
            if now >= deadline:
              sel.unregister(w.proc.stdout)
              del busy[w]
              w.kill()
              results[i] = None
      finally:
        sel.close()
        for w in busy:
          w.kill()
      if len(self._cache) > 200_000:
        self._cache.clear()
      return results

  def close(self):
    with self._lock:
      for w in self._idle:
        w.kill()
      self._idle = []


_POOL: MathVerifyPool | None = None
_POOL_LOCK = threading.Lock()


def math_verify_pool() -> MathVerifyPool:
  """The process-wide pool (started on first use, stopped at exit)."""
  global _POOL
  with _POOL_LOCK:
    if _POOL is None:
      _POOL = MathVerifyPool(workers=min(2, os.cpu_count() or 1))
      atexit.register(_POOL.close)
    return _POOL


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
  stops = prompts.stop_strings(task)
  texts = [answers.truncate_at_stop(t, stops) for t in texts]
  extracted = [answers.extract(fmt, t) for t in texts]
  step_fields = [_step_fields(task, ex, t) for ex, t in zip(examples, texts)]
  grades: list[Grade | None] = [None] * len(texts)
  slow = []
  for i, (ex, got, steps) in enumerate(zip(examples, extracted, step_fields)):
    if got is None:
      grades[i] = Grade(extracted=None, correct=False, **steps)
    elif fmt == "answer_is":
      grades[i] = Grade(got, answers.same_plain_answer(got, ex.answer), **steps)
    elif fmt == "gsm":
      gold = answers.number(ex.answer, percent="strip")
      grades[i] = Grade(got, gold is not None and answers.number(got) == gold, **steps)
    elif fmt == "math":
      fast = _math_fast(got, ex.answer)
      if fast is None:
        slow.append(i)
      else:
        grades[i] = Grade(got, fast, detail="exact", **steps)
    else:
      raise ValueError(f"task {task.name!r}: unknown answer format {fmt!r}")
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
  programs, completions = [], []
  for ex, text in zip(examples, texts):
    code = answers.fenced_code(text)
    fenced = code is not None
    if not fenced:  # A raw completion ends at the first new top-level statement (Codex stops).
      code = answers.truncate_at_stop(text, stops)
    completions.append(code)
    programs.append(sandbox.humaneval_program(ex, code, fenced=fenced))
  results = sandbox.run_programs(programs, limits or sandbox.Limits(), workers=workers)
  return [Grade(extracted=c, correct=r.outcome == "pass", timed_out=r.outcome == "timeout",
                detail=f"{r.outcome}: {r.output_tail[-500:]}")
          for c, r in zip(completions, results)]
