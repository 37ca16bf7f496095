"""`arith_chain` (GSM-like multi-step word problems) and `compositional_gsm` (pairs chained by X).

arith_chain: a person starts with a number of objects and applies 2-4 operations (+, -, * by a
small factor), one short sentence each. The language is deliberately tiny and regular (8 names,
6 objects, operands < 20, values <= 99 by default) so that a Gemma-architecture model of a few M
parameters trained from scratch for a few CPU-minutes reaches 20-70% greedy accuracy. Example:

  Question: Ann has 7 apples. Ann finds 5 more. Ann loses 3. Ann then has 2 times as many.
            How many apples does Ann have now?
  Solution: Step 1: 7 + 5 = 12
            Step 2: 12 - 3 = 9
            Step 3: 9 * 2 = 18
            The answer is 18.

The knob `test_steps` draws the test split with other step counts than train and validation
(e.g. 4 beside max_steps=3: a length the model never trained on).

Several reasoning paths are valid, as in real math data (papers.md §1 measures the diversity of
correct solutions): each step applies one of the problem's operations to the running value, and
  - within a run of additions and subtractions (between two multiplications) the operations may
    be applied in any order ("Step 1: 7 - 3 = 4", "Step 2: 4 + 5 = 9" is as right as the story's
    order), and
  - additions and multiplications may write their operands either way round ("5 + 7 = 12").
The reference solution of each problem (the SFT target) is one of these paths drawn at random
from the example's own seeded stream (knobs `shuffle_probability`, `swap_probability`), so a
model trained on references writes several of them.
The step checker accepts exactly this family: a step is right when its arithmetic is right and it
applies an operation not used yet of the current run to the running value (a right value carried
from a wrong earlier step counts as wrong: the running value is the true one). A solution is
step-valid when every step is right and every operation is applied once; "final answer right, some
step wrong" is then a false positive, detected exactly.

Problems are deduplicated by content, not wording: two problems whose start value and runs of
operations (each run as a multiset) coincide have the same set of valid solutions, so at most one
of them exists across all splits (a question that only renames the person or the objects would
otherwise let a model memorise test solutions from train).

compositional_gsm (papers.md section 9): Q1 and Q2 are two arith_chain problems; Q2's starting
number is replaced by X, and the prompt says "Let X be the answer to Q1". The paper chains real
GSM8K test problems through their code-form (PAL) solutions; here both questions are arith_chain
problems, so the new gold answer is computed exactly from the chain, and a pair is kept only when
every value stays within [0, max_value]. `part` selects what the task hands out: "pair" (the
composed problem), "q1" (Q1 alone) or "q2" (Q2 with X's value substituted, the paper's S2 set),
with the same ids after the prefix, so S_comp - S1*S2 can be computed per pair. Q2's runs never
merge with Q1's: the boundary between them is a barrier like a multiplication.
"""
from __future__ import annotations

import random
import re
from typing import Sequence

from wcse_jax.data.example import Example, Step, StepReport
from wcse_jax.data.synthetic import SyntheticTask

NAMES = ("Ann", "Ben", "Cat", "Dan", "Eve", "Finn", "Gus", "Hana")
OBJECTS = ("apples", "books", "coins", "pens", "stamps", "shells")
_SENTENCE = {
    "+": "{name} finds {b} more.",
    "-": "{name} loses {b}.",
    "*": "{name} then has {b} times as many.",
}
_STEP_RE = re.compile(r"^Step\s*\d+\s*:\s*(-?\d+)\s*([-+*])\s*(-?\d+)\s*=\s*(-?\d+)\s*\.?$")

Op = tuple[str, int]


def _apply(a: int, op: str, b: int) -> int:
  return a + b if op == "+" else a - b if op == "-" else a * b


def runs_of(chain: Sequence[Op]) -> list[list[Op]]:
  """The chain cut into runs: each multiplication alone, additive operations grouped between."""
  runs: list[list[Op]] = []
  for op, b in chain:
    if op == "*" or not runs or runs[-1][0][0] == "*":
      runs.append([(op, b)])
    else:
      runs[-1].append((op, b))
  return runs


def content_key(start: int, runs: Sequence[Sequence[Op]]) -> tuple:
  """What two problems share exactly when their valid solutions coincide."""
  return (start,) + tuple(tuple(sorted(run)) for run in runs)


