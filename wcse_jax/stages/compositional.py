"""Compositional GSM (papers.md §9): per model, greedy accuracy on Q1 alone, on Q2 alone (X's value
written in) and on the composed pair, and the reasoning gap Δ = S_comp − S1·S2 with bootstrap
intervals over pairs, set against sqrt(S1·S2) as the paper plots it.

comp_eval    for each model of config.models and each part (q1, q2, pair): one greedy solution per
             pair (common.generate: resumable, truncation counted), graded (common.grade_folder);
             pair_keys.json maps every evaluated problem id to its pair; construction.json says
             how the pairs were built (GSM8K: kept and dropped, by reason);
comp_report  report.md and results.json (S1, S2, S1·S2, S_comp, Δ, sqrt(S1·S2), each with its
             interval), a figure per model (the accuracies; Δ against sqrt(S1·S2)) and one with
             every model.

Tasks (config.task.name): `compositional_gsm`, synthetic arith_chain pairs (data/arith.py), or
`gsm8k_compositional`, pairs built from GSM8K files (data/gsm8k_pairs.py). config.task.knobs are
the task's knobs but `part`, which these stages set. The three parts of a task list the same pairs
in the same order, so the first sampling.num_problems of each are the same pairs.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Mapping

import ml_collections
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wcse_jax import experiment, files
from wcse_jax.data import records, tasks
from wcse_jax.data.example import Task
from wcse_jax.data.gsm8k_pairs import GSM8KCompositional
from wcse_jax.eval import bootstrap, gap
from wcse_jax.sampling.choosers import Greedy
from wcse_jax.stages import common

PARTS = gap.PARTS
SYNTHETIC = "compositional_gsm"
LABELS = {"q1": "Q1 alone (S1)", "q2": "Q2 alone, X given (S2)", "pair": "composed (S_comp)"}


def part_tasks(cfg: ml_collections.ConfigDict) -> dict[str, Task]:
  """The configured task's three parts, by part name."""
  knobs = dict(cfg.task.knobs)
  if cfg.task.name == GSM8KCompositional.name:
    return {part: GSM8KCompositional(part=part, **knobs) for part in PARTS}
  return {part: tasks.get_task(cfg.task.name, **knobs, part=part) for part in PARTS}


def _validate(cfg: ml_collections.ConfigDict) -> None:
  if cfg.task.name == GSM8KCompositional.name:
    accepted = list(inspect.signature(GSM8KCompositional.__init__).parameters)[1:]
  elif cfg.task.name == SYNTHETIC:
    accepted = tasks.accepted_knobs(SYNTHETIC)
  else:
    raise experiment.StageError(f"config.task.name={cfg.task.name!r}: the compositional stages "
                                f"read {SYNTHETIC!r} or {GSM8KCompositional.name!r}")
  knobs = set(cfg.task.knobs)
  if "part" in knobs:
    raise experiment.StageError("config.task.knobs.part: remove it; the compositional stages "
                                "evaluate every part (q1, q2, pair)")
  unknown = sorted(knobs - set(accepted))
  if unknown:
    raise experiment.StageError(f"config.task.knobs: {cfg.task.name!r} has no knob(s) {unknown}; "
                                f"its knobs are {[k for k in accepted if k != 'part']}")
  if not cfg.models:
    raise experiment.StageError("config.models: name at least one model to evaluate")
  common.non_negative(cfg, "sampling.num_problems", "sampling.num_shots", "seed")
  common.positive(cfg, "sampling.max_new_tokens", "sampling.cache_length",
                  "sampling.batch_prompts", "report.num_resamples")
  common.check(cfg, "sampling.split", lambda v: v != "train",
               "an evaluation split (the zoo trains on train)")
  common.check(cfg, "sampling.max_truncated", lambda v: 0 <= v <= 1, "a share in [0, 1]")
  common.check(cfg, "report.confidence", lambda v: 0 < v < 1, "in (0, 1)")


@experiment.stage("comp_eval", config_keys=("task", "models", "sampling", "mesh", "seed"),
                  validate=_validate)
