"""The report's numbers, recomputed from the record files it says it read, by brute force."""
import collections
import gzip
import hashlib
import itertools
import json
import random

import pytest

from wcse_jax.eval import report
from wcse_jax.wcse import plans

PLAN = plans.make_plan(plans.ModelCost("se_model", params=27e9),
                       plans.ModelCost("wc_model", params=9e9), se_samples=(1, 2))  # WC: 3, 6


def records(model, problems, samples, p_correct, seed):
  rng = random.Random(seed)
  out = []
  for pid in range(problems):
    for i in range(samples):
      correct = rng.random() < p_correct
      out.append(dict(problem_id=f"q{pid}", sample_index=i, model=model,
                      text=rng.choice(["a + b", "a  + b ", "b + a", "A + B"]),
                      answer="7" if correct else rng.choice(["1", "2", None]), correct=correct,
                      steps_valid=rng.choice([True, False, None]) if correct else False,
                      flops=1e9))
  return out


def write(path, rows):
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wt") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return str(path)


@pytest.fixture
def written(tmp_path):
  wc = records("wc_model", 5, 6, 0.3, seed=1)
  data_files = [write(tmp_path / "se.jsonl.gz", records("se_model", 5, 2, 0.6, seed=0)),
                write(tmp_path / "wc-0.jsonl", wc[:14]), write(tmp_path / "wc-1.jsonl", wc[14:])]
  eval_files = {"distill on WC": [write(tmp_path / "ev_wc.jsonl", records("s", 6, 4, 0.5, 2))],
                "distill on SE": [write(tmp_path / "ev_se.jsonl", records("s", 6, 4, 0.4, 3))]}
  out = tmp_path / "report"
  report.write_report(str(out), data_files=data_files, eval_files=eval_files, plan=PLAN,
                      maj_ks=(1, 4, 8), num_resamples=200)
  return out, json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def read_listed(inputs):
  """Records of the files the report lists, after checking their hashes and counts."""
  rows = []
  for f in inputs:
    with open(f["path"], "rb") as handle:
      assert hashlib.sha256(handle.read()).hexdigest() == f["sha256"]
    opener = gzip.open if f["path"].endswith(".gz") else open
    with opener(f["path"], "rt") as handle:
      read = [json.loads(line) for line in handle]
    assert len(read) == f["records"]
    rows += read
  return rows


def by_problem(rows):
  grouped = collections.defaultdict(list)
  for r in rows:
    grouped[r["problem_id"]].append(r)
  return list(grouped.values())


def brute_force(pools, k):
  """(coverage@k, diversity@k) by enumerating every k-subset, uniqueness = whitespace-normalised."""
  solved = unique = 0.0
  for pool in pools:
    subsets = list(itertools.combinations(pool, k))
    solved += sum(any(r["correct"] for r in s) for s in subsets) / len(subsets)
    unique += sum(len({" ".join(r["text"].split()) for r in s if r["correct"]})
                  for s in subsets) / len(subsets)
  return solved / len(pools), unique / solved


def brute_majority(pool, k):
  total = 0.0
  subsets = list(itertools.combinations(pool, k))
  for s in subsets:
    votes = collections.Counter("correct" if r["correct"] else r["answer"] for r in s
                                if r["correct"] or r["answer"] is not None)
    if votes:
      top = max(votes.values())
      winners = [a for a, v in votes.items() if v == top]
      total += ("correct" in winners) / len(winners)
  return total / len(subsets)


def test_every_number_recomputes_from_the_listed_records(written):
  _, numbers, text = written
  data = read_listed(numbers["inputs"]["data"])
  assert [f["path"].rsplit("/", 1)[1] for f in numbers["inputs"]["data"]] == [
      "se.jsonl.gz", "wc-0.jsonl", "wc-1.jsonl"]
  for row in numbers["budgets"]:
    pools = by_problem([r for r in data if r["model"] == row["model"]])
    coverage, diversity = brute_force(pools, row["samples"])
    assert row["coverage"]["value"] == pytest.approx(coverage, abs=1e-12)
    assert row["diversity"]["value"] == pytest.approx(diversity, abs=1e-12)
    assert row["coverage"]["low"] <= coverage <= row["coverage"]["high"]
    assert f"| {row['budget']} | {row['role']} | {row['model']} | {row['samples']} | " \
           f"{coverage:.4f} [" in text
  assert [(r["budget"], r["model"], r["samples"]) for r in numbers["budgets"]] == [
      ("low", "se_model", 1), ("low", "wc_model", 3), ("high", "se_model", 2),
      ("high", "wc_model", 6)]

  for model, m in numbers["models"].items():
    rows = [r for r in data if r["model"] == model]
    judged = [r for r in rows if r["correct"] and r["steps_valid"] is not None]
    false_positives = sum(not r["steps_valid"] for r in judged)
    unjudged = sum(r["correct"] and r["steps_valid"] is None for r in rows)
    assert (m["fpr"]["false_positives"], m["fpr"]["judged"], m["fpr"]["unjudged"]) == (
        false_positives, len(judged), unjudged)
    assert f"| {false_positives} / {len(judged)} | {unjudged} |" in text
    for k, value in m["coverage"].items():
      assert value == pytest.approx(brute_force(by_problem(rows), int(k))[0], abs=1e-12)

  for row in numbers["finetuned"]:
    pools = by_problem(read_listed(numbers["inputs"]["eval"][row["setup"]]))
    accuracy = sum(sum(r["correct"] for r in p) / len(p) for p in pools) / len(pools)
    assert row["accuracy"]["value"] == pytest.approx(accuracy, abs=1e-12)
    assert f"| {row['setup']} | s | 6 | 4 | {accuracy:.4f} [" in text
    assert set(row["maj"]) == {"1", "4"}  # maj@8 needs more than the 4 samples per problem
    for k, value in row["maj"].items():
      expected = sum(brute_majority(p, int(k)) for p in pools) / len(pools)
      assert value == pytest.approx(expected, abs=1e-12)


def test_report_states_plan_uniqueness_inputs_and_figures(written):
  out, numbers, text = written
  assert str(PLAN) in text
  assert "normalized_text: solution text with every whitespace run collapsed" in text
  for f in numbers["inputs"]["data"] + numbers["inputs"]["eval"]["distill on WC"]:
    assert f"| {f['path']} | `{f['sha256']}` | {f['records']} |" in text
  for name in ("coverage_vs_k.png", "diversity_vs_k.png", "finetuned_accuracy.png"):
    assert f"]({name})" in text
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_model_and_short_pools_are_clear_errors(tmp_path):
  se = write(tmp_path / "se.jsonl", records("se_model", 2, 2, 0.5, 0))
  with pytest.raises(ValueError, match="no records of the WC model 'wc_model'; models found: "
                                       "se_model"):
    report.write_report(str(tmp_path / "r"), data_files=[se], eval_files={}, plan=PLAN)
  wc = write(tmp_path / "wc.jsonl", records("wc_model", 2, 5, 0.5, 0))
  with pytest.raises(ValueError, match="'wc_model' has pools of 5 .* needs 6"):
    report.write_report(str(tmp_path / "r"), data_files=[se, wc], eval_files={}, plan=PLAN)


def test_bad_json_line_names_the_file_and_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"a": 1}\nnot json\n')
  with pytest.raises(ValueError, match="bad.jsonl:2: not a JSON record"):
    list(report.read_jsonl(str(path)))
