"""k-shot / zero-shot prompt builders, exemplar choice and stop strings."""
import pytest

from wcse_jax.data import answers, grading, prompts
from wcse_jax.data.tasks import get_task


@pytest.fixture(scope="module")
def task():
  return get_task("arith_chain", num_train=50, num_validation=10, num_test=10)


def test_zero_shot_and_target(task):
  e = task.examples("test")[0]
  assert prompts.build_prompt(task, e, 0) == f"Question: {e.question}\nAnswer:"
  assert prompts.target(task, e.solution) == " " + e.solution
  assert prompts.stop_strings(task) == ("\n\nQuestion:",)


def test_k_shot_exemplars_come_from_train_and_are_nested(task):
  e = task.examples("test")[3]
  train_ids = {x.id for x in task.examples("train")}
  four = prompts.exemplars(task, 4, seed=1)
  eight = prompts.exemplars(task, 8, seed=1)
  assert eight[:4] == four and {x.id for x in eight} <= train_ids
  prompt8 = prompts.build_prompt(task, e, 8, seed=1)
  blocks = prompt8.split("\n\n")
  assert len(blocks) == 9 and blocks[-1] == f"Question: {e.question}\nAnswer:"
  for block, shot in zip(blocks, eight):
    assert block == f"Question: {shot.question}\nAnswer: {shot.solution}"
  prompt4 = prompts.build_prompt(task, e, 4, seed=1)
  assert prompt8.startswith(prompt4[:prompt4.rindex("\n\nQuestion:")])
  assert prompts.build_prompt(task, e, 4, seed=1) == prompt4
  assert prompts.exemplars(task, 4, seed=2) != four
  # The same exemplars for every evaluated example (fixed by the seed).
  other = task.examples("test")[5]
  assert prompts.build_prompt(task, other, 4, seed=1).rsplit("\n\n", 1)[0] == \
      prompt4.rsplit("\n\n", 1)[0]


def test_a_train_question_is_never_its_own_exemplar(task):
  first = prompts.exemplars(task, 1, seed=0)[0]
  shots = prompts.exemplars(task, 3, seed=0, exclude_id=first.id)
  assert first.id not in {s.id for s in shots}
  prompt = prompts.build_prompt(task, first, 3, seed=0)
  assert prompt.count(first.question) == 1
  with pytest.raises(ValueError, match="only 50 usable"):
    prompts.exemplars(task, 51, seed=0)


def test_stop_strings_cut_a_runaway_completion(task):
  e = task.examples("test")[0]
  runaway = " " + e.solution + "\n\nQuestion: Ann has 1 pens. How many?\nAnswer: The answer is 3."
  cut = answers.truncate_at_stop(runaway, prompts.stop_strings(task))
  assert cut == " " + e.solution
  assert grading.grade(task, e, runaway).correct


def test_styles_of_other_tasks(tmp_path):
  ll = get_task("last_letter_concat")
  assert prompts.build_prompt(ll, ll.examples("test")[0]).startswith("Question: Take the last")
  math = get_task("math", paths={"test": "x"})
  assert prompts.stop_strings(math) == ("\n\nProblem:",)
  assert prompts.query(math, "1+1?") == "Problem:\n1+1?\n\nSolution:"
  he = get_task("humaneval")
  assert "\ndef" in prompts.stop_strings(he) and "\nprint" in prompts.stop_strings(he)
