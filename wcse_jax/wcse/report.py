"""The WC-vs-SE report, every number computed here from the sample records it names.

`write_report` reads the sampled data of both models and each student's evaluation samples and
writes into `out_dir` (report.md has this module as its one writer):
  report.md    the compute-matched plan and what the samples really cost; data quality at each
               budget (coverage, diversity over answer-correct and over step-valid solutions,
               false-positive rate) with WC - SE paired differences; the students' accuracy
               (pass@1, maj@k, their own FPR) next to their base model's, with WC - SE paired
               differences; every record file read;
  report.json  the same numbers at full precision;
  coverage_vs_compute.png, diversity_vs_compute.png, coverage_vs_k.png, diversity_vs_k.png,
  finetuned_accuracy.png.
Intervals are percentile bootstraps over problems; a paired difference resamples the same
problems for both sides (eval/metrics.paired_difference). Both files list every record file read,
with its sha256 and record count, so anyone can recompute each number from exactly those files.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from wcse_jax import files
from wcse_jax.eval import bootstrap, metrics, plots
from wcse_jax.wcse import plans

Reader = Callable[[str], Iterable[Mapping[str, Any]]]


@dataclasses.dataclass(frozen=True)
class StudentEval:
  """One student's (or base model's) test-set samples, as the finetune stage hands them over."""
  setup: str  # distillation | self_improvement | weak_to_strong
  data: str  # "wc", "se", or "base" (the student before fine-tuning)
  label: str  # "greedy" (pass@1) or "T=0.7" (maj@k)
  student: str
  examples: int  # training examples it was fine-tuned on (0 for the base)
  files: tuple[str, ...]


def write_report(out_dir: str, *, data_files: Sequence[str], plan: plans.SamplingPlan,
                 students: Sequence[StudentEval] = (), reader: Reader = files.read_jsonl,
                 uniqueness: str = "normalized_text", maj_ks: Sequence[int] = (1, 4, 8, 16),
                 num_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                 title: str = "WC vs SE sampling",
                 skipped_runs: Mapping[str, str] | None = None) -> dict[str, Any]:
  """Computes the report's numbers from the record files, writes it, and returns the numbers.

  Args:
    out_dir: folder for report.md, report.json and the PNGs (created if missing).
    data_files: record files of the sampled training data; must hold pools of both `plan.se.name`
      and `plan.wc.name`, on the same problems, at least as large as the plan's largest budget.
    plan: the compute-matched plan; data metrics are reported at each budget's sample count.
    students: the fine-tuned students' (and their bases') evaluation records.
    reader: path -> records; JSON lines by default, pass another for Parquet shards.
    uniqueness: how diversity decides two solutions are the same (metrics.UNIQUENESS).
    maj_ks: k for maj@k of the students (those not above their pools are reported).
    num_resamples, seed, confidence: the bootstrap over problems.
    skipped_runs: fine-tuning runs that trained no student -> why (listed in the report).
  """
  boot = dict(num_resamples=num_resamples, seed=seed, confidence=confidence)
  data, data_inputs = _load(data_files, reader)
  by_model = metrics.split_by_model(data)
  results: dict[str, Any] = {
      "title": title, "plan": plan.to_dict(), "plan_text": str(plan),
      "uniqueness": metrics.describe_uniqueness(uniqueness), "bootstrap": boot,
      "inputs": {"data": data_inputs, "students": []}, "models": {}, "budgets": [],
      "differences": [], "costs": [], "students": [], "student_differences": [],
      "skipped_runs": dict(skipped_runs or {})}

  measured = {}
  for role, model in (("SE", plan.se.name), ("WC", plan.wc.name)):
    if model not in by_model:
      raise ValueError(f"the data files hold no records of the {role} model {model!r}; models "
                       f"found: {', '.join(sorted(by_model)) or '(none)'}")
    records = by_model[model]
    sizes = [len(p) for p in metrics.pools(records).values()]
    if min(sizes) < plan.pool_size(model):
      raise ValueError(f"{role} model {model!r} has pools of {min(sizes)} samples for some "
                       f"problem, but the plan's largest budget needs {plan.pool_size(model)}")
    m = {"coverage": metrics.coverage(records),
         "diversity": metrics.diversity(records, uniqueness=uniqueness),
         "fpr": metrics.false_positive_rate(records)}
    try:
      m["diversity_valid"] = metrics.diversity(records, uniqueness=uniqueness,
                                               solved_by="steps_valid")
    except ValueError:  # reasoning not judged for every correct solution (real data)
      m["diversity_valid"] = None
    measured[model] = m
    fpr = m["fpr"]
    reasons = collections.Counter(r.get("finish_reason", "unknown") for r in records)
    results["models"][model] = {
        "role": role, "problems": len(sizes), "pool_min": min(sizes), "pool_max": max(sizes),
        "coverage": _by_k(m["coverage"].as_dict()), "diversity": _by_k(m["diversity"].as_dict()),
        "diversity_valid": (_by_k(m["diversity_valid"].as_dict())
                            if m["diversity_valid"] is not None else None),
        "flops_per_sample": metrics.costs(records).flops / (len(sizes) * min(sizes)),
        "finish_reasons": dict(sorted(reasons.items())),
        "fpr": {"rate": _num(fpr.rate), "false_positives": fpr.false_positives,
                "judged": fpr.judged, "unjudged": fpr.unjudged,
                "interval": _interval(fpr.interval(**boot)) if fpr.judged else None}}
  if set(measured[plan.se.name]["coverage"].problem_ids) != set(
      measured[plan.wc.name]["coverage"].problem_ids):
    raise ValueError("the SE and WC pools cover different problems; they cannot be compared "
                     "problem by problem")

  se, wc = measured[plan.se.name], measured[plan.wc.name]
  for budget in plan.budgets:
    s_se, s_wc = budget.se_samples, budget.wc_samples
    cost_se = metrics.costs(by_model[plan.se.name], s_se)
    cost_wc = metrics.costs(by_model[plan.wc.name], s_wc)
    results["costs"].append({
        "budget": budget.name,
        "se": dataclasses.asdict(cost_se) | {"flops_per_problem": cost_se.flops_per_problem},
        "wc": dataclasses.asdict(cost_wc) | {"flops_per_problem": cost_wc.flops_per_problem},
        "planned_ratio": (s_wc * plan.wc.cost_per_token(plan.mode))
                         / (s_se * plan.se.cost_per_token(plan.mode)),
        "realised_ratio": cost_wc.flops / cost_se.flops if cost_se.flops else None})
    for role, model, samples in (("SE", plan.se.name, s_se), ("WC", plan.wc.name, s_wc)):
      m = measured[model]
      results["budgets"].append({
          "budget": budget.name, "role": role, "model": model, "samples": samples,
          "coverage": _interval(m["coverage"].interval(samples, **boot)),
          "diversity": _interval(m["diversity"].interval(samples, **boot)),
          "diversity_valid": (_interval(m["diversity_valid"].interval(samples, **boot))
                              if m["diversity_valid"] is not None else None)})
    for metric in ("coverage", "diversity", "diversity_valid"):
      if wc[metric] is None or se[metric] is None:
        continue
      results["differences"].append({
          "budget": budget.name, "metric": metric,
          "wc_minus_se": _interval(metrics.paired_difference(wc[metric], se[metric], s_wc, s_se,
                                                             **boot))})
  if wc["fpr"].judged and se["fpr"].judged:
    results["differences"].append({
        "budget": "pool", "metric": "fpr",
        "wc_minus_se": _interval(metrics.paired_difference(wc["fpr"], se["fpr"], **boot))})

  _students(results, students, reader, maj_ks, boot)
  os.makedirs(out_dir, exist_ok=True)
  results["figures"] = _plots(out_dir, results, measured)
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write(markdown(results))
  return results


def _students(results, students, reader, maj_ks, boot) -> None:
  """Per student: pass@1 (greedy), maj@k (sampled), its own FPR; WC - SE paired differences."""
  curves = {}
  for ev in students:
    records, inputs = _load(ev.files, reader)
    results["inputs"]["students"].append({"setup": ev.setup, "data": ev.data, "label": ev.label,
                                          "files": inputs})
    grouped = metrics.pools(records)
    smallest = min(len(p) for p in grouped.values())
    accuracy = metrics.coverage(records, ks=(1,))
    majority = metrics.majority_vote(records, [k for k in maj_ks if k <= smallest])
    fpr = metrics.false_positive_rate(records)
    curves[(ev.setup, ev.data, ev.label)] = (accuracy, majority)
    results["students"].append({
        "setup": ev.setup, "data": ev.data, "label": ev.label, "student": ev.student,
        "examples": ev.examples, "problems": len(grouped), "samples_per_problem": smallest,
        "accuracy": _interval(accuracy.interval(1, **boot)),
        "maj": _by_k(majority.as_dict()),
        "fpr": {"rate": _num(fpr.rate), "false_positives": fpr.false_positives,
                "judged": fpr.judged}})
  # WC data against SE data, and each trained student against its own base (did it learn?).
  for setup, label in sorted({(setup, label) for setup, _, label in curves}):
    for data, versus in (("wc", "se"), ("wc", "base"), ("se", "base")):
      mine, other = curves.get((setup, data, label)), curves.get((setup, versus, label))
      if mine is None or other is None:
        continue
      (accuracy, majority), (other_accuracy, other_majority) = mine, other
      row = {"setup": setup, "label": label, "comparison": f"{data} - {versus}",
             "pass@1": _interval(metrics.paired_difference(accuracy, other_accuracy, 1, 1,
                                                           **boot))}
      for k in majority.ks:
        if k in other_majority.ks:
          row[f"maj@{k}"] = _interval(metrics.paired_difference(majority, other_majority, k, k,
                                                                **boot))
      results["student_differences"].append(row)


def markdown(results: Mapping[str, Any]) -> str:
  """report.md from write_report's numbers."""
  boot = results["bootstrap"]
  ci = f"{boot['confidence']:.0%} CI"
  lines = [f"# {results['title']}", "",
           f"Intervals: percentile bootstrap over problems ({boot['num_resamples']} resamples, "
           f"seed {boot['seed']}); WC - SE differences resample the same problems for both. "
           f"Every @k value is the exact expectation over k samples drawn without replacement "
           f"from each problem's pool.", "",
           "## Compute-matched plan", "", "```", results["plan_text"], "```", "",
           "## What the samples cost", "",
           "Realised FLOPs and generated tokens summed from the records (each record's FLOPs: its "
           "share of its prompt's prefill plus its own decode). The plan matches cost per token "
           "and assumes equal solution lengths; the realised ratio shows what that gave.", "",
           "| budget | SE samples | WC samples | SE tokens | WC tokens | SE FLOPs / problem | "
           "WC FLOPs / problem | planned WC/SE | realised WC/SE |",
           "|---|---|---|---|---|---|---|---|---|"]
  for c in results["costs"]:
    lines.append(f"| {c['budget']} | {c['se']['samples']} | {c['wc']['samples']} | "
                 f"{c['se']['tokens']} | {c['wc']['tokens']} | "
                 f"{c['se']['flops_per_problem']:.4g} | {c['wc']['flops_per_problem']:.4g} | "
                 f"{c['planned_ratio']:.3f} | {_fmt(c['realised_ratio'], 3)} |")
  lines += ["", "How the samples ended (max_tokens and out_of_cache are cut off; a stage fails "
            "above its allowed share):", "", "| role | model | records | finish reasons |",
            "|---|---|---|---|"]
  for model, m in results["models"].items():
    total = sum(m["finish_reasons"].values())
    shares = ", ".join(f"{reason} {count / total:.1%}"
                       for reason, count in m["finish_reasons"].items())
    lines.append(f"| {m['role']} | {model} | {total} | {shares} |")
  lines += ["", "## Uniqueness (diversity)", "",
            f"Two solutions are the same when their keys are equal; key = "
            f"{results['uniqueness']}. Diversity counts unique final-answer-correct solutions per "
            f"solved problem; \"step-valid\" counts only solutions whose every step is right as "
            f"well (n/a where the reasoning was not judged).", "",
            "## Data quality at each budget", "",
            f"| budget | role | model | samples / problem | coverage@S [{ci}] "
            f"| diversity@S [{ci}] | step-valid diversity@S [{ci}] |",
            "|---|---|---|---|---|---|---|"]
  for row in results["budgets"]:
    lines.append(f"| {row['budget']} | {row['role']} | {row['model']} | {row['samples']} | "
                 f"{_fmt(row['coverage'])} | {_fmt(row['diversity'])} | "
                 f"{_fmt(row['diversity_valid'])} |")
  lines += ["", f"Paired differences, WC - SE [{ci}] (positive: WC higher):", "",
            "| budget | metric | WC - SE |", "|---|---|---|"]
  lines += [f"| {d['budget']} | {d['metric']} | {_fmt(d['wc_minus_se'])} |"
            for d in results["differences"]]
  lines += ["", "## False-positive rate (correct answer, wrong reasoning)", "",
            f"| role | model | FPR [{ci}] | false positives / judged "
            f"| unjudged (steps_valid None) |",
            "|---|---|---|---|---|"]
  for model, m in results["models"].items():
    fpr = m["fpr"]
    lines.append(f"| {m['role']} | {model} | {_fmt(fpr['interval'])} | "
                 f"{fpr['false_positives']} / {fpr['judged']} | {fpr['unjudged']} |")
  lines += ["", "## Coverage and diversity against compute and against k", "",
            f"![coverage vs compute]({results['figures']['coverage_compute']})",
            f"![diversity vs compute]({results['figures']['diversity_compute']})", ""]
  for model, m in results["models"].items():
    ks = _table_ks(m["pool_min"], [b["samples"] for b in results["budgets"] if b["model"] == model])
    lines += [f"{m['role']} {model} ({m['problems']} problems, {m['pool_min']}-{m['pool_max']} "
              f"samples each, {m['flops_per_sample']:.4g} FLOPs per sample):", "",
              "| k | " + " | ".join(map(str, ks)) + " |", "|---|" + "---|" * len(ks),
              "| coverage@k | " + " | ".join(_fmt(m["coverage"][str(k)]) for k in ks) + " |",
              "| diversity@k | " + " | ".join(_fmt(m["diversity"][str(k)]) for k in ks) + " |"]
    if m["diversity_valid"] is not None:
      lines.append("| step-valid diversity@k | "
                   + " | ".join(_fmt(m["diversity_valid"][str(k)]) for k in ks) + " |")
    lines.append("")
  lines += [f"![coverage vs k]({results['figures']['coverage']})",
            f"![diversity vs k]({results['figures']['diversity']})", ""]
  if results["students"]:
    maj_ks = sorted({int(k) for row in results["students"] for k in row["maj"]})
    lines += ["## Students", "",
              "Each setup's student fine-tuned on WC data and on SE data for the same number of "
              "steps, and the same student before fine-tuning (base).", "",
              f"| setup | data | eval | student | training examples | problems | samples / "
              f"problem | accuracy [{ci}] | " + " | ".join(f"maj@{k}" for k in maj_ks)
              + " | own FPR |",
              "|---|---|---|---|---|---|---|---|" + "---|" * len(maj_ks) + "---|"]
    for row in results["students"]:
      fpr = row["fpr"]
      own = (f"{_fmt(fpr['rate'])} ({fpr['false_positives']}/{fpr['judged']})"
             if fpr["judged"] else "n/a")
      lines.append(f"| {row['setup']} | {row['data']} | {row['label']} | {row['student']} | "
                   f"{row['examples']} | {row['problems']} | {row['samples_per_problem']} | "
                   f"{_fmt(row['accuracy'])} | "
                   + " | ".join(_fmt(row["maj"].get(str(k))) for k in maj_ks) + f" | {own} |")
    if results["student_differences"]:
      keys = sorted({k for d in results["student_differences"] for k in d
                     if k not in ("setup", "label", "comparison")},
                    key=lambda k: (k != "pass@1", len(k), k))
      lines += ["", f"Paired differences between students of one setup [{ci}]: WC-data minus "
                f"SE-data student, and each trained student minus its base (the same model "
                f"before fine-tuning) on the same test problems:", "",
                "| setup | eval | students | " + " | ".join(keys) + " |",
                "|---|---|---|" + "---|" * len(keys)]
      lines += [f"| {d['setup']} | {d['label']} | {d['comparison']} | "
                + " | ".join(_fmt(d.get(k)) for k in keys) + " |"
                for d in results["student_differences"]]
    lines += ["", f"![students]({results['figures']['accuracy']})", ""]
  if results["skipped_runs"]:
    lines += ["## Students not trained", "", "| run | reason |", "|---|---|"]
    lines += [f"| {run} | {why} |" for run, why in results["skipped_runs"].items()]
    lines += [""]
  lines += ["## Records read", "", "| set | file | sha256 | records |", "|---|---|---|---|"]
  inputs = [("data", f) for f in results["inputs"]["data"]]
  inputs += [(f"{s['setup']} / {s['data']} / {s['label']}", f)
             for s in results["inputs"]["students"] for f in s["files"]]
  lines += [f"| {name} | {f['path']} | `{f['sha256']}` | {f['records']} |" for name, f in inputs]
  return "\n".join(lines) + "\n"


