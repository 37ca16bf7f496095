"""The Best-of-N report: every verifier (and self-consistency, weighted self-consistency and the
pass@N oracle) judged by unbiased Best-of-N accuracy on one pool of N_max samples per problem.

`write_report` writes into `out_dir`:
  report.md / report.json   accuracy at each N in `ns` with bootstrap intervals over problems,
                            paired differences against the baseline verifier (the same problems
                            resampled for both), and what verification costs in FLOPs;
  bon_vs_n.png              accuracy against N, one line per method with its bootstrap band;
  bon_vs_compute.png        accuracy against total FLOPs per problem (sampling the N solutions +
                            verifying them): is it better to verify K times or to sample more?
The estimators are eval/bon.py's (exact expectations over N-subsets of the pool, ties uniform).
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import numpy as np

from wcse_jax import files
from wcse_jax.eval import bon, bootstrap, metrics, plots


def _fmt(interval) -> str:
  return bootstrap.format_interval(interval, digits=3)

# Verifiers whose scores are probabilities, so summing the top scores per answer (weighted
# self-consistency) means something; a DPO verifier's log-likelihood is not one.
PROBABILITY_SCORES = ("genrm_direct", "genrm_cot", "discriminative", "llm_judge")


def write_report(out_dir: str, *, pool: Sequence[Mapping[str, Any]],
                 scores: Mapping[str, Sequence[Mapping[str, Any]]], ns: Sequence[int],
                 baseline: str = "discriminative", weighted_top: int = 0,
                 num_resamples: int = 1000, seed: int = 0, confidence: float = 0.95,
                 title: str = "Best-of-N",
                 skipped: Mapping[str, str] | None = None) -> dict[str, Any]:
  """Computes every curve from the graded pool and the score records, writes the report.

  pool: the graded evaluation samples (problem_id, sample_index, model, correct, answer,
    answer_key, flops); scores: verifier name -> its score records (problem_id, sample_index,
    score, flops), one per pool sample; weighted_top: sum only each answer's top-k scores in
    weighted self-consistency (0: all); skipped: verifiers that could not be trained -> why.
  """
  boot = dict(num_resamples=num_resamples, seed=seed, confidence=confidence)
  pool = [dict(r, answer=r.get("answer_key", r["answer"])) for r in pool]
  keys = {(r["problem_id"], r["sample_index"]) for r in pool}
  n_max = min(len(p) for p in metrics.pools(pool).values())
  ks = tuple(range(1, n_max + 1))
  solution_flops = float(np.mean([r["flops"] for r in pool]))
  curves = {"pass@N (oracle)": metrics.coverage(pool, ks),
            "self-consistency": metrics.majority_vote(pool, ks)}
  cost = {name: 0.0 for name in curves}
  for name, recs in scores.items():
    by_key = {(r["problem_id"], r["sample_index"]): r for r in recs}
    missing = keys - set(by_key)
    if missing:
      raise ValueError(f"verifier {name!r} has no score for {len(missing)} pool samples "
                       f"(first: {sorted(missing)[0]}); rerun the score stage")
    scored = [dict(r, score=by_key[(r["problem_id"], r["sample_index"])]["score"]) for r in pool]
    cost[name] = float(np.mean([by_key[k]["flops"] for k in keys]))
    curves[name] = bon.best_of_k_curve(scored, ks)
    if name in PROBABILITY_SCORES:
      label = f"weighted SC ({name})"
      curves[label] = bon.weighted_self_consistency_curve(scored, ks, top=weighted_top or None,
                                                          seed=seed)
      cost[label] = cost[name]
  ns = [n for n in ns if n <= n_max]
  results: dict[str, Any] = {
      "title": title, "bootstrap": boot, "n_max": n_max, "problems": len(metrics.pools(pool)),
      "ns": ns, "baseline": baseline if baseline in curves else None,
      "solution_flops": solution_flops, "verification_flops": cost,
      "methods": {name: {"values": {str(k): float(v) for k, v in c.as_dict().items()},
                         "at": {str(n): c.interval(n, **boot).as_dict() for n in ns}}
                  for name, c in curves.items()},
      "differences": {}, "skipped": dict(skipped or {})}
  if results["baseline"]:
    for name, c in curves.items():
      if name != baseline:
        results["differences"][name] = {
            str(n): metrics.paired_difference(c, curves[baseline], n, n, **boot).as_dict()
            for n in ns}
  os.makedirs(out_dir, exist_ok=True)
  results["figures"] = _plots(out_dir, results, curves, boot)
  files.write_json(os.path.join(out_dir, "report.json"), results)
  files.write_text(os.path.join(out_dir, "report.md"), markdown(results))
  return results


def markdown(results: Mapping[str, Any]) -> str:
  boot = results["bootstrap"]
  ci = f"{boot['confidence']:.0%} CI"
  ns = results["ns"]
  lines = [f"# {results['title']}", "",
           f"{results['problems']} problems, a pool of {results['n_max']} samples each. Best-of-N "
           f"is the exact expectation over N-subsets of the pool (ties broken uniformly); "
           f"intervals: percentile bootstrap over problems ({boot['num_resamples']} resamples, "
           f"seed {boot['seed']}).", "",
           f"## Accuracy at N [{ci}]", "",
           "| method | " + " | ".join(f"N={n}" for n in ns) + " |",
           "|---|" + "---|" * len(ns)]
  for name, m in results["methods"].items():
    lines.append(f"| {name} | " + " | ".join(_fmt(m["at"][str(n)]) for n in ns) + " |")
  if results["differences"]:
    lines += ["", f"## Paired differences against {results['baseline']} [{ci}]", "",
              "The same problems resampled for both; positive: better than the baseline.", "",
              "| method | " + " | ".join(f"N={n}" for n in ns) + " |", "|---|" + "---|" * len(ns)]
    for name, diffs in results["differences"].items():
      lines.append(f"| {name} | " + " | ".join(_fmt(diffs[str(n)]) for n in ns) + " |")
  lines += ["", "## What verification costs", "",
            f"Sampling one solution costs {results['solution_flops']:.4g} FLOPs on average. "
            f"Per solution verified:", "", "| verifier | FLOPs per solution | x a solution |",
            "|---|---|---|"]
  for name, flops in results["verification_flops"].items():
    if flops:
      lines.append(f"| {name} | {flops:.4g} | {flops / results['solution_flops']:.2f} |")
  if results["skipped"]:
    lines += ["", "## Verifiers not trained", "", "| verifier | reason |", "|---|---|"]
    lines += [f"| {name} | {why} |" for name, why in results["skipped"].items()]
  lines += ["", f"![accuracy vs N]({results['figures']['n']})",
            f"![accuracy vs compute]({results['figures']['compute']})", ""]
  return "\n".join(lines) + "\n"


def _plots(out_dir, results, curves, boot) -> dict[str, str]:
  bands, compute = {}, {}
  for name, c in curves.items():
    ks = c.ks
    intervals = [c.interval(k, **boot) for k in ks]
    bands[name] = {k: (i.value, i.low, i.high) for k, i in zip(ks, intervals)}
    per_sample = results["solution_flops"] + results["verification_flops"].get(name, 0.0)
    compute[name] = {k * per_sample: i.value for k, i in zip(ks, intervals)}
  figures = {
      "n": plots.bands_vs_k(os.path.join(out_dir, "bon_vs_n.png"), bands,
                            title=results["title"], ylabel="Best-of-N accuracy"),
      "compute": plots.curves_vs_compute(
          os.path.join(out_dir, "bon_vs_compute.png"), compute, budgets={},
          title="Accuracy against total compute (solutions + verification)",
          ylabel="Best-of-N accuracy",
          xlabel="FLOPs per problem: N solutions sampled and verified")}
  return {name: os.path.basename(path) for name, path in figures.items()}


__all__ = ["write_report", "markdown", "PROBABILITY_SCORES"]
