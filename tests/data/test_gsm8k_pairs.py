"""Compositional GSM pairs built from GSM8K files (data/gsm8k_pairs.py), on tiny files in the
official format: the substitution through the calculator annotations, the drops it must make, and
the three parts of the task."""
import json
from fractions import Fraction

import pytest

from wcse_jax.data import grading, gsm8k_pairs as gp


def _record(question, answer):
  return {"question": question, "answer": answer}


APPLES = _record(
    "Tom has 12 apples. He buys 5 bags with 3 apples in each bag. How many apples does he have?",
    "He buys 5*3=<<5*3=15>>15 apples.\nHe has 12+15=<<12+15=27>>27 apples.\n#### 27")
TICKETS = _record(
    "A ticket costs $9 and Mia buys 4 tickets for her friends. How much does she pay?",
    "She pays 9 * 4 = $<<9*4=36>>36.\n#### 36")
PENS = _record(
    "Ana had 40 pens and gave away 15 of them. How many pens does she have left?",
    "She has 40 - 15 = <<40-15=25>>25 pens left.\n#### 25")
COOKIES = _record(
    "Leo bakes 11 cookies in the morning and 19 in the evening. How many cookies is that?",
    "He bakes 11 + 19 = <<11+19=30>>30 cookies.\n#### 30")
# Unusable as Q2, each for one reason.
UNANNOTATED = _record(
    "Sam has 7 marbles and wins 8 more. How many marbles does he have?",
    "Sam has 7 + 8 = 15 marbles.\n#### 15")
HIDDEN_STEP = _record(
    "A box has 6 rows of 7 eggs. 10 eggs break. How many eggs are whole?",
    "There are 42 eggs.\nThe whole ones are 42-10=<<42-10=32>>32.\n#### 32")
TWO_MEANINGS = _record(
    "Kim reads 10 pages a day for 3 days, then 20 more pages. How many pages does she read?",
    "She reads 10*3=<<10*3=30>>30 pages.\nThen 30-20=<<30-20=10>>10 more than 20, so "
    "10+20=<<10+20=30>>30.\n#### 30")
ROUNDED = _record(
    "Three friends share a $10 bill equally. How much does each pay, in cents?",
    "Each pays 10/3=<<10/3=3.33>>3.33 dollars.\nThat is 3.33*100=<<3.33*100=333>>333 cents.\n"
    "#### 333")
NO_INTEGER = _record(
    "A shirt costs $12.50 and is 20% off. How much does it cost now, in cents?",
    "It costs 12.50*.8=<<12.50*.8=10>>10 dollars, 10*100=<<10*100=1000>>1000 cents.\n#### 1000")


def _write(folder, train, test):
  folder.mkdir(exist_ok=True)
  for split, rows in (("train", train), ("test", test)):
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(folder)


def test_evaluate_is_exact():
  assert gp.evaluate("1/3*3") == 1
  assert gp.evaluate("2+3*4-(6/4)") == Fraction(25, 2)
  assert gp.evaluate("2**3*.5") == 4
  assert gp.evaluate("-5+1,000") == 995
  with pytest.raises(gp.Unusable, match="grammar"):
    gp.evaluate("max(3, 4)")


def test_substitution_recomputes_through_the_annotations_and_the_prose():
  sub = gp.substitution(APPLES["question"], APPLES["answer"])
  assert sub.mention.value == 12  # the first number X may replace
  assert APPLES["question"][sub.mention.start:sub.mention.end] == "12"
  answer, official = sub.apply(Fraction(20))
  assert answer == 35
  assert official == ("He buys 5*3=<<5*3=15>>15 apples.\nHe has 20+15=<<20+15=35>>35 apples.\n"
                      "#### 35")
  # X = the replaced number gives the official answer back.
  assert sub.apply(Fraction(12))[0] == 27


def test_an_intermediate_result_carries_the_change():
  sub = gp.substitution(TICKETS["question"], TICKETS["answer"])
  assert sub.mention.value == 9
  assert sub.apply(Fraction(7)) == (28, "She pays 7 * 4 = $<<7*4=28>>28.\n#### 28")


