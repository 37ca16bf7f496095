"""Training-step throughput: our step vs two peers, and as a fraction of a large matmul's FLOP/s.

  bash launch/bench.sh training            # 2-core CPU: "tiny" preset, batch 16 x 256, float32
  python benchmarks/training.py --gpu      # MFU of Gemma2-2B shapes in bfloat16 (ours only)

Same config, batch and optimizer (AdamW + global-norm clipping) for every contender:
  ours    THE train step (weighted_nll objective, float32) on one device, once per remat policy.
          On CPU two of its options pay: 4 microbatches (the same update, tested, with a working
          set that stays in cache: 1.3-1.4x over 1 here) and remat "dots_no_batch" (saving the
          projections and the attention's output and row statistics, the attention's backward
          pass recomputes its probabilities instead of storing [B, heads, T, S] residuals for
          the scanned layers); "none" is shown beside it;
  gemma   the `gemma` package's gm.nn.Transformer with the equivalent TransformerConfig, in a
          plain jax.jit + optax step (mean next-token cross-entropy);
  torch   Hugging Face transformers' Gemma2ForCausalLM training step on PyTorch CPU, run with
          the separate venv /tmp/benchvenv (torch==2.13.0 CPU, transformers); skipped, with the
          reason printed, when that venv is missing. Its note also gives its step's fraction of
          PyTorch's own float32 [4096, 4096] matmul rate, measured in that process.
On CPU, run it through the launcher (or with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 set, which is
what it adds: launch/_malloc.sh); the header prints the GLIBC_TUNABLES it ran with.
FLOPs per step = 3 x forward FLOPs of every token at its own context (training/flops.py); the
achieved rate is divided by a float32 [4096, 4096] matmul's rate measured in the same run.
--gpu needs neither tensorflow, seqio nor the gemma package.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TORCH_PYTHON = "/tmp/benchvenv/bin/python"


def median_step_time(step, state, steps: int, warmup: int = 2) -> float:
  """Median wall time of `steps` blocked calls state = step(state) after `warmup` calls."""
  import jax
  for _ in range(warmup):
    state = step(state)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state = jax.block_until_ready(step(state))
    times.append(time.perf_counter() - start)
  return sorted(times)[len(times) // 2]


def bench_ours(cfg, rows, length, steps, dtype, remat, microbatches):
  import jax
  import numpy as np
  from wcse_jax import parallel
  from wcse_jax.models import gemma2
  from wcse_jax.training import objectives, optim, state as train_state, step as train_step
  model = gemma2.make_model(cfg, dtype=dtype, remat_policy=remat)
  obj = objectives.make_objective("weighted_nll", model)
  opt = optim.make_optimizer(optim.OptimizerConfig(learning_rate=1e-4, total_steps=1000))
  mesh = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  shardings = train_state.state_shardings(obj, opt, mesh)
  state = train_state.create_train_state(obj, opt, shardings, rng=jax.random.key(0))
  step = train_step.make_train_step(obj, opt, microbatches, shardings)
  tokens = np.random.default_rng(0).integers(3, cfg.vocab_size, (rows, length)).astype(np.int32)
  batch = parallel.global_batch({"tokens": tokens,
                                 "positions": np.tile(np.arange(length, dtype=np.int32), (rows, 1)),
                                 "loss_weight": np.ones((rows, length), np.float32)}, mesh)
  return median_step_time(lambda s: step(s, batch)[0], state, steps)


def bench_gemma(cfg, rows, length, steps):
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from wcse_jax import reference
  model = reference.transformer(cfg, jnp.float32)
  tokens = jnp.asarray(np.random.default_rng(0).integers(3, cfg.vocab_size, (rows, length)),
                       jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(length), (rows, length))
  mask = jnp.broadcast_to(jnp.tril(jnp.ones((length, length), bool)), (rows, length, length))
  params = jax.jit(model.init)(jax.random.key(0), tokens, positions=positions,
                               attention_mask=mask)["params"]
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-4, weight_decay=1e-2))

  def loss_fn(p):
    logits = model.apply({"params": p}, tokens, positions=positions, attention_mask=mask).logits
    return optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()

  @jax.jit
  def step(carry):
    p, o = carry
    grads = jax.grad(loss_fn)(p)
    updates, o = tx.update(grads, o, p)
    return optax.apply_updates(p, updates), o
  step = jax.jit(step, donate_argnums=0)
  return median_step_time(step, (params, tx.init(params)), steps)


TORCH_PEER = r"""
import json, sys, time, torch, transformers
shape = json.loads(sys.argv[1])
rows, length, steps = (int(a) for a in sys.argv[2:5])
torch.manual_seed(0)
config = transformers.Gemma2Config(
    vocab_size=shape["vocab_size"], hidden_size=shape["embed_dim"],
    intermediate_size=shape["hidden_dim"],
    num_hidden_layers=shape["num_layers"], num_attention_heads=shape["num_heads"],
    num_key_value_heads=shape["num_kv_heads"], head_dim=shape["head_dim"],
    query_pre_attn_scalar=shape["head_dim"], sliding_window=shape["sliding_window"],
    attn_logit_softcapping=shape["attn_softcap"], final_logit_softcapping=shape["final_softcap"],
    max_position_embeddings=max(length, 8), attn_implementation="eager")
