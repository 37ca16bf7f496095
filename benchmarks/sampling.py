"""Sampling throughput: wcse_jax's sampler against the reference samplers, on the same weights.

    bash launch/bench.sh sampling        # = python benchmarks/sampling.py in the venv

runs the CPU comparison (about 10 minutes on a 2-core CPU): the "tiny" and "small" presets, two
workloads each, *few-shot* (8 prompts of 256 tokens, 16 samples each, 64 new tokens) and *short*
(8 prompts of 32 tokens, 16 samples, 64 new tokens), temperature-1 sampling, float32.

Peers, all on the same random weights and prompts:
- the `gemma` package's `gm.text.Sampler`, in this process, timed in turns with ours;
- Tunix's `tunix.generate.sampler.Sampler` and Hugging Face transformers' `generate` (PyTorch
  CPU), which are not project dependencies: they run in a separate virtual environment given by
  `--peer-python` (default /tmp/benchvenv/bin/python), made with
      python3 -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install torch==2.13.0 &&
      /tmp/benchvenv/bin/pip install transformers google-tunix
  and `sampling_peers.py` runs there with `--peer tunix|hf`, one process per peer, which builds
  its samplers and then makes one call at a time on request. A peer that cannot be imported or
  built is reported as such, with no figure.

Each peer is configured as tightly as it allows for the workload (KV cache of exactly prompt +
new tokens, prompt padding to the workload's length); none of them can share one prefill between
the samples of a prompt, so they get each prompt repeated 16 times (HF through
`num_return_sequences`). The end token is set outside the vocabulary, so every sampler generates
exactly 64 tokens per row and all do the same work.

All samplers of a workload, in this process or a peer's, are timed in turns (warm-up calls
first, then `--repeats` rounds of one call each), so changes of the machine's load hit all of them
alike. Reported per sampler: generated tokens/s (best timed call), compile time (the warm-up
call's time minus the best call's: tracing and compilation; "-" for eager PyTorch), and peak
memory (the largest increase of the sampler's process's resident set during one timed call,
sampled every 2 ms from /proc/self/statm), then our speed-up over the fastest peer.

    python benchmarks/sampling.py --gpu [--hbm-gbps 3350]

instead samples with Gemma2-2B shapes in bfloat16 (random weights, 16 prompts x 16 samples = 256
rows, 256-token prompts, 256 new tokens) and reports tokens/s against the HBM-bandwidth roofline:
every decode step must read all weights and every row's visible KV cache once. It needs neither
tensorflow nor the `gemma` package.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from wcse_jax.models import presets  # noqa: E402  (pure Python; safe in the peer venv too)

WORKLOADS = {  # name: (prompts, prompt length, samples per prompt, new tokens)
    "few-shot": (8, 256, 16, 64),
    "short": (8, 32, 16, 64),
}
PRESETS = ("tiny", "small")
BOS = 2


@dataclasses.dataclass
class Result:
  sampler: str
  preset: str
  workload: str
  tokens_per_s: float | None = None
  compile_s: float | None = None
  peak_mb: float | None = None
  note: str = ""


class PeakRSS:
  """Largest resident-set increase over a block, sampled every 2 ms from /proc/self/statm."""

  def __enter__(self):
    self._page = resource.getpagesize()
    self.start = self._rss()
    self.peak = self.start
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, daemon=True)
    self._thread.start()
    return self

  def _rss(self) -> int:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * self._page

  def _watch(self):
    while not self._stop.wait(0.002):
      self.peak = max(self.peak, self._rss())

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, self._rss())

  @property
  def delta_mb(self) -> float:
    return (self.peak - self.start) / 2**20


def make_prompts(vocab: int, count: int, length: int, seed: int = 0) -> list[list[int]]:
  """BOS then random ids above the special tokens (0 pad, 1 eos, 2 bos)."""
  rng = np.random.default_rng(seed)
  return [[BOS] + rng.integers(3, vocab, length - 1).tolist() for _ in range(count)]


class Local:
  """A sampler in this process: `fn()` samples the workload and returns the generated count."""

  def __init__(self, name: str, fn: Callable[[], int], compiles: bool = True):
    self.name, self.fn, self.compiles = name, fn, compiles

  def warmup(self) -> float:
    start = time.perf_counter()
    self.fn()
    return time.perf_counter() - start

  def timed(self) -> tuple[float, int, float]:
    """Seconds, generated tokens, peak RSS increase (MB) of one call."""
    with PeakRSS() as mem:
      start = time.perf_counter()
      tokens = self.fn()
      elapsed = time.perf_counter() - start
    return elapsed, tokens, mem.delta_mb


class Remote:
  """A sampler living in a peer process (sampling_peers.py), driven one call at a time."""

  def __init__(self, peer: "PeerProcess", key: str, name: str, compiles: bool):
    self.peer, self.key, self.name, self.compiles = peer, key, name, compiles

  def warmup(self) -> float:
    return self.peer.ask("warmup", self.key)["elapsed"]

  def timed(self) -> tuple[float, int, float]:
    reply = self.peer.ask("time", self.key)
    return reply["elapsed"], reply["tokens"], reply["peak_mb"]


def measure(runs: list, expected_tokens: int, args, preset: str, workload: str) -> list[Result]:
  """A warm-up call each (none for eager peers: nothing to compile), then up to `args.repeats`
  timed rounds in which all samplers, local or in a peer process, take turns, so changes of the
  machine's load hit all alike; a sampler whose call takes over `args.slow_s` s is timed once."""
  first = {r.name: r.warmup() for r in runs if r.compiles}
  best, peak = {}, {}
  for round_ in range(args.repeats):
    for r in runs:
      if round_ and best[r.name] > args.slow_s:
        continue
      elapsed, tokens, peak_mb = r.timed()
      if tokens != expected_tokens:
        raise RuntimeError(f"{r.name} generated {tokens} tokens, expected {expected_tokens}")
      best[r.name] = min(best.get(r.name, float("inf")), elapsed)
      peak[r.name] = max(peak.get(r.name, 0.0), peak_mb)
  results = [Result(r.name, preset, workload, expected_tokens / best[r.name],
                    max(first[r.name] - best[r.name], 0.0) if r.compiles else None, peak[r.name])
             for r in runs]
  for r in results:
    print(f"  {preset} {workload} {r.sampler}: {r.tokens_per_s:.0f} tokens/s", file=sys.stderr,
          flush=True)
  return results


