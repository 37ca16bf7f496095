"""Best-of-N-aware fine-tuning's stages (papers.md §3; DESIGN §9):

bon_finetune   every configured method (rl/loop.py: SFT, standard RL, BoN-RL-V/-S, BoN-RLB(P),
               BoN-SFT, the pass@k-training estimators) fine-tunes the same base policy through
               fit on fresh rollouts of the current parameters; resumable inside a method;
policy_eval    the base and every fine-tuned policy sample N_max solutions per evaluation problem
               at each temperature; graded, and scored by the training verifier (for Bo-N);
bon_rl_report  pass@N and verifier Bo-N over (N, T) with bootstrap intervals, paired differences
               against standard RL, heat maps, the fitted co-scaling law (rl/report.py).

The verifier is one the verifier stages trained (`rl.verifier`, e.g. the discriminative RM);
methods that only need exact correctness (BoN-RL-S, BoN-RLB, the pass@k estimators, SFT, RL) do
not read it except for the Bo-N columns of the report.
"""
from __future__ import annotations

import os
from typing import Any

import ml_collections

from wcse_jax import experiment, files, loading
from wcse_jax.data import records
from wcse_jax.models import gemma2
from wcse_jax.rl import loop as rl_loop
from wcse_jax.rl import report as rl_report
from wcse_jax.sampling.choosers import Temperature
from wcse_jax.sampling.score import Scorer
from wcse_jax.stages import common
from wcse_jax.stages import verifiers as verifier_stages
from wcse_jax.training import fit, objectives, optim


def _validate(cfg: ml_collections.ConfigDict) -> None:
  r = cfg.rl
  common.check(cfg, "rl.methods", lambda v: v and all(m in rl_loop.METHODS for m in v),
               f"a non-empty tuple of {sorted(rl_loop.METHODS)}")
  common.positive(cfg, "rl.n_bon", "rl.samples", "rl.prompts_per_step", "rl.steps",
                  "rl.max_new_tokens", "rl.length", "rl.microbatches", "rl.save_every",
                  "rl.eval.problems", "rl.eval.samples", "rl.eval.num_resamples")
  common.non_negative(cfg, "rl.num_problems", "rl.warmup_steps")
  common.check(cfg, "rl.learning_rate", lambda v: v > 0, "> 0")
  common.check(cfg, "rl.temperature", lambda v: v > 0, "> 0")
  common.check(cfg, "rl.kl_coef", lambda v: v >= 0, ">= 0")
  common.check(cfg, "rl.remat", lambda v: v in gemma2.REMAT_POLICIES,
               f"one of {sorted(gemma2.REMAT_POLICIES)}")
  exact_groups = {"bon_rl_v", "bon_rl_s", "bon_rl_v_selected"} & set(r.methods)
  if exact_groups:
    common.check(cfg, "rl.samples", lambda v: v % r.n_bon == 0 and v >= 2 * r.n_bon,
                 f"a multiple of rl.n_bon={r.n_bon} of at least two groups ({sorted(exact_groups)} "
                 f"split the samples into groups of N with a leave-one-group-out baseline)")
  common.check(cfg, "rl.eval.ns", lambda ns: ns and all(1 <= n <= r.eval.samples for n in ns),
               f"a tuple of N in [1, rl.eval.samples={r.eval.samples}]")
  common.check(cfg, "rl.eval.max_truncated", lambda v: 0 <= v <= 1, "a share in [0, 1]")
  common.check(cfg, "rl.eval.temperatures", lambda ts: ts and all(t > 0 for t in ts),
               "a non-empty tuple of temperatures > 0")
  if any(rl_loop.METHODS[m].verifier for m in r.methods) or r.verifier:
    common.check(cfg, "rl.verifier", lambda v: v in verifier_stages.TRAINED,
                 f"one of {verifier_stages.TRAINED} (a verifier the train_verifier stage trains)")


def _policy(cfg, ctx, mesh, remat: str = "none") -> loading.LoadedModel:
  return loading.load(common.resolve(cfg.models.policy, ctx), mesh, remat_policy=remat)


@experiment.stage("bon_finetune", config_keys=("task", "models", "rl", "verifiers", "mesh", "seed"),
                  validate=_validate)