model = transformers.Gemma2ForCausalLM(config).train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=1e-2)
tokens = torch.randint(3, shape["vocab_size"], (rows, length))
def step():
  loss = model(input_ids=tokens, labels=tokens).loss
  loss.backward()
  torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
  opt.step()
  opt.zero_grad(set_to_none=True)
for _ in range(2):
  step()
times = []
for _ in range(steps):
  start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
# PyTorch's own float32 [4096, 4096] matmul rate, best of 5, for the step's fraction of it.
a = torch.randn(4096, 4096)
matmul_s = []
for _ in range(6):
  start = time.perf_counter(); a @ a; matmul_s.append(time.perf_counter() - start)
print(json.dumps({"step_s": sorted(times)[len(times) // 2], "threads": torch.get_num_threads(),
                  "matmul_flops": 2 * 4096 ** 3 / min(matmul_s[1:]),
                  "torch": torch.__version__, "transformers": transformers.__version__}))
"""


def bench_torch(cfg, rows, length, steps, step_flops):
  """(median step seconds, note) from the PyTorch peer, or (None, why not)."""
  if not os.path.exists(TORCH_PYTHON):
    return None, f"skipped: {TORCH_PYTHON} not found (see the module docstring)"
  shape = {k: getattr(cfg, k) for k in ("vocab_size", "embed_dim", "hidden_dim", "num_layers",
                                        "num_heads", "num_kv_heads", "head_dim", "sliding_window",
                                        "attn_softcap", "final_softcap")}
  run = subprocess.run([TORCH_PYTHON, "-c", TORCH_PEER, json.dumps(shape), str(rows), str(length),
                        str(steps)], capture_output=True, text=True)
  if run.returncode:
    return None, "failed: " + run.stderr.strip().splitlines()[-1]
  out = json.loads(run.stdout.strip().splitlines()[-1])
  own = step_flops / out["step_s"] / out["matmul_flops"]
  return out["step_s"], (f"torch {out['torch']}, transformers {out['transformers']}, "
                         f"{out['threads']} threads; {own:.1%} of torch's own matmul "
                         f"({out['matmul_flops'] / 1e9:.1f} GFLOP/s)")


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--gpu", action="store_true", help="Gemma2-2B shapes, bfloat16, ours only")
  parser.add_argument("--preset", default=None,
                      help="model preset (default tiny; gemma2_2b with --gpu)")
  parser.add_argument("--rows", type=int, default=None,
                      help="batch rows (default 16; 4 with --gpu)")
  parser.add_argument("--length", type=int, default=None,
                      help="row length (default 256; 2048 with --gpu)")
  parser.add_argument("--steps", type=int, default=10, help="timed steps per contender")
  parser.add_argument("--remat", default=None,
                      help="comma-separated remat policies of ours "
                           "(default dots_no_batch,none; full with --gpu)")
  parser.add_argument("--microbatches", type=int, default=None,
                      help="microbatches of our step (default 4 on CPU, 1 with --gpu)")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="nominal peak TFLOP/s of the device "
                           "(e.g. 989 for an H100's dense bf16): "
                           "also report MFU against it")
  parser.add_argument("--peers", default="gemma,torch", help="comma-separated peers to run on CPU")
  args = parser.parse_args()

  import jax
  import jax.numpy as jnp
  import numpy as np
  from wcse_jax.models import presets
  from wcse_jax.training.flops import measure_matmul_flops, train_flops

  preset = args.preset or ("gemma2_2b" if args.gpu else "tiny")
  rows, length = args.rows or (4 if args.gpu else 16), args.length or (2048 if args.gpu else 256)
  cfg = presets.get_preset(preset)
  dtype = jnp.bfloat16 if args.gpu else jnp.float32
  microbatches = args.microbatches or (1 if args.gpu else 4)
  remats = (args.remat or ("full" if args.gpu else "dots_no_batch,none")).split(",")
  step_flops = train_flops(cfg, np.tile(np.arange(length), (rows, 1)))
  # The matmul rate is measured before and after the contenders and the better one kept, so a
  # neighbour's load on a shared machine lowers it no more than it lowers the contenders.
  matmul_size = 8192 if args.gpu else 4096
  matmul = measure_matmul_flops(matmul_size, dtype)
  device = jax.devices()[0]
  dtype_name = jnp.dtype(dtype).name
  print(f"{time.strftime('%Y-%m-%d')}  device: {device.device_kind} ({device.platform}), "
        f"{os.cpu_count()} CPU cores; preset {preset}, batch {rows} x {length}, "
        f"{dtype_name}; {step_flops / 1e9:.2f} GFLOP per step; load average "
        f"{os.getloadavg()[0]:.1f}; GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
  results = {("ours" if i == 0 else f"ours[{remat}]"):
             (bench_ours(cfg, rows, length, args.steps, dtype, remat, microbatches),
              f"remat {remat}, {microbatches} microbatches")
             for i, remat in enumerate(remats)}
  peers = [] if args.gpu else [p for p in args.peers.split(",") if p]
  if "gemma" in peers:
    results["gemma"] = (bench_gemma(cfg, rows, length, args.steps),
                        "gm.nn.Transformer, jit + optax")
  if "torch" in peers:
    results["torch"] = bench_torch(cfg, rows, length, args.steps, step_flops)
  matmul = max(matmul, measure_matmul_flops(matmul_size, dtype))
  print(f"{dtype_name} matmul {matmul / 1e9:.1f} GFLOP/s (best of before and after)")
  print(f"{'contender':<10} {'step ms':>9} {'tokens/s':>10} {'GFLOP/s':>9} {'of matmul':>9}  note")
  table = {}
  for name, (seconds, note) in results.items():
    if seconds is None:
      print(f"{name:<10} {'-':>9} {'-':>10} {'-':>9} {'-':>9}  {note}")
      continue
    table[name] = {"step_ms": seconds * 1e3, "tokens_per_s": rows * length / seconds,
                   "gflops": step_flops / seconds / 1e9, "of_matmul": step_flops / seconds / matmul}
    r = table[name]
    print(f"{name:<10} {r['step_ms']:>9.1f} {r['tokens_per_s']:>10.0f} {r['gflops']:>9.1f} "
          f"{r['of_matmul']:>9.1%}  {note}")
  if args.peak_tflops:
    for name, r in table.items():
      print(f"{name}: MFU {r['gflops'] / (args.peak_tflops * 1e3):.1%} "
            f"of {args.peak_tflops:g} TFLOP/s")
  for peer in ("gemma", "torch"):
    if peer in table:
      print(f"ours / {peer} tokens/s: "
            f"{table['ours']['tokens_per_s'] / table[peer]['tokens_per_s']:.2f}x")
  print(json.dumps({"preset": preset, "rows": rows, "length": length, "matmul_gflops": matmul / 1e9,
                    "load_average": os.getloadavg()[0],
                    "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "results": table}))


if __name__ == "__main__":
  main()
