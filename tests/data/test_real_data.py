"""GSM8K / MATH / MATH500 / HumanEval loaders on small files in the official formats."""
import gzip
import json
import logging
import sys

import pandas as pd
import pytest

from wcse_jax.data import grading, prompts
from wcse_jax.data.sources import DataError
from wcse_jax.data.tasks import get_task

GSM_TRAIN = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
                 "many clips in May. How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = "
               "<<48+24=72>>72 clips altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
                 "babysitting. How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned "
               "0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"},
    {"question": "A farm has 1200 cows and sells 3 of them. How many are left?",
     "answer": "1200 - 3 = <<1200-3=1197>>1197 cows are left.\n#### 1,197"},
    {"question": "Tom has 5 apples and eats 2. How many are left?",
     "answer": "5 - 2 = <<5-2=3>>3\n#### 3"},
]
GSM_TEST = [
    {"question": "Janet has 3 ducks and buys 4 more. How many ducks does she have?",
     "answer": "3 + 4 = <<3+4=7>>7\n#### 7"},
    {"question": "A robe takes 2 bolts of blue fiber and half that much white fiber. "
                 "How many bolts in total does it take?",
     "answer": "It takes 2/2=<<2/2=1>>1 bolt of white fiber\nSo the total amount of fabric is "
               "2+1=<<2+1=3>>3 bolts of fabric\n#### 3"},
]


def _jsonl(path, records, gz=False):
  text = "".join(json.dumps(r) + "\n" for r in records)
  if gz:
    with gzip.open(path, "wt") as f:
      f.write(text)
  else:
    path.write_text(text)
  return str(path)


@pytest.fixture
def gsm_dir(tmp_path):
  _jsonl(tmp_path / "train.jsonl", GSM_TRAIN)
  _jsonl(tmp_path / "test.jsonl", GSM_TEST)
  return str(tmp_path)


def test_gsm8k_official_format(gsm_dir):
  task = get_task("gsm8k", data_dir=gsm_dir)
  train, test = task.examples("train"), task.examples("test")
  assert [e.answer for e in train] == ["72", "10", "1197", "3"]
  assert [e.id for e in test] == ["gsm8k/test/00000", "gsm8k/test/00001"]
  e = train[0]
  assert e.solution == ("Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips "
                        "altogether in April and May.\nThe answer is 72.")
  assert e.meta["official_answer"] == GSM_TRAIN[0]["answer"] and e.steps == ()
  for ex in train + test:
    g = grading.grade(task, ex, ex.solution)
    assert g.correct and g.steps_valid is None
    assert grading.grade(task, ex, ex.meta["official_answer"]).correct
  with pytest.raises(ValueError, match="no split 'validation'"):
    task.examples("validation")


def test_gsm8k_parquet_and_gzip_sources(tmp_path):
  pd.DataFrame(GSM_TRAIN).to_parquet(tmp_path / "train.parquet")
  _jsonl(tmp_path / "test.jsonl.gz", GSM_TEST, gz=True)
  task = get_task("gsm8k", paths={"train": str(tmp_path / "train.parquet"),
                                  "test": str(tmp_path / "test.jsonl.gz")})
  assert [e.answer for e in task.examples("train")] == ["72", "10", "1197", "3"]
  assert [e.answer for e in task.examples("test")] == ["7", "3"]
  by_dir = get_task("gsm8k", data_dir=str(tmp_path))
  assert [e.question for e in by_dir.examples("test")] == [r["question"] for r in GSM_TEST]


def test_validation_carved_from_train(gsm_dir):
  task = get_task("gsm8k", data_dir=gsm_dir, validation_size=1, validation_seed=5)
  train, val = task.examples("train"), task.examples("validation")
  assert len(train) == 3 and len(val) == 1 and val[0].split == "validation"
  assert {e.id for e in train} | {e.id for e in val} == {f"gsm8k/train/{i:05d}" for i in range(4)}
  again = get_task("gsm8k", data_dir=gsm_dir, validation_size=1, validation_seed=5)
  assert again is task
  other = get_task("gsm8k", data_dir=gsm_dir, validation_size=1, validation_seed=6)
  assert other.examples("validation")[0].id in {e.id for e in train + val}
  # Exemplars for a validation question come from the (reduced) train split only.
  shots = prompts.exemplars(task, 3, seed=0, exclude_id=val[0].id)
  assert {e.id for e in shots} == {e.id for e in train}


