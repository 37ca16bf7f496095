"""Final-answer extraction for every answer format, and the cheap in-process comparisons.

Formats:
  "answer_is"  synthetic tasks: the text after the last "The answer is" on its line.
  "gsm"        GSM8K: the number after the last "####", else after the last "The answer is",
               else the last number in the text. Thousands commas, "$", units and a trailing
               period are dropped ("$1,000.00 dollars." -> "1000"); "%" is dropped too, because
               GSM8K gold answers to percentage questions are the bare number.
  "math"       MATH: the content of the last \\boxed{...} (or \\fbox), else Minerva's
               "The final answer is $...$", else "The answer is ...".
  "code"       HumanEval: the first fenced code block if there is one, else the text as is.

Only exact, unambiguous cases are decided here (`number`); everything else in MATH goes to
math-verify, through `grading.py`.
"""
from __future__ import annotations

import fractions
import re
from typing import Sequence

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_NUMBER_RE = re.compile(_NUMBER)
_ANSWER_IS_RE = re.compile(r"the answer is\s*:?\s*(.*)", re.IGNORECASE)
_HASHES_RE = re.compile(r"####\s*\$?\s*(" + _NUMBER + ")")
_FINAL_RE = re.compile(r"final answer is\s*(.*?)(?:\.?\s*I hope it is correct.*)?$",
                       re.IGNORECASE)
_FENCE_RE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


def truncate_at_stop(text: str, stops: Sequence[str]) -> str:
  """Cuts `text` at the first occurrence of any stop string."""
  cut = len(text)
  for s in stops:
    i = text.find(s)
    if i != -1:
      cut = min(cut, i)
  return text[:cut]


def _strip_answer(s: str) -> str:
  s = s.strip()
  while s and s[-1] in ".;:,":
    s = s[:-1].rstrip()
  if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
    s = s[1:-1].strip()
  return s


def extract_answer_is(text: str) -> str | None:
  """The rest of the line after the last "The answer is" (case-insensitive), trimmed."""
  found = None
  for line in text.splitlines():
    for m in _ANSWER_IS_RE.finditer(line):
      found = m[1]
  if found is None:
    return None
  found = _strip_answer(found)
  return found or None


def _canonical_number(s: str) -> str | None:
  value = number(s, percent="strip")
  if value is None:
    return None
  if value.denominator == 1:
    return str(value.numerator)
  return format_fraction(value)


def format_fraction(value: fractions.Fraction) -> str:
  """A terminating decimal when there is one ("0.25"), else "a/b"."""
  d = value.denominator
  while d % 2 == 0:
    d //= 2
  while d % 5 == 0:
    d //= 5
  if d != 1:
    return f"{value.numerator}/{value.denominator}"
  sign = "-" if value < 0 else ""
  value = abs(value)
  whole, rest = divmod(value.numerator, value.denominator)
  digits = ""
  while rest:
    rest *= 10
    digit, rest = divmod(rest, value.denominator)
    digits += str(digit)
  return f"{sign}{whole}.{digits}"


def extract_gsm(text: str) -> str | None:
  """GSM8K-style numeric answer, canonicalised ("1,000" -> "1000", "18.50" -> "18.5")."""
  hashes = _HASHES_RE.findall(text)
  if hashes:
    return _canonical_number(hashes[-1])
  tail = None
  for line in text.splitlines():
    for m in _ANSWER_IS_RE.finditer(line):
      tail = m[1]
  if tail is not None:
    m = _NUMBER_RE.search(tail.replace("$", ""))
    if m:
      return _canonical_number(m[0])
  numbers = _NUMBER_RE.findall(text.replace("$", ""))
  return _canonical_number(numbers[-1]) if numbers else None


def last_boxed(text: str) -> str | None:
  """Content of the last \\boxed{...} / \\fbox{...} (braces matched), or of "\\boxed 5"."""
  start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
  if start < 0:
    return None
  i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
  if i < len(text) and text[i] == " ":
    m = re.match(r"\s*([^\s$]+)", text[i:])
    return m[1] if m else None
  if i >= len(text) or text[i] != "{":
    return None
  depth, j = 0, i
  while j < len(text):
    if text[j] == "{":
      depth += 1
    elif text[j] == "}":
      depth -= 1
      if depth == 0:
        return text[i + 1:j].strip()
    j += 1
  return None


