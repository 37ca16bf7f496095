"""The WC-vs-SE pipeline's stages: sample -> grade -> finetune -> report (papers.md §1).

sample    draws each model's pool (its largest compute-matched budget) on the sampling split;
grade     final-answer filtering with the shared grader, plus coverage / diversity / FPR;
finetune  for each setup, one student trained on WC data and one on SE data, for the same number
          of steps, best checkpoint chosen on validation, evaluated on the test split;
report    report.md with tables and plots, every figure recomputed from the records it names.

Stages hand identities over as fields: finetune's runs.json is a list of
{setup, source, student, data_model, ...} objects that the report reads as they are.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

from wcse_jax import experiment, files, loading, parallel
from wcse_jax.data import prompts as prompts_lib
from wcse_jax.data import records
from wcse_jax.eval import metrics
from wcse_jax.models import gemma2
from wcse_jax.sampling.choosers import Greedy, Temperature
from wcse_jax.stages import common
from wcse_jax.stages import zoo as zoo_stage
from wcse_jax.training import optim
from wcse_jax.verifiers import llm_judge
from wcse_jax.wcse import plans
from wcse_jax.wcse import report as report_lib

ROLES = ("se", "wc")
DATA_SOURCES = ("wc", "se")
SETUPS = {  # papers.md §1(b)6: which model is the student in each setup.
    "distillation": "student",
    "self_improvement": "wc",
    "weak_to_strong": "se",
}


def plan_of(cfg: ml_collections.ConfigDict,
            measured: dict[str, float] | None = None) -> plans.SamplingPlan:
  """The compute-matched plan, its SE and WC names checked role by role against config.models.

  measured: FLOPs per generated token by model name (the sample stage's probe). Without it, a
  "flops_per_token" plan whose config leaves a model's value at 0 is built with a placeholder
  value (for validation only: the budget names and sample counts of SE are known then)."""
  if measured is None and cfg.wcse.mode == "flops_per_token":
    measured = {cfg.wcse[role].name: 1.0 for role in ROLES if not cfg.wcse[role].flops_per_token}
  plan = plans.plan_from_config(cfg.wcse, measured)
  for role, cost in (("se", plan.se), ("wc", plan.wc)):
    if cost.name != cfg.models[role].name:
      raise experiment.StageError(
          f"config.wcse.{role}.name={cost.name!r} but config.models.{role}.name="
          f"{cfg.models[role].name!r}: the {role.upper()} role must name the same model in both")
  return plan


def sampled_plan(ctx) -> plans.SamplingPlan:
  """The plan the sample stage made (with its measured costs), as the later stages must use."""
  return plans.plan_from_dict(files.read_json(os.path.join(ctx.input("sample"), "plan.json")))


def _validate_sampling(cfg: ml_collections.ConfigDict) -> None:
  try:
    plan_of(cfg)
  except ValueError as e:
    raise experiment.StageError(f"config.wcse: {e}") from None
  common.non_negative(cfg, "sampling.num_problems", "sampling.num_shots", "sampling.decode_rows",
                      "seed")
  common.positive(cfg, "sampling.max_new_tokens", "sampling.cache_length",
                  "sampling.batch_prompts", "wcse.probe_problems")
  common.check(cfg, "sampling.temperature", lambda v: v > 0,
               "> 0 (greedy decoding would destroy the diversity the comparison measures)")
  common.check(cfg, "sampling.max_truncated", lambda v: 0 <= v <= 1, "a share in [0, 1]")
  common.check(cfg, "sampling.split", lambda v: v != "test",
               "a training split: the students are evaluated on test, and data drawn for test "
               "problems would leak them")


def _validate_grading(cfg: ml_collections.ConfigDict) -> None:
  _validate_sampling(cfg)
  metrics.uniqueness_key(cfg.grading.uniqueness)
  common.non_negative(cfg, "grading.human_sample", "grading.judge.max_records")


def _validate_finetune(cfg: ml_collections.ConfigDict) -> None:
  _validate_sampling(cfg)
  ft = cfg.finetune
  for setup in ft.setups:
    if setup not in SETUPS:
      raise experiment.StageError(f"config.finetune.setups: unknown setup {setup!r}; known: "
                                  f"{sorted(SETUPS)}")
  common.check(cfg, "finetune.budget", lambda v: v in cfg.wcse.budget_names,
               f"one of config.wcse.budget_names {tuple(cfg.wcse.budget_names)}")
  common.positive(cfg, "finetune.steps", "finetune.rows", "finetune.length",
                  "finetune.num_checkpoints", "finetune.validation_problems",
                  "finetune.microbatches", "finetune.eval.num_samples")
  common.non_negative(cfg, "finetune.warmup_steps", "finetune.eval.num_problems")
  common.check(cfg, "finetune.learning_rate", lambda v: v > 0, "> 0")
  common.check(cfg, "finetune.learning_rates", lambda v: all(lr > 0 for lr in v),
               "a tuple of learning rates > 0 (empty: finetune.learning_rate alone)")
  common.check(cfg, "finetune.num_checkpoints", lambda v: v <= ft.steps,
               f"<= finetune.steps={ft.steps}")
  common.check(cfg, "finetune.remat", lambda v: v in gemma2.REMAT_POLICIES,
               f"one of {sorted(gemma2.REMAT_POLICIES)}")
  common.check_rows(cfg, "finetune.rows", "finetune.microbatches")


def _validate_report(cfg: ml_collections.ConfigDict) -> None:
  _validate_grading(cfg)
  common.positive(cfg, "report.num_resamples")
  common.check(cfg, "report.maj_ks", lambda ks: all(isinstance(k, int) and k >= 1 for k in ks),
               "a tuple of integers >= 1")
  if cfg.report.students:
    n = cfg.finetune.eval.num_samples
    common.check(cfg, "report.maj_ks", lambda ks: all(k <= n for k in ks),
                 f"ks within the students' pools (finetune.eval.num_samples={n})")


@experiment.stage("sample", config_keys=("task", "models", "wcse", "sampling", "mesh", "seed"),
                  validate=_validate_sampling)
def sample(ctx) -> dict[str, Any]:
  cfg = ctx.config
  task, mesh = common.make_task(cfg), common.make_mesh(cfg)
  problems = task.examples(cfg.sampling.split)[:cfg.sampling.num_problems or None]
  _check_not_trained_on(cfg, ctx, problems)
  chooser = Temperature(cfg.sampling.temperature)
  counts: dict[str, Any] = {"problems": len(problems)}
  probed = [role for role in ROLES
            if cfg.wcse.mode == "flops_per_token" and not cfg.wcse[role].flops_per_token]
  plan, measured = (None if probed else plan_of(cfg)), {}
  if plan is not None:
    print(f"compute-matched plan:\n{plan}", flush=True)
  for role in ROLES:  # SE first: its pool size does not depend on the cost ratio
    loaded = common.load_model(cfg.models[role], ctx, mesh)
    sampler = common.text_sampler(loaded, mesh, cache_length=cfg.sampling.cache_length,
                                  batch_size=cfg.sampling.batch_prompts,
                                  rows=cfg.sampling.decode_rows)
    _check_role(cfg, role, loaded)
    if role in probed:
      measured[loaded.name] = _probe_flops_per_token(cfg, loaded, sampler, task, problems)
      ctx.log.info("sample: %s spends %.4g FLOPs per generated token (probe)", loaded.name,
                   measured[loaded.name])
    if role == "wc" and plan is None:
      plan = plan_of(cfg, measured)
      print(f"compute-matched plan (measured costs):\n{plan}", flush=True)
    pool = plan.pool_size(loaded.name) if plan else max(cfg.wcse.se_samples)
    counts[role] = common.generate(
        loaded, sampler, task, problems, os.path.join(ctx.out, role), num_samples=pool,
        max_new_tokens=cfg.sampling.max_new_tokens, chooser=chooser, seed=cfg.seed,
        num_shots=cfg.sampling.num_shots, prompt_seed=cfg.seed, desc="sample",
        max_truncated=cfg.sampling.max_truncated)
    counts[role]["records"] = len(records.done_keys(os.path.join(ctx.out, role)))
  if ctx.is_chief:
    files.write_json(os.path.join(ctx.out, "plan.json"), plan.to_dict())
  counts["plan"] = plan.to_dict()
  return counts


def _check_role(cfg, role: str, loaded) -> None:
  """The loaded model must be the one the cost plan prices: with mode "params" its parameter
  count must match wcse.<role>.params within 10% (nominal counts such as 9e9 for 9.24e9 pass;
  the SE checkpoint in the WC slot, or the other way round, does not)."""
  declared = cfg.wcse[role].params
  actual = loaded.config.param_count()
  if cfg.wcse.mode == "params" and abs(actual / declared - 1) > 0.1:
    raise experiment.StageError(
        f"config.models.{role} loads {loaded.name} with {actual:,} parameters, but the cost plan "
        f"prices the {role.upper()} model at config.wcse.{role}.params={declared:,.0f}: point "
        f"models.{role}.checkpoint at the {role.upper()} model, or fix wcse.{role}.params")


def _probe_flops_per_token(cfg, loaded, sampler, task, problems) -> float:
  """Sampling FLOPs per generated token of `loaded`, measured on the first
  `wcse.probe_problems` problems (one sample each, the sampling settings): the sampler's own
  count (prefill shares plus decode), so prompt length and attention are in it."""
  probe = problems[:cfg.wcse.probe_problems]
  texts = [prompts_lib.build_prompt(task, ex, cfg.sampling.num_shots, cfg.seed) for ex in probe]
  out = sampler(loaded.params, texts, 1, cfg.sampling.max_new_tokens,
                Temperature(cfg.sampling.temperature), seed=cfg.seed + 7,
                stop=prompts_lib.stop_strings(task), desc=f"FLOPs probe {loaded.name}")
  return out.flops / max(out.generated_tokens, 1)


def _check_not_trained_on(cfg, ctx, problems) -> None:
  """Refuses to sample problems a zoo model trained on (their solutions are memorised)."""
  if not any(str(cfg.models[role].checkpoint).startswith("zoo:") for role in ROLES):
    return
  seen = zoo_stage.trained_on(ctx, problems)
  if seen:
    raise experiment.StageError(
        f"the sample stage would draw solutions for {len(seen)} problems the zoo models were "
        f"trained on (first: {seen[0]!r}). Set "
        f"config.zoo.held_out_problems=-1 (the sampled problems) or sample fewer problems")


@experiment.stage("grade", config_keys=("task", "models", "wcse", "sampling", "grading", "mesh",
                                        "seed"), validate=_validate_grading)
def grade(ctx) -> dict[str, Any]:
  cfg = ctx.config
  task, src, plan = common.make_task(cfg), ctx.input("sample"), sampled_plan(ctx)
  by_id = common.examples_by_id(task, cfg.sampling.split)
  summary: dict[str, Any] = {"uniqueness": metrics.describe_uniqueness(cfg.grading.uniqueness)}
  judge = _judge(cfg, ctx, by_id)
  ids, graded = {}, {}
  for role in ROLES:
    recs = common.grade_folder(task, os.path.join(src, role), os.path.join(ctx.out, role), by_id,
                               judge)
    ids[role], graded[role] = {r["problem_id"] for r in recs}, recs
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
  if ids["se"] != ids["wc"]:
    raise experiment.StageError(
        f"the SE and WC pools cover different problems ({len(ids['se'] - ids['wc'])} only SE, "
        f"{len(ids['wc'] - ids['se'])} only WC): their metrics cannot be compared problem by "
        f"problem. Rerun the sample stage (--config.rerun=sample)")
  if cfg.grading.human_sample:
    _export_for_rating(ctx, cfg, summary, graded)
  if ctx.is_chief:
    with open(os.path.join(ctx.out, "metrics.json"), "w") as f:
      json.dump(summary, f, indent=1)
  return {role: {"records": summary[role]["records"], "fpr": summary[role]["fpr"]}
          for role in ROLES}


def _judge(cfg, ctx, by_id):
  """The configured LLM judge as a function of a model's records, or None when none is set."""
  spec = cfg.grading.judge
  if not spec.checkpoint:
    return None
  if spec.checkpoint in (cfg.models.se.checkpoint, cfg.models.wc.checkpoint):
    ctx.log.warning("grading.judge uses the checkpoint of a model whose data it judges (%s): "
                    "its verdicts on its own solutions may be lenient; papers.md §1 used a "
                    "third, stronger model", spec.checkpoint)
  mesh = common.make_mesh(cfg)
  loaded = common.load_model(spec, ctx, mesh)
  sampler = common.text_sampler(loaded, mesh, cache_length=cfg.sampling.cache_length,
                                batch_size=cfg.sampling.batch_prompts)
  questions = {pid: ex.question for pid, ex in by_id.items()}
  return lambda recs: llm_judge.judge_reasoning(loaded, sampler, recs, questions,
                                                max_records=spec.max_records, seed=cfg.seed)


def _export_for_rating(ctx, cfg, summary, graded: Mapping[str, list[dict]]) -> None:
  """A seeded random sample of answer-correct solutions per model, for human FPR rating
  (process 0 writes it; every process has every graded record, see common.grade_folder)."""
  rng = np.random.default_rng(cfg.seed)
  for role in ROLES:
    correct = [r for r in graded[role] if r["correct"]]
    pick = rng.permutation(len(correct))[:cfg.grading.human_sample]
    summary[role]["exported_for_rating"] = int(len(pick))
    if not ctx.is_chief:
      continue
    with open(os.path.join(ctx.out, f"to_rate_{role}.jsonl"), "w") as f:
      for i in sorted(pick):
        r = correct[i]
        f.write(json.dumps({k: r[k] for k in ("problem_id", "sample_index", "model", "prompt",
                                               "text", "answer")} | {"reasoning_ok": None}) + "\n")


# --- fine-tuning -----------------------------------------------------------------------------


def _evaluate(loaded, mesh, cfg, task, examples, root: str, rel: str) -> dict[str, str]:
  """Test-set records: one greedy sample (pass@1) and k samples at the eval temperature (maj@k).

  Returns label -> graded folder, relative to `root` (the stage folder is renamed when done).
  """
  ev = cfg.finetune.eval
  runs = {"greedy": (1, Greedy()),
          f"T={ev.temperature:g}": (ev.num_samples, Temperature(ev.temperature))}
  sampler = common.text_sampler(loaded, mesh, cache_length=cfg.sampling.cache_length,
                                batch_size=cfg.sampling.batch_prompts)
  out = {}
  for label, (n, chooser) in runs.items():
    raw, graded = (os.path.join(root, rel, label, "raw"), os.path.join(root, rel, label, "graded"))
    if not os.path.isdir(graded):
      common.generate(loaded, sampler, task, examples, raw, num_samples=n,
                      max_new_tokens=cfg.sampling.max_new_tokens, chooser=chooser,
                      seed=cfg.seed + 1, desc=f"eval {label}",
                      max_truncated=cfg.sampling.max_truncated)
      common.grade_folder(task, raw, graded + ".tmp", {ex.id: ex for ex in examples})
      if jax.process_index() == 0:
        os.replace(graded + ".tmp", graded)
      # Every process must see the same folders when it checks for the next label's.
      parallel.sync(f"wcse_jax:eval:{graded}")
    out[label] = os.path.join(rel, label, "graded")
  return out


@experiment.stage("finetune", config_keys=("task", "models", "wcse", "sampling", "finetune", "mesh",
                                           "seed"), validate=_validate_finetune)
def finetune(ctx) -> dict[str, Any]:
  cfg = ctx.config
  ft, task, mesh = cfg.finetune, common.make_task(cfg), common.make_mesh(cfg)
  plan = sampled_plan(ctx)
  graded = ctx.input("grade")
  by_id = common.examples_by_id(task, cfg.sampling.split)
  validation = task.examples("validation")[:ft.validation_problems]
  test = task.examples("test")[:ft.eval.num_problems or None]
  learning_rates = tuple(ft.learning_rates) or (ft.learning_rate,)
  runs = []
  for setup in ft.setups:
    student_spec = common.resolve(cfg.models[SETUPS[setup]], ctx)
    student = loading.load(student_spec, mesh, remat_policy=ft.remat)
    base = {"setup": setup, "source": "base", "folder": f"{setup}__base",
            "student": student.name, "data_model": None, "examples": 0}
    base["eval"] = _evaluate(student, mesh, cfg, task, test, ctx.out,
                             os.path.join(base["folder"], "eval"))
    runs.append(base)
    for source in DATA_SOURCES:
      run = {"setup": setup, "source": source, "folder": f"{setup}__{source}_data"}
      data_model = cfg.models[source].name
      budget_samples = plan.samples(data_model, ft.budget)
      correct = [r for r in records.read_records(os.path.join(graded, source), prefix="graded")
                 if r["correct"] and r["sample_index"] < budget_samples]
      examples = common.record_examples(task, correct, by_id, student.tokenizer)
      run.update(student=student.name, data_model=data_model, examples=len(examples))
      if not examples:
        # Nothing to learn from (no answer-correct sample at this budget): say so in runs.json,
        # the manifest and the report, rather than stopping the whole pipeline.
        ctx.log.warning("finetune %s: %s has no answer-correct samples at budget %r; skipped",
                        run["folder"], data_model, ft.budget)
        run["skipped"] = "no answer-correct samples in the training data"
        runs.append(run)
        continue
      trained = [_train_student(ctx, cfg, student, examples, task, validation, mesh, lr,
                                os.path.join(run["folder"], f"lr_{lr:g}"))
                 for lr in learning_rates]
      # The sweep's choice, like the checkpoint's, is made on validation only (papers.md §1(c)).
      best = max(trained, key=lambda t: (max(t[1].scores.values()), -t[0]))
      lr, result = best
      run.update(learning_rate=lr, selected_step=result.selected_step,
                 validation={str(k): v for k, v in sorted(result.scores.items())},
                 sweep={f"{t[0]:g}": max(t[1].scores.values()) for t in trained},
                 eval=_evaluate(student.replace_params(result.params["model"]), mesh, cfg, task,
                                test, ctx.out, os.path.join(run["folder"], "eval")))
      runs.append(run)
  if ctx.is_chief:
    files.write_json(os.path.join(ctx.out, "runs.json"),
                     {"budget": ft.budget, "steps": ft.steps, "runs": runs})
  return {r["folder"]: {"examples": r["examples"], "selected_step": r.get("selected_step")}
          for r in runs}


def _train_student(ctx, cfg, student, examples, task, validation, mesh, learning_rate: float,
                   rel: str):
  """One student trained for finetune.steps at `learning_rate`, its best checkpoint chosen on
  validation greedy accuracy; (learning_rate, fit.FitResult)."""
  ft = cfg.finetune
  opt = optim.OptimizerConfig(learning_rate=learning_rate, warmup_steps=ft.warmup_steps,
                              total_steps=ft.steps)
  sampler = common.text_sampler(student, mesh, cache_length=cfg.sampling.cache_length,
                                batch_size=cfg.sampling.batch_prompts)
  result = common.train_sft(
      student.model, student.params, examples, mesh=mesh,
      workdir=os.path.join(ctx.out, rel, "train"), steps=ft.steps, rows=ft.rows,
      length=ft.length, microbatches=ft.microbatches, optimizer=opt, seed=cfg.seed,
      save_every=max(ft.steps // ft.num_checkpoints, 1),
      select=lambda p: common.greedy_accuracy(student.replace_params(p), sampler, task,
                                              validation, cfg.sampling.max_new_tokens,
                                              desc="validation"),
      desc=f"finetune {rel}")
  return learning_rate, result


@experiment.stage("report", config_keys=("models", "wcse", "grading", "report", "seed"),
                  validate=_validate_report)
def report(ctx) -> dict[str, Any]:
  cfg = ctx.config
  plan = sampled_plan(ctx)
  graded = ctx.input("grade")
  data_files = [p for role in ROLES
                for p in records.shard_paths(os.path.join(graded, role), "graded")]
  students, skipped = [], {}
  if cfg.report.students:
    base = ctx.input("finetune")
    for run in files.read_json(os.path.join(base, "runs.json"))["runs"]:
      if "skipped" in run:
        skipped[run["folder"]] = run["skipped"]
        continue
      students += [report_lib.StudentEval(
          setup=run["setup"], data=run["source"], label=label, student=run["student"],
          examples=run["examples"],
          files=tuple(records.shard_paths(os.path.join(base, folder), "graded")))
          for label, folder in run["eval"].items()]
  results = report_lib.write_report(
      ctx.out, data_files=data_files, plan=plan, students=students,
      reader=lambda path: records.read_records([path]), uniqueness=cfg.grading.uniqueness,
      maj_ks=tuple(cfg.report.maj_ks), num_resamples=cfg.report.num_resamples, seed=cfg.seed,
      title=cfg.report.title, skipped_runs=skipped)
  print(f"report: {os.path.join(ctx.out, 'report.md')}", flush=True)
  return {"figures": results["figures"], "student_rows": len(results["students"]),
          "skipped_runs": sorted(skipped)}


__all__ = ["sample", "grade", "finetune", "report", "plan_of", "sampled_plan", "SETUPS"]
