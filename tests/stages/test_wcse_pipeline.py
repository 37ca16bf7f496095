"""The README's main job at micro scale: zoo -> sample -> grade -> finetune -> report.

Every figure of the report is recomputed here from the record files the report says it read, a
rerun skips every finished stage, and the sample stage's records are exactly the plan's.
"""
import collections
import gzip
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
from cpu_devices import NO_COMPILATION_CACHE, xla_flags

from wcse_jax.eval import passk


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(workdir, *extra, processes=1):
  """The micro quickstart in `processes` local processes (jax.distributed over gloo), 8 CPU
  devices in all; returns the output of each, joined."""
  env = dict(os.environ, XLA_FLAGS=xla_flags(8 // processes), TF_CPP_MIN_LOG_LEVEL="3",
             JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
             **(NO_COMPILATION_CACHE if processes > 1 else {}))
  cmd = [sys.executable, "-m", "wcse_jax.main", "--config=configs/quickstart.py:micro",
         f"--workdir={workdir}", *extra]
  if processes > 1:
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    cmd += ["--config.distributed=true", f"--coordinator_address=127.0.0.1:{port}",
            f"--num_processes={processes}"]
  procs = [subprocess.Popen(cmd + ([f"--process_id={i}"] if processes > 1 else []), cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(processes)]
  outputs = [p.communicate(timeout=1500) for p in procs]
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:] + err[-6000:]
  return "".join(out + err for out, err in outputs)


def _run_regraded(workdir, *extra, processes=1):
  """The micro quickstart, stopped after grading to give the SE pools one correct solution per
  problem (the micro zoo is too small to be right) and the WC pools none, then run to the end:
  the SE students train and the WC ones are skipped for want of data, so both paths of the
  finetune stage run."""
  from wcse_jax import experiment
  log = _run(workdir, "--config.stages=zoo", "--config.stages=sample", "--config.stages=grade",
             *extra, processes=processes)
  _regrade(workdir, "se", correct=True)
  _regrade(workdir, "wc", correct=False)
  # The edit is deliberate: the grade stage's manifest must list the new shards, or finetune
  # refuses them as edited after the stage finished.
  assert any(experiment.refresh_manifest(os.path.join(workdir, "grade")).values())
  return log + _run(workdir, *extra, processes=processes)


def _records(path):
  with gzip.open(path, "rt") as f:
    return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("micro"))
  return workdir, _run_regraded(workdir)


def _regrade(workdir, role, correct):
  """Rewrites grade/<role>: sample 0 of every problem becomes the reference solution, graded
  correct, if `correct`; else every record is graded wrong."""
  from wcse_jax.data import records, tasks
  config = json.load(open(os.path.join(workdir, "sample", "MANIFEST.json")))["config"]
  task = tasks.get_task(config["task"]["name"], **config["task"]["knobs"])
  solutions = {ex.id: ex for ex in task.examples("train")}
  folder = os.path.join(workdir, "grade", role)
  recs = list(records.read_records(folder, prefix="graded"))
  for path in records.shard_paths(folder, "graded"):
    os.remove(path)
  for r in recs:
    if not correct:
      r.update(correct=False)
    elif r["sample_index"] == 0:  # one right answer per problem, reached by the right steps
      ex = solutions[r["problem_id"]]
      r.update(text=" " + ex.solution, answer=ex.answer, correct=True, steps_valid=True)
  with records.ShardWriter(folder, prefix="graded") as writer:
    writer.write_many(recs)


def test_every_stage_finished_with_a_manifest(run):
  workdir, log = run
  for stage in ("zoo", "sample", "grade", "finetune", "report"):
    manifest = json.load(open(os.path.join(workdir, stage, "MANIFEST.json")))
    assert manifest["stage"] == stage
  assert "zoo greedy test accuracy" in log
  assert "compute-matched plan" in log


def test_sample_stage_holds_exactly_the_planned_records(run):
  workdir, _ = run
  plan = json.load(open(os.path.join(workdir, "sample", "plan.json")))
  problems = json.load(open(os.path.join(workdir, "sample", "MANIFEST.json")))["counts"]["problems"]
  for role, cost in (("se", plan["se"]), ("wc", plan["wc"])):
    pool = max(b["se_samples" if role == "se" else "wc_samples"] for b in plan["budgets"])
    folder = os.path.join(workdir, "sample", role)
    keys = [(r["problem_id"], r["sample_index"])
            for name in sorted(os.listdir(folder)) if name.endswith(".jsonl.gz")
            for r in _records(os.path.join(folder, name))]
    assert len(keys) == len(set(keys)) == problems * pool
    assert all(r["model"] == cost["name"] and r["flops"] > 0
               for name in os.listdir(folder) if name.endswith(".jsonl.gz")
               for r in _records(os.path.join(folder, name)))