def extract_math(text: str) -> str | None:
  """MATH-style answer: last \\boxed{}, else "final answer is $x$", else "The answer is x"."""
  boxed = last_boxed(text)
  if boxed is not None:
    return boxed
  found = None
  for line in text.splitlines():
    m = _FINAL_RE.search(line)
    if m:
      found = m[1]
  if found is None:
    found = extract_answer_is(text)
  if found is None:
    return None
  found = _strip_answer(found).strip("$").strip()
  return found or None


def fenced_code(text: str) -> str | None:
  """The first fenced (```python) code block of `text`, or None when it has none."""
  m = _FENCE_RE.search(text)
  return m[1] if m else None


def extract_code(text: str) -> str:
  """The first fenced code block of `text`, or all of it when it has none."""
  block = fenced_code(text)
  return text if block is None else block


def extract(answer_format: str, text: str) -> str | None:
  if answer_format == "answer_is":
    return extract_answer_is(text)
  if answer_format == "gsm":
    return extract_gsm(text)
  if answer_format == "math":
    return extract_math(text)
  if answer_format == "code":
    return extract_code(text)
  raise ValueError(f"unknown answer format {answer_format!r}; "
                   f"known: answer_is, gsm, math, code")


_FRAC_RE = re.compile(r"^(-?)\\[dt]?frac\{\s*(-?\d+)\s*\}\{\s*(-?\d+)\s*\}$")
_SHORT_FRAC_RE = re.compile(r"^(-?)\\[dt]?frac(\d)(\d)$")
_SLASH_RE = re.compile(r"^(-?\d+)\s*/\s*(-?\d+)$")


def number(s: str, percent: str = "reject") -> fractions.Fraction | None:
  """The exact value of a plain number string, or None when `s` is anything else.

  Accepts integers, decimals, thousands commas ("1,000" but not "1,2"), a leading "$" or "\\$",
  "a/b", "\\frac{a}{b}" (also \\dfrac, \\tfrac and "\\frac12"). With percent="strip" a trailing
  "%" / "\\%" is dropped (GSM8K); with "reject" such strings are not plain numbers (MATH, where
  math-verify reads "50\\%" as 0.5).
  """
  s = s.strip().strip("$").strip()
  s = s.replace("\\!", "").replace("\\,", "")
  for prefix in ("\\$", "$"):
    if s.startswith(prefix):
      s = s[len(prefix):]
  if s.endswith("\\%") or s.endswith("%"):
    if percent != "strip":
      return None
    s = s[:-2] if s.endswith("\\%") else s[:-1]
  if re.fullmatch(_NUMBER, s):
    return fractions.Fraction(s.replace(",", ""))
  m = _FRAC_RE.match(s) or _SHORT_FRAC_RE.match(s)
  if m:
    num, den = int(m[2]), int(m[3])
    if den == 0:
      return None
    value = fractions.Fraction(num, den)
    return -value if m[1] else value
  m = _SLASH_RE.match(s)
  if m and int(m[2]) != 0:
    return fractions.Fraction(int(m[1]), int(m[2]))
  return None


def same_plain_answer(got: str, gold: str) -> bool:
  """Equality for synthetic answers: numerically when both are numbers, else as strings after
  trimming and collapsing whitespace (case-sensitive: "AB" is not "ab")."""
  a, b = number(got), number(gold)
  if a is not None and b is not None:
    return a == b
  return " ".join(_strip_answer(got).split()) == " ".join(_strip_answer(gold).split())


def canonical_latex(s: str) -> str:
  """A light LaTeX canonical form for the exact-string fast path (never used to say "unequal")."""
  s = s.strip().strip("$").strip()
  for old, new in (("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""),
                   ("\\right", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""), ("\\ ", ""),
                   ("{,}", ",")):
    s = s.replace(old, new)
  s = "".join(s.split())
  while s.endswith("."):
    s = s[:-1]
  return s
