"""Final-answer extraction for every answer format, and the cheap in-process comparisons.

Formats:
  "answer_is"  synthetic tasks: the text after the last "The answer is" on its line.
  "gsm"        GSM8K: the number after the last "####", else after the last "The answer is",
               else the last number in the text. Numbers are read as a model writes them:
               digit groups of three with one separator throughout (commas, spaces, thin or
               non-breaking spaces, LaTeX "\\," or "{,}": "1 000 000" -> "1000000"), decimals,
               and scientific notation, read exactly as a decimal fraction, never through a float
               ("1.5e3" -> "1500", "2.5 \\times 10^{3}" -> "2500", "10^6", "×", "\\cdot", "*",
               "x"). "$", units and a trailing period are dropped ("$1,000.00 dollars." ->
               "1000"); "%" is dropped too, because GSM8K gold answers to percentage questions are
               the bare number.
  "math"       MATH: the content of the last \\boxed{...} (or \\fbox), else Minerva's
               "The final answer is $...$", else "The answer is ...". A \\boxed{ that is never
               closed (a generation cut mid-answer) is no answer: extraction then falls back to
               the two phrases, and a phrase whose text has unbalanced braces (e.g. "The answer
               is \\boxed{5") is no answer either, so the result is None.
  "code"       HumanEval: the first fenced code block if there is one, else the text as is.

Only exact, unambiguous cases are decided here (`number`); everything else in MATH goes to
math-verify, through `grading.py`. A number of more than MAX_DIGITS digits (counting a
scientific exponent) is no one's intended answer and is costly to convert (Python refuses int
strings over 4,300 digits): `number` and the GSM reader raise PathologicalNumber for it, which
the grader turns into "not equal" with a note.
"""
from __future__ import annotations

import fractions
import re
from typing import Sequence

MAX_DIGITS = 1000

_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
# GSM8K: digit groups of three with one separator throughout (the backreference), decimals, and
# scientific notation ("1.5e3", "2.5 \times 10^{3}", a bare "10^6").
_GROUP_SEPARATORS = ("\\,", "{,}", ",", " ", "\u00a0", "\u2009", "\u202f")  # Longest first.
_GROUPED = r"\d{1,3}(?P<sep>,|\\,|\{,\}|[ \u00a0\u2009\u202f])\d{3}(?:(?P=sep)\d{3})*(?!\d)"
_TIMES = r"(?:\\times|\\cdot|\u00d7|\u00b7|\*|x)"
_POWER = r"10\s*\^\s*(?:\{\s*[+-]?\d+\s*\}|[+-]?\d+)"
_GSM_NUMBER = (rf"-?(?:{_POWER}|(?:(?:{_GROUPED}|\d+)(?:\.\d+)?|\.\d+)"
               rf"(?:[eE][+-]?\d+|\s*{_TIMES}\s*{_POWER})?)")
_GSM_NUMBER_RE = re.compile(_GSM_NUMBER)
_POWER_END_RE = re.compile(r"10\s*\^\s*\{?\s*([+-]?\d+)\s*\}?$")
_TIMES_END_RE = re.compile(rf"\s*{_TIMES}\s*$")
_E_NOTATION_RE = re.compile(r"(.*?)[eE]([+-]?\d+)$")
_ANSWER_IS_RE = re.compile(r"the answer is\s*:?\s*(.*)", re.IGNORECASE)
_HASHES_RE = re.compile(r"####\s*\$?\s*(?P<number>" + _GSM_NUMBER + ")")
_FINAL_RE = re.compile(r"final answer is\s*(.*?)(?:\.?\s*I hope it is correct.*)?$",
                       re.IGNORECASE)
_FENCE_RE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


class PathologicalNumber(ValueError):
  """A number of more than MAX_DIGITS digits (see the module doc)."""


def _check_size(text: str, exponent: str = "0") -> int:
  """The exponent's value, after checking that `text`'s digits plus the exponent stay within
  MAX_DIGITS (the exponent's own length first, so that a huge one is never converted)."""
  if len(exponent.lstrip("+-")) > 6:
    raise PathologicalNumber(f"a number with a {len(exponent)}-character exponent")
  size = sum(c.isdigit() for c in text) + abs(int(exponent))
  if size > MAX_DIGITS:
    raise PathologicalNumber(f"a number of {size} digits (more than {MAX_DIGITS})")
  return int(exponent)


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