def test_malformed_line_names_file_and_line(tmp_path, caplog):
  path = tmp_path / "test.jsonl"
  lines = [json.dumps(GSM_TEST[0]), "{not json", "", json.dumps(GSM_TEST[1]), "[1]"]
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(DataError, match=r"test\.jsonl:2: malformed JSON line"):
    get_task("gsm8k", paths={"test": str(path)}).examples("test")
  with caplog.at_level(logging.WARNING):
    task = get_task("gsm8k", paths={"test": str(path)}, skip_malformed=True)
    assert [e.answer for e in task.examples("test")] == ["7", "3"]
  assert "skipped 2 malformed line(s)" in caplog.text and "test.jsonl:5" in caplog.text


def test_missing_field_and_bad_answer_are_named(tmp_path):
  path = _jsonl(tmp_path / "a.jsonl", [GSM_TEST[0], {"question": "q", "solution": "s"}])
  with pytest.raises(DataError, match=r"a\.jsonl:2: missing field 'answer' \(record has: "
                                      r"\['question', 'solution'\]\)"):
    get_task("gsm8k", paths={"test": path}).examples("test")
  path = _jsonl(tmp_path / "b.jsonl", [{"question": "q", "answer": "no final line"}])
  with pytest.raises(DataError, match=r"b\.jsonl:1: field 'answer' has no '#### <number>'"):
    get_task("gsm8k", paths={"test": path}).examples("test")
  pd.DataFrame([{"problem": "p"}]).to_parquet(tmp_path / "m.parquet")
  with pytest.raises(DataError, match=r"m\.parquet: missing field 'solution'"):
    get_task("math", paths={"test": str(tmp_path / "m.parquet")}).examples("test")
  with pytest.raises(DataError, match="no such file"):
    get_task("gsm8k", paths={"test": str(tmp_path / "none.jsonl")}).examples("test")
  with pytest.raises(ValueError, match="give paths="):
    get_task("gsm8k")


MATH_RECORDS = {
    "train/algebra/1.json": {"problem": "Solve $x + 1 = 3$.", "level": "Level 1",
                             "type": "Algebra", "solution": "$x = \\boxed{2}$."},
    "train/geometry/5.json": {"problem": "Area of a unit square?", "level": "Level 2",
                              "type": "Geometry", "solution": "It is $\\boxed{1}$."},
    "test/algebra/10.json": {"problem": "What is $\\frac{1}{2} + \\frac{1}{4}$?",
                             "level": "Level 2", "type": "Algebra",
                             "solution": "We get $\\frac{2}{4} + \\frac{1}{4} = "
                                         "\\boxed{\\frac{3}{4}}$."},
    "test/algebra/2.json": {"problem": "Compute $\\boxed{1}+1$.", "level": "Level 1",
                            "type": "Algebra", "solution": "First $1$, then \\boxed{2}."},
    "test/precalculus/807.json": {"problem": "Find the interval.", "level": "Level 5",
                                  "type": "Precalculus",
                                  "solution": "So $x \\in \\boxed{[1, \\infty)}$."},
}


@pytest.fixture
def math_dir(tmp_path):
  root = tmp_path / "MATH"
  for rel, rec in MATH_RECORDS.items():
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(json.dumps(rec))
  return root


def test_math_official_directory_layout(math_dir):
  task = get_task("math", paths={"train": str(math_dir / "train"), "test": str(math_dir / "test")})
  test = task.examples("test")
  assert [e.id for e in test] == ["test/algebra/2.json", "test/algebra/10.json",
                                  "test/precalculus/807.json"]
  assert [e.answer for e in test] == ["2", "\\frac{3}{4}", "[1, \\infty)"]
  assert test[1].meta == {"level": "Level 2", "type": "Algebra",
                          "unique_id": "test/algebra/10.json"}
  for e in test:
    assert grading.grade(task, e, e.solution).correct
  assert grading.grade(task, test[1], "so \\boxed{0.75}").correct
  assert not grading.grade(task, test[1], "so \\boxed{0.7}").correct
  by_dir = get_task("math", data_dir=str(math_dir))
  assert len(by_dir.examples("train")) == 2
  prompt = prompts.build_prompt(task, test[0], num_shots=2, seed=0)
  assert prompt.startswith("Problem:\n") and prompt.endswith(
      "Problem:\nCompute $\\boxed{1}+1$.\n\nSolution:")
  assert prompt.count("\n\nSolution: ") == 2


