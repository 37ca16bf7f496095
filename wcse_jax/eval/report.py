"""The WC-vs-SE report, every number computed here from the sample records it names.

`write_report` reads the sampled data of both models and each fine-tuned student's evaluation
samples, computes coverage, diversity, false-positive rate and accuracy (wcse/metrics.py) with
bootstrap intervals over problems, and writes into `out_dir`:
  report.md    tables, the compute-matched plan, the uniqueness definition, the figures;
  report.json  the same numbers at full precision;
  coverage_vs_k.png, diversity_vs_k.png, finetuned_accuracy.png.
Both files list every record file read, with its sha256 and record count, so anyone can recompute
each number from exactly those files.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from wcse_jax.eval import bootstrap
from wcse_jax.eval import plots
from wcse_jax.wcse import metrics
from wcse_jax.wcse import plans

Reader = Callable[[str], Iterable[Mapping[str, Any]]]


def read_jsonl(path: str) -> Iterable[dict[str, Any]]:
  """Records from a JSON-lines file, gzip-compressed when the name ends in .gz."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt") as f:
    for line_number, line in enumerate(f, 1):
      if line.strip():
        try:
          yield json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{line_number}: not a JSON record: {e}") from e


def write_report(out_dir: str, *, data_files: Sequence[str],
                 eval_files: Mapping[str, Sequence[str]], plan: plans.SamplingPlan,
                 reader: Reader = read_jsonl, uniqueness: str = "normalized_text",
                 maj_ks: Sequence[int] = (1, 4, 8, 16), num_resamples: int = 1000, seed: int = 0,
                 confidence: float = 0.95, title: str = "WC vs SE sampling") -> dict[str, Any]:
  """Computes the report's numbers from the record files, writes it, and returns the numbers.

  Args:
    out_dir: folder for report.md, report.json and the PNGs (created if missing).
    data_files: record files of the sampled training data; must hold pools of both `plan.se.name`
      and `plan.wc.name` at least as large as the plan's largest budget.
    eval_files: fine-tuning setup label -> record files of that student's test-set samples.
    plan: the compute-matched plan; data metrics are reported at each budget's sample count.
    reader: path -> records; JSON lines by default, pass another for Parquet shards.
    uniqueness: how diversity decides two correct solutions are the same (metrics.UNIQUENESS).
    maj_ks: k for maj@k of the fine-tuned students (those not above their pools are reported).
    num_resamples, seed, confidence: the bootstrap over problems.
  """
  boot = dict(num_resamples=num_resamples, seed=seed, confidence=confidence)
  data, data_inputs = _load(data_files, reader)
  by_model = metrics.split_by_model(data)
  results: dict[str, Any] = {
      "title": title, "plan": plan.to_dict(), "plan_text": str(plan),
      "uniqueness": metrics.describe_uniqueness(uniqueness), "bootstrap": boot,
      "inputs": {"data": data_inputs, "eval": {}}, "models": {}, "budgets": [], "finetuned": []}

  curves = {}
  for role, model in (("SE", plan.se.name), ("WC", plan.wc.name)):
    if model not in by_model:
      raise ValueError(f"the data files hold no records of the {role} model {model!r}; models "
                       f"found: {', '.join(sorted(by_model)) or '(none)'}")
    records = by_model[model]
    sizes = [len(p) for p in metrics.pools(records).values()]
    if min(sizes) < plan.pool_size(model):
      raise ValueError(f"{role} model {model!r} has pools of {min(sizes)} samples for some "
                       f"problem, but the plan's largest budget needs {plan.pool_size(model)}")
    coverage = metrics.coverage(records)
    diversity = metrics.diversity(records, uniqueness=uniqueness)
    fpr = metrics.false_positive_rate(records)
    curves[model] = (coverage, diversity)
    results["models"][model] = {
        "role": role, "problems": len(sizes), "pool_min": min(sizes), "pool_max": max(sizes),
        "coverage": _by_k(coverage.as_dict()), "diversity": _by_k(diversity.as_dict()),
        "fpr": {"rate": _num(fpr.rate), "false_positives": fpr.false_positives,
                "judged": fpr.judged, "unjudged": fpr.unjudged,
                "interval": _interval(fpr.interval(**boot)) if fpr.judged else None}}

  for budget in plan.budgets:
    for role, model in (("SE", plan.se.name), ("WC", plan.wc.name)):
      samples = plan.samples(model, budget.name)
      coverage, diversity = curves[model]
      results["budgets"].append({
          "budget": budget.name, "role": role, "model": model, "samples": samples,
          "coverage": _interval(coverage.interval(samples, **boot)),
          "diversity": _interval(diversity.interval(samples, **boot))})

  for setup, files in eval_files.items():
    records, inputs = _load(files, reader)
    results["inputs"]["eval"][setup] = inputs
    grouped = metrics.pools(records)
    smallest = min(len(p) for p in grouped.values())
    majority = metrics.majority_vote(records, [k for k in maj_ks if k <= smallest])
    results["finetuned"].append({
        "setup": setup, "model": next(iter(grouped.values()))[0]["model"],
        "problems": len(grouped), "samples_per_problem": smallest,
        "accuracy": _interval(metrics.coverage(records, ks=(1,)).interval(1, **boot)),
        "maj": _by_k(majority.as_dict())})

  os.makedirs(out_dir, exist_ok=True)
  results["figures"] = _plots(out_dir, results)
  with open(os.path.join(out_dir, "report.json"), "w") as f:
    json.dump(results, f, indent=2)
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write(markdown(results))
  return results


