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

compositional_gsm (papers.md section 9): Q1 and Q2 are two arith_chain problems; Q2's starting
number is replaced by X, and the prompt says "Let X be the answer to Q1". The paper chains real
GSM8K test problems through their code-form (PAL) solutions; here both questions are arith_chain
problems, so the new gold answer is computed exactly from the chain, and a pair is kept only when
every value stays within [0, max_value]. `part` selects what the task hands out: "pair" (the
composed problem), "q1" (Q1 alone) or "q2" (Q2 with X's value substituted, the paper's S2 set),
with the same ids after the prefix, so S_comp - S1*S2 can be computed per pair.
"""
from __future__ import annotations

import random
import re

from wcse_jax.data.example import Example, Step
from wcse_jax.data.synthetic import SyntheticTask

NAMES = ("Ann", "Ben", "Cat", "Dan", "Eve", "Finn", "Gus", "Hana")
OBJECTS = ("apples", "books", "coins", "pens", "stamps", "shells")
_SENTENCE = {
    "+": "{name} finds {b} more.",
    "-": "{name} loses {b}.",
    "*": "{name} then has {b} times as many.",
}
_STEP_RE = re.compile(r"^Step\s*\d+\s*:\s*(-?\d+)\s*([-+*])\s*(-?\d+)\s*=\s*(-?\d+)\s*\.?$")


def _apply(a: int, op: str, b: int) -> int:
  return a + b if op == "+" else a - b if op == "-" else a * b


class ArithChain(SyntheticTask):
  """GSM-like chains. Knobs: sizes, step count range, operand / factor / value caps, operators."""
  name = "arith_chain"

  def __init__(self, seed: int = 0, num_train: int = 2000, num_validation: int = 200,
               num_test: int = 500, min_steps: int = 2, max_steps: int = 4,
               max_operand: int = 19, max_factor: int = 3, max_value: int = 99,
               ops: str | tuple[str, ...] = ("+", "-", "*")):
    super().__init__(seed)
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
    self.max_operand, self.max_factor, self.max_value = max_operand, max_factor, max_value
    self.ops = ops

  def _plan(self, split):
    return [{} for _ in range(self.sizes[split])]

  def draw_chain(self, rng: random.Random) -> tuple[int, list[tuple[str, int]]]:
    """A start value and a list of (op, operand), every intermediate value in [0, max_value]."""
    for _ in range(100):
      value = rng.randint(1, self.max_operand)
      start, chain = value, []
      for _ in range(rng.randint(self.min_steps, self.max_steps)):
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
                     f"max_factor={self.max_factor} leave no chain of {self.min_steps}-"
                     f"{self.max_steps} steps")

  @staticmethod
  def render(name: str, obj: str, start: str | int, chain) -> str:
    """The sentences of a drawn chain, without the closing question. `start` may be the string
    "X" (Q2 of a compositional pair)."""
    sentences = [f"{name} has {start} {obj}."]
    sentences += [_SENTENCE[op].format(name=name, b=b) for op, b in chain]
    return " ".join(sentences)

  @staticmethod
  def steps_of(start: int, chain, first_step: int = 1) -> list[Step]:
    steps, value = [], start
    for i, (op, b) in enumerate(chain):
      new = _apply(value, op, b)
      steps.append(Step(text=f"Step {first_step + i}: {value} {op} {b} = {new}", value=str(new)))
      value = new
    return steps

  def _draw(self, rng, split, index):
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    start, chain = self.draw_chain(rng)
    steps = self.steps_of(start, chain)
    answer = steps[-1].value
    question = f"{self.render(name, obj, start, chain)} How many {obj} does {name} have now?"
    solution = "\n".join([s.text for s in steps] + [f"The answer is {answer}."])
    return Example(id=f"{self.name}/{split}/{index:06d}", question=question, answer=answer,
                   solution=solution, steps=tuple(steps), split=split,
                   meta={"start": start, "chain": [list(c) for c in chain],
                         "values": [start] + [int(s.value) for s in steps]})

  def _is_step_line(self, line):
    return line.startswith("Step")

  def _step_key(self, line):
    m = _STEP_RE.match(line)
    return None if m is None else (int(m[1]), m[2], int(m[3]), int(m[4]))


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
      start1, chain1 = self.draw_chain(rng)
      name2, obj2 = rng.choice(NAMES), rng.choice(OBJECTS)
      _, chain2 = self.draw_chain(rng)
      steps1 = self.steps_of(start1, chain1)
      x = int(steps1[-1].value)
      values = [x]
      for op, b in chain2:
        values.append(_apply(values[-1], op, b))
      if 0 < x and all(0 <= v <= self.max_value for v in values) and values[-1] > 0:
        break
    else:
      raise ValueError("compositional_gsm: no valid pair found; loosen max_value")
    q1 = f"{self.render(name1, obj1, start1, chain1)} How many {obj1} does {name1} have now?"
    q2_with_x = (f"{self.render(name2, obj2, 'X', chain2)} "
                 f"How many {obj2} does {name2} have now?")
    q2_alone = (f"{self.render(name2, obj2, x, chain2)} "
                f"How many {obj2} does {name2} have now?")
    pair_id = f"{split}/{index:06d}"
    meta = {"x": x, "q1": q1, "q2": q2_with_x, "q2_substituted": q2_alone, "pair": pair_id}
    if self.part == "q1":
      steps = steps1
      question = q1
    elif self.part == "q2":
      steps = self.steps_of(x, chain2)
      question = q2_alone
    else:
      steps = steps1 + self.steps_of(x, chain2, first_step=len(steps1) + 1)
      question = f"Let X be the answer to Q1.\nQ1: {q1}\nQ2: {q2_with_x}"
    answer = steps[-1].value
    lines = [s.text for s in steps]
    if self.part == "pair":
      lines.insert(len(steps1), f"So X = {x}.")
    solution = "\n".join(lines + [f"The answer is {answer}."])
    return Example(id=f"{self.name}/{self.part}/{pair_id}", question=question, answer=answer,
                   solution=solution, steps=tuple(steps), split=split, meta=meta)

  def _dedupe_key(self, example):
    # The pair, not the shown question, so that "pair", "q1" and "q2" draw the same pairs.
    return example.meta["q1"] + "\n" + example.meta["q2"]
