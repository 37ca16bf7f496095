"""Synthetic task generators: determinism, splits, knobs, step checking and false positives."""
import re

import pytest

from wcse_jax.data import grading
from wcse_jax.data.arith import ArithChain, CompositionalGSM
from wcse_jax.data.tasks import get_task
from wcse_jax.data.words import LastLetterConcat, WordSorting

SMALL = {"arith_chain": dict(num_train=300, num_validation=50, num_test=100),
         "compositional_gsm": dict(num_train=200, num_validation=20, num_test=50),
         "last_letter_concat": dict(num_train_per_length=60, num_validation_per_length=10,
                                    num_test_per_length=40),
         "word_sorting": dict(num_train_per_length=60, num_validation_per_length=10,
                              num_test_per_length=40)}
CLASSES = {"arith_chain": ArithChain, "compositional_gsm": CompositionalGSM,
           "last_letter_concat": LastLetterConcat, "word_sorting": WordSorting}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_deterministic_and_seed_dependent(name):
  a = CLASSES[name](seed=3, **SMALL[name])
  b = CLASSES[name](seed=3, **SMALL[name])
  c = CLASSES[name](seed=4, **SMALL[name])
  for split in ("train", "validation", "test"):
    assert [e.to_dict() for e in a.examples(split)] == [e.to_dict() for e in b.examples(split)]
  assert [e.question for e in a.examples("test")] != [e.question for e in c.examples("test")]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_splits_disjoint_ids_unique_and_references_valid(name):
  task = CLASSES[name](**SMALL[name])
  questions, ids = {}, set()
  for split in ("train", "validation", "test"):
    for e in task.examples(split):
      assert e.split == split and e.id not in ids and e.question not in questions
      ids.add(e.id)
      questions[e.question] = split
      # The reference solution passes its own grader, every step right.
      g = grading.grade(task, e, e.solution)
      assert g.correct and g.steps_valid and not g.false_positive, (e.id, g)
      assert e.solution.endswith(f"The answer is {e.answer}.")
      assert [s.text for s in e.steps] == [l for l in e.solution.splitlines()
                                           if task._is_step_line(l)]


def test_test_split_does_not_depend_on_train_size():
  small = ArithChain(num_train=10, num_validation=5, num_test=50)
  large = ArithChain(num_train=500, num_validation=5, num_test=50)
  assert [e.question for e in small.examples("test")] == [
      e.question for e in large.examples("test")]


def test_arith_chain_format_and_knobs():
  task = ArithChain(num_train=400, num_validation=0, num_test=0, min_steps=3, max_steps=3,
                    max_operand=9, max_value=40, ops=("+", "-"))
  step_re = re.compile(r"^Step (\d+): (\d+) ([-+]) (\d+) = (\d+)$")
  for e in task.examples("train"):
    lines = e.solution.splitlines()
    assert len(lines) == 4 and lines[-1] == f"The answer is {e.answer}."
    values = e.meta["values"]
    assert 1 <= values[0] <= 9 and len(values) == 4
    operations = sorted(tuple(c) for c in e.meta["chain"])
    used = []
    for i, line in enumerate(lines[:-1]):
      m = step_re.match(line)
      assert m and int(m[1]) == i + 1
      a, op, b, r = int(m[2]), m[3], int(m[4]), int(m[5])
      assert (a + b if op == "+" else a - b) == r and 0 <= r <= 40
      assert r == values[i + 1] and values[i] in ((a,) if op == "-" else (a, b))
      used.append((op, b if a == values[i] else a))
    assert sorted(used) == operations  # every operation applied once, in some order
    assert f"has {values[0]} " in e.question and e.question.endswith("have now?")
  with pytest.raises(ValueError, match="ops"):
    ArithChain(ops=("/",))
  with pytest.raises(ValueError, match="min_steps"):
    ArithChain(min_steps=3, max_steps=2)
  with pytest.raises(ValueError, match=r"leave no test chain of \d+ steps"):
    ArithChain(ops=("*",), max_factor=1, num_train=2).examples("train")
  with pytest.raises(ValueError, match="test_steps"):
    ArithChain(test_steps=(0, 4))


