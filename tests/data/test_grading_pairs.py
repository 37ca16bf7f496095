"""Hand-written (completion, gold, equivalent?) pairs for every answer format, graded end to end."""
from __future__ import annotations

import time

import pytest

from wcse_jax.data import answers, grading
from wcse_jax.data.example import Example
from wcse_jax.data.tasks import get_task

ANSWER_IS = [  # (completion, gold, equivalent)
    ("The answer is 18.", "18", True),
    ("The answer is 18", "18", True),
    ("the answer is 18.", "18", True),
    ("THE ANSWER IS 18.", "18", True),
    ("The answer is: 18", "18", True),
    ("The answer is  18 .", "18", True),
    ("Step 1: 7 + 11 = 18\nThe answer is 18.", "18", True),
    ("The answer is 18.0", "18", True),
    ("The answer is 18.00.", "18", True),
    ("The answer is 018", "18", True),
    ("The answer is -3.", "-3", True),
    ("The answer is 0.", "0", True),
    ("The answer is 1/2", "0.5", True),
    ("The answer is 12.\nThe answer is 18.", "18", True),
    ("The answer is 18.\n\nQuestion: Ann has 3 pens. The answer is 5.", "18", True),
    ("Step 1: 2 + 2 = 5\nThe answer is 18.", "18", True),
    ("The answer is \"18\".", "18", True),
    ("The answer is '18'.", "18", True),
    ("The answer is eay.", "eay", True),
    ("The answer is \"eay\".", "eay", True),
    ("The answer is eay", "eay", True),
    ("the answer is lmentp.", "lmentp", True),
    ("The answer is apple banana cherry.", "apple banana cherry", True),
    ("The answer is apple  banana   cherry", "apple banana cherry", True),
    ("The answer is 'apple banana cherry'.", "apple banana cherry", True),
    ("Concatenating them is \"ab\".\nThe answer is ab.", "ab", True),
    ("The answer is ab;", "ab", True),
    ("The answer is 7", "7", True),
    ("x\nThe answer is 99.", "99", True),
    ("The answer is 100.", "100", True),
    ("The answer is 17.", "18", False),
    ("The answer is 180.", "18", False),
    ("The answer is 1 8", "18", False),
    ("The answer is 3.", "-3", False),
    ("The answer is -18.", "18", False),
    ("The answer is 18.\nThe answer is 12.", "18", False),
    ("The answer is 19.\n\nQuestion: What is 9 + 9? The answer is 18.", "18", False),
    ("18", "18", False),
    ("", "18", False),
    ("The answer is", "18", False),
    ("The answer is .", "18", False),
    ("Step 1: 7 + 11 = 18", "18", False),
    ("The result is 18.", "18", False),
    ("The answer is 18 apples.", "18", False),
    ("The answer is eighteen.", "18", False),
    ("The answer is 0.18", "18", False),
    ("The answer is 1/18", "18", False),
    ("The answer is EAY.", "eay", False),
    ("The answer is ea.", "eay", False),
    ("The answer is eay y", "eay", False),
    ("The answer is yae.", "eay", False),
    ("The answer is \"ea y\".", "eay", False),
    ("The answer is banana apple cherry.", "apple banana cherry", False),
    ("The answer is apple, banana, cherry.", "apple banana cherry", False),
    ("The answer is apple banana.", "apple banana cherry", False),
    ("The answer is apple banana cherry date.", "apple banana cherry", False),
    ("The answer is Apple banana cherry.", "apple banana cherry", False),
    ("The answer is ab\nThe answer is ba", "ab", False),
    ("The answer is 99.", "100", False),
    ("The answer is 7 + 0", "7", False),
    ("Answer: 18", "18", False),
    ("The answer is 1.8", "18", False),
]

