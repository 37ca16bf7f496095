"""Compositional GSM from GSM8K files (papers.md §9): pairs where Q1's answer is X inside Q2.

The paper rewrote each Q2 by hand with one number replaced by X and computed the new gold answer by
executing Q2's code-form (PAL) solution with X substituted. GSM8K's official answers carry no code
but a calculator annotation per step, "<<16-3-4=9>>", and we substitute through those:

1. One number of Q2's question (a plain integer written in digits, once; not a percentage, a
   fraction, a time or an ordinal) is chosen to become X.
2. The annotations are re-evaluated in order, exactly (fractions, no floats). An operand that
   equals a known quantity takes that quantity's new value: the chosen number becomes X, each
   earlier annotation's result becomes its recomputed result, every other number of the question
   (digits, number words such as "three", and the constants their words imply: "dozen" 12,
   "week" 7, "half" 2 and 1/2, "%" 100, ...) keeps its value. The final answer is the new value
   of the quantity "#### N" names.
3. Where that is not well defined the candidate is dropped and the reason counted, never guessed:
   an operand equal to two quantities whose new values differ (the result 10 and a "10" of the
   question); an operand that is none of the known quantities (the result of a step written
   without an annotation) unless it is 1, 2 or 100; an annotation whose stated value is rounded
   and depends on X; a final answer no annotation or question number produced; a chosen number
   that equals a constant the words imply, or 1, 2 or 100 (a bare "2" in a step could then be
   either); an answer that does not change with X. The same map rewrites the numbers of the
   solution text, so the modified Q2 has a reference solution (the pair exemplars need one).
4. Pairs: Q2 candidates in a seeded order, each tried against unused Q1s whose answer X lies
   within a factor `answer_ratio` of the replaced number (up to `max_tries` of them, seeded
   order); the first Q1 for which Q2's new answer is a positive integer within `answer_ratio` of
   its original answer is kept, as the paper keeps only pairs whose new answer is a positive
   integer close to the original. Each problem is Q1 of at most one pair and Q2 of at most one.

`build_pairs` returns the pairs and a report counting the candidates and the drops by reason.
`GSM8KCompositional(part=...)` is the task ("q1", "q2" with X's value written in, or "pair"), with
the same pair keys across parts, as `arith.CompositionalGSM` for the synthetic pairs.
"""
from __future__ import annotations

import collections
import dataclasses
import fractions
import functools
import random
import re
from typing import Any, Mapping

from wcse_jax.data import real, tasks
from wcse_jax.data.example import Example, Task

Fraction = fractions.Fraction

PAIR_TEMPLATE = ("Let X be the answer to the Q1:\n\nQ1: {q1}\n\nSolve it and use the value of X "
                 "to solve Q2. Explain your answer step by step.\n\nQ2: {q2}")  # the paper's
# Operands that may appear in a step without being a known quantity (the ubiquitous constants).
FREE_CONSTANTS = frozenset({Fraction(0), Fraction(1), Fraction(2), Fraction(100)})
_SMALL = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
          "fifteen sixteen seventeen eighteen nineteen twenty").split()
_IMPLIED: dict[str, tuple[Fraction, ...]] = {
    **{w: (Fraction(i),) for i, w in enumerate(_SMALL)},
    **{w: (Fraction(10 * i),) for i, w in enumerate(
        "thirty forty fifty sixty seventy eighty ninety".split(), start=3)},
    "hundred": (Fraction(100),), "thousand": (Fraction(1000),), "million": (Fraction(10**6),),
    "twice": (Fraction(2),), "double": (Fraction(2),), "doubles": (Fraction(2),),
    "triple": (Fraction(3),), "triples": (Fraction(3),), "thrice": (Fraction(3),),
    "half": (Fraction(2), Fraction(1, 2)), "halves": (Fraction(2), Fraction(1, 2)),
    "third": (Fraction(3), Fraction(1, 3)), "thirds": (Fraction(3), Fraction(1, 3)),
    "quarter": (Fraction(4), Fraction(1, 4), Fraction(25)),
    "quarters": (Fraction(4), Fraction(1, 4), Fraction(25)),
    "dozen": (Fraction(12),), "dozens": (Fraction(12),), "pair": (Fraction(2),),
    "pairs": (Fraction(2),), "both": (Fraction(2),), "twins": (Fraction(2),),
    "week": (Fraction(7),), "weeks": (Fraction(7),), "weekly": (Fraction(7), Fraction(52)),
    "day": (Fraction(24),), "days": (Fraction(24),), "daily": (Fraction(7), Fraction(365)),
    "hour": (Fraction(60),), "hours": (Fraction(60),), "minute": (Fraction(60),),
    "minutes": (Fraction(60),), "year": (Fraction(12), Fraction(52), Fraction(365)),
    "years": (Fraction(12), Fraction(52), Fraction(365)), "month": (Fraction(30), Fraction(4)),
    "months": (Fraction(12), Fraction(30), Fraction(4)),
    "percent": (Fraction(100), Fraction(1, 100)),
    "cents": (Fraction(100),), "cent": (Fraction(100),), "dimes": (Fraction(10),),
    "nickels": (Fraction(5),), "decade": (Fraction(10),), "century": (Fraction(100),),
}
_ANNOTATION = re.compile(r"<<([^<>]*)>>")
# A number as GSM8K writes it: 1,000 / 2.5 / .5; a word boundary on both sides.
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+(?![\d])|\d+(?:\.\d+)?|\.\d+)(?![\w])")
_WORD = re.compile(r"[a-z]+")
_FRACTION = re.compile(r"(?<![\w.])(\d+)/(\d+)(?![\w])")
_TOKEN = re.compile(r"\s*(\*\*|\d+(?:\.\d+)?|\.\d+|[-+*/()])")