def gsm_number(text: str) -> fractions.Fraction:
  """The exact value of a number matched by the GSM reader ("1 000", "1.5e3", "2 \\times 10^3")."""
  s = text.strip()
  sign = -1 if s.startswith("-") else 1
  s = s.lstrip("-").strip()
  exponent = "0"
  m = _POWER_END_RE.search(s)
  if m:
    exponent, s = m[1], _TIMES_END_RE.sub("", s[:m.start()]) or "1"
  else:
    m = _E_NOTATION_RE.fullmatch(s)
    if m:
      s, exponent = m[1], m[2]
  for separator in _GROUP_SEPARATORS:
    s = s.replace(separator, "")
  power = _check_size(s, exponent)
  return sign * fractions.Fraction(s) * fractions.Fraction(10) ** power


def _canonical_number(text: str) -> str:
  value = gsm_number(text)
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
  """GSM8K-style numeric answer, canonicalised ("1,000" -> "1000", "18.50" -> "18.5",
  "1.5e3" -> "1500"). Raises PathologicalNumber when that answer is too long (module doc)."""
  hashes = None
  for hashes in _HASHES_RE.finditer(text):
    pass
  if hashes is not None:
    return _canonical_number(hashes["number"])
  tail = None
  for line in text.splitlines():
    for m in _ANSWER_IS_RE.finditer(line):
      tail = m[1]
  if tail is not None:
    m = _GSM_NUMBER_RE.search(tail.replace("$", ""))
    if m:
      return _canonical_number(m[0])
  last = None
  for last in _GSM_NUMBER_RE.finditer(text.replace("$", "")):
    pass
  return None if last is None else _canonical_number(last[0])


def _balanced(s: str) -> bool:
  depth = 0
  for c in s:
    depth += (c == "{") - (c == "}")
    if depth < 0:
      return False
  return depth == 0


def last_boxed(text: str) -> str | None:
  """Content of the last \\boxed{...} / \\fbox{...} (braces matched), or of "\\boxed 5".
  None when there is none, or when the last one is unbalanced (never closed, e.g. a generation
  cut mid-answer): what it holds is not known to be the answer."""
  start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
  if start < 0:
    return None
  i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
  m = re.match(r"\s*", text[i:])
  j = i + m.end()
  if j < len(text) and text[j] == "{":
    depth = 0
    for k in range(j, len(text)):
      depth += (text[k] == "{") - (text[k] == "}")
      if depth == 0:
        return text[j + 1:k].strip()
    return None
  if j == i:  # "\\boxedx" is another command, not a box.
    return None
  m = re.match(r"[^\s$]+", text[j:])
  return m[0] if m and _balanced(m[0]) else None


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
  # A box last_boxed did not take, or any unbalanced brace, means the answer is cut or garbled.
  if "\\boxed" in found or "\\fbox" in found or not _balanced(found):
    return None
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
  math-verify reads "50\\%" as 0.5). Raises PathologicalNumber for a number of more than
  MAX_DIGITS digits.
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
    _check_size(s)
    return fractions.Fraction(s.replace(",", ""))
  m = _FRAC_RE.match(s) or _SHORT_FRAC_RE.match(s)
  if m:
    _check_size(m[2] + m[3])
    num, den = int(m[2]), int(m[3])
    if den == 0:
      return None
    value = fractions.Fraction(num, den)
    return -value if m[1] else value
  m = _SLASH_RE.match(s)
  if m:
    _check_size(m[1] + m[2])
    if int(m[2]) != 0:
      return fractions.Fraction(int(m[1]), int(m[2]))
  return None


def same_plain_answer(got: str, gold: str) -> bool:
  """Equality for synthetic answers: numerically when both are numbers, else as strings after
  trimming and collapsing whitespace (case-sensitive: "AB" is not "ab"). Raises
  PathologicalNumber like `number`."""
  a, b = number(got), number(gold)
  if a is not None and b is not None:
    return a == b
  return " ".join(_strip_answer(got).split()) == " ".join(_strip_answer(gold).split())


def vote_key(answer_format: str, answer: str | None) -> str | None:
  """The canonical form majority votes compare answers by, so that equivalent answers written
  differently vote together whether they are right or wrong: an exact number is its reduced
  fraction ("\\frac{1}{2}", "\\dfrac{1}{2}", "0.5" and "1/2" all give "1/2"); other MATH answers
  their light LaTeX canonical form; other answers their text with whitespace collapsed; code
  its text. None stays None (no answer: an abstention)."""
  if answer is None:
    return None
  if answer_format == "code":
    return answer
  try:
    value = number(answer, percent="strip" if answer_format == "gsm" else "reject")
  except PathologicalNumber:
    value = None
  if value is not None:
    return f"{value.numerator}/{value.denominator}"
  if answer_format == "math":
    return canonical_latex(answer)
  return " ".join(_strip_answer(answer).split())


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
