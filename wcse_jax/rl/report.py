"""The Best-of-N-aware fine-tuning report (papers.md §3(d), (e)).

For the base policy and every fine-tuned one, at every evaluation temperature T and N in `ns`:
pass@N (the metric of BoN-RL-S, BoN-RLB and the pass@k estimators), verifier Best-of-N (the
metric of BoN-RL-V, with the training verifier) and pass@1, all unbiased estimates from one pool
of N_max samples per problem with bootstrap intervals over problems, and paired differences
against standard RL (the same problems resampled for both). Also: a heat map per method over
(N, T), the co-scaling law pass@N(T) ~ exp(a(T) N^b(T)) fitted per method and temperature, and the
training curves (reward, pass@N estimate, KL, clip fraction) logged by the rollouts.
"""
from __future__ import annotations

import math
import os
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wcse_jax import files
from wcse_jax.eval import bon, bootstrap, metrics


def _fmt(interval) -> str:
  return bootstrap.format_interval(interval, digits=3)


def coscaling_fit(ns: Sequence[int], pass_at_n: Sequence[float]) -> dict[str, float] | None:
  """Least squares of log(-log pass@N) = log(-a) + b log N (papers.md §3(c)); None when fewer
  than two N have 0 < pass@N < 1 (the law is then undetermined)."""
  points = [(n, p) for n, p in zip(ns, pass_at_n) if 0 < p < 1]
  if len(points) < 2:
    return None
  x = np.log([n for n, _ in points])
  y = np.log(-np.log([p for _, p in points]))
  b, c = np.polyfit(x, y, 1)
  return {"a": float(-math.exp(c)), "b": float(b), "points": len(points)}


def write_report(out_dir: str, *, pools: Mapping[tuple[str, float], Sequence[Mapping[str, Any]]],
                 ns: Sequence[int], baseline: str = "rl", verifier: str | None = None,
                 training: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                 num_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                 title: str = "Best-of-N-aware fine-tuning") -> dict[str, Any]:
  """pools: (method, temperature) -> graded records (with `score` when `verifier` is set)."""
  boot = dict(num_resamples=num_resamples, seed=seed, confidence=confidence)
  methods = list(dict.fromkeys(m for m, _ in pools))
  temperatures = sorted({t for _, t in pools})
  ns = list(ns)
  curves: dict[tuple[str, float, str], metrics.Curve] = {}
  for (method, t), recs in pools.items():
    curves[(method, t, "pass@N")] = metrics.coverage(recs, ns)
    if verifier:
      curves[(method, t, "Bo-N")] = bon.best_of_k_curve(recs, ns)
  results: dict[str, Any] = {"title": title, "bootstrap": boot, "ns": ns, "methods": methods,
                             "temperatures": temperatures, "verifier": verifier,
                             "baseline": baseline if baseline in methods else None,
                             "values": {}, "differences": {}, "coscaling": {}, "training": {}}
  for (method, t, metric), curve in curves.items():
    results["values"][f"{method}|{t:g}|{metric}"] = {
        str(n): curve.interval(n, **boot).as_dict() for n in ns}
    base = curves.get((baseline, t, metric))
    if base is not None and method != baseline:
      results["differences"][f"{method}|{t:g}|{metric}"] = {
          str(n): metrics.paired_difference(curve, base, n, n, **boot).as_dict() for n in ns}
  for method in methods:
    for t in temperatures:
      values = [curves[(method, t, "pass@N")].at(n) for n in ns]
      results["coscaling"][f"{method}|{t:g}"] = coscaling_fit(ns, values)
  for method, rows in (training or {}).items():
    last = {}
    for row in rows:
      last.update({k: v for k, v in row.items() if k.startswith(("rollout/", "train/loss"))})
    results["training"][method] = last
  os.makedirs(out_dir, exist_ok=True)
  results["figures"] = _figures(out_dir, results, curves, training or {})
  files.write_json(os.path.join(out_dir, "report.json"), results)
  files.write_text(os.path.join(out_dir, "report.md"), markdown(results))
  return results