class Unusable(ValueError):
  """Why a question cannot serve as Q2 (or a pair cannot be formed): the report's drop reason."""


@dataclasses.dataclass(frozen=True)
class Mention:
  """A number written in the question: its value, where it is, and whether X may replace it."""
  value: Fraction
  start: int
  end: int
  replaceable: bool


def _value(text: str) -> Fraction:
  return Fraction(text.replace(",", ""))


def mentions(question: str) -> list[Mention]:
  """The numbers written in digits in `question` (a percentage, a fraction a/b, a time h:mm, a
  decimal or a number next to other digits is kept as a known quantity, never replaced)."""
  out = []
  for m in _NUMBER.finditer(question):
    before, after = question[max(m.start() - 1, 0):m.start()], question[m.end():m.end() + 2]
    plain = ("." not in m[0] and not after.startswith(("%", "/", ":")) and before not in "/:"
             and not (after.startswith(".") and after[1:2].isdigit()))
    out.append(Mention(_value(m[0]), m.start(), m.end(), plain))
  return out


def implied_constants(*texts: str) -> set[Fraction]:
  """The numbers the words of `texts` imply ("dozen" 12, "three" 3, "%" 100, ...)."""
  found: set[Fraction] = set()
  for text in texts:
    for word in _WORD.findall(text.lower()):
      found.update(_IMPLIED.get(word, ()))
    if "%" in text:
      found.update((Fraction(100), Fraction(1, 100)))
  return found


def evaluate(expression: str) -> Fraction:
  """The exact value of a calculator expression (numbers, + - * / ** and parentheses)."""
  tokens, pos = [], 0
  expression = expression.replace(",", "").rstrip()
  while pos < len(expression):
    m = _TOKEN.match(expression, pos)
    if m is None:
      raise Unusable("annotation the calculator grammar cannot read")
    tokens.append(m[1])
    pos = m.end()
  value, rest = _sum(tokens)
  if rest:
    raise Unusable("annotation the calculator grammar cannot read")
  return value


def _sum(tokens):
  value, tokens = _product(tokens)
  while tokens and tokens[0] in "+-":
    op, (right, tokens) = tokens[0], _product(tokens[1:])
    value = value + right if op == "+" else value - right
  return value, tokens


def _product(tokens):
  value, tokens = _power(tokens)
  while tokens and tokens[0] in ("*", "/"):
    op, (right, tokens) = tokens[0], _power(tokens[1:])
    if op == "/" and right == 0:
      raise Unusable("division by zero")
    value = value * right if op == "*" else value / right
  return value, tokens


def _power(tokens):
  value, tokens = _atom(tokens)
  if tokens and tokens[0] == "**":
    exponent, tokens = _power(tokens[1:])
    if exponent.denominator != 1 or abs(exponent) > 12 or (value == 0 and exponent < 0):
      raise Unusable("annotation with an unusable exponent")
    value = value ** int(exponent)
  return value, tokens