GSM = [  # (completion, gold, equivalent)
    ("Natalia sold 48/2 = 24 clips in May.\n#### 72", "72", True),
    ("#### 72", "72", True),
    ("####72", "72", True),
    ("#### $72", "72", True),
    ("#### 1,234", "1234", True),
    ("The answer is 72.", "72", True),
    ("the answer is 72", "72", True),
    ("I think the answer is 72.", "72", True),
    ("The answer is $72.", "72", True),
    ("The answer is $72.00.", "72", True),
    ("The answer is \\$72", "72", True),
    ("The answer is 72 clips.", "72", True),
    ("The answer is 72!", "72", True),
    ("The answer is **72**.", "72", True),
    ("The answer is 72%", "72", True),
    ("The answer is 10%.", "10", True),
    ("The answer is 1,000.", "1000", True),
    ("The answer is 1000 dollars.", "1000", True),
    ("The answer is 1,000,000", "1000000", True),
    ("The answer is $1,200.50", "1200.5", True),
    ("The answer is .5", "0.5", True),
    ("The answer is 3.50 dollars", "3.5", True),
    ("The answer is -5.", "-5", True),
    ("The answer is 72 and not 80.", "72", True),
    ("The answer is 5 hours and 30 minutes", "5", True),
    ("So she sold 72 clips in total.", "72", True),
    ("She had 5 apples and ate 2, so 3 remain.", "3", True),
    ("The total is 3 + 4 = 7", "7", True),
    ("#### 72\nThe answer is 80.", "72", True),
    ("The answer is 72.\n\nQuestion: Tom has 3 apples. The answer is 3.", "72", True),
    ("He pays 2 * $36 = $72.\nThe answer is 72.", "72", True),
    ("The answer is 0", "0", True),
    ("The answer is 072", "72", True),
    ("The answer is 72.0", "72", True),
    ("Step 1: 10 - 4 = 6\nThe answer is 6.", "6", True),
    ("The answer is 71.", "72", False),
    ("The answer is 720.", "72", False),
    ("The answer is 7.2", "72", False),
    ("The answer is 7 2", "72", False),
    ("The answer is 5.", "-5", False),
    ("The answer is twelve.", "12", False),
    ("", "72", False),
    ("no idea", "72", False),
    ("The answer is 1,00", "100", False),
    ("The answer is 12,5", "125", False),
    ("The answer is 80.\n\nQuestion: What is 72? The answer is 72.", "72", False),
    ("#### 80\nThe answer is 72.", "72", False),
    ("The answer is 72.5", "72", False),
    ("The answer is 0.72", "72", False),
    ("The answer is 1,000.", "100", False),
    ("The answer is 100.", "1000", False),
    ("He had 72 apples, then gave away 10, so 62.", "72", False),
    ("The answer is 3 + 4", "7", False),
    ("The answer is 1/2", "2", False),
    ("The answer is -72", "72", False),
    ("#### 7", "72", False),
    ("The answer is 7%", "70", False),
    ("The answer is $7.20", "72", False),
    ("The answer is 27.", "72", False),
    ("The answer is 2", "72", False),
    ("The answer is 1,234", "1243", False),
    ("The answer is 999", "1000", False),
    # Digit groups with other separators, and scientific notation, read exactly.
    ("The answer is 1 000 000", "1000000", True),
    ("The answer is 1\u2009000\u2009000.", "1000000", True),
    ("The answer is 1\u202f250 dollars", "1250", True),
    ("The answer is 12\u00a0500", "12500", True),
    ("#### 1 000", "1000", True),
    ("The answer is 1\\,000", "1000", True),
    ("The answer is $1{,}000$", "1000", True),
    ("The answer is 1,000km", "1000", True),
    ("The answer is 1.5e3", "1500", True),
    ("The answer is 1.5E3.", "1500", True),
    ("The answer is 2.5e-1", "0.25", True),
    ("#### -1.5e3", "-1500", True),
    ("The answer is 2.5 \\times 10^{3}", "2500", True),
    ("The answer is $2 \\times 10^3$", "2000", True),
    ("The answer is 3 \u00d7 10^2 dollars", "300", True),
    ("The answer is 4 \\cdot 10^{2}", "400", True),
    ("The answer is 10^6", "1000000", True),
    ("The answer is 1.234567890123456789e18", "1234567890123456789", True),
    ("The answer is 1 0000", "10000", False),
    ("The answer is 1,000 000", "1000000", False),
    ("The answer is 1.5e3", "15", False),
    ("The answer is 1.5e3", "1.5", False),
    ("The answer is 2.5 \\times 10^{2}", "2500", False),
    ("The answer is 1.234567890123456789e18", "1234567890123456768", False),  # Not via a float.
    ("The answer is 10^6", "10", False),
    ("#### " + "9" * 5000, "9" * 5000, False),
    ("#### 1e999999999", "1", False),
]