def test_arith_chain_test_steps_lengthen_only_the_test_split():
  """test_steps=(4,) beside 2-3-step training chains: every test problem is longer than any
  train or validation problem."""
  knobs = dict(num_train=300, num_validation=50, num_test=60, max_steps=3, max_operand=9,
               max_value=40)
  longer, plain = ArithChain(test_steps=(4,), **knobs), ArithChain(**knobs)
  assert {len(e.steps) for e in longer.examples("test")} == {4}
  for split in ("train", "validation"):
    assert {len(e.steps) for e in longer.examples(split)} <= {2, 3}
  assert longer.examples("test") != plain.examples("test")


def test_arith_chain_defaults_are_small():
  task = get_task("arith_chain")
  examples = task.examples("train")
  assert len(examples) == 2000
  words = set()
  for e in examples:
    assert 2 <= len(e.steps) <= 4
    assert all(int(v) <= 99 for v in e.meta["values"])
    assert len(e.solution) < 130
    words.update(re.findall(r"[A-Za-z]+", e.question))
  assert len(words) < 40  # A tiny, regular vocabulary.


def test_too_many_examples_for_the_knobs_is_an_error():
  task = ArithChain(num_train=5000, num_validation=0, num_test=0, min_steps=1, max_steps=1,
                    max_operand=2, max_value=4, ops=("+",))
  with pytest.raises(ValueError, match="distinct"):
    task.examples("train")


def test_word_task_lengths_follow_genrm():
  ll = get_task("last_letter_concat")
  ws = get_task("word_sorting")
  assert {e.meta["length"] for e in ll.examples("train")} == {2, 3, 4}
  assert {e.meta["length"] for e in ll.examples("validation")} == {2, 3, 4}
  assert {e.meta["length"] for e in ll.examples("test")} == {6}
  assert len(ll.examples("train")) == 3 * 350
  assert {e.meta["length"] for e in ws.examples("test")} == {5}
  assert len(ws.examples("train")) == 3 * 4096
  e = ws.examples("test")[0]
  assert e.answer == " ".join(sorted(e.meta["words"]))
  e = ll.examples("test")[0]
  assert e.answer == "".join(w[-1] for w in e.meta["words"])


def test_compositional_parts_share_pairs():
  knobs = SMALL["compositional_gsm"]
  pair, q1, q2 = (CompositionalGSM(part=p, **knobs).examples("test") for p in ("pair", "q1", "q2"))
  for p, a, b in zip(pair, q1, q2):
    assert p.id.split("/", 2)[2] == a.id.split("/", 2)[2] == b.id.split("/", 2)[2]
    x = p.meta["x"]
    assert a.answer == str(x)
    assert p.answer == b.answer
    assert p.question.startswith("Let X be the answer to Q1.\nQ1: " + a.question)
    assert " has X " in p.question and f" has {x} " in b.question
    assert f"So X = {x}." in p.solution
    assert len(p.steps) == len(a.steps) + len(b.steps)
    assert int(p.answer) > 0


def _inject(solution, step_index, new_result):
  lines = solution.splitlines()
  steps = [i for i, l in enumerate(lines) if l.startswith("Step")]
  i = steps[step_index]
  lines[i] = re.sub(r"= -?\d+$", f"= {new_result}", lines[i])
  return "\n".join(lines)


def test_step_checker_catches_injected_wrong_steps_in_arith():
  task = ArithChain(**SMALL["arith_chain"])
  caught = 0
  for e in task.examples("test"):
    for k in range(len(e.steps)):
      wrong = int(e.steps[k].value) + 1
      text = _inject(e.solution, k, wrong)
      g = grading.grade(task, e, text)
      report = task.check_steps(e, text)
      assert report.marks[k] is False and sum(report.marks) == len(e.steps) - 1
      assert g.steps_valid is False
      if k < len(e.steps) - 1:
        # The final answer line is untouched: right answer, wrong step = a false positive.
        assert g.correct and g.false_positive
      caught += 1
  assert caught > 100


