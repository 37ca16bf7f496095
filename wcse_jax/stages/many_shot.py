"""Many-shot in-context learning (papers.md §10): greedy accuracy against the number of shots for
human, reinforced and unsupervised ICL, several exemplar subsets (seeds) per point.

icl_rationales  for each model, `sampling.samples_per_problem` solutions per pool problem (the
                first `sampling.num_problems` of `sampling.split`) at `sampling.temperature`
                (common.generate, resumable), graded; a problem the model solved at least once
                enters its exemplar pool (pool.json), with its lowest-index correct solution as
                its reinforced rationale (data/many_shot.pick_rationales). Without "reinforced"
                among icl.methods nothing is sampled and the whole pool is kept.
icl_eval        for each model, seed, shot count and method: the prompts of the test problems
                (data/many_shot.build: the same exemplar problems for every method at a shot
                count and seed; nested across shot counts), greedy decoding, graded. A prompt
                whose tokens plus icl.max_new_tokens exceed icl.cache_length is not run: it is
                counted (`over_cache`) and its point marked, never cut. Points whose prompt sets
                are identical (every method at 0 shots) are run once. points.json lists every
                point: its folder, exemplar ids, prompts run and over the cache.
icl_report      per point the accuracy averaged over seeds with a bootstrap interval over
                problems and the spread over seeds (eval/seeds.py); report.md, results.json and a
                figure per model (accuracy against shots, one line per method; marked points
                hollow).

Prompts of many shots share their exemplars, so the sampler's shared-prefix prefill (the text
API's refilling path) prefills them once per sampler call.
"""
from __future__ import annotations

import collections
import hashlib
import os
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wcse_jax import experiment, files
from wcse_jax.data import many_shot, records
from wcse_jax.data import prompts as prompts_lib
from wcse_jax.eval import bootstrap, seeds as seeds_lib
from wcse_jax.sampling.choosers import Greedy, Temperature
from wcse_jax.stages import common
from wcse_jax.stages import zoo as zoo_stage

CUT = ("out_of_cache", "max_tokens")  # finish reasons of a cut solution


def _validate(cfg: ml_collections.ConfigDict) -> None:
  if not cfg.models:
    raise experiment.StageError("config.models: name at least one model to evaluate")
  common.check(cfg, "icl.methods", lambda v: v and all(m in many_shot.METHODS for m in v)
               and len(set(v)) == len(v), f"a non-empty tuple of distinct {many_shot.METHODS}")
  common.check(cfg, "icl.shots", lambda v: v and all(isinstance(k, int) and k >= 0 for k in v)
               and list(v) == sorted(set(v)), "an increasing tuple of shot counts >= 0")
  common.check(cfg, "icl.seeds", lambda v: v and all(isinstance(s, int) for s in v)
               and len(set(v)) == len(v), "a non-empty tuple of distinct integer seeds")
  common.non_negative(cfg, "sampling.num_problems", "sampling.num_shots", "icl.num_problems",
                      "icl.format_shots", "seed")
  common.positive(cfg, "sampling.samples_per_problem", "sampling.max_new_tokens",
                  "sampling.cache_length", "sampling.batch_prompts", "icl.max_new_tokens",
                  "icl.cache_length", "icl.batch_prompts", "report.num_resamples")
  common.check(cfg, "sampling.temperature", lambda v: v > 0,
               "> 0 (reinforced ICL draws several rationales per problem)")
  common.check(cfg, "sampling.max_truncated", lambda v: 0 <= v <= 1, "a share in [0, 1]")
  common.check(cfg, "sampling.split", lambda v: v != cfg.icl.split,
               f"another split than icl.split={cfg.icl.split!r}: exemplars must not come from "
               f"the evaluation problems")
  common.check(cfg, "report.confidence", lambda v: 0 < v < 1, "in (0, 1)")


@experiment.stage("icl_rationales", config_keys=("task", "models", "sampling", "icl.methods",
                                                 "mesh", "seed"), validate=_validate)