MATH = [  # (boxed content in the completion, gold, equivalent)
    ("\\frac{1}{2}", "0.5", True),
    ("0.5", "\\frac{1}{2}", True),
    ("0.50", "0.5", True),
    ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
    ("\\tfrac{1}{2}", "\\frac{1}{2}", True),
    ("\\frac12", "\\frac{1}{2}", True),
    ("\\frac{2}{4}", "\\frac{1}{2}", True),
    ("1/2", "\\frac{1}{2}", True),
    ("-\\frac{1}{2}", "\\frac{-1}{2}", True),
    ("\\frac{-3}{4}", "-0.75", True),
    ("1.5", "\\frac{3}{2}", True),
    ("2", "2.0", True),
    ("1,000", "1000", True),
    ("1000", "1,000", True),
    ("\\$1{,}000", "1000", True),
    ("\\$18.90", "18.9", True),
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}", True),
    ("\\sqrt{2}/2", "\\frac{\\sqrt{2}}{2}", True),
    ("3", "\\sqrt{9}", True),
    ("\\pi/2", "\\frac{\\pi}{2}", True),
    ("\\cos(\\pi/3)", "\\frac{1}{2}", True),
    ("\\log_2 8", "3", True),
    ("2^{10}", "1024", True),
    ("10!", "3628800", True),
    ("\\binom{5}{2}", "10", True),
    ("1\\frac{1}{2}", "1.5", True),
    ("[1,2)", "[1, 2)", True),
    ("(-\\infty, 3) \\cup (4, \\infty)", "(-\\infty,3)\\cup(4,\\infty)", True),
    ("x \\in [2,5]", "[2,5]", True),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
     "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", True),
    ("10\\text{ cm}", "10", True),
    ("10 \\text{cm}^2", "10", True),
    ("90^\\circ", "90", True),
    ("x^2+2x+1", "(x+1)^2", True),
    ("a+b", "b+a", True),
    ("x^2+y^2=4", "y^2+x^2=4", True),
    ("y=2x+3", "y = 2x + 3", True),
    ("k=5", "5", True),
    ("\\{1,2\\}", "\\{2,1\\}", True),
    ("2,3", "3,2", True),
    ("(3,-1)", "(3, -1)", True),
    ("\\text{(A)}", "A", True),
    ("\\text{Monday}", "Monday", True),
    ("\\infty", "\\infty", True),
    ("\\left( 1, 2 \\right)", "(1,2)", True),
    ("5", "6", False),
    ("12", "21", False),
    ("-2", "2", False),
    ("\\frac{1}{2}", "\\frac{1}{3}", False),
    ("\\frac{1}{3}", "0.33", False),
    ("\\sqrt{2}", "2", False),
    ("x^2", "x^3", False),
    ("(1,2]", "[1,2)", False),
    ("(1,2)", "(2,1)", False),
    ("(3,-1)", "(-1,3)", False),
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}",
     False),
    ("\\{2,3\\}", "\\{2,4\\}", False),
    ("-\\infty", "\\infty", False),
    ("\\text{even}", "\\text{odd}", False),
    ("12\\text{ inches}", "1\\text{ foot}", False),
    ("2\\sqrt{3}", "3\\sqrt{2}", False),
    ("\\frac{\\pi}{3}", "\\frac{\\pi}{2}", False),
]