def render_step(number: int, value: int, op: str, b: int, swap: bool = False) -> str:
  left, right = (b, value) if swap and op != "-" else (value, b)
  return f"Step {number}: {left} {op} {right} = {_apply(value, op, b)}"


def reference_path(rng: random.Random, start: int, runs: Sequence[Sequence[Op]],
                   first_step: int = 1, max_value: int | None = None,
                   shuffle_probability: float = 1.0,
                   swap_probability: float = 0.5) -> list[Step]:
  """One valid path drawn at random: with probability `shuffle_probability` a run's order is
  shuffled (redrawn while a value would leave [0, max_value], as the story's own order never
  does), else kept; commutative operands are swapped with probability `swap_probability`."""
  steps, value, number = [], start, first_step
  for run in runs:
    order = list(run)
    if rng.random() < shuffle_probability:
      for _ in range(20):
        rng.shuffle(order)
        if _within(value, order, max_value):
          break
      else:
        order = list(run)
    for op, b in order:
      text = render_step(number, value, op, b, swap=rng.random() < swap_probability)
      value = _apply(value, op, b)
      steps.append(Step(text=text, value=str(value)))
      number += 1
  return steps


def _within(value: int, order: Sequence[Op], max_value: int | None) -> bool:
  for op, b in order:
    value = _apply(value, op, b)
    if value < 0 or (max_value is not None and value > max_value):
      return False
  return True


def parse_step(line: str) -> tuple[int, str, int, int] | None:
  m = _STEP_RE.match(line)
  return None if m is None else (int(m[1]), m[2], int(m[3]), int(m[4]))


def check_path(start: int, runs: Sequence[Sequence[Op]],
               lines: Sequence[str]) -> tuple[list[bool], list[str]]:
  """Marks each step line right or wrong (see the module docstring) and returns, per position, a
  right step to compare with: the line's own operation done right when the line names an unused
  operation of the current run, else the run's next unused operation (in story order). Missing
  steps get a False mark and their expected step; extra steps get a False mark and ""."""
  marks, expected = [], []
  value, number = start, 1
  pending = [list(run) for run in runs]
  for line in lines:
    while pending and not pending[0]:
      pending.pop(0)
    if not pending:
      marks.append(False)
      expected.append("")
      continue
    parsed = parse_step(line)
    run = pending[0]
    chosen, ok, swap = None, False, False
    if parsed is not None:
      a, op, b, result = parsed
      for candidate_op, operand in run:
        if candidate_op != op:
          continue
        pairs = {(value, operand)} if op == "-" else {(value, operand), (operand, value)}
        if (a, b) in pairs:
          chosen, ok = (op, operand), result == _apply(value, op, operand)
          swap = (a, b) == (operand, value) != (value, operand)
          break
        if chosen is None and operand in (a, b):
          chosen = (op, operand)  # the operation it meant, applied to a wrong value
    if chosen is None:
      chosen = run[0]
    run.remove(chosen)
    expected.append(render_step(number, value, *chosen, swap=swap))
    marks.append(ok)
    value = _apply(value, *chosen)
    number += 1
  for run in pending:
    for op, b in run:
      marks.append(False)
      expected.append(render_step(number, value, op, b))
      value = _apply(value, op, b)
      number += 1
  return marks, expected