def icl_rationales(ctx) -> dict[str, Any]:
  cfg, s = ctx.config, ctx.config.sampling
  task, mesh = common.make_task(cfg), common.make_mesh(cfg)
  pool = task.examples(s.split)[:s.num_problems or None]
  _check_not_trained_on(cfg, ctx, pool)
  by_id = {ex.id: ex for ex in pool}
  counts: dict[str, Any] = {"pool": len(pool)}
  for role, spec in sorted(cfg.models.items()):
    if "reinforced" not in cfg.icl.methods:
      solved = [ex.id for ex in pool]
      counts[role] = {"solved": len(solved)}
    else:
      loaded = common.load_model(spec, ctx, mesh)
      sampler = common.text_sampler(loaded, mesh, cache_length=s.cache_length,
                                    batch_size=s.batch_prompts)
      raw, graded = os.path.join(ctx.out, role, "raw"), os.path.join(ctx.out, role, "graded")
      counts[role] = common.generate(
          loaded, sampler, task, pool, raw, num_samples=s.samples_per_problem,
          max_new_tokens=s.max_new_tokens, chooser=Temperature(s.temperature), seed=cfg.seed,
          num_shots=s.num_shots, prompt_seed=cfg.seed, desc="rationales",
          max_truncated=s.max_truncated)
      recs = common.grade_folder(task, raw, graded, by_id)
      has_rationale = many_shot.pick_rationales(recs)
      solved = [ex.id for ex in pool if ex.id in has_rationale]
      counts[role].update(solved=len(solved),
                          sample_accuracy=float(np.mean([r["correct"] for r in recs])))
      ctx.log.info("icl_rationales: %s solved %d of %d pool problems at least once", loaded.name,
                   len(solved), len(pool))
    if ctx.is_chief:
      files.write_json(os.path.join(ctx.out, role, "pool.json"),
                       {"pool": [ex.id for ex in pool], "solved": solved})
  return counts


def _check_not_trained_on(cfg, ctx, pool) -> None:
  """Refuses a pool of problems a zoo model trained on (it would show memorised solutions)."""
  if not any(str(spec.checkpoint).startswith("zoo:") for spec in cfg.models.values()):
    return
  seen = zoo_stage.trained_on(ctx, pool)
  if seen:
    raise experiment.StageError(
        f"the exemplar pool holds {len(seen)} problems the zoo trained on (first: {seen[0]!r}); "
        f"set config.zoo.held_out_problems=-1 (the pool) or a smaller sampling.num_problems")


@experiment.stage("icl_eval", config_keys=("task", "models", "sampling", "icl", "mesh", "seed"),
                  validate=_validate)
def icl_eval(ctx) -> dict[str, Any]:
  cfg, icl = ctx.config, ctx.config.icl
  task, mesh = common.make_task(cfg), common.make_mesh(cfg)
  rationales_dir = ctx.input("icl_rationales")
  tests = task.examples(icl.split)[:icl.num_problems or None]
  by_id = {ex.id: ex for ex in task.examples(cfg.sampling.split)}
  points, counts = [], {"problems": len(tests)}
  for role, spec in sorted(cfg.models.items()):
    loaded = common.load_model(spec, ctx, mesh)
    sampler = common.text_sampler(loaded, mesh, cache_length=icl.cache_length,
                                  batch_size=icl.batch_prompts)
    solved = [by_id[i] for i in
              files.read_json(os.path.join(rationales_dir, role, "pool.json"))["solved"]]
    rationales = {}
    if "reinforced" in icl.methods:
      rationales = many_shot.pick_rationales(list(records.read_records(
          os.path.join(rationales_dir, role, "graded"), prefix="graded")))
    # Fixed solved examples closing the unsupervised prompt, kept out of every method's subsets.
    format_examples = sorted(solved, key=lambda ex: ex.id)[len(solved) - icl.format_shots:]
    selectable = [ex for ex in solved if ex not in format_examples]
    run_by_digest: dict[str, str] = {}
    for seed in icl.seeds:
      order = many_shot.exemplar_order(selectable, seed)
      for k in icl.shots:
        for method in icl.methods:
          point = {"role": role, "model": loaded.name, "method": method, "shots": k, "seed": seed,
                   "problems": len(tests)}
          points.append(point)
          try:
            shown = [many_shot.exemplars_for(order, k, q) for q in tests]
          except ValueError:  # more shots than problems the model solved
            point["skipped"] = f"pool of {len(order)} solved problems: too few for {k} shots"
            continue
          texts = [many_shot.build(task, method, ex, q, rationales=rationales,
                                   format_examples=format_examples)
                   for ex, q in zip(shown, tests)]
          lengths = [len(sampler.tokenizer.encode(t, add_bos=True)) for t in texts]
          fits = [n + icl.max_new_tokens <= icl.cache_length for n in lengths]
          point.update(exemplars=[ex.id for ex in shown[0]], run=sum(fits),
                       over_cache=len(fits) - sum(fits), longest_prompt=max(lengths))
          digest = hashlib.sha256("\0".join(texts).encode()).hexdigest()
          if digest in run_by_digest:
            point["folder"] = run_by_digest[digest]
            continue
          folder = os.path.join(role, method, f"k{k:04d}", f"seed{seed}")
          _run_point(ctx, loaded, sampler, task, tests, texts, fits, folder, icl.max_new_tokens,
                     cfg.seed, desc=f"{method} {k}-shot seed {seed}")
          run_by_digest[digest] = point["folder"] = folder
    counts[role] = {"points": sum(p["role"] == role for p in points),
                    "runs": len(run_by_digest), "pool": len(selectable),
                    "over_cache": sum(p.get("over_cache", 0) for p in points
                                      if p["role"] == role)}
  if ctx.is_chief:
    files.write_json(os.path.join(ctx.out, "points.json"), points)
  return counts