def _examples(pairs):
  return [Example(id=str(i), question="q", answer=gold, solution="")
          for i, (_, gold, _) in enumerate(pairs)]


def _check(task, pairs, texts, **kwargs):
  grades = grading.grade_many(task, _examples(pairs), texts, **kwargs)
  wrong = [(text, gold, want, g.extracted) for (text, gold, want), g, text
           in zip(pairs, grades, texts) if g.correct != want]
  assert not wrong, f"{len(wrong)} mis-graded: {wrong}"
  return grades


def test_enough_pairs_both_ways():
  for pairs in (ANSWER_IS, GSM, MATH):
    assert len(pairs) >= 60
    assert sum(p[2] for p in pairs) >= 20 and sum(not p[2] for p in pairs) >= 15


def test_answer_is_pairs():
  task = get_task("arith_chain", num_train=4, num_validation=2, num_test=2)
  _check(task, ANSWER_IS, [t for t, _, _ in ANSWER_IS])


def test_gsm_pairs():
  task = get_task("gsm8k", paths={"test": "unused.jsonl"})
  _check(task, GSM, [t for t, _, _ in GSM])


def test_math_pairs():
  task = get_task("math", paths={"test": "unused.jsonl"})
  texts = [f"We simplify and get \\boxed{{{p}}}." for p, _, _ in MATH]
  grades = _check(task, MATH, texts, timeout_s=10)
  assert not any(g.timed_out for g in grades)
  assert {g.detail for g in grades} == {"exact", "math-verify"}