def test_step_checker_missing_extra_and_malformed_steps():
  task = ArithChain(**SMALL["arith_chain"])
  e = task.examples("test")[0]
  lines = e.solution.splitlines()
  missing = "\n".join(lines[1:])
  r = task.check_steps(e, missing)
  assert not r.valid and len(r.marks) == len(e.steps)
  extra = "\n".join(lines[:-1] + ["Step 9: 1 + 1 = 2", lines[-1]])
  r = task.check_steps(e, extra)
  assert not r.valid and r.marks[:len(e.steps)] == (True,) * len(e.steps) and not r.marks[-1]
  malformed = e.solution.replace(e.steps[0].text, e.steps[0].text + " apples")
  assert task.check_steps(e, malformed).marks[0] is False
  spaced = e.solution.replace(" + ", "+").replace(" = ", "=")
  assert task.check_steps(e, spaced).valid


def test_step_checker_words_tasks():
  ll = LastLetterConcat(**SMALL["last_letter_concat"])
  e = ll.examples("test")[0]
  w = e.meta["words"][1]
  text = e.solution.replace(f'The last letter of "{w}" is "{w[-1]}".',
                            f'The last letter of "{w}" is "{w[0]}".')
  g = grading.grade(ll, e, text)
  assert g.correct and g.false_positive and g.step_marks[1] is False and len(g.step_marks) == 7
  assert sum(g.step_marks) == 6
  ws = WordSorting(**SMALL["word_sorting"])
  e = ws.examples("test")[0]
  first = e.steps[0].value
  other = [w for w in e.meta["words"] if w != first][0]
  text = e.solution.replace(f'is "{first}".', f'is "{other}".', 1)
  g = grading.grade(ws, e, text)
  assert g.correct and g.false_positive and g.step_marks[0] is False


def test_verification_rationale():
  task = ArithChain(**SMALL["arith_chain"])
  e = task.examples("test")[0]
  good = task.verification_rationale(e, e.solution)
  assert good.count("is correct.") == len(e.steps) + 1 and "incorrect" not in good
  bad = task.verification_rationale(e, _inject(e.solution, 0, 1000))
  assert "Step 1:" in bad and "incorrect; it should be: " + e.steps[0].text in bad
  wrong_answer = e.solution.replace(f"The answer is {e.answer}.", "The answer is 1000.")
  assert f"The final answer 1000 is incorrect; the answer is {e.answer}." in \
      task.verification_rationale(e, wrong_answer)
  ws = WordSorting(**SMALL["word_sorting"])
  e = ws.examples("test")[1]
  assert "missing" in ws.verification_rationale(e, "The answer is x.")


def test_unknown_task_and_knob():
  with pytest.raises(ValueError, match="known tasks: arith_chain, compositional_gsm, gsm8k"):
    get_task("gsm9k")
  with pytest.raises(TypeError, match="max_operand"):
    get_task("arith_chain", operand_cap=3)
  with pytest.raises(ValueError, match="no split 'dev'"):
    get_task("word_sorting").examples("dev")


def _content(task_name, example):
  """The problem's content, computed here independently of the tasks' own dedupe keys."""
  if task_name in ("arith_chain", "compositional_gsm"):
    def runs(start, chain):
      out, current = [start], []
      for op, b in chain:
        if op == "*":
          out += [tuple(sorted(current)), ("*", b)] if current else [("*", b)]
          current = []
        else:
          current.append((op, b))
      return tuple(out + ([tuple(sorted(current))] if current else []))
    def parse(question):  # from the story's sentences, not from the task's metadata
      start, chain = re.search(r"has (\w+) ", question)[1], []
      for sentence in question.split(". "):
        for pattern, op in ((r"finds (\d+) more", "+"), (r"loses (\d+)", "-"),
                            (r"has (\d+) times as many", "*")):
          m = re.search(pattern, sentence)
          if m:
            chain.append((op, int(m[1])))
      return runs(start, chain)
    if task_name == "arith_chain":
      return parse(example.question)
    return parse(example.meta["q1"]), parse(example.meta["q2"])
  words = example.meta["words"]
  return tuple(sorted(words)) if task_name == "word_sorting" else tuple(words)