def _run_point(ctx, loaded, sampler, task, tests, texts, fits, folder: str,
               max_new_tokens: int, seed: int, desc: str) -> None:
  """Greedy solutions of the prompts that fit, graded into <folder>/graded (skipped when done:
  the point is the unit of resumption). Multi-host: process i takes problems i, i + P, ..."""
  raw, graded = (os.path.join(ctx.out, folder, name) for name in ("raw", "graded"))
  if os.path.isdir(graded):
    return
  process, processes = jax.process_index(), jax.process_count()
  mine = [i for i, fit in enumerate(fits) if fit and i % processes == process]
  with records.ShardWriter(raw, process_index=process) as writer:
    if mine:
      out = sampler(loaded.params, [texts[i] for i in mine], 1, max_new_tokens, Greedy(),
                    seed=seed, stop=prompts_lib.stop_strings(task), prompt_ids=mine,
                    desc=f"{desc} {loaded.name}")
      for i, row in zip(mine, out.completions):
        c = row[0]
        writer.write({"problem_id": tests[i].id, "problem_index": i, "sample_index": 0,
                      "model": loaded.name, "text": c.text, "tokens": c.tokens,
                      "logprobs": np.round(c.logprobs, 5),
                      "finish_reason": c.finish_reason.name.lower(),
                      "prompt_tokens": c.prompt_tokens, "flops": c.flops})
  common.grade_folder(task, raw, graded + ".tmp", {ex.id: ex for ex in tests})
  if ctx.is_chief:
    first = next((i for i, fit in enumerate(fits) if fit), 0)
    files.write_json(os.path.join(ctx.out, folder, "example_prompt.json"),
                     {"problem_id": tests[first].id, "prompt": texts[first]})
    os.replace(graded + ".tmp", graded)


@experiment.stage("icl_report", config_keys=("report", "seed"), validate=_validate)
def icl_report(ctx) -> dict[str, Any]:
  cfg = ctx.config
  src = ctx.input("icl_eval")
  points = files.read_json(os.path.join(src, "points.json"))
  grouped: dict[tuple[str, str, int], list[dict]] = collections.defaultdict(list)
  for point in points:
    grouped[(point["model"], point["method"], point["shots"])].append(point)
  cache: dict[str, list[dict]] = {}
  results: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
  for (model, method, k), group in grouped.items():
    table = np.full((len(group), group[0]["problems"]), np.nan)
    reasons: collections.Counter = collections.Counter()
    for row, point in enumerate(group):
      if "folder" not in point:
        continue
      if point["folder"] not in cache:
        cache[point["folder"]] = list(records.read_records(
            os.path.join(src, point["folder"], "graded"), prefix="graded"))
      for r in cache[point["folder"]]:
        table[row, r["problem_index"]] = float(r["correct"])
        reasons[r["finish_reason"]] += 1
    summary = seeds_lib.over_seeds(table, num_resamples=cfg.report.num_resamples,
                                   confidence=cfg.report.confidence, seed=cfg.seed)
    entry = {"seeds": [p["seed"] for p in group],
             "over_cache": sum(p.get("over_cache", 0) for p in group),
             "cut": sum(reasons[r] for r in CUT), "finish_reasons": dict(reasons),
             "skipped": sorted({p["skipped"] for p in group if "skipped" in p}),
             "summary": None if summary is None else summary.as_dict()}
    entry["marked"] = bool(entry["over_cache"] or entry["cut"] or entry["skipped"])
    results.setdefault(model, {}).setdefault(method, {})[k] = entry
  for model, curves in results.items():
    figure(os.path.join(ctx.out, f"{model}.png"), curves,
           title=f"{cfg.report.title}: {model}")
  if ctx.is_chief:
    files.write_json(os.path.join(ctx.out, "results.json"),
                     {model: {method: {str(k): e for k, e in curve.items()}
                              for method, curve in curves.items()}
                      for model, curves in results.items()})
    with open(os.path.join(ctx.out, "report.md"), "w") as f:
      f.write(report_markdown(cfg.report.title, results, cfg.report.confidence))
  print(f"report: {os.path.join(ctx.out, 'report.md')}", flush=True)
  return {model: {method: {str(k): (e["summary"] or {}).get("accuracy", {}).get("value")
                           for k, e in curve.items()} for method, curve in curves.items()}
          for model, curves in results.items()}