def bon_finetune(ctx) -> dict[str, Any]:
  cfg, r = ctx.config, ctx.config.rl
  task, mesh = common.make_task(cfg), common.make_mesh(cfg)
  problems = task.examples(cfg.sampling.split)[:r.num_problems or None]
  counts = {}
  for name in r.methods:
    method = rl_loop.METHODS[name]
    folder = os.path.join(ctx.out, name)
    if os.path.exists(os.path.join(folder, "model_config.json")):
      counts[name] = files.read_json(os.path.join(folder, "summary.json"))
      continue
    policy = _policy(cfg, ctx, mesh, r.remat)
    verifier = (verifier_stages.make_verifier(r.verifier, ctx, cfg, task, mesh)
                if method.verifier else None)
    reference = None
    if r.kl_coef:
      reference = (Scorer(policy.model, mesh=mesh, pad_id=policy.tokenizer.pad_id,
                          cache_length=r.length), policy.params)
    sampler = common.text_sampler(policy, mesh, cache_length=r.length,
                                  batch_size=r.prompts_per_step)
    source = rl_loop.RolloutSource(
        method=method, sampler=sampler,
        task=task, problems=problems, prompts_per_step=r.prompts_per_step, samples=r.samples,
        n_bon=r.n_bon, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
        length=r.length, seed=cfg.seed, verifier=verifier, reference=reference,
        kl_coef=r.kl_coef, clip=r.clip or None,
        rollout_dir=os.path.join(folder, "rollouts") if ctx.is_chief else None,
        row_multiple=sampler.sampler.data_parallel * r.microbatches)
    opt = optim.OptimizerConfig(learning_rate=r.learning_rate, warmup_steps=r.warmup_steps,
                                total_steps=r.steps)
    result = fit.fit(objectives.make_objective("weighted_nll", policy.model), source, mesh=mesh,
                     optimizer=opt, steps=r.steps, workdir=os.path.join(folder, "train"),
                     params={"model": policy.params}, microbatches=r.microbatches,
                     save_every=r.save_every, seed=cfg.seed, log_every=1, desc=f"rl {name}")
    loading.save_model(folder, policy.config, result.params["model"])
    counts[name] = {"steps": result.steps, "rows_per_step": source.rows}
    files.write_json(os.path.join(folder, "summary.json"), counts[name])
  return counts


@experiment.stage("policy_eval", config_keys=("task", "models", "rl", "score", "verifiers", "mesh",
                                              "seed"), validate=_validate)
def policy_eval(ctx) -> dict[str, Any]:
  cfg, ev = ctx.config, ctx.config.rl.eval
  task, mesh = common.make_task(cfg), common.make_mesh(cfg)
  problems = task.examples("test")[:ev.problems]
  by_id = {ex.id: ex for ex in problems}
  questions = {ex.id: ex.question for ex in problems}
  trained = ctx.input("bon_finetune")
  verifier = None
  counts = {}
  for name in ("base",) + tuple(cfg.rl.methods):
    policy = _policy(cfg, ctx, mesh)
    if name != "base":
      spec = ml_collections.ConfigDict(dict(name=name, preset="",
                                            checkpoint=os.path.join(trained, name),
                                            tokenizer=policy.tokenizer.path,
                                            dtype=cfg.models.policy.dtype))
      policy = loading.load(spec, mesh)
    sampler = common.text_sampler(policy, mesh, cache_length=cfg.rl.length,
                                  batch_size=cfg.sampling.batch_prompts)
    for temperature in ev.temperatures:
      folder = os.path.join(ctx.out, name, f"T={temperature:g}")
      common.generate(policy, sampler, task, problems, os.path.join(folder, "raw"),
                      num_samples=ev.samples, max_new_tokens=cfg.rl.max_new_tokens,
                      chooser=Temperature(temperature), seed=cfg.seed + 11,
                      desc=f"eval {name} T={temperature:g}",
                      max_truncated=ev.max_truncated)
      graded = common.grade_folder(task, os.path.join(folder, "raw"),
                                   os.path.join(folder, "graded"), by_id)
      if cfg.rl.verifier:
        if verifier is None:
          verifier = verifier_stages.make_verifier(cfg.rl.verifier, ctx, cfg, task, mesh)
        verifier_stages.score_pool(lambda: verifier, graded, questions,
                                   os.path.join(folder, "scores"), cfg.score.chunk_problems,
                                   write=ctx.is_chief)
      counts[f"{name} T={temperature:g}"] = len(graded)
  return counts


@experiment.stage("bon_rl_report", config_keys=("rl", "seed"), validate=_validate)
def bon_rl_report(ctx) -> dict[str, Any]:
  cfg = ctx.config
  folder = ctx.input("policy_eval")
  pools = {}
  for name in ("base",) + tuple(cfg.rl.methods):
    for temperature in cfg.rl.eval.temperatures:
      where = os.path.join(folder, name, f"T={temperature:g}")
      graded = list(records.read_records(os.path.join(where, "graded"), prefix="graded"))
      if cfg.rl.verifier:
        scores = {(s["problem_id"], s["sample_index"]): s["score"]
                  for s in records.read_records(os.path.join(where, "scores"), prefix="scores")}
        for rec in graded:
          rec["score"] = scores[(rec["problem_id"], rec["sample_index"])]
      pools[(name, float(temperature))] = graded
  curves = {}
  trained = ctx.input("bon_finetune")
  for name in cfg.rl.methods:
    path = os.path.join(trained, name, "train", "metrics.jsonl")
    curves[name] = files.read_jsonl(path) if os.path.exists(path) else []
  results = rl_report.write_report(ctx.out, pools=pools, ns=tuple(cfg.rl.eval.ns),
                                   baseline="rl", verifier=cfg.rl.verifier or None,
                                   training=curves, num_resamples=cfg.rl.eval.num_resamples,
                                   seed=cfg.seed, title=cfg.rl.title)
  print(f"BoN-aware fine-tuning report: {os.path.join(ctx.out, 'report.md')}", flush=True)
  return {"figures": results["figures"], "methods": sorted({m for m, _ in pools})}


__all__ = ["bon_finetune", "policy_eval", "bon_rl_report"]