def _atom(tokens):
  if not tokens:
    raise Unusable("annotation the calculator grammar cannot read")
  head, tokens = tokens[0], tokens[1:]
  if head == "-":
    value, tokens = _atom(tokens)
    return -value, tokens
  if head == "(":
    value, tokens = _sum(tokens)
    if not tokens or tokens[0] != ")":
      raise Unusable("annotation the calculator grammar cannot read")
    return value, tokens[1:]
  if head[0].isdigit() or head[0] == ".":
    return Fraction(head), tokens
  raise Unusable("annotation the calculator grammar cannot read")


def render(value: Fraction) -> str:
  """A recomputed value as a solution writes it: an integer, or a decimal of at most 4 places."""
  if value.denominator == 1:
    return str(value.numerator)
  scaled = value * 10**4
  if scaled.denominator != 1:
    raise Unusable("a recomputed step is not a short decimal")
  return f"{float(value):.4f}".rstrip("0").rstrip(".")


class _Values:
  """Known quantities: value -> the set of new values it may stand for (one: well defined)."""

  def __init__(self):
    self.known: dict[Fraction, set[Fraction]] = collections.defaultdict(set)

  def add(self, old: Fraction, new: Fraction) -> None:
    self.known[old].add(new)

  def new(self, old: Fraction, *, free: bool = True) -> Fraction:
    options = self.known.get(old)
    if not options:
      if free and old in FREE_CONSTANTS:
        return old
      raise Unusable("a step uses a number that is neither in the question nor an earlier result")
    if len(options) > 1:
      raise Unusable("a step's number stands for two quantities that X changes differently")
    return next(iter(options))


@dataclasses.dataclass(frozen=True)
class Substitution:
  """Q2 with one number replaced by X, its solution recomputable for any value of X."""
  question: str
  official: str  # the official answer (with annotations)
  mention: Mention
  answer: Fraction  # the original final answer

  def apply(self, x: Fraction, *, text: bool = True) -> tuple[Fraction, str]:
    """(new final answer, official-format answer text rewritten) with X = x; Unusable if not
    well defined (see the module docstring). text=False checks the values only (a step's new
    value need not be a short decimal then, and the returned text is not for reading)."""
    show = render if text else str
    n = self.mention.value
    values = _Values()
    constants = implied_constants(self.question, self.official)
    for other in mentions(self.question):
      if other.start == self.mention.start:
        values.add(n, x)
      else:
        values.add(other.value, other.value)
        if self.question[other.end:other.end + 1] == "%":  # 20% is also used as .2
          values.add(other.value / 100, other.value / 100)
    for a, b in _FRACTION.findall(self.question):  # 1/2 is also used as .5
      if int(b):
        values.add(Fraction(int(a), int(b)), Fraction(int(a), int(b)))
    for c in constants:
      values.add(c, c)
    reasoning = self.official.rsplit("####", 1)[0]
    pieces, last, results = [], 0, []
    for m in _ANNOTATION.finditer(reasoning):
      pieces.append(_rewrite_numbers(reasoning[last:m.start()], values, show))
      annotation, stated, new = _rewrite_annotation(m[1], values, show)
      pieces.append(annotation)
      results.append((stated, new))
      last = m.end()
    pieces.append(_rewrite_numbers(reasoning[last:], values, show))
    old_answer = self.answer
    # "#### N" repeats the last step that gave N, whatever else equals N.
    produced = [new for stated, new in results if stated == old_answer]
    if not produced:
      raise Unusable("the final answer is not the result of an annotated step")
    return produced[-1], "".join(pieces) + "#### " + show(produced[-1])


def _rewrite_annotation(body: str, values: _Values,
                        show) -> tuple[str, Fraction, Fraction]:
  """The annotation recomputed, its stated value and its new value."""
  if body.count("=") != 1:
    raise Unusable("annotation the calculator grammar cannot read")
  expression, stated = body.split("=")
  try:
    stated_value = _value(stated.strip())
  except (ValueError, ZeroDivisionError):
    raise Unusable("annotation the calculator grammar cannot read") from None
  exact = evaluate(expression)
  new_expression, changed = _substitute(expression, values, show)
  new = evaluate(new_expression)
  if exact != stated_value:
    if changed:  # A rounded step that depends on X cannot be rounded the way the author would.
      raise Unusable("a rounded step depends on X")
    new = stated_value
  values.add(stated_value, new)
  return f"<<{new_expression}={show(new)}>>", stated_value, new