def _cell(entry: Mapping[str, Any]) -> str:
  summary = entry["summary"]
  if summary is None:
    text = "n/a"
  else:
    text = bootstrap.format_interval(summary["accuracy"], digits=3)
    if summary["seed_min"] is not None and len(entry["seeds"]) > 1:
      text += f" (seeds {summary['seed_min']:.3f}–{summary['seed_max']:.3f})"
  marks = []
  if entry["over_cache"]:
    marks.append(f"{entry['over_cache']} prompts over the cache")
  if entry["cut"]:
    marks.append(f"{entry['cut']} cut")
  marks += entry["skipped"]
  return text + (f" **\\*** {'; '.join(marks)}" if marks else "")


def report_markdown(title: str, results: Mapping[str, Mapping[str, Mapping[int, Any]]],
                    confidence: float) -> str:
  lines = [f"# {title}", "",
           f"Greedy accuracy on the test problems, averaged over the exemplar subsets (seeds) "
           f"of each point, with its {confidence:.0%} bootstrap interval over problems and, in "
           f"brackets, the lowest and highest seed's accuracy. Every method shows the same "
           f"exemplar problems at a given shot count and seed; prompts are nested. **\\*** marks "
           f"a point with prompts over the cache (not run: the accuracy is over the problems "
           f"that fit), solutions cut at the cache end or at max_new_tokens, or too few pool "
           f"problems.", ""]
  for model, curves in results.items():
    methods = list(curves)
    shots = sorted({k for curve in curves.values() for k in curve})
    lines += [f"## {model}", "", "| shots | " + " | ".join(methods) + " |",
              "|---|" + "---|" * len(methods)]
    for k in shots:
      lines.append(f"| {k} | " + " | ".join(_cell(curves[m][k]) if k in curves[m] else ""
                                             for m in methods) + " |")
    lines += ["", f"Figure: `{model}.png`", ""]
  return "\n".join(lines)


def figure(path: str, curves: Mapping[str, Mapping[int, Mapping[str, Any]]], *,
           title: str) -> str:
  """Accuracy against shots (symmetric-log axis, so 0 shots shows), one line per method with its
  bootstrap band and the seeds' range as error bars; marked points hollow."""
  fig = Figure(figsize=(7, 4.5), dpi=120)
  ax = fig.add_subplot()
  shots = sorted({k for curve in curves.values() for k in curve})
  for method, curve in curves.items():
    ks = [k for k in sorted(curve) if curve[k]["summary"] is not None]
    if not ks:
      continue
    acc = [curve[k]["summary"]["accuracy"] for k in ks]
    line, = ax.plot(ks, [a["value"] for a in acc], marker="o", markersize=4, label=method)
    color = line.get_color()
    ax.fill_between(ks, [a["low"] for a in acc], [a["high"] for a in acc], color=color,
                    alpha=0.15)
    lows = [curve[k]["summary"]["seed_min"] for k in ks]
    highs = [curve[k]["summary"]["seed_max"] for k in ks]
    ax.vlines(ks, lows, highs, color=color, linewidth=2, alpha=0.6)
    marked = [k for k in ks if curve[k]["marked"]]
    ax.plot(marked, [curve[k]["summary"]["accuracy"]["value"] for k in marked], "o",
            markersize=9, markerfacecolor="white", markeredgecolor=color)
  unrun = [k for k in shots
           if all(curve.get(k) is None or curve[k]["summary"] is None for curve in curves.values())]
  for k in unrun:
    ax.axvline(k, color="gray", linestyle=":", linewidth=1)
    ax.annotate("not run (over cache / pool)", (k, 0.02), rotation=90, fontsize=7, color="gray",
                ha="right", va="bottom")
  ax.set_xscale("symlog", linthresh=1)
  ax.set_xticks(shots)
  ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
  ax.set(xlabel="shots (exemplars in the prompt)", ylabel="greedy accuracy", ylim=(0, 1),
         title=title)
  ax.title.set_fontsize(9)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, title="hollow: marked point", title_fontsize=7)
  FigureCanvasAgg(fig)
  fig.tight_layout()
  fig.savefig(path)
  return path


__all__ = ["icl_rationales", "icl_eval", "icl_report", "report_markdown", "figure"]