# ---------------------------------------------------------------- in-process samplers (JAX)

def ours(config, params, prompts, samples, new) -> Callable[[], int]:
  from wcse_jax.models import gemma2
  from wcse_jax.sampling import Sampler, Temperature
  sampler = Sampler(gemma2.make_model(config), eos_ids=(config.vocab_size,),
                    cache_length=len(prompts[0]) + new)

  def run() -> int:
    out = sampler.sample(params, prompts, samples, new, Temperature(1.0), rng=0)
    return int(out.lengths.sum())
  return run


def gemma_package(config, params, prompts, samples, new) -> Callable[[], int]:
  from wcse_jax.reference import gm as get_gm
  from wcse_jax.reference import sampler as reference
  gm = get_gm()
  length = len(prompts[0])
  sampler = reference.reference_sampler(
      config, params, eos_id=config.vocab_size, cache_length=length + new, max_out_length=new,
      pad_length=(length,), sampling=gm.text.RandomSampling(temperature=1.0))
  # It adds BOS itself; one row per sample.
  texts = [reference.IdTokenizer.to_text(p[1:]) for p in prompts for _ in range(samples)]

  def run() -> int:
    out = sampler.sample(texts, max_new_tokens=new, rng=0, return_state=True)
    return int(out.state.step) * len(texts)
  return run


# ---------------------------------------------------------------- peers in the separate venv

def _reference_tree(params) -> dict[str, np.ndarray]:
  """Our parameters in the per-layer reference layout, flattened to "a/b/c" keys."""
  import jax
  flat = {}
  embed = params["embedder"]["input_embedding"]
  flat["embedder/input_embedding"] = np.asarray(embed)
  flat["final_norm/scale"] = np.asarray(params["final_norm"]["scale"])
  stacked = {"local": params["layers"]["local"], "global": params["layers"]["global"]}
  for kind, tree in stacked.items():
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      name = "/".join(p.key for p in path)
      for pair in range(leaf.shape[0]):
        layer = 2 * pair + (kind == "global")
        flat[f"layer_{layer}/{name}"] = np.asarray(leaf[pair])
  return flat