def test_math_jsonl_and_missing_boxed(tmp_path):
  records = [MATH_RECORDS["test/algebra/10.json"],
             {"problem": "p", "solution": "no box here", "level": "Level 1", "type": "Algebra"}]
  path = _jsonl(tmp_path / "test.jsonl", records)
  task = get_task("math", paths={"test": path})
  with pytest.raises(DataError, match=r"test\.jsonl:2: field 'solution' has no \\boxed"):
    task.examples("test")


def test_math500_by_id_list(math_dir, tmp_path):
  ids = tmp_path / "math500_ids.txt"
  ids.write_text("# ids\ntest/precalculus/807.json\ntest/algebra/2.json\n")
  task = get_task("math500", ids_path=str(ids), data_dir=str(math_dir))
  assert [e.id for e in task.examples("test")] == ["test/precalculus/807.json",
                                                   "test/algebra/2.json"]
  assert len(task.examples("train")) == 2
  bad = tmp_path / "bad_ids.txt"
  bad.write_text("test/algebra/2.json\ntest/algebra/999.json\n")
  with pytest.raises(DataError, match="bad_ids.txt: 1 of 2 ids are not in the MATH test split "
                                      "\\(first: 'test/algebra/999.json'\\)"):
    get_task("math500", ids_path=str(bad), data_dir=str(math_dir)).examples("test")


def test_math500_subset_file_schema(tmp_path):
  rec = {"problem": "What is 1+1?", "solution": "It is \\boxed{2}.", "answer": "2",
         "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"}
  task = get_task("math500", paths={"test": _jsonl(tmp_path / "test.jsonl", [rec])})
  (e,) = task.examples("test")
  assert (e.id, e.answer, e.meta["type"], e.meta["level"]) == (
      "test/prealgebra/1.json", "2", "Prealgebra", 1)


def test_humaneval_bundled():
  task = get_task("humaneval")
  examples = task.examples("test")
  assert len(examples) == 164 and task.splits == ("test",)
  e = examples[0]
  assert e.id == "HumanEval/0" and e.meta["entry_point"] == "has_close_elements"
  assert "def check(candidate)" in e.meta["test"]
  assert prompts.build_prompt(task, e) == e.question
  with pytest.raises(ValueError, match="zero-shot"):
    prompts.build_prompt(task, e, num_shots=2)


def test_hf_and_tfds_fail_offline_naming_the_local_option(monkeypatch):
  monkeypatch.setitem(sys.modules, "datasets", None)
  with pytest.raises(DataError, match=r"`datasets` library is not installed.*paths="):
    get_task("gsm8k", source="hf").examples("test")
  with pytest.raises(DataError, match=r"not installed.*paths="):
    get_task("math500", source="hf").examples("test")
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
  with pytest.raises(DataError, match=r"tensorflow_datasets is not installed.*paths="):
    get_task("gsm8k", source="tfds").examples("train")
  with pytest.raises(DataError, match=r"math is not in TFDS.*paths="):
    get_task("math", source="tfds").examples("train")


def test_tfds_download_failure_is_reported(monkeypatch, tmp_path):
  class OfflineTfds:
    @staticmethod
    def load(name, **kwargs):
      raise ConnectionError("Could not resolve host: raw.githubusercontent.com")

  monkeypatch.setitem(sys.modules, "tensorflow_datasets", OfflineTfds)
  with pytest.raises(DataError, match=r"TFDS gsm8k\[test\] is not available here "
                                      r"\(ConnectionError.*data_dir="):
    get_task("gsm8k", source="tfds", tfds_data_dir=str(tmp_path)).examples("test")
