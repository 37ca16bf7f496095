"""Teacher-forced scoring: the prefix-sharing Scorer against a naive full forward of every pair.

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python benchmarks/scoring.py

The verifier / Best-of-N shape: 8 prefixes of 512 tokens x 16 continuations of 128 tokens = 128
(prefix, continuation) pairs, on the "tiny" and "small" presets, float32, random weights, one
device. Both contenders compute every continuation token's log-prob and their sums:
  ours   `Scorer.score` (sampling/score.py): each prefix prefilled once, its KV cache repeated for
         its 16 continuations, which alone run through the model on top of it; batch_rows 64
         (2 prefills of 4 prefixes, 2 continue calls of 64 rows);
  naive  each concatenated 640-token sequence through `gemma2.forward` with no cache, jitted, in
         the same batches of 64 rows, the output head applied only at the positions that predict
         continuation tokens (as ours does), so the two differ by the prefix sharing alone.
Each gets a warm-up call (compilation), then --repeats rounds in which the two take turns; the
median call is reported, and the largest difference of their log-prob sums as a check.
Expected speed-up: (prefix + continuation) / continuation tokens = 5 per continuation; counting
the 8 prefills too, 128 x 640 / (8 x 512 + 128 x 128) = 4 tokens; and the ratio of the FLOPs each
needs (flops.py: attention included, so also the continuations' attention over the prefix).
The header gives the machine, jax version, load average and GLIBC_TUNABLES (huge-page malloc,
what launch/_malloc.sh sets); the last line is the results as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

BOS = 2


def make_workload(vocab: int, prefixes: int, prefix_len: int, continuations: int,
                  continuation_len: int, seed: int = 0):
  """BOS-led random prefixes, and random continuations (ids above the special tokens)."""
  rng = np.random.default_rng(seed)
  pre = [[BOS] + rng.integers(3, vocab, prefix_len - 1).tolist() for _ in range(prefixes)]
  conts = [[rng.integers(3, vocab, continuation_len).tolist() for _ in range(continuations)]
           for _ in range(prefixes)]
  return pre, conts


def naive_scorer(model, params, prefixes, continuations, rows: int):
  """Log-prob sums from full cache-free forwards of the concatenated sequences, `rows` a call."""
  import jax
  import jax.numpy as jnp
  from wcse_jax.models import gemma2
  from wcse_jax.sampling.sampler import head_logits

  seqs = np.array([p + c for p, cs in zip(prefixes, continuations) for c in cs], np.int32)
  start = len(prefixes[0])

  @jax.jit
  def score(params, tokens):
    batch, length = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    hidden = gemma2.forward(model, params, tokens, positions, return_hidden=True).hidden
    predicting = hidden[:, start - 1:-1]
    logits = head_logits(model, params, predicting.reshape(-1, hidden.shape[-1]))
    logits = logits.reshape(batch, length - start, -1)
    picked = jnp.take_along_axis(logits, tokens[:, start:, None], axis=-1)[..., 0]
    return (picked - jax.nn.logsumexp(logits, axis=-1)).sum(axis=-1)

  def run() -> np.ndarray:
    return np.concatenate([np.asarray(score(params, seqs[i:i + rows]))
                           for i in range(0, len(seqs), rows)])
  return run


def bench_preset(name: str, args) -> dict:
  import jax
  from wcse_jax.models import gemma2, presets
  from wcse_jax.sampling import flops as flops_lib
  from wcse_jax.sampling.score import Scorer

  config = presets.get_preset(name)
  model = gemma2.make_model(config)
  params = gemma2.init_params(model, jax.random.key(0))
  prefixes, conts = make_workload(config.vocab_size, args.prefixes, args.prefix_len,
                                  args.continuations, args.continuation_len)
  total = args.prefix_len + args.continuation_len
  scorer = Scorer(model, batch_rows=args.batch_rows, cache_length=total)
  runs = {"ours": lambda: scorer.score(params, prefixes, conts),
          "naive": naive_scorer(model, params, prefixes, conts, args.batch_rows)}
  results, times = {}, {k: [] for k in runs}
  for key, run in runs.items():
    start = time.perf_counter()
    results[key] = run()
    times[key].append(time.perf_counter() - start)  # the warm-up call, compilation included
  for _ in range(args.repeats):
    for key, run in runs.items():
      start = time.perf_counter()
      run()
      times[key].append(time.perf_counter() - start)
  pairs = args.prefixes * args.continuations
  median = {k: float(np.median(t[1:])) for k, t in times.items()}
  our_flops = results["ours"].flops
  naive_flops = flops_lib.prefill_flops(config, [total] * pairs)
  row = {"preset": name, "pairs": pairs,
         "ours_s": median["ours"], "naive_s": median["naive"],
         "ours_seq_per_s": pairs / median["ours"], "naive_seq_per_s": pairs / median["naive"],
         "speedup": median["naive"] / median["ours"],
         "expected_tokens": total / args.continuation_len,
         "expected_tokens_with_prefill": pairs * total / (
             args.prefixes * args.prefix_len + pairs * args.continuation_len),
         "expected_flops": naive_flops / our_flops,
         "ours_compile_s": times["ours"][0] - median["ours"],
         "naive_compile_s": times["naive"][0] - median["naive"],
         "ours_gflop_per_s": our_flops / median["ours"] / 1e9,
         "naive_gflop_per_s": naive_flops / median["naive"] / 1e9,
         "max_abs_diff": float(np.abs(results["ours"].logprob_sum - results["naive"]).max())}
  print(f"  {name}: ours {row['ours_s']:.3f} s, naive {row['naive_s']:.3f} s "
        f"({row['speedup']:.2f}x)", file=sys.stderr, flush=True)
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
  parser.add_argument("--prefixes", type=int, default=8)
  parser.add_argument("--prefix-len", type=int, default=512)
  parser.add_argument("--continuations", type=int, default=16, help="per prefix")
  parser.add_argument("--continuation-len", type=int, default=128)
  parser.add_argument("--batch-rows", type=int, default=64, help="rows per forward, both")
  parser.add_argument("--repeats", type=int, default=3, help="timed calls each (median kept)")
  args = parser.parse_args()

  import jax
  device = jax.devices()[0]
  load = os.getloadavg()[0]
  print(f"# Scoring benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, "
        f"jax {jax.__version__} on {device.platform} ({device.device_kind}); "
        f"{args.prefixes} prefixes x {args.prefix_len} tokens, {args.continuations} "
        f"continuations x {args.continuation_len} tokens each, float32; load average {load:.1f}; "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
  rows = [bench_preset(name, args) for name in args.presets]
  print("\n| preset | ours s/call | naive s/call | ours seq/s | naive seq/s | speed-up | "
        "expected (tokens) | (tokens, prefills counted) | (FLOPs) | ours GFLOP/s | "
        "naive GFLOP/s | max abs diff |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    print(f"| {r['preset']} | {r['ours_s']:.3f} | {r['naive_s']:.3f} | "
          f"{r['ours_seq_per_s']:.1f} | {r['naive_seq_per_s']:.1f} | {r['speedup']:.2f}x | "
          f"{r['expected_tokens']:.2f}x | {r['expected_tokens_with_prefill']:.2f}x | "
          f"{r['expected_flops']:.2f}x | "
          f"{r['ours_gflop_per_s']:.1f} | {r['naive_gflop_per_s']:.1f} | "
          f"{r['max_abs_diff']:.1e} |")
  print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
  print(json.dumps({"load_average_start": load, "load_average_end": os.getloadavg()[0],
                    "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
                    "jax": jax.__version__, "cpu_cores": os.cpu_count(), "results": rows}))


if __name__ == "__main__":
  main()
