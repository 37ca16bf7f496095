"""The WC-vs-SE pipeline's stages: sample -> grade -> finetune -> report (papers.md §1).

sample    draws each model's pool (its largest compute-matched budget) on the training split;
grade     final-answer filtering with the shared grader, plus coverage / diversity / FPR;
finetune  for each setup, one student trained on WC data and one on SE data, for the same number
          of steps, best checkpoint chosen on validation, evaluated on the test split;
report    report.md with tables and plots, every figure recomputed from the records it names.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import numpy as np

from wcse_jax import experiment, parallel, zoo
from wcse_jax.data import grading, prompts, records, tasks
from wcse_jax.eval import report as report_lib
from wcse_jax.models import loading
from wcse_jax.sampling.choosers import Greedy, Temperature
from wcse_jax.sampling.sampler import Sampler
from wcse_jax.training import batching, optim, sft
from wcse_jax.wcse import generate, metrics, plans
from wcse_jax.wcse import judge as judge_lib

ROLES = ("se", "wc")
DATA_SOURCES = ("wc", "se")


def _task(cfg):
  return tasks.get_task(cfg.task.name, **cfg.task.knobs)


def _mesh(cfg):
  return parallel.make_mesh(tuple(cfg.mesh.shape))


def _sampler(loaded: loading.LoadedModel, mesh, cfg) -> Sampler:
  return Sampler(loaded.model, mesh, eos_ids=(loaded.tokenizer.eos_id,),
                 pad_id=loaded.tokenizer.pad_id, cache_length=cfg.sampling.cache_length)


def _plan(cfg) -> plans.SamplingPlan:
  plan = plans.plan_from_config(cfg.wcse)
  names = {cfg.models.se.name, cfg.models.wc.name}
  if {plan.se.name, plan.wc.name} != names:
    raise ValueError(f"config.wcse names the models {plan.se.name!r} (SE) and {plan.wc.name!r} "
                     f"(WC), but config.models names {cfg.models.se.name!r} and "
                     f"{cfg.models.wc.name!r}; make wcse.se.name / wcse.wc.name match")
  return plan


@experiment.stage("sample", config_keys=("task", "models", "wcse", "sampling", "mesh", "seed"))
def sample(ctx) -> dict[str, Any]:
  cfg = ctx.config
  plan = _plan(cfg)
  print(f"compute-matched plan:\n{plan}", flush=True)
  with open(os.path.join(ctx.out, "plan.json"), "w") as f:
    json.dump(plan.to_dict(), f, indent=1)
  task, mesh = _task(cfg), _mesh(cfg)
  problems = task.examples(cfg.sampling.split)[:cfg.sampling.num_problems or None]
  counts: dict[str, Any] = {"plan": plan.to_dict(), "problems": len(problems)}
  for role in ROLES:
    loaded = loading.load(zoo.resolve(cfg.models[role], ctx), mesh)
    counts[role] = generate.solve(
        loaded, _sampler(loaded, mesh, cfg), task, problems, os.path.join(ctx.out, role),
        num_samples=plan.pool_size(loaded.name), max_new_tokens=cfg.sampling.max_new_tokens,
        chooser=Temperature(cfg.sampling.temperature), seed=cfg.seed,
        num_shots=cfg.sampling.num_shots, prompt_seed=cfg.seed,
        batch_prompts=cfg.sampling.batch_prompts, desc="sample")
    counts[role]["records"] = len(records.done_keys(os.path.join(ctx.out, role)))
  return counts


def _grade_folder(task, src: str, dst: str, examples_by_id, judge=None) -> list[dict]:
  """Grades every record of `src` (all processes' shards) into fresh shards in `dst`.

  `judge(recs)`, when given, fills in `steps_valid` where the task has no step checker.
  Grading is cheap, so it is redone rather than resumed; every process grades (each needs the
  numbers) and process 0 alone writes.
  """
  recs = list(records.read_records(src))
  grades = grading.grade_many(task, [examples_by_id[r["problem_id"]] for r in recs],
                              [r["text"] for r in recs])
  for r, g in zip(recs, grades):
    r.update(answer=g.extracted, correct=g.correct, steps_valid=g.steps_valid,
             step_marks=list(g.step_marks), grade_detail=g.detail)
  if judge is not None:
    judge(recs)
  if jax.process_index() != 0:
    return recs
  shutil.rmtree(dst, ignore_errors=True)
  with records.ShardWriter(dst, prefix="graded", records_per_shard=10_000) as writer:
    writer.write_many(recs)
  return recs


def _examples_by_id(task, split: str) -> dict[str, Any]:
  return {ex.id: ex for ex in task.examples(split)}


@experiment.stage("grade", config_keys=("task", "models", "wcse", "sampling", "grading", "mesh",
                                        "seed"))
def grade(ctx) -> dict[str, Any]:
  cfg = ctx.config
  task, src, plan = _task(cfg), ctx.input("sample"), _plan(cfg)
  by_id = _examples_by_id(task, cfg.sampling.split)
  summary: dict[str, Any] = {"uniqueness": metrics.describe_uniqueness(cfg.grading.uniqueness)}
  judge = _judge(cfg, ctx, by_id)
  for role in ROLES:
    recs = _grade_folder(task, os.path.join(src, role), os.path.join(ctx.out, role), by_id, judge)
    name = cfg.models[role].name
    coverage = metrics.coverage(recs)
    diversity = metrics.diversity(recs, uniqueness=cfg.grading.uniqueness)
    fpr = metrics.false_positive_rate(recs)
    summary[role] = {
        "model": name, "records": len(recs),
        "coverage": {str(k): v for k, v in coverage.as_dict().items()},
        "diversity": {str(k): v for k, v in diversity.as_dict().items()},
        "fpr": {"rate": fpr.rate, "false_positives": fpr.false_positives, "judged": fpr.judged,
                "unjudged": fpr.unjudged},
        "budgets": {b.name: plan.samples(name, b.name) for b in plan.budgets}}
  if cfg.grading.human_sample:
    _export_for_rating(ctx.out, cfg, summary)
  with open(os.path.join(ctx.out, "metrics.json"), "w") as f:
    json.dump(summary, f, indent=1)
  return {role: {"records": summary[role]["records"], "fpr": summary[role]["fpr"]}
          for role in ROLES}


def _judge(cfg, ctx, by_id):
  """The configured LLM judge as a function of a model's records, or None when none is set."""
  spec = cfg.grading.judge
  if not spec.checkpoint:
    return None
  mesh = _mesh(cfg)
  loaded = loading.load(zoo.resolve(spec, ctx), mesh)
  sampler = _sampler(loaded, mesh, cfg)
  questions = {pid: ex.question for pid, ex in by_id.items()}
  return lambda recs: judge_lib.judge_reasoning(loaded, sampler, recs, questions,
                                                max_records=spec.max_records, seed=cfg.seed)


def _export_for_rating(out: str, cfg, summary) -> None:
  """A seeded random sample of answer-correct solutions per model, for human FPR rating."""
  rng = np.random.default_rng(cfg.seed)
  for role in ROLES:
    correct = [r for r in records.read_records(os.path.join(out, role), prefix="graded")
               if r["correct"]]
    pick = rng.permutation(len(correct))[:cfg.grading.human_sample]
    with open(os.path.join(out, f"to_rate_{role}.jsonl"), "w") as f:
      for i in sorted(pick):
        r = correct[i]
        f.write(json.dumps({k: r[k] for k in ("problem_id", "sample_index", "model", "prompt",
                                               "text", "answer")} | {"reasoning_ok": None}) + "\n")
    summary[role]["exported_for_rating"] = int(len(pick))


# --- fine-tuning -----------------------------------------------------------------------------

SETUPS = {  # papers.md §1(b)6: which model is the student in each setup.
    "distillation": "student",
    "self_improvement": "wc",
    "weak_to_strong": "se",
}


def training_examples(graded_dir: str, max_samples: int, tokenizer, task, by_id) -> list[dict]:
  """Answer-correct samples among each problem's first `max_samples` (the budget's share).

  Students learn zero-shot (question -> solution), whatever prompt the data was sampled with, so
  every student is trained and evaluated in the same format (papers.md §1(e)).
  """
  out = []
  for r in records.read_records(graded_dir, prefix="graded"):
    if r["correct"] and r["sample_index"] < max_samples:
      prompt = prompts.build_prompt(task, by_id[r["problem_id"]], 0)
      out.append(batching.completion_example(tokenizer.encode(prompt, add_bos=True),
                                             tokenizer.encode(r["text"], add_eos=True)))
  return out


def _accuracy(loaded, mesh, cfg, task, examples, params) -> float:
  """Greedy final-answer accuracy of `params` on `examples` (zero-shot)."""
  return zoo.greedy_accuracy(loaded.replace_params(params), mesh, task, examples,
                             cfg.sampling.max_new_tokens)


def _evaluate(loaded, mesh, cfg, task, examples, root: str, rel: str) -> dict[str, str]:
  """Test-set records: one greedy sample (pass@1) and k samples at the eval temperature (maj@k).

  Returns label -> graded folder, relative to `root` (the stage folder is renamed when done).
  """
  ev = cfg.finetune.eval
  runs = {"greedy": (1, Greedy()),
          f"T={ev.temperature:g}": (ev.num_samples, Temperature(ev.temperature))}
  out = {}
  for label, (n, chooser) in runs.items():
    raw, graded = (os.path.join(root, rel, label, "raw"), os.path.join(root, rel, label, "graded"))
    if not os.path.isdir(graded):
      generate.solve(loaded, _sampler(loaded, mesh, cfg), task, examples, raw, num_samples=n,
                     max_new_tokens=cfg.sampling.max_new_tokens, chooser=chooser, seed=cfg.seed + 1,
                     batch_prompts=cfg.sampling.batch_prompts, desc=f"eval {label}")
      _grade_folder(task, raw, graded + ".tmp", {ex.id: ex for ex in examples})
      if jax.process_index() == 0:
        os.replace(graded + ".tmp", graded)
    out[label] = os.path.join(rel, label, "graded")
  return out


@experiment.stage("finetune", config_keys=("task", "models", "wcse", "sampling", "finetune", "mesh",
                                           "seed"))
def finetune(ctx) -> dict[str, Any]:
  cfg = ctx.config
  ft, task, mesh, plan = cfg.finetune, _task(cfg), _mesh(cfg), _plan(cfg)
  graded = ctx.input("grade")
  by_id = _examples_by_id(task, cfg.sampling.split)
  validation = task.examples("validation")[:ft.validation_problems]
  test = task.examples("test")[:ft.eval.num_problems]
  summary: dict[str, Any] = {"budget": ft.budget, "steps": ft.steps}
  for setup in ft.setups:
    if setup not in SETUPS:
      raise ValueError(f"config.finetune.setups: unknown setup {setup!r}; known: {sorted(SETUPS)}")
    student_spec = zoo.resolve(cfg.models[SETUPS[setup]], ctx)
    for source in DATA_SOURCES:
      run = f"{setup}__{source}_data"
      folder = os.path.join(ctx.out, run)
      student = loading.load(student_spec, mesh)
      data_model = cfg.models[source].name
      examples = training_examples(os.path.join(graded, source),
                                   plan.samples(data_model, ft.budget),
                                   student.tokenizer, task, by_id)
      if not examples:
        # Nothing to learn from (no answer-correct sample at this budget): say so in runs.json,
        # the manifest and the report, rather than stopping the whole pipeline.
        ctx.log.warning("finetune %s: %s has no answer-correct samples at budget %r; skipped",
                        run, data_model, ft.budget)
        summary[run] = {"student": student.name, "data": data_model, "examples": 0,
                        "skipped": "no answer-correct samples in the training data"}
        continue
      opt = optim.OptimizerConfig(learning_rate=ft.learning_rate, warmup_steps=ft.warmup_steps,
                                  total_steps=ft.steps)
      params, info = sft.finetune(
          student.model, student.params, examples, mesh=mesh, workdir=os.path.join(folder, "train"),
          steps=ft.steps, rows=ft.rows, length=ft.length, optimizer=opt, seed=cfg.seed,
          save_every=max(ft.steps // ft.num_checkpoints, 1),
          select=lambda p: _accuracy(student, mesh, cfg, task, validation, p))
      files = _evaluate(student.replace_params(params), mesh, cfg, task, test, ctx.out,
                        os.path.join(run, "eval"))
      summary[run] = {"student": student.name, "data": data_model, "examples": len(examples),
                      "selected_step": info["selected_step"], "validation": info["scores"],
                      "eval": files}
  with open(os.path.join(ctx.out, "runs.json"), "w") as f:
    json.dump(summary, f, indent=1)
  return {k: {"examples": v["examples"], "selected_step": v.get("selected_step")}
          for k, v in summary.items() if isinstance(v, dict)}


@experiment.stage("report")
def report(ctx) -> dict[str, Any]:
  cfg = ctx.config
  plan = _plan(cfg)
  graded = ctx.input("grade")
  data_files = [p for role in ROLES
                for p in records.shard_paths(os.path.join(graded, role), "graded")]
  eval_files = {}
  if "finetune" in cfg.stages:
    base = ctx.input("finetune")
    with open(os.path.join(base, "runs.json")) as f:
      runs = json.load(f)
    for run, info in runs.items():
      if not isinstance(info, dict) or "eval" not in info:
        continue
      setup, source = run.split("__")
      for label, folder in info["eval"].items():
        label = f"{setup} / {source.replace('_data', '').upper()} data / {label}"
        eval_files[label] = records.shard_paths(os.path.join(base, folder), "graded")
  results = report_lib.write_report(
      ctx.out, data_files=data_files, eval_files=eval_files, plan=plan,
      reader=lambda path: records.read_records([path]), uniqueness=cfg.grading.uniqueness,
      maj_ks=tuple(cfg.report.maj_ks), num_resamples=cfg.report.num_resamples, seed=cfg.seed,
      title=cfg.report.title)
  skipped = _skipped_runs(ctx) if "finetune" in cfg.stages else {}
  if skipped:
    with open(os.path.join(ctx.out, "report.md"), "a") as f:
      f.write("\n## Students not trained\n\n| run | reason |\n|---|---|\n")
      f.writelines(f"| {run} | {why} |\n" for run, why in skipped.items())
  print(f"report: {os.path.join(ctx.out, 'report.md')}", flush=True)
  return {"figures": results["figures"], "finetuned_rows": len(results["finetuned"]),
          "skipped_runs": sorted(skipped)}


def _skipped_runs(ctx) -> dict[str, str]:
  with open(os.path.join(ctx.input("finetune"), "runs.json")) as f:
    runs = json.load(f)
  return {run: info["skipped"] for run, info in runs.items()
          if isinstance(info, dict) and "skipped" in info}