def _plots(out_dir: str, results: Mapping[str, Any], measured) -> dict[str, str]:
  def series(metric, compute: bool):
    out = {}
    for model, m in results["models"].items():
      if m[metric] is None:
        continue
      scale = m["flops_per_sample"] if compute else 1.0
      out[f"{m['role']} {model}"] = {int(k) * scale: v for k, v in m[metric].items()
                                     if v is not None}
    return out

  budgets = {}
  for c in results["costs"]:
    budgets[c["budget"]] = c["se"]["flops_per_problem"]
  figures = {
      "coverage": plots.curves_vs_k(os.path.join(out_dir, "coverage_vs_k.png"),
                                    series("coverage", False), title="Coverage",
                                    ylabel="coverage@k"),
      "diversity": plots.curves_vs_k(os.path.join(out_dir, "diversity_vs_k.png"),
                                     series("diversity", False), title="Diversity",
                                     ylabel="unique correct per solved problem"),
      "coverage_compute": plots.curves_vs_compute(
          os.path.join(out_dir, "coverage_vs_compute.png"), series("coverage", True),
          budgets=budgets, title="Coverage at matched compute", ylabel="coverage"),
      "diversity_compute": plots.curves_vs_compute(
          os.path.join(out_dir, "diversity_vs_compute.png"),
          {**series("diversity", True),
           **{f"{name} (step-valid)": c for name, c in series("diversity_valid", True).items()}},
          budgets=budgets, title="Diversity at matched compute",
          ylabel="unique solutions per solved problem")}
  if results["students"]:
    greedy = [row for row in results["students"] if row["label"] == "greedy"] or \
        results["students"]
    groups: dict[str, dict[str, bootstrap.Interval]] = {}
    for row in greedy:
      groups.setdefault(row["setup"], {})[row["data"]] = bootstrap.Interval(**row["accuracy"])
    figures["accuracy"] = plots.grouped_bars(
        os.path.join(out_dir, "finetuned_accuracy.png"), groups,
        title="Students: greedy pass@1 after fine-tuning on WC vs SE data (base marked)",
        ylabel="accuracy", baseline="base")
  return {name: os.path.basename(path) for name, path in figures.items()}