def _substitute(expression: str, values: _Values, show) -> tuple[str, bool]:
  """The expression with each operand replaced by its new value; whether any changed."""
  changed = False

  def swap(m):
    nonlocal changed
    old = _value(m[0])
    new = values.new(old)
    changed |= new != old
    if new == old:
      return m[0]
    shown = show(new)  # a fraction or a negative value keeps its place in the expression
    return shown if re.fullmatch(r"\d+(?:\.\d+)?", shown) else f"({shown})"

  return re.sub(r"\d+(?:\.\d+)?|\.\d+", swap, expression.replace(",", "")), changed


def _rewrite_numbers(text: str, values: _Values, show) -> str:
  """Numbers of the solution's prose: known ones take their new value, others stay."""

  def swap(m):
    old = _value(m[0])
    if old not in values.known:
      return m[0]
    new = values.new(old)
    return m[0] if new == old else show(new)

  return _NUMBER.sub(swap, text)


def substitution(question: str, official: str) -> Substitution:
  """The first number of `question` that X can replace with a well-defined recomputation that
  depends on X; Unusable naming why none can (the last candidate's reason)."""
  reasoning, _, final = official.rpartition("####")
  if not reasoning:
    raise Unusable("official answer has no '####' line")
  try:
    answer = _value(final.strip().replace("$", ""))
  except (ValueError, ZeroDivisionError):
    raise Unusable("final answer is not a number") from None
  if answer <= 0 or answer.denominator != 1:
    raise Unusable("original answer is not a positive integer")
  found = mentions(question)
  counts = collections.Counter(m.value for m in found)
  constants = implied_constants(question, official)
  reason = "no integer in the question that X can replace"
  for mention in found:
    if not mention.replaceable or counts[mention.value] > 1:
      continue
    if mention.value in constants or mention.value in FREE_CONSTANTS:
      reason = "the number to replace is also a constant the words imply"
      continue
    candidate = Substitution(question, official, mention, answer)
    try:
      same, _ = candidate.apply(mention.value)
      moved, _ = candidate.apply(mention.value + 1, text=False)
    except Unusable as e:
      reason = str(e)
      continue
    if same != answer:
      reason = "the annotations do not reproduce the official answer"
      continue
    if moved == answer:
      reason = "the answer does not depend on the replaced number"
      continue
    return candidate
  raise Unusable(reason)


@dataclasses.dataclass(frozen=True)
class Pair:
  """A kept pair: problems q1 and q2 (indices into the split), X, and Q2's new answer."""
  key: str
  q1: Example
  q2: Example
  x: int
  q2_question_with_x: str  # the modified Q2 with "X"
  q2_question: str  # ... with X's value written in (the S2 set, papers.md §9(e))
  q2_official: str  # the rewritten official answer (annotations recomputed)
  answer: int


def build_pairs(examples: list[Example], *, seed: int = 0, answer_ratio: float = 2.0,
                max_tries: int = 200) -> tuple[list[Pair], dict[str, Any]]:
  """Pairs from GSM8K examples (their meta["official_answer"]) and a report of what was dropped
  (see the module docstring); deterministic in (examples, seed, answer_ratio, max_tries)."""
  if answer_ratio < 1:
    raise ValueError(f"gsm8k pairs: answer_ratio must be >= 1, got {answer_ratio}")
  drops: collections.Counter = collections.Counter()
  candidates = []
  for i, ex in enumerate(examples):
    try:
      candidates.append((i, substitution(ex.question, ex.meta["official_answer"])))
    except Unusable as e:
      drops[f"Q2: {e}"] += 1
  answers = {i: _value(ex.answer) for i, ex in enumerate(examples)
             if re.fullmatch(r"\d+", ex.answer) and int(ex.answer) > 0}
  rng = random.Random(f"gsm8k_pairs:{seed}")
  rng.shuffle(candidates)
  used_as_q1, pairs = set(), []
  for i, sub in candidates:
    n = sub.mention.value
    options = [j for j, x in answers.items()
               if j != i and j not in used_as_q1 and n / answer_ratio <= x <= n * answer_ratio]
    rng.shuffle(options)
    made, reason = None, "no Q1 answer gives Q2 a positive integer answer close to the original"
    for j in options[:max_tries]:
      try:
        new, official = sub.apply(answers[j])
      except Unusable as e:
        reason = f"with X = Q1's answer: {e}"
        continue
      if new <= 0 or new.denominator != 1:
        continue
      if not sub.answer / answer_ratio <= new <= sub.answer * answer_ratio:
        continue
      made = (j, int(new), official)
      break
    if made is None:
      drops[f"pair: {reason}"] += 1
      continue
    j, new, official = made
    used_as_q1.add(j)
    x = int(answers[j])
    start, end = sub.mention.start, sub.mention.end
    q2 = examples[i]
    pairs.append(Pair(key=f"{q2.split}/{len(pairs):05d}", q1=examples[j], q2=q2, x=x,
                      q2_question_with_x=q2.question[:start] + "X" + q2.question[end:],
                      q2_question=q2.question[:start] + str(x) + q2.question[end:],
                      q2_official=official, answer=new))
  report = {"problems": len(examples), "q2_candidates": len(candidates), "pairs": len(pairs),
            "dropped": dict(sorted(drops.items())), "answer_ratio": answer_ratio,
            "max_tries": max_tries, "seed": seed}
  return pairs, report