def _knob_sets():
  from configs import quickstart
  quick = quickstart.get_config()
  yield "arith_chain", "quickstart", dict(quick.task.knobs), quick.sampling.num_problems
  from configs import verifiers
  ver = verifiers.get_config("arith_chain")
  yield "arith_chain", "verifiers", dict(ver.task.knobs), ver.sampling.num_problems
  for name in sorted(CLASSES):
    yield name, "default", {}, 300


@pytest.mark.parametrize("name,label,knobs,held_out", list(_knob_sets()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_no_problem_content_is_shared_between_splits_or_with_the_zoo(name, label, knobs,
                                                                    held_out):
  """Contamination: train vs validation/test, and the zoo's training problems (train after the
  first `held_out`) vs the held-out problems the sample stage draws solutions for."""
  task = get_task(name, **knobs)
  content = {split: [_content(name, e) for e in task.examples(split)]
             for split in ("train", "validation", "test")}
  train = set(content["train"])
  assert len(train) == len(content["train"])
  for split in ("validation", "test"):
    assert not train & set(content[split]), split
  zoo, sampled = content["train"][held_out:], content["train"][:held_out]
  assert not set(zoo) & set(sampled)


def test_arith_chain_accepts_every_valid_path_and_only_those():
  task = ArithChain(num_train=0, num_validation=0, num_test=300, min_steps=3, max_steps=4)
  e = next(e for e in task.examples("test")
           if len(e.meta["runs"]) >= 2 and any(len(r) >= 2 for r in e.meta["runs"]))
  start, runs = e.meta["start"], [[tuple(op) for op in run] for run in e.meta["runs"]]

  def text(order_of_runs, swap=False):
    lines, value = [], start
    for run in order_of_runs:
      for op, b in run:
        result = value + b if op == "+" else value - b if op == "-" else value * b
        left, right = (b, value) if swap and op != "-" else (value, b)
        lines.append(f"Step {len(lines) + 1}: {left} {op} {right} = {result}")
        value = result
    return "\n".join(lines + [f"The answer is {value}."])

  story = text(runs)
  reversed_runs = text([list(reversed(r)) for r in runs])
  swapped = text(runs, swap=True)
  for solution in (story, reversed_runs, swapped):
    g = grading.grade(task, e, solution)
    assert g.correct and g.steps_valid, solution
  # Moving an operation across a multiplication (or across runs) is wrong, though the
  # arithmetic of each step may be right.
  flat = [op for run in runs for op in run]
  moved = text([[flat[-1]] + flat[:-1]])
  assert not task.check_steps(e, moved).valid
  # "b - a" for "a - b" is wrong.
  sub = next(((i, b) for i, (op, b) in enumerate(flat) if op == "-"), None)
  if sub is not None:
    line = story.splitlines()[sub[0]]
    a = int(line.split(": ")[1].split(" - ")[0])
    wrong = story.replace(line, line.replace(f"{a} - {sub[1]}", f"{sub[1]} - {a}"))
    assert not task.check_steps(e, wrong).valid


def test_arith_chain_references_vary_in_path():
  task = get_task("arith_chain")
  examples = task.examples("train")
  swapped = reordered = 0
  for e in examples:
    value = e.meta["start"]
    story = [tuple(op) for op in e.meta["chain"]]
    applied = []
    for step in e.steps:
      a, op, b, r = task._step_key(step.text)
      operand = b if a == value else a
      swapped += operand == a and op != "-" and a != b
      applied.append((op, operand))
      value = r
    reordered += applied != story
  assert swapped > len(examples) // 4 and reordered > len(examples) // 10
