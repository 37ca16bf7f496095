"""The quickstart's sample stage timed on the three sampler paths (plain, refill, refill + rows).

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/sample_stage.py --workdir=runs/qs

Needs a finished quickstart zoo (`bash launch/quickstart.sh`, or its zoo stage). Draws what the
sample stage draws for one model (default WC, the larger pool: the plan's high-budget samples per
problem, temperature 0.7, the config's prompts, stop strings and lengths, on 8 simulated CPU
devices) with:
  plain        `Sampler(refill=False)`: each call decodes until its longest sample ends;
  refill       the text API's default (sampling/refill.py) with one row per (prompt, sample);
  refill+rows  the same with `--rows` decode rows per call, so rows that finish take the next item.
Each path gets a warm-up call on the first batch (compilation), then one timed pass over all
problems. The three must give the same texts (randomness is keyed by item); the script checks it.
The last line is the results as JSON.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="runs/quickstart")
  parser.add_argument("--role", default="wc", choices=("wc", "se"))
  parser.add_argument("--rows", type=int, default=256, help="decode rows of refill+rows")
  args = parser.parse_args()

  from configs import quickstart
  from wcse_jax import files, loading
  from wcse_jax.data import prompts
  from wcse_jax.sampling.choosers import Temperature
  from wcse_jax.stages import common

  cfg = quickstart.get_config()
  spec = cfg.models[args.role]
  zoo = os.path.join(args.workdir, "zoo")
  spec.checkpoint = os.path.join(zoo, args.role)
  spec.tokenizer = os.path.join(zoo, "tokenizer.model")
  mesh = common.make_mesh(cfg)
  loaded = loading.load(spec, mesh)
  plan = files.read_json(os.path.join(args.workdir, "sample", "plan.json"))
  samples = max(b[f"{args.role}_samples"] for b in plan["budgets"])
  task = common.make_task(cfg)
  problems = task.examples(cfg.sampling.split)[:cfg.sampling.num_problems]
  texts = [prompts.build_prompt(task, ex, cfg.sampling.num_shots) for ex in problems]
  kwargs = dict(num_samples=samples, max_new_tokens=cfg.sampling.max_new_tokens,
                chooser=Temperature(cfg.sampling.temperature), seed=cfg.seed,
                stop=prompts.stop_strings(task), progress=False)

  results, texts_by_path = {}, {}
  for path, rows in (("plain", None), ("refill", None), ("refill+rows", args.rows)):
    sampler = common.text_sampler(loaded, mesh, cache_length=cfg.sampling.cache_length,
                                  batch_size=cfg.sampling.batch_prompts, rows=rows or 0)
    if path == "plain":
      sampler.sampler = dataclasses.replace(sampler.sampler, refill=False)
    sampler(loaded.params, texts[:cfg.sampling.batch_prompts], **kwargs)  # compile
    start = time.perf_counter()
    out = sampler(loaded.params, texts, **kwargs)
    wall = time.perf_counter() - start
    texts_by_path[path] = out.texts
    results[path] = {"wall_s": round(wall, 2), "samples": len(texts) * samples,
                     "tokens": out.generated_tokens,
                     "tokens_per_s": round(out.generated_tokens / wall, 1)}
    print(f"{path:12s} {wall:7.1f} s  {out.generated_tokens / wall:8.0f} tokens/s", flush=True)
  same = all(t == texts_by_path["plain"] for t in texts_by_path.values())
  print(f"same texts on every path: {same}; load average {os.getloadavg()}")
  print(json.dumps({"model": loaded.name, "problems": len(texts), "samples_per_problem": samples,
                    "rows": args.rows, "same_texts": same, "paths": results}))


if __name__ == "__main__":
  main()