def markdown(results: Mapping[str, Any]) -> str:
  """report.md from write_report's numbers."""
  boot = results["bootstrap"]
  ci = f"{boot['confidence']:.0%} CI"
  lines = [f"# {results['title']}", "",
           f"Intervals: percentile bootstrap over problems ({boot['num_resamples']} resamples, "
           f"seed {boot['seed']}). Every @k value is the exact expectation over k samples drawn "
           f"without replacement from each problem's pool.", "",
           "## Compute-matched plan", "", "```", results["plan_text"], "```", "",
           "## Uniqueness (diversity)", "", f"Two correct solutions are the same when their keys "
           f"are equal; key = {results['uniqueness']}.", "",
           "## Data quality at each budget", "",
           f"| budget | role | model | samples / problem | coverage@S [{ci}] "
           f"| diversity@S [{ci}] |",
           "|---|---|---|---|---|---|"]
  for row in results["budgets"]:
    lines.append(f"| {row['budget']} | {row['role']} | {row['model']} | {row['samples']} | "
                 f"{_fmt(row['coverage'])} | {_fmt(row['diversity'])} |")
  lines += ["", "## False-positive rate (correct answer, wrong reasoning)", "",
            f"| role | model | FPR [{ci}] | false positives / judged "
            f"| unjudged (steps_valid None) |",
            "|---|---|---|---|---|"]
  for model, m in results["models"].items():
    fpr = m["fpr"]
    lines.append(f"| {m['role']} | {model} | {_fmt(fpr['interval'])} | "
                 f"{fpr['false_positives']} / {fpr['judged']} | {fpr['unjudged']} |")
  lines += ["", "## Coverage and diversity vs k", ""]
  for model, m in results["models"].items():
    ks = _table_ks(m["pool_min"], [b["samples"] for b in results["budgets"] if b["model"] == model])
    lines += [f"{m['role']} {model} ({m['problems']} problems, {m['pool_min']}-{m['pool_max']} "
              f"samples each):", "", "| k | " + " | ".join(map(str, ks)) + " |",
              "|---|" + "---|" * len(ks),
              "| coverage@k | " + " | ".join(_fmt(m["coverage"][str(k)]) for k in ks) + " |",
              "| diversity@k | " + " | ".join(_fmt(m["diversity"][str(k)]) for k in ks) + " |", ""]
  lines += [f"![coverage vs k]({results['figures']['coverage']})",
            f"![diversity vs k]({results['figures']['diversity']})", ""]
  if results["finetuned"]:
    maj_ks = sorted({int(k) for row in results["finetuned"] for k in row["maj"]})
    lines += ["## Fine-tuned accuracy", "",
              f"| setup | student | problems | samples / problem | pass@1 [{ci}] | "
              + " | ".join(f"maj@{k}" for k in maj_ks) + " |",
              "|---|---|---|---|---|" + "---|" * len(maj_ks)]
    for row in results["finetuned"]:
      lines.append(f"| {row['setup']} | {row['model']} | {row['problems']} | "
                   f"{row['samples_per_problem']} | {_fmt(row['accuracy'])} | "
                   + " | ".join(_fmt(row["maj"].get(str(k))) for k in maj_ks) + " |")
    lines += ["", f"![fine-tuned accuracy]({results['figures']['accuracy']})", ""]
  lines += ["## Records read", "", "| set | file | sha256 | records |", "|---|---|---|---|"]
  inputs = [("data", f) for f in results["inputs"]["data"]]
  inputs += [(setup, f) for setup, files in results["inputs"]["eval"].items() for f in files]
  lines += [f"| {name} | {f['path']} | `{f['sha256']}` | {f['records']} |" for name, f in inputs]
  return "\n".join(lines) + "\n"