def markdown(results: Mapping[str, Any]) -> str:
  boot, ns = results["bootstrap"], results["ns"]
  ci = f"{boot['confidence']:.0%} CI"
  metric_names = ["pass@N"] + (["Bo-N"] if results["verifier"] else [])
  lines = [f"# {results['title']}", "",
           "Each method fine-tunes the same base policy on fresh rollouts; every number below is "
           "an "
           "unbiased estimate from one pool of samples per test problem, with a percentile "
           f"bootstrap over problems ({boot['num_resamples']} resamples, seed {boot['seed']}). "
           "BoN-RL-S, BoN-RLB and the pass@k estimators are judged by pass@N, BoN-RL-V by "
           f"verifier Best-of-N (verifier: {results['verifier'] or 'none'}), all by pass@1 "
           "(pass@N at N = 1).", ""]
  for t in results["temperatures"]:
    lines += [f"## T = {t:g} [{ci}]", "",
              "| method | " + " | ".join(f"{m} N={n}" for m in metric_names for n in ns) + " |",
              "|---|" + "---|" * (len(ns) * len(metric_names))]
    for method in results["methods"]:
      cells = [_fmt(results["values"][f"{method}|{t:g}|{m}"][str(n)])
               for m in metric_names for n in ns]
      lines.append(f"| {method} | " + " | ".join(cells) + " |")
    if results["baseline"]:
      lines += ["", f"Paired differences against {results['baseline']} (same problems):", "",
                "| method | " + " | ".join(f"{m} N={n}" for m in metric_names for n in ns) + " |",
                "|---|" + "---|" * (len(ns) * len(metric_names))]
      for method in results["methods"]:
        if method == results["baseline"]:
          continue
        cells = [_fmt(results["differences"][f"{method}|{t:g}|{m}"][str(n)])
                 for m in metric_names for n in ns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines.append("")
  lines += ["## Co-scaling law pass@N(T) ~ exp(a(T) N^b(T))", "",
            "| method | " + " | ".join(f"T={t:g}: a, b" for t in results["temperatures"]) + " |",
            "|---|" + "---|" * len(results["temperatures"])]
  for method in results["methods"]:
    cells = []
    for t in results["temperatures"]:
      fit = results["coscaling"][f"{method}|{t:g}"]
      cells.append("n/a" if fit is None else f"{fit['a']:.3f}, {fit['b']:.3f}")
    lines.append(f"| {method} | " + " | ".join(cells) + " |")
  if results["training"]:
    keys = sorted({k for row in results["training"].values() for k in row})
    lines += ["", "## End of training (last logged values; the curves are in TensorBoard)", "",
              "| method | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for method, row in results["training"].items():
      lines.append(f"| {method} | " + " | ".join(
          f"{row[k]:.4g}" if k in row else "n/a" for k in keys) + " |")
  lines += [""] + [f"![{name}]({path})" for name, path in results["figures"].items()] + [""]
  return "\n".join(lines)


def _figures(out_dir, results, curves, training) -> dict[str, str]:
  out = {}
  metric_names = ["pass@N"] + (["Bo-N"] if results["verifier"] else [])
  methods, temperatures, ns = results["methods"], results["temperatures"], results["ns"]
  for metric in metric_names:
    figure = Figure(figsize=(3 * len(methods), 3), dpi=110)
    for i, method in enumerate(methods):
      ax = figure.add_subplot(1, len(methods), i + 1)
      grid = np.array([[curves[(method, t, metric)].at(n) for n in ns] for t in temperatures])
      image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
      for (r, c), value in np.ndenumerate(grid):
        ax.text(c, r, f"{value:.2f}", ha="center", va="center", fontsize=7,
                color="white" if value < 0.5 else "black")
      ax.set_xticks(range(len(ns)), [str(n) for n in ns])
      ax.set_yticks(range(len(temperatures)), [f"{t:g}" for t in temperatures])
      ax.set(title=method, xlabel="N", ylabel="T" if i == 0 else None)
      ax.title.set_fontsize(8)
    figure.colorbar(image, ax=figure.axes, shrink=0.8)
    name = f"heatmap_{metric.replace('@', '_at_').replace('-', '_').lower()}.png"
    out[f"{metric} over (N, T)"] = _save(figure, os.path.join(out_dir, name))
  if training:
    figure = Figure(figsize=(10, 3.5), dpi=110)
    for i, key in enumerate(("rollout/reward", "rollout/pass_at_n", "rollout/kl",
                             "rollout/clipped_fraction")):
      ax = figure.add_subplot(1, 4, i + 1)
      for method, rows in training.items():
        points = [(r["step"], r[key]) for r in rows if key in r]
        if points:
          ax.plot(*zip(*points), label=method, linewidth=1)
      ax.set(title=key.split("/")[1], xlabel="step")
      ax.title.set_fontsize(8)
      ax.grid(alpha=0.3)
    figure.axes[0].legend(fontsize=6)
    out["training curves"] = _save(figure, os.path.join(out_dir, "training_curves.png"))
  return out


def _save(figure: Figure, path: str) -> str:
  FigureCanvasAgg(figure)
  figure.savefig(path, bbox_inches="tight")
  return os.path.basename(path)


__all__ = ["coscaling_fit", "write_report", "markdown"]