class GSM8KCompositional(Task):
  """Compositional GSM built from GSM8K (see the module docstring). Knobs: `part` ("pair", "q1",
  "q2"), the GSM8K source (`data_dir`, `paths`, `source`), `seed`, `answer_ratio`, `max_tries`.
  Splits: train (pairs of train problems: few-shot exemplars) and test."""
  name = "gsm8k_compositional"
  answer_format = "gsm"
  splits = ("train", "test")

  def __init__(self, part: str = "pair", data_dir: str | None = None,
               paths: Mapping[str, str] | None = None, source: str = "local", seed: int = 0,
               answer_ratio: float = 2.0, max_tries: int = 200):
    if part not in ("pair", "q1", "q2"):
      raise ValueError(f"{self.name}: part must be 'pair', 'q1' or 'q2', got {part!r}")
    self.part = part
    source_knobs = {"source": source}
    if paths:
      source_knobs["paths"] = dict(paths)
    if data_dir:
      source_knobs["data_dir"] = data_dir
    self.gsm8k = tasks.get_task("gsm8k", **source_knobs)
    self.seed, self.answer_ratio, self.max_tries = seed, answer_ratio, max_tries

  def report(self, split: str) -> dict[str, Any]:
    """What the pair construction kept and dropped (by reason) on `split`."""
    return self._pairs(split)[1]

  def _pairs(self, split: str):
    return _cached_pairs(self.gsm8k, split, self.seed, self.answer_ratio, self.max_tries)

  def _build(self, split: str) -> list[Example]:
    out = []
    for pair in self._pairs(split)[0]:
      # GSM8K's own conversion (annotations removed, "#### N" -> "The answer is N."), so the
      # modified Q2's solution reads like every other GSM8K solution.
      record = {"question": pair.q2_question, "answer": pair.q2_official}
      q2 = self.gsm8k._convert(record, split, 0, split)  # pylint: disable=protected-access
      q2_steps = _reasoning(q2.solution)
      meta = {"pair": pair.key, "x": pair.x, "q1_id": pair.q1.id, "q2_id": pair.q2.id,
              "q2_with_x": pair.q2_question_with_x, "q2_official": pair.q2_official}
      if self.part == "q1":
        question, solution, answer = pair.q1.question, pair.q1.solution, pair.q1.answer
      elif self.part == "q2":
        question, solution, answer = pair.q2_question, q2.solution, str(pair.answer)
      else:
        question = PAIR_TEMPLATE.format(q1=pair.q1.question, q2=pair.q2_question_with_x)
        steps = [s for s in (_reasoning(pair.q1.solution), f"So X = {pair.x}.", q2_steps) if s]
        solution = "\n".join(steps + [f"The answer is {pair.answer}."])
        answer = str(pair.answer)
      out.append(Example(id=f"{self.name}/{self.part}/{pair.key}", question=question,
                         answer=answer, solution=solution, split=split, meta=meta))
    return out


def _reasoning(solution: str) -> str:
  """A GSM8K example's solution without its closing "The answer is N." line."""
  body, _, _ = solution.rpartition("The answer is")
  return body.strip()


@functools.lru_cache(maxsize=16)
def _cached_pairs(gsm8k: real.GSM8K, split: str, seed: int, answer_ratio: float,
                  max_tries: int):
  # Built once per process for all three parts: their tasks share the registry's GSM8K object.
  return build_pairs(gsm8k.examples(split), seed=seed, answer_ratio=answer_ratio,
                     max_tries=max_tries)


__all__ = ["GSM8KCompositional", "Pair", "Substitution", "Unusable", "build_pairs",
           "substitution", "mentions", "evaluate", "implied_constants", "PAIR_TEMPLATE"]
