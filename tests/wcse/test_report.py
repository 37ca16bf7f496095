"""The report's numbers, recomputed from the record files it says it read, by brute force."""
import collections
import gzip
import hashlib
import itertools
import json
import random

import pytest

from wcse_jax import files
from wcse_jax.wcse import report
from wcse_jax.wcse import plans

PLAN = plans.make_plan(plans.ModelCost("se_model", params=27e9),
                       plans.ModelCost("wc_model", params=9e9), se_samples=(1, 2))  # WC: 3, 6


def records(model, problems, samples, p_correct, seed, judged=False):
  rng = random.Random(seed)
  out = []
  for pid in range(problems):
    for i in range(samples):
      correct = rng.random() < p_correct
      valid = ([True, False] if judged else [True, False, None])
      out.append(dict(problem_id=f"q{pid}", sample_index=i, model=model,
                      text=rng.choice(["a + b", "a  + b ", "b + a", "A + B"]),
                      answer="7" if correct else rng.choice(["1", "2", None]), correct=correct,
                      steps_valid=rng.choice(valid) if correct else False,
                      tokens=[0] * rng.randint(1, 9), flops=rng.uniform(1e9, 3e9)))
  return out


def write(path, rows):
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "wt") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return str(path)


def student(tmp_path, data, p, seed, label="T=0.7", samples=4):
  path = write(tmp_path / f"ev_{data}_{label}.jsonl", records("s", 6, samples, p, seed))
  return report.StudentEval(setup="distillation", data=data, label=label, student="s",
                            examples=0 if data == "base" else 10 + seed, files=(path,))