@pytest.mark.parametrize("text,expected", [
    ("so \\boxed{1} and then \\boxed{\\frac{1}{\\sqrt{2}}}.", "\\frac{1}{\\sqrt{2}}"),
    ("\\fbox{7}", "7"),
    ("the result is \\boxed 5$.", "5"),
    ("Final Answer: The final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
    ("The answer is $12$.", "12"),
    ("\\boxed{\\text{(B)}}", "\\text{(B)}"),
    ("\\boxed{unbalanced", None),
    ("nothing here", None),
    # An unbalanced box is no answer, and neither is a fallback phrase that holds one.
    ("The answer is \\boxed{5", None),
    ("\\boxed{1} and finally \\boxed{2", None),
    ("\\boxed{\\frac{1}{2}", None),
    ("Final Answer: The final answer is $\\frac{3}{4$. I hope it is correct.", None),
    ("the result is \\boxed 5}.", None),
    ("\\boxed {7}", "7"),
    ("\\boxed {7", None),
    ("\\boxedx 7", None),
])
def test_math_extraction(text, expected):
  assert answers.extract_math(text) == expected


ADVERSARIAL = [
    "10^{10^{10^{10}}}!",
    "9^{9^{9^{9^{9}}}}",
    "(" * 2000 + "1" + ")" * 2000,
]


def test_adversarial_answers_time_out_cleanly():
  task = get_task("math", paths={"test": "unused.jsonl"})
  texts = [f"\\boxed{{{a}}}" for a in ADVERSARIAL] + ["\\boxed{\\frac{1}{2}}", "\\boxed{0.25}"]
  golds = ["2"] * len(ADVERSARIAL) + ["0.5", "\\frac{1}{3}"]
  examples = [Example(id=str(i), question="q", answer=g, solution="")
              for i, g in enumerate(golds)]
  start = time.monotonic()
  grades = grading.grade_many(task, examples, texts, timeout_s=1.5)
  elapsed = time.monotonic() - start
  assert all(not g.correct for g in grades[:3])
  assert all(g.timed_out for g in grades[:3]), [g.detail for g in grades[:3]]
  # The pool recovers: the ordinary items in the same batch are graded normally.
  assert [g.correct for g in grades[3:]] == [True, False]
  assert elapsed < 30
  assert grading.grade(task, examples[3], "\\boxed{\\dfrac{2}{4}}").correct


def test_grade_many_is_fast_on_synthetic_samples():
  task = get_task("arith_chain", num_train=10, num_validation=10, num_test=1000)
  examples = task.examples("test")
  texts = [e.solution for e in examples] * 5
  start = time.monotonic()
  grades = grading.grade_many(task, examples * 5, texts)
  assert time.monotonic() - start < 5
  assert all(g.correct and g.steps_valid for g in grades)


HUGE = "9" * 5000  # Past Python's 4,300-digit int-string limit.


def test_pathological_numbers_are_not_equal_with_a_note():
  gsm = get_task("gsm8k", paths={"test": "unused.jsonl"})
  math = get_task("math", paths={"test": "unused.jsonl"})
  synthetic = get_task("arith_chain", num_train=4, num_validation=2, num_test=2)
  cases = [  # (task, completion, gold); the batches below also hold ordinary items.
      (gsm, f"#### {HUGE}", "9"),
      (gsm, "The answer is 1e999999999", "1"),
      (gsm, "#### 9", HUGE),
      (gsm, "The answer is 1" + ",000" * 1500, "1000"),
      (math, f"\\boxed{{{HUGE}}}", "9"),
      (math, f"\\boxed{{\\frac{{{HUGE}}}{{3}}}}", "3"),
      (synthetic, f"The answer is {HUGE}.", "9"),
  ]
  for task, text, gold in cases:
    examples = [Example(id="bad", question="q", answer=gold, solution=""),
                Example(id="ok", question="q", answer="18", solution="")]
    ok = {"gsm": "#### 18", "math": "\\boxed{18}", "answer_is": "The answer is 18."}
    bad, good = grading.grade_many(task, examples, [text, ok[task.answer_format]])
    assert not bad.correct and bad.detail.startswith("pathological number: "), (text[:40], bad)
    assert good.correct, good


def test_one_failing_item_does_not_fail_its_batch(monkeypatch):
  task = get_task("gsm8k", paths={"test": "unused.jsonl"})
  real = answers.extract_gsm

  def flaky(text):
    if "BOOM" in text:
      raise RuntimeError("a bug that only this text triggers")
    return real(text)

  monkeypatch.setattr(answers, "extract_gsm", flaky)
  examples = [Example(id=str(i), question="q", answer="72", solution="") for i in range(3)]
  grades = grading.grade_many(task, examples, ["#### 72", "BOOM #### 72", "#### 72"])
  assert [g.correct for g in grades] == [True, False, True]
  assert grades[1].detail == "not graded: RuntimeError: a bug that only this text triggers"


def test_unbalanced_box_is_not_an_answer():
  task = get_task("math", paths={"test": "unused.jsonl"})
  example = Example(id="0", question="q", answer="5", solution="")
  for text in ("The answer is \\boxed{5", "\\boxed{4} so finally \\boxed{5"):
    g = grading.grade(task, example, text)
    assert g.extracted is None and not g.correct, g


@pytest.mark.parametrize("fmt,same,different", [
    ("math", ["\\frac{1}{2}", "\\dfrac{1}{2}", "0.5", "1/2", "\\tfrac12"], ["\\frac{1}{3}"]),
    ("math", ["\\sqrt{2}", "\\sqrt {2}"], ["\\sqrt{3}"]),
    ("gsm", ["1000", "1,000", "1000.00"], ["1001"]),
    ("answer_is", ["ab c", " ab  c "], ["abc"]),
])
def test_vote_keys_merge_equivalent_answers_only(fmt, same, different):
  """maj@k votes by this key: equivalent wrong answers must vote together (papers.md §1)."""
  keys = {answers.vote_key(fmt, a) for a in same}
  assert len(keys) == 1
  assert not keys & {answers.vote_key(fmt, a) for a in different}
  assert answers.vote_key(fmt, None) is None