def test_report_numbers_recompute_from_the_records_it_names(run):
  workdir, _ = run
  out = os.path.join(workdir, "report")
  results = json.load(open(os.path.join(out, "report.json")))
  md = open(os.path.join(out, "report.md")).read()
  for figure in results["figures"].values():
    assert os.path.getsize(os.path.join(out, figure)) > 1000 and figure in md
  data = []
  for entry in results["inputs"]["data"]:
    raw = open(entry["path"], "rb").read()
    assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
    recs = _records(entry["path"])
    assert len(recs) == entry["records"]
    data += recs
  pools = collections.defaultdict(list)
  for r in data:
    pools[(r["model"], r["problem_id"])].append(r)
  for row in results["budgets"]:
    mine = [p for (model, _), p in pools.items() if model == row["model"]]
    expected = sum(passk.pass_at_k(len(p), sum(r["correct"] for r in p), row["samples"])
                   for p in mine) / len(mine)
    assert row["coverage"]["value"] == pytest.approx(expected, abs=1e-9)
  for model, m in results["models"].items():
    mine = [r for r in data if r["model"] == model]
    judged = [r for r in mine if r["correct"] and r["steps_valid"] is not None]
    assert m["fpr"]["judged"] == len(judged)
    assert m["fpr"]["false_positives"] == sum(not r["steps_valid"] for r in judged)
  listed = {(s["setup"], s["data"], s["label"]): s["files"] for s in results["inputs"]["students"]}
  for row in results["students"]:
    recs = [r for entry in listed[(row["setup"], row["data"], row["label"])]
            for r in _records(entry["path"])]
    assert row["accuracy"]["value"] == pytest.approx(sum(r["correct"] for r in recs) / len(recs))
  runs = json.load(open(os.path.join(workdir, "finetune", "runs.json")))["runs"]
  trained = [r for r in runs if "eval" in r]
  skipped = [r for r in runs if "skipped" in r]
  assert len(trained) + len(skipped) == 9  # three setups x (base, WC data, SE data)
  assert {(r["setup"], r["source"]) for r in runs} == {
      (setup, source) for setup in ("distillation", "self_improvement", "weak_to_strong")
      for source in ("wc", "se", "base")}
  assert len(results["students"]) == 2 * len(trained)  # greedy and sampled rows per student
  for r in skipped:
    assert r["folder"] in md


def test_rerun_skips_finished_stages(run):
  workdir, _ = run
  before = {s: json.load(open(os.path.join(workdir, s, "MANIFEST.json")))["build_id"]
            for s in ("zoo", "sample", "grade", "finetune", "report")}
  _run(workdir)
  after = {s: json.load(open(os.path.join(workdir, s, "MANIFEST.json")))["build_id"]
           for s in before}
  assert before == after


def test_finetune_trains_students_on_answer_correct_data(run):
  workdir, _ = run
  runs = json.load(open(os.path.join(workdir, "finetune", "runs.json")))["runs"]
  trained = [r for r in runs if "eval" in r and r["source"] != "base"]
  assert {(r["setup"], r["source"]) for r in trained} == {
      (setup, "se") for setup in ("distillation", "self_improvement", "weak_to_strong")}
  for info in trained:
    assert info["examples"] == 12  # 12 problems, one correct sample each, at the budget
    assert info["selected_step"] in {int(s) for s in info["validation"]}
    # The learning-rate sweep: a student per rate, the one best on validation kept.
    assert set(info["sweep"]) == {"0.001", "0.003"}
    assert info["sweep"][f"{info['learning_rate']:g}"] == max(info["sweep"].values())
  assert {(r["setup"], r["source"]) for r in runs if "skipped" in r} == {
      (setup, "wc") for setup in ("distillation", "self_improvement", "weak_to_strong")}
  results = json.load(open(os.path.join(workdir, "report", "report.json")))
  assert len(results["students"]) == 12  # 3 setups x (base, SE) x (greedy, sampled)
  assert "## Students" in open(os.path.join(workdir, "report", "report.md")).read()


# The numbers of report.json (its input paths name the workdir).
REPORTED = ("plan", "models", "budgets", "differences", "costs", "students",
            "student_differences")


def test_two_processes_write_the_same_report(run, tmp_path):
  """The micro quickstart over 2 processes of 4 devices: each samples its own problems into its
  own shards, and every figure of the report equals the one-process run's. It starts from the
  one-process run's zoo (the zoo stage's hash does not cover the process count, so the runner
  reuses it) and fine-tunes one setup's students: the multi-process paths of the training loop,
  the checkpoint selection and the evaluation are the same for every setup, and the whole run
  on 2 processes costs minutes per stage on 2 cores."""
  workdir, _ = run
  two = str(tmp_path / "two")
  shutil.copytree(os.path.join(workdir, "zoo"), os.path.join(two, "zoo"))
  log = _run_regraded(two, "--config.finetune.setups=distillation", processes=2)
  assert "stage zoo: finished earlier" in log
  one_report = json.load(open(os.path.join(workdir, "report", "report.json")))
  two_report = json.load(open(os.path.join(two, "report", "report.json")))
  for key in ("students", "student_differences"):
    one_report[key] = [row for row in one_report[key] if row["setup"] == "distillation"]
  assert two_report["students"]
  assert {k: two_report[k] for k in REPORTED} == {k: one_report[k] for k in REPORTED}
  for role in ("se", "wc"):
    shards = os.listdir(os.path.join(two, "sample", role))
    assert {n.split("-")[1] for n in shards if n.startswith("samples-")} == {"p00000", "p00001"}