def comp_eval(ctx) -> dict[str, Any]:
  cfg, s = ctx.config, ctx.config.sampling
  parts = part_tasks(cfg)
  problems = {part: task.examples(s.split)[:s.num_problems or None]
              for part, task in parts.items()}
  keys = {part: [ex.meta["pair"] for ex in exs] for part, exs in problems.items()}
  if any(keys[part] != keys["pair"] for part in PARTS):  # the three lists must be one pair list
    raise experiment.StageError(f"{cfg.task.name}: its q1, q2 and pair parts list different pairs "
                                f"on split {s.split!r}; the gap needs the same pairs in each")
  if ctx.is_chief:
    files.write_json(os.path.join(ctx.out, "pair_keys.json"),
                     {ex.id: ex.meta["pair"] for exs in problems.values() for ex in exs})
    construction = (parts["pair"].report(s.split) if isinstance(parts["pair"], GSM8KCompositional)
                    else {"task": cfg.task.name,
                       "pairs_in_split": len(parts["pair"].examples(s.split))})
    files.write_json(os.path.join(ctx.out, "construction.json"), construction)
  mesh = common.make_mesh(cfg)
  counts: dict[str, Any] = {"pairs": len(keys["pair"])}
  for role, spec in sorted(cfg.models.items()):
    loaded = common.load_model(spec, ctx, mesh)
    sampler = common.text_sampler(loaded, mesh, cache_length=s.cache_length,
                                  batch_size=s.batch_prompts)
    counts[role] = {"model": loaded.name}
    for part, task in parts.items():
      raw, graded = (os.path.join(ctx.out, role, part, name) for name in ("raw", "graded"))
      done = common.generate(
          loaded, sampler, task, problems[part], raw, num_samples=1,
          max_new_tokens=s.max_new_tokens, chooser=Greedy(), seed=cfg.seed,
          num_shots=s.num_shots, prompt_seed=cfg.seed, desc=f"greedy {part}",
          max_truncated=s.max_truncated)
      recs = common.grade_folder(task, raw, graded, {ex.id: ex for ex in problems[part]})
      accuracy = sum(r["correct"] for r in recs) / max(len(recs), 1)
      counts[role][part] = {"accuracy": accuracy, "finish_reasons": done["finish_reasons"]}
      ctx.log.info("comp_eval: %s greedy accuracy on %s: %.1f%% (%d problems)", loaded.name,
                   LABELS[part], 100 * accuracy, len(recs))
  return counts


@experiment.stage("comp_report", config_keys=("task.name", "models", "report", "seed"),
                  validate=_validate)
def comp_report(ctx) -> dict[str, Any]:
  cfg = ctx.config
  src = ctx.input("comp_eval")
  pair_of = files.read_json(os.path.join(src, "pair_keys.json"))
  construction = files.read_json(os.path.join(src, "construction.json"))
  results: dict[str, gap.Gap] = {}
  for role, spec in sorted(cfg.models.items()):
    by_part = {part: list(records.read_records(os.path.join(src, role, part, "graded"),
                                                prefix="graded"))
               for part in PARTS}
    _, table = gap.outcomes(by_part, lambda r: pair_of[r["problem_id"]])
    results[spec.name] = gap.reasoning_gap(table, num_resamples=cfg.report.num_resamples,
                                           confidence=cfg.report.confidence, seed=cfg.seed)
    figure(os.path.join(ctx.out, f"{spec.name}.png"), {spec.name: results[spec.name]},
           title=f"{cfg.report.title}: {spec.name}")
  if len(results) > 1:
    figure(os.path.join(ctx.out, "all_models.png"), results, title=cfg.report.title)
  if ctx.is_chief:
    files.write_json(os.path.join(ctx.out, "results.json"),
                     {"task": cfg.task.name, "construction": construction,
                      "models": {name: r.as_dict() for name, r in results.items()}})
    with open(os.path.join(ctx.out, "report.md"), "w") as f:
      f.write(report_markdown(cfg.report.title, cfg.task.name, results, construction))
  print(f"report: {os.path.join(ctx.out, 'report.md')}", flush=True)
  return {name: {"pairs": r.pairs, "gap": r.gap.value, "geo_mean": r.geo_mean.value}
          for name, r in results.items()}