@pytest.fixture
def written(tmp_path):
  wc = records("wc_model", 5, 6, 0.3, seed=1, judged=True)
  data_files = [write(tmp_path / "se.jsonl.gz", records("se_model", 5, 2, 0.6, seed=0,
                                                        judged=True)),
                write(tmp_path / "wc-0.jsonl", wc[:14]), write(tmp_path / "wc-1.jsonl", wc[14:])]
  students = [student(tmp_path, "wc", 0.5, 2), student(tmp_path, "se", 0.4, 3),
              student(tmp_path, "base", 0.2, 4), student(tmp_path, "wc", 0.5, 5, "greedy", 1),
              student(tmp_path, "se", 0.4, 6, "greedy", 1)]
  out = tmp_path / "report"
  report.write_report(str(out), data_files=data_files, students=students, plan=PLAN,
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
  return solved / len(pools), unique / solved if solved else None


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

  listed = {(s["data"], s["label"]): s["files"] for s in numbers["inputs"]["students"]}
  assert len(numbers["students"]) == 5
  for row in numbers["students"]:
    pools = by_problem(read_listed(listed[(row["data"], row["label"])]))
    accuracy = sum(sum(r["correct"] for r in p) / len(p) for p in pools) / len(pools)
    assert row["accuracy"]["value"] == pytest.approx(accuracy, abs=1e-12)
    assert (f"| distillation | {row['data']} | {row['label']} | s | {row['examples']} | 6 | "
            f"{row['samples_per_problem']} | {accuracy:.4f} [") in text
    if row["label"] == "T=0.7":
      assert set(row["maj"]) == {"1", "4"}  # maj@8 needs more than the 4 samples per problem
    for k, value in row["maj"].items():
      expected = sum(brute_majority(p, int(k)) for p in pools) / len(pools)
      assert value == pytest.approx(expected, abs=1e-12)


def test_costs_are_summed_from_the_records(written):
  _, numbers, text = written
  data = read_listed(numbers["inputs"]["data"])
  for c in numbers["costs"]:
    for role, model in (("se", "se_model"), ("wc", "wc_model")):
      kept = [r for r in data if r["model"] == model and r["sample_index"] < c[role]["samples"]]
      assert c[role]["flops"] == pytest.approx(sum(r["flops"] for r in kept))
      assert c[role]["tokens"] == sum(len(r["tokens"]) for r in kept)
      assert c[role]["flops_per_problem"] == pytest.approx(c[role]["flops"] / 5)
    assert c["realised_ratio"] == pytest.approx(c["wc"]["flops"] / c["se"]["flops"])
    assert c["planned_ratio"] == pytest.approx(c["wc"]["samples"] * 9 / (c["se"]["samples"] * 27))
  assert "| planned WC/SE | realised WC/SE |" in text


def test_paired_differences_recompute_and_resample_the_same_problems(written):
  """The point estimate is WC - SE exactly; the interval comes from resampling problems jointly,
  checked against a direct bootstrap over the same resampling indices."""
  import numpy as np
  _, numbers, _ = written
  data = read_listed(numbers["inputs"]["data"])
  pools = {m: sorted(by_problem([r for r in data if r["model"] == m]),
                     key=lambda p: p[0]["problem_id"]) for m in ("se_model", "wc_model")}
  budgets = {b["budget"]: b for b in numbers["budgets"] if b["role"] == "WC"}
  se_budgets = {b["budget"]: b for b in numbers["budgets"] if b["role"] == "SE"}
  for d in numbers["differences"]:
    if d["metric"] != "coverage":
      continue
    wc_k, se_k = budgets[d["budget"]]["samples"], se_budgets[d["budget"]]["samples"]
    per = lambda pool_list, k: np.array([brute_force([p], k)[0] for p in pool_list])
    a, b = per(pools["wc_model"], wc_k), per(pools["se_model"], se_k)
    assert d["wc_minus_se"]["value"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    picks = np.random.default_rng(0).integers(0, 5, size=(200, 5))
    diffs = np.array([a[p].mean() - b[p].mean() for p in picks])
    low, high = np.nanquantile(diffs, [0.025, 0.975])
    assert (d["wc_minus_se"]["low"], d["wc_minus_se"]["high"]) == pytest.approx((low, high))
  metrics_seen = {d["metric"] for d in numbers["differences"]}
  assert metrics_seen == {"coverage", "diversity", "diversity_valid", "fpr"}
  rows = {d["comparison"]: d for d in numbers["student_differences"] if d["label"] == "T=0.7"}
  assert set(rows) == {"wc - se", "wc - base", "se - base"}
  assert all(set(row) == {"setup", "label", "comparison", "pass@1", "maj@1", "maj@4"}
             for row in rows.values())
  accuracy = {(s["data"]): s["accuracy"]["value"] for s in numbers["students"]
              if s["label"] == "T=0.7"}
  for name, row in rows.items():
    data, versus = name.split(" - ")
    assert row["pass@1"]["value"] == pytest.approx(accuracy[data] - accuracy[versus], abs=1e-12)


def test_step_valid_diversity_counts_only_valid_solutions(written):
  _, numbers, _ = written
  data = read_listed(numbers["inputs"]["data"])
  for row in numbers["budgets"]:
    mine = [r for r in data if r["model"] == row["model"]]
    valid = [dict(r, correct=r["correct"] and r["steps_valid"]) for r in mine]
    expected = brute_force(by_problem(valid), row["samples"])[1]
    got = row["diversity_valid"]["value"]
    assert (got is None and expected is None) or got == pytest.approx(expected, abs=1e-12)


def test_report_states_plan_uniqueness_inputs_and_figures(written):
  out, numbers, text = written
  assert str(PLAN) in text
  assert "normalized_text: solution text with every whitespace run collapsed" in text
  for f in numbers["inputs"]["data"] + numbers["inputs"]["students"][0]["files"]:
    assert f"| {f['path']} | `{f['sha256']}` | {f['records']} |" in text
  for name in ("coverage_vs_k.png", "diversity_vs_k.png", "finetuned_accuracy.png",
               "coverage_vs_compute.png", "diversity_vs_compute.png"):
    assert f"]({name})" in text
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_model_and_short_pools_are_clear_errors(tmp_path):
  se = write(tmp_path / "se.jsonl", records("se_model", 2, 2, 0.5, 0))
  with pytest.raises(ValueError, match="no records of the WC model 'wc_model'; models found: "
                                       "se_model"):
    report.write_report(str(tmp_path / "r"), data_files=[se], plan=PLAN)
  wc = write(tmp_path / "wc.jsonl", records("wc_model", 2, 5, 0.5, 0))
  with pytest.raises(ValueError, match="'wc_model' has pools of 5 .* needs 6"):
    report.write_report(str(tmp_path / "r"), data_files=[se, wc], plan=PLAN)
  other = write(tmp_path / "wc3.jsonl", records("wc_model", 3, 6, 0.5, 0))
  with pytest.raises(ValueError, match="different problems"):
    report.write_report(str(tmp_path / "r"), data_files=[se, other], plan=PLAN)


def test_bad_json_line_names_the_file_and_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"a": 1}\nnot json\n')
  with pytest.raises(ValueError, match="bad.jsonl:2: malformed JSON line"):
    files.read_jsonl(str(path))