class ArithChain(SyntheticTask):
  """GSM-like chains. Knobs: sizes, step count range, operand / factor / value caps, operators."""
  name = "arith_chain"

  def __init__(self, seed: int = 0, num_train: int = 2000, num_validation: int = 200,
               num_test: int = 500, min_steps: int = 2, max_steps: int = 4,
               max_operand: int = 19, max_factor: int = 3, max_value: int = 99,
               ops: str | tuple[str, ...] = ("+", "-", "*"), shuffle_probability: float = 1.0,
               swap_probability: float = 0.5, test_steps: Sequence[int] | None = None):
    super().__init__(seed)
    if not (0 <= shuffle_probability <= 1 and 0 <= swap_probability <= 1):
      raise ValueError(f"arith_chain: shuffle_probability and swap_probability must lie in "
                       f"[0, 1], got {shuffle_probability}, {swap_probability}")
    # How varied the reference solutions are (the checker accepts every valid path anyway).
    self.shuffle_probability, self.swap_probability = shuffle_probability, swap_probability
    ops = tuple(ops)
    if not ops or any(op not in _SENTENCE for op in ops):
      raise ValueError(f"arith_chain: ops must be a non-empty subset of {sorted(_SENTENCE)}, "
                       f"got {ops!r}")
    if not 1 <= min_steps <= max_steps:
      raise ValueError(f"arith_chain: need 1 <= min_steps <= max_steps, "
                       f"got {min_steps}, {max_steps}")
    if max_operand < 2 or max_value < max_operand:
      raise ValueError(f"arith_chain: need 2 <= max_operand <= max_value, "
                       f"got {max_operand}, {max_value}")
    self.sizes = {"train": num_train, "validation": num_validation, "test": num_test}
    self.min_steps, self.max_steps = min_steps, max_steps
    # Step counts of the test split's chains, e.g. (4,) beside max_steps=3: problems longer than
    # any trained on (the out-of-distribution pools of configs/verifiers.py). None: the test split
    # is drawn like train and validation.
    self.test_steps = None if test_steps is None else tuple(int(n) for n in test_steps)
    if self.test_steps is not None and (not self.test_steps or min(self.test_steps) < 1):
      raise ValueError(f"arith_chain: test_steps must be step counts >= 1, got {test_steps!r}")
    self.max_operand, self.max_factor, self.max_value = max_operand, max_factor, max_value
    self.ops = ops

  def _plan(self, split):
    return [{} for _ in range(self.sizes[split])]

  def draw_chain(self, rng: random.Random, split: str = "train") -> tuple[int, list[Op]]:
    """A start value and a list of (op, operand), every intermediate value in [0, max_value]."""
    for _ in range(100):
      value = rng.randint(1, self.max_operand)
      start, chain = value, []
      if split == "test" and self.test_steps is not None:
        length = rng.choice(self.test_steps)
      else:
        length = rng.randint(self.min_steps, self.max_steps)
      for _ in range(length):
        options = []
        if "+" in self.ops and value + 1 <= self.max_value:
          options.append(("+", 1, min(self.max_operand, self.max_value - value)))
        if "-" in self.ops and value >= 1:
          options.append(("-", 1, min(self.max_operand, value)))
        if "*" in self.ops and 2 <= self.max_factor and value * 2 <= self.max_value:
          options.append(("*", 2, min(self.max_factor, self.max_value // max(value, 1))))
        if not options:  # A dead end (e.g. only "-" and the value reached 0): draw again.
          break
        op, lo, hi = rng.choice(options)
        b = rng.randint(lo, hi)
        chain.append((op, b))
        value = _apply(value, op, b)
      else:
        return start, chain
    raise ValueError(f"{self.name}: ops={self.ops}, max_value={self.max_value}, "
                     f"max_factor={self.max_factor} leave no {split} chain of {length} steps")

  @staticmethod
  def render(name: str, obj: str, start: str | int, chain) -> str:
    """The sentences of a drawn chain, without the closing question. `start` may be the string
    "X" (Q2 of a compositional pair)."""
    sentences = [f"{name} has {start} {obj}."]
    sentences += [_SENTENCE[op].format(name=name, b=b) for op, b in chain]
    return " ".join(sentences)

  def _draw(self, rng, split, index):
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    start, chain = self.draw_chain(rng, split)
    runs = runs_of(chain)
    steps = reference_path(rng, start, runs, max_value=self.max_value,
                           shuffle_probability=self.shuffle_probability,
                           swap_probability=self.swap_probability)
    answer = steps[-1].value
    question = f"{self.render(name, obj, start, chain)} How many {obj} does {name} have now?"
    solution = "\n".join([s.text for s in steps] + [f"The answer is {answer}."])
    return Example(id=f"{self.name}/{split}/{index:06d}", question=question, answer=answer,
                   solution=solution, steps=tuple(steps), split=split,
                   meta={"start": start, "chain": [list(c) for c in chain],
                         "runs": [[list(op) for op in run] for run in runs],
                         "values": [start] + [int(s.value) for s in steps]})

  def _dedupe_key(self, example):
    return repr(content_key(example.meta["start"], _runs(example.meta["runs"])))

  def _is_step_line(self, line):
    return line.startswith("Step")

  def _step_key(self, line):
    return parse_step(line)

  def check_steps(self, example: Example, text: str) -> StepReport:
    lines = self._step_lines(text)
    marks, expected = check_path(example.meta["start"], _runs(example.meta["runs"]), lines)
    padded = list(lines) + [""] * (len(marks) - len(lines))
    return StepReport(marks=tuple(marks), lines=tuple(padded), expected=tuple(expected))


def _runs(meta_runs) -> list[list[Op]]:
  return [[(op, int(b)) for op, b in run] for run in meta_runs]


class CompositionalGSM(ArithChain):
  """Pairs of arith_chain problems where Q2 starts from X = answer(Q1). Knobs: those of
  arith_chain (applied to each question) plus `part` in {"pair", "q1", "q2"}."""
  name = "compositional_gsm"

  def __init__(self, part: str = "pair", **knobs):
    knobs.setdefault("num_train", 1000)
    knobs.setdefault("num_validation", 100)
    knobs.setdefault("num_test", 500)
    super().__init__(**knobs)
    if part not in ("pair", "q1", "q2"):
      raise ValueError(f"compositional_gsm: part must be 'pair', 'q1' or 'q2', got {part!r}")
    self.part = part

  def _draw(self, rng, split, index):
    for _ in range(1000):
      name1, obj1 = rng.choice(NAMES), rng.choice(OBJECTS)
      start1, chain1 = self.draw_chain(rng, split)
      name2, obj2 = rng.choice(NAMES), rng.choice(OBJECTS)
      _, chain2 = self.draw_chain(rng, split)
      x = start1
      for op, b in chain1:
        x = _apply(x, op, b)
      values = [x]
      for op, b in chain2:
        values.append(_apply(values[-1], op, b))
      if 0 < x and all(0 <= v <= self.max_value for v in values) and values[-1] > 0:
        break
    else:
      raise ValueError("compositional_gsm: no valid pair found; loosen max_value")
    runs1, runs2 = runs_of(chain1), runs_of(chain2)
    # Both parts' reference paths are drawn for every part, so the pair, q1 and q2 tasks consume
    # the random stream alike and draw the same pairs.
    variety = dict(max_value=self.max_value, shuffle_probability=self.shuffle_probability,
                   swap_probability=self.swap_probability)
    steps1 = reference_path(rng, start1, runs1, **variety)
    steps2 = reference_path(rng, x, runs2, first_step=len(steps1) + 1, **variety)
    q1 = f"{self.render(name1, obj1, start1, chain1)} How many {obj1} does {name1} have now?"
    q2_with_x = (f"{self.render(name2, obj2, 'X', chain2)} "
                 f"How many {obj2} does {name2} have now?")
    q2_alone = (f"{self.render(name2, obj2, x, chain2)} "
                f"How many {obj2} does {name2} have now?")
    pair_id = f"{split}/{index:06d}"
    meta = {"x": x, "q1": q1, "q2": q2_with_x, "q2_substituted": q2_alone, "pair": pair_id,
            "key": repr((content_key(start1, runs1), content_key(0, runs2)))}
    if self.part == "q1":
      start, runs, steps = start1, runs1, steps1
      question = q1
    elif self.part == "q2":
      start, runs = x, runs2
      steps = [Step(re.sub(r"^Step \d+", f"Step {i + 1}", s.text), s.value)
               for i, s in enumerate(steps2)]
      question = q2_alone
    else:
      start, runs, steps = start1, runs1 + runs2, steps1 + steps2
      question = f"Let X be the answer to Q1.\nQ1: {q1}\nQ2: {q2_with_x}"
    answer = steps[-1].value
    lines = [s.text for s in steps]
    if self.part == "pair":
      lines.insert(len(steps1), f"So X = {x}.")
    solution = "\n".join(lines + [f"The answer is {answer}."])
    meta.update(start=start, runs=[[list(op) for op in run] for run in runs])
    return Example(id=f"{self.name}/{self.part}/{pair_id}", question=question, answer=answer,
                   solution=solution, steps=tuple(steps), split=split, meta=meta)

  def _dedupe_key(self, example):
    # The pair's content, not the shown question, so that "pair", "q1" and "q2" draw the same
    # pairs and no two pairs share both chains.
    return example.meta["key"]