def _plots(out_dir: str, results: Mapping[str, Any]) -> dict[str, str]:
  def series(metric):
    return {f"{m['role']} {model}": {int(k): v for k, v in m[metric].items() if v is not None}
            for model, m in results["models"].items()}

  figures = {
      "coverage": plots.curves_vs_k(os.path.join(out_dir, "coverage_vs_k.png"),
                                    series("coverage"), title="Coverage", ylabel="coverage@k"),
      "diversity": plots.curves_vs_k(os.path.join(out_dir, "diversity_vs_k.png"),
                                     series("diversity"), title="Diversity",
                                     ylabel="unique correct per solved problem")}
  if results["finetuned"]:
    bars = {row["setup"]: bootstrap.Interval(**row["accuracy"])
            for row in results["finetuned"]}
    figures["accuracy"] = plots.bars_with_intervals(
        os.path.join(out_dir, "finetuned_accuracy.png"), bars, title="Fine-tuned pass@1",
        ylabel="accuracy")
  return {name: os.path.basename(path) for name, path in figures.items()}


def _load(paths: Sequence[str], reader: Reader) -> tuple[list[Mapping[str, Any]], list[dict]]:
  if not paths:
    raise ValueError("no record files given")
  records, inputs = [], []
  for path in paths:
    with open(path, "rb") as f:
      digest = hashlib.sha256(f.read()).hexdigest()
    read = list(reader(path))
    records += read
    inputs.append({"path": path, "sha256": digest, "records": len(read)})
  return records, inputs


def _table_ks(pool: int, budgets: Sequence[int]) -> list[int]:
  powers = [2 ** i for i in range(int(math.log2(pool)) + 1)]
  return sorted(set(powers) | set(budgets) | {pool})


def _interval(interval) -> dict[str, float | None]:
  return {"value": _num(interval.value), "low": _num(interval.low), "high": _num(interval.high),
          "confidence": interval.confidence}


def _by_k(values: Mapping[int, float]) -> dict[str, float | None]:
  return {str(k): _num(v) for k, v in values.items()}


def _num(x: float) -> float | None:
  """JSON has no NaN; an undefined value (e.g. diversity with nothing solved) is written as null."""
  return None if math.isnan(x) else float(x)


def _fmt(value) -> str:
  if value is None:
    return "n/a"
  if isinstance(value, Mapping):
    if value["value"] is None:
      return "n/a"
    return f"{value['value']:.4f} [{_fmt(value['low'])}, {_fmt(value['high'])}]"
  return f"{value:.4f}"