def report_markdown(title: str, task: str, results: Mapping[str, gap.Gap],
                    construction: Mapping[str, Any]) -> str:
  """The report: one row per model, every figure with its interval."""
  confidence = next(iter(results.values())).gap.confidence
  fmt = lambda i: bootstrap.format_interval(i.as_dict(), digits=3)
  lines = [f"# {title}", "",
           f"Task `{task}`; greedy decoding; {confidence:.0%} percentile bootstrap intervals "
           f"over pairs (each pair keeps its three outcomes). Δ = S_comp − S1·S2 (papers.md §9): "
           f"below 0, composing the two questions costs more than solving each.", "",
           "| model | pairs | S1 (Q1) | S2 (Q2, X given) | S1·S2 | S_comp (pair) | Δ | "
           "sqrt(S1·S2) |", "|---|---|---|---|---|---|---|---|"]
  for name, r in results.items():
    lines.append(f"| {name} | {r.pairs} | {fmt(r.s1)} | {fmt(r.s2)} | {fmt(r.expected)} | "
                 f"{fmt(r.s_comp)} | {fmt(r.gap)} | {fmt(r.geo_mean)} |")
  lines += ["", "Figures: " + ", ".join(f"`{name}.png`" for name in results)
            + (", `all_models.png`" if len(results) > 1 else ""), ""]
  if "dropped" in construction:
    lines += ["## Pair construction", "",
              f"{construction['pairs']} pairs from {construction['problems']} problems "
              f"({construction['q2_candidates']} could serve as Q2; answer within a factor "
              f"{construction['answer_ratio']:g} of the original). Dropped, by reason:", ""]
    lines += [f"- {reason}: {n}" for reason, n in construction["dropped"].items()]
    lines.append("")
  return "\n".join(lines)


def figure(path: str, results: Mapping[str, gap.Gap], *, title: str) -> str:
  """Left: S1, S2, S1·S2 and S_comp per model with intervals. Right: Δ against sqrt(S1·S2), one
  point per model with both intervals, and Δ = 0 (independent hops) dashed."""
  fig = Figure(figsize=(11, 4.2), dpi=120)
  bars, scatter = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
  names = list(results)
  series = (("S1 (Q1)", "s1"), ("S2 (Q2, X given)", "s2"), ("S1·S2", "expected"),
            ("S_comp (pair)", "s_comp"))
  width = 0.8 / len(series)
  for j, (label, field) in enumerate(series):
    intervals = [getattr(results[n], field) for n in names]
    xs = [i - 0.4 + width * (j + 0.5) for i in range(len(names))]
    errors = [[iv.value - iv.low for iv in intervals], [iv.high - iv.value for iv in intervals]]
    bars.bar(xs, [iv.value for iv in intervals], width=width * 0.9, label=label, yerr=errors,
             capsize=3, hatch="//" if field == "expected" else None, alpha=0.85)
  bars.set_xticks(range(len(names)), names)
  confidence = results[names[0]].gap.confidence
  bars.set(ylabel=f"greedy accuracy ({confidence:.0%} CI)", ylim=(0, 1), title="accuracy")
  bars.grid(axis="y", alpha=0.3)
  bars.legend(fontsize=7)
  for name in names:
    r = results[name]
    x, y = r.geo_mean, r.gap
    scatter.errorbar(x.value, y.value, xerr=[[x.value - x.low], [x.high - x.value]],
                     yerr=[[y.value - y.low], [y.high - y.value]], fmt="o", capsize=3, label=name)
    scatter.annotate(name, (r.geo_mean.value, r.gap.value), textcoords="offset points",
                     xytext=(5, 5), fontsize=8)
  scatter.axhline(0, color="gray", linestyle="--", linewidth=1)
  scatter.set(xlabel="sqrt(S1·S2)", ylabel="Δ = S_comp − S1·S2", xlim=(0, 1),
              title="reasoning gap")
  scatter.grid(alpha=0.3)
  fig.suptitle(title, fontsize=10)
  FigureCanvasAgg(fig)
  fig.tight_layout()
  fig.savefig(path)
  return path


__all__ = ["comp_eval", "comp_report", "part_tasks", "report_markdown", "figure"]