PEER_NAMES = {"tunix": "Tunix sampler", "hf": "HF generate, PyTorch CPU"}  # sampling_peers.py
TAG = "@@ "  # marks protocol lines on the peer's stdout (libraries may print there too)


class PeerProcess:
  """benchmarks/sampling_peers.py run as `--peer NAME` under the peer venv's python."""

  def __init__(self, peer: str, python: str, weights: str, args):
    cmd = [python, os.path.join(os.path.dirname(os.path.abspath(__file__)), "sampling_peers.py"),
           "--peer", peer, "--weights", weights,
           "--presets", *args.presets, "--workloads", *args.workloads]
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("XLA_FLAGS", None)
    self.stderr = tempfile.TemporaryFile(mode="w+")
    self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=self.stderr, text=True)

  def _read(self) -> dict:
    for line in self.proc.stdout:
      if line.startswith(TAG):
        return json.loads(line[len(TAG):])
    self.stderr.seek(0)
    last = (self.stderr.read().strip().splitlines() or ["no output"])[-1]
    raise RuntimeError(last[:200])

  def runs(self) -> dict[str, tuple[str, bool]]:
    """Blocks until the peer has built its samplers: {"preset/workload": (name, compiles)}."""
    return self._read()

  def ask(self, op: str, key: str) -> dict:
    self.proc.stdin.write(json.dumps({"op": op, "key": key}) + "\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self) -> None:
    self.proc.stdin.close()
    self.proc.wait()


# ---------------------------------------------------------------- CPU comparison

def cpu_main(args) -> None:
  import jax
  from wcse_jax.models import gemma2

  print(f"# Sampling benchmark, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}, "
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
  params = {p: gemma2.init_params(gemma2.make_model(presets.get_preset(p)), jax.random.key(0))
            for p in args.presets}
  results: list[Result] = []
  with tempfile.TemporaryDirectory() as tmp:
    weights = os.path.join(tmp, "weights.npz")
    np.savez(weights, **{f"{p}/{k}": v for p in args.presets
                         for k, v in _reference_tree(params[p]).items()})
    peers, remote = [], {}  # remote: "preset/workload" -> [Remote]
    for peer in PEER_NAMES:
      if not os.path.exists(args.peer_python):
        results += [Result(PEER_NAMES[peer], p, w, note=f"not installed ({args.peer_python} "
                           "missing; see the top of this file)")
                    for p in args.presets for w in args.workloads]
        continue
      peers.append((peer, PeerProcess(peer, args.peer_python, weights, args)))
    for peer, process in peers:
      try:
        for key, (name, compiles) in process.runs().items():
          remote.setdefault(key, []).append(Remote(process, key, name, compiles))
      except RuntimeError as e:  # the peer could not be imported or built
        results += [Result(PEER_NAMES[peer], p, w, note=f"could not run: {e}")
                    for p in args.presets for w in args.workloads]
    for preset in args.presets:
      config = presets.get_preset(preset)
      for workload in args.workloads:
        count, length, samples, new = WORKLOADS[workload]
        prompts = make_prompts(config.vocab_size, count, length)
        runs = [Local("wcse_jax Sampler", ours(config, params[preset], prompts, samples, new)),
                Local("gemma gm.text.Sampler",
                      gemma_package(config, params[preset], prompts, samples, new))]
        runs += remote.get(f"{preset}/{workload}", [])
        results += measure(runs, count * samples * new, args, preset, workload)
    for _, process in peers:
      process.close()
  report(results)


def report(results: list[Result]) -> None:
  print("\n| preset | workload | sampler | tokens/s | compile s | peak RSS increase MB | note |")
  print("|---|---|---|---:|---:|---:|---|")
  fmt = lambda x, spec: "-" if x is None else format(x, spec)
  for r in results:
    print(f"| {r.preset} | {r.workload} | {r.sampler} | {fmt(r.tokens_per_s, '.0f')} | "
          f"{fmt(r.compile_s, '.1f')} | {fmt(r.peak_mb, '.0f')} | {r.note} |")
  print("\n| preset | workload | ours tokens/s | fastest peer | its tokens/s | speed-up |")
  print("|---|---|---:|---|---:|---:|")
  for preset in dict.fromkeys(r.preset for r in results):
    for workload in dict.fromkeys(r.workload for r in results):
      rows = [r for r in results if (r.preset, r.workload) == (preset, workload)]
      mine = next(r for r in rows if r.sampler.startswith("wcse_jax"))
      peers = [r for r in rows if r is not mine and r.tokens_per_s]
      if peers:
        best = max(peers, key=lambda r: r.tokens_per_s)
        print(f"| {preset} | {workload} | {mine.tokens_per_s:.0f} | {best.sampler} | "
              f"{best.tokens_per_s:.0f} | {mine.tokens_per_s / best.tokens_per_s:.2f}x |")


# ---------------------------------------------------------------- GPU roofline

HBM_GBPS = {"H100": 3350, "H200": 4800, "A100": 2039, "L4": 300, "A10": 600}  # per device


def gpu_main(args) -> None:
  import jax
  import jax.numpy as jnp
  from wcse_jax.models import gemma2
  from wcse_jax.sampling import Sampler, Temperature

  device = jax.devices()[0]
  bandwidth = args.hbm_gbps or next(
      (bw for name, bw in HBM_GBPS.items() if name in device.device_kind), None)
  if bandwidth is None:
    raise SystemExit(f"unknown HBM bandwidth for {device.device_kind!r}: pass --hbm-gbps")
  config = presets.get_preset(args.gpu_preset)
  model = gemma2.make_model(config, dtype=jnp.bfloat16, param_dtype=jnp.bfloat16)
  params = gemma2.init_params(model, jax.random.key(0))
  count, samples, length, new = (args.gpu_prompts, args.gpu_samples, args.gpu_prompt_len,
                                 args.gpu_new)
  prompts = make_prompts(config.vocab_size, count, length)
  sampler = Sampler(model, eos_ids=(config.vocab_size,), cache_length=length + new)
  run = lambda: sampler.sample(params, prompts, samples, new, Temperature(1.0), rng=0)
  start = time.perf_counter()
  run()
  first = time.perf_counter() - start
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    out = run()
    times.append(time.perf_counter() - start)
  rows, best = count * samples, min(times)
  tokens_per_s = int(out.lengths.sum()) / best

  # Roofline: each decode step reads every weight once and each row's visible KV cache
  # (keys and values of the window on local layers, of the whole context on global ones).
  weight_bytes = config.param_count() * 2
  kv_per_token = 2 * config.num_kv_heads * config.head_dim * 2  # k and v, bfloat16
  pairs = config.num_layers // 2
  contexts = length + np.arange(new)
  kv_bytes = rows * kv_per_token * pairs * (np.minimum(contexts, config.sliding_window) + contexts)
  step_seconds = (weight_bytes + kv_bytes) / (bandwidth * 1e9)
  roofline = rows * new / step_seconds.sum()
  print(f"# GPU sampling, {time.strftime('%Y-%m-%d')}, {device.device_kind}, "
        f"{config.name} bfloat16, {rows} rows ({count} prompts x {samples} samples), "
        f"{length}-token prompts, {new} new tokens")
  print(f"tokens/s {tokens_per_s:.0f}; HBM roofline {roofline:.0f} tokens/s at {bandwidth} GB/s; "
        f"fraction {tokens_per_s / roofline:.2f}; compile {first - best:.1f} s; "
        f"FLOPs per call {out.flops:.3g}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=2, help="timed calls per sampler (best kept)")
  parser.add_argument("--slow-s", type=float, default=15.0,
                      help="a sampler slower than this per call is timed once")
  parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=presets.preset_names())
  parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
  parser.add_argument("--peer-python", default="/tmp/benchvenv/bin/python",
                      help="python of the venv holding torch, transformers and google-tunix")
  parser.add_argument("--gpu", action="store_true", help="Gemma2-2B bfloat16 roofline run")
  parser.add_argument("--hbm-gbps", type=float, help="HBM bandwidth, GB/s (else by device kind)")
  parser.add_argument("--gpu-preset", default="gemma2_2b")
  parser.add_argument("--gpu-prompts", type=int, default=16)
  parser.add_argument("--gpu-samples", type=int, default=16)
  parser.add_argument("--gpu-prompt-len", type=int, default=256)
  parser.add_argument("--gpu-new", type=int, default=256)
  args = parser.parse_args()
  if args.gpu:
    gpu_main(args)
  else:
    cpu_main(args)


if __name__ == "__main__":
  main()