@pytest.mark.parametrize("record,reason", [
    (UNANNOTATED, "the final answer is not the result of an annotated step"),
    (HIDDEN_STEP, "neither in the question nor an earlier result"),
    (TWO_MEANINGS, "stands for two quantities"),
    (ROUNDED, "a rounded step depends on X"),
    (NO_INTEGER, "no integer in the question that X can replace"),
])
def test_ambiguous_recomputations_are_refused(record, reason):
  with pytest.raises(gp.Unusable, match=reason):
    gp.substitution(record["question"], record["answer"])


def test_a_number_the_words_also_imply_is_not_replaced():
  # 12 is also "a dozen": a bare 12 in a step could be either, so 12 is skipped for 4.
  record = _record("Ben has 12 hens. A dozen eggs cost $4. How much do 5 dozens cost?",
                   "5 dozens cost 5*4=<<5*4=20>>20 dollars.\n#### 20")
  assert gp.substitution(record["question"], record["answer"]).mention.value == 4


def test_pairs_keep_positive_integer_answers_close_to_the_original(tmp_path):
  data = _write(tmp_path / "gsm", [APPLES, TICKETS], [APPLES, TICKETS, PENS, COOKIES,
                                                       UNANNOTATED, HIDDEN_STEP])
  task = gp.GSM8KCompositional(part="pair", data_dir=data, answer_ratio=2.0)
  report = task.report("test")
  assert report["problems"] == 6 and report["q2_candidates"] == 4
  assert report["dropped"]["Q2: the final answer is not the result of an annotated step"] == 1
  assert sum(report["dropped"].values()) + report["pairs"] == 6
  pairs, again = gp.build_pairs(gp.tasks.get_task("gsm8k", data_dir=data).examples("test"))
  assert [p.key for p in pairs] == [e.meta["pair"] for e in task.examples("test")]
  assert again == report
  q1s, q2s = [p.q1.id for p in pairs], [p.q2.id for p in pairs]
  assert len(set(q1s)) == len(q1s) and len(set(q2s)) == len(q2s)
  for p in pairs:
    assert p.q1.id != p.q2.id
    original = int(p.q2.answer)
    assert p.answer > 0 and original / 2 <= p.answer <= original * 2
    assert p.q2_question_with_x.count("X") == 1 + p.q2.question.count("X")
    assert p.q2_question == p.q2_question_with_x.replace("X", str(p.x), 1)


def test_the_three_parts_list_the_same_pairs_and_grade_as_gsm8k(tmp_path):
  data = _write(tmp_path / "gsm", [APPLES, TICKETS, PENS, COOKIES], [APPLES, TICKETS, PENS,
                                                                     COOKIES])
  parts = {p: gp.GSM8KCompositional(part=p, data_dir=data) for p in ("q1", "q2", "pair")}
  examples = {p: t.examples("test") for p, t in parts.items()}
  keys = [ex.meta["pair"] for ex in examples["pair"]]
  assert keys and all([ex.meta["pair"] for ex in examples[p]] == keys for p in examples)
  for q1, q2, pair in zip(examples["q1"], examples["q2"], examples["pair"]):
    x = pair.meta["x"]
    assert q1.answer == str(x)  # X is Q1's answer
    assert q2.question == pair.meta["q2_with_x"].replace("X", str(x), 1)
    assert pair.question == gp.PAIR_TEMPLATE.format(q1=q1.question, q2=pair.meta["q2_with_x"])
    assert pair.answer == q2.answer
    assert f"So X = {x}." in pair.solution and pair.solution.endswith(f"The answer is "
                                                                      f"{pair.answer}.")
    assert "<<" not in q2.solution and q2.solution.endswith(f"The answer is {q2.answer}.")
    # Each part's reference solution is right by the GSM8K grader.
    for part, ex in (("q1", q1), ("q2", q2), ("pair", pair)):
      assert grading.grade(parts[part], ex, ex.solution).correct
  # Train pairs exist too: they are the few-shot exemplars.
  assert parts["pair"].examples("train")
  with pytest.raises(ValueError, match="part must be"):
    gp.GSM8KCompositional(part="q3", data_dir=data)