def _load(paths: Sequence[str], reader: Reader) -> tuple[list[Mapping[str, Any]], list[dict]]:
  if not paths:
    raise ValueError("no record files given")
  records, inputs = [], []
  for path in paths:
    read = list(reader(path))
    records += read
    inputs.append({"path": path, "sha256": files.sha256(path), "records": len(read)})
  return records, inputs


def _table_ks(pool: int, budgets: Sequence[int]) -> list[int]:
  powers = [2 ** i for i in range(int(math.log2(pool)) + 1)]
  return sorted(set(powers) | set(budgets) | {pool})


def _interval(interval) -> dict[str, float | None]:
  return {"value": _num(interval.value), "low": _num(interval.low), "high": _num(interval.high),
          "confidence": interval.confidence}


def _by_k(values: Mapping[int, float]) -> dict[str, float | None]:
  return {str(k): _num(v) for k, v in values.items()}


def _num(x: float | None) -> float | None:
  """JSON has no NaN; an undefined value (e.g. diversity with nothing solved) is written as null."""
  return None if x is None or math.isnan(x) else float(x)


def _fmt(value, digits: int = 4) -> str:
  if value is None:
    return "n/a"
  if isinstance(value, Mapping):
    if value["value"] is None:
      return "n/a"
    return f"{value['value']:.{digits}f} [{_fmt(value['low'], digits)}, " \
           f"{_fmt(value['high'], digits)}]"
  return f"{value:.{digits}f}"


__all__ = ["StudentEval", "write_report", "markdown"]
