"""Sampling throughput: wcse_jax's sampler against the reference samplers, on the same weights.

    bash launch/bench.sh sampling        # = python benchmarks/sampling.py in the venv

runs the CPU comparison on the "tiny" and "small" presets, temperature-1 sampling, float32:
- *few-shot* (8 prompts of 256 tokens, 16 samples each, 64 new tokens) and *short* (8 prompts of
  32 tokens, 16 samples, 64 new tokens): every row generates all 64 tokens (the end token is set
  outside the vocabulary), so all samplers do the same work;
- *ragged* (small only, `--ragged-presets`): 32 problems whose prompts are one shared 768-token
  prefix (the few-shot exemplars) plus a 32-96-token question, 16 samples each (512 work items)
  on 128 batch rows. Each row ends with probability 1/96 per step (`EndAtRandom`: a geometric
  length of mean 96, capped at 512 by max_new_tokens), a rule keyed by the row's PRNG key so
  every sampler of ours draws the same lengths; the peers, which take no chooser of ours, run
  each batch of 128 rows to its longest row's length, which is what they do with an end token
  (their per-step cost does not depend on which rows have ended). Contenders: our sampler with
  refill (one call, 128 rows), our sampler as it was (`refill=False`: 4 calls of 8 problems x 16
  samples, each until its longest row ends), and the peers on the same 4 batches. Reported:
  *useful* tokens/s (every row's tokens up to and including the one that ends it, over the
  wall time of all calls) and the fraction of decode steps x rows spent on rows that had ended.

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
`num_return_sequences`).

All samplers of a workload, in this process or a peer's, are timed in turns (warm-up calls
first, then `--repeats` rounds of one call each), so changes of the machine's load hit all of them
alike. Reported per sampler: tokens/s (best timed call), compile time (the warm-up call's time
minus the best call's: tracing and compilation; "-" for eager PyTorch), and peak memory (the
largest increase of the sampler's process's resident set during one timed call, sampled every
2 ms from /proc/self/statm), then our speed-up over the fastest peer (and, on ragged, over our
sampler without refill).

    python benchmarks/sampling.py --gpu [--hbm-gbps 3350]

instead samples with Gemma2-2B shapes in bfloat16 (random weights) and reports tokens/s against
the HBM-bandwidth roofline, for two workloads: 16 prompts x 16 samples = 256 rows, 256-token
prompts, 256 new tokens (every decode step must read all weights and every row's visible KV cache
once); and the ragged workload above at 256 rows, where the roofline is that of an ideal sampler
that keeps all 256 rows busy and reads the shared prefix once per step. It needs neither
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
from typing import Any, Callable

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
END = 1  # the ragged workload's end token


@dataclasses.dataclass(frozen=True)
class Ragged:
  """The ragged few-shot workload (see the module docstring)."""
  problems: int = 32
  prefix: int = 768  # shared tokens, BOS included
  question: tuple[int, int] = (32, 96)  # each problem's own tokens, uniform in [lo, hi]
  samples: int = 16
  mean: int = 96  # a row ends with probability 1 / mean per step
  cap: int = 512  # max_new_tokens
  rows: int = 128  # decode rows: 8 problems x 16 samples per call without refill
  seed: int = 0

  @property
  def batch_problems(self) -> int:
    return self.rows // self.samples

  def prompts(self, vocab: int) -> list[list[int]]:
    rng = np.random.default_rng(self.seed)
    shared = [BOS] + rng.integers(3, vocab, self.prefix - 1).tolist()
    return [shared + rng.integers(3, vocab, rng.integers(*self.question, endpoint=True)).tolist()
            for _ in range(self.problems)]

  def batches(self, vocab: int) -> list[tuple[list[list[int]], list[int]]]:
    """The problems in calls of `rows` rows, with their ids (as a sampler without refill, and
    the peers, take them)."""
    prompts, step = self.prompts(vocab), self.batch_problems
    return [(prompts[lo:lo + step], list(range(lo, lo + step)))
            for lo in range(0, self.problems, step)]


RAGGED = Ragged()


@dataclasses.dataclass
class Result:
  sampler: str
  preset: str
  workload: str
  tokens_per_s: float | None = None
  compile_s: float | None = None
  peak_mb: float | None = None
  note: str = ""
  idle: float | None = None  # share of decode steps x rows spent on rows that had ended


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


Call = tuple[int, float | None]  # what a run returns: (useful tokens, idle share or None)


class Local:
  """A sampler in this process: `fn()` samples the workload: (useful tokens, idle share).
  `warm`: a cheaper call that compiles the same programs (default: `fn`); its time minus the
  best timed call's is then not the compile time, which is reported as "-"."""

  def __init__(self, name: str, fn: Callable[[], Call], compiles: bool = True,
               warm: Callable[[], Call] | None = None):
    self.name, self.fn, self.compiles, self.warm = name, fn, compiles, warm

  def warmup(self) -> float | None:
    start = time.perf_counter()
    (self.warm or self.fn)()
    return None if self.warm else time.perf_counter() - start

  def timed(self) -> tuple[float, int, float, float | None]:
    """Seconds, useful tokens, peak RSS increase (MB), idle share of one call."""
    with PeakRSS() as mem:
      start = time.perf_counter()
      tokens, idle = self.fn()
      elapsed = time.perf_counter() - start
    return elapsed, tokens, mem.delta_mb, idle


class Remote:
  """A sampler living in a peer process (sampling_peers.py), driven one call at a time."""

  def __init__(self, peer: "PeerProcess", key: str, name: str, compiles: bool):
    self.peer, self.key, self.name, self.compiles = peer, key, name, compiles

  def warmup(self) -> float:
    return self.peer.ask("warmup", self.key)["elapsed"]

  def timed(self) -> tuple[float, int, float, float | None]:
    reply = self.peer.ask("time", self.key)
    return reply["elapsed"], reply["tokens"], reply["peak_mb"], reply["idle"]


def measure(runs: list, expected: Callable[[str], int], args, preset: str,
            workload: str) -> list[Result]:
  """A warm-up call each (none for eager peers: nothing to compile), then up to `args.repeats`
  timed rounds in which all samplers, local or in a peer process, take turns, so changes of the
  machine's load hit all alike; a sampler whose call takes over `args.slow_s` s is timed once.
  `expected(name)`: the useful tokens that sampler must report (a check that all do the work)."""
  first = {r.name: r.warmup() for r in runs if r.compiles}
  best, peak, idle = {}, {}, {}
  for round_ in range(args.repeats):
    for r in runs:
      if round_ and best[r.name] > args.slow_s:
        continue
      elapsed, tokens, peak_mb, idle[r.name] = r.timed()
      if tokens != expected(r.name):
        raise RuntimeError(f"{r.name} generated {tokens} useful tokens, expected "
                           f"{expected(r.name)}")
      best[r.name] = min(best.get(r.name, float("inf")), elapsed)
      peak[r.name] = max(peak.get(r.name, 0.0), peak_mb)
  compile_s = lambda r: (None if first.get(r.name) is None
                         else max(first[r.name] - best[r.name], 0.0))
  results = [Result(r.name, preset, workload, expected(r.name) / best[r.name], compile_s(r),
                    peak[r.name], idle=idle[r.name])
             for r in runs]
  for r in results:
    print(f"  {preset} {workload} {r.sampler}: {r.tokens_per_s:.0f} tokens/s", file=sys.stderr,
          flush=True)
  return results


# ---------------------------------------------------------------- in-process samplers (JAX)

def _idle(outs: list) -> float:
  """The share of decode steps x rows that ran on rows whose sample had ended."""
  useful = sum(int((o.lengths - 1).clip(0).sum()) for o in outs)
  return 1 - useful / max(sum(o.decode_row_steps for o in outs), 1)


def ours(config, params, prompts, samples, new, refill: bool) -> Callable[[], Call]:
  from wcse_jax.models import gemma2
  from wcse_jax.sampling import Sampler, Temperature
  sampler = Sampler(gemma2.make_model(config), eos_ids=(config.vocab_size,),
                    cache_length=len(prompts[0]) + new, refill=refill)

  def run() -> Call:
    out = sampler.sample(params, prompts, samples, new, Temperature(1.0), rng=0)
    return int(out.lengths.sum()), _idle([out])
  return run


@dataclasses.dataclass(frozen=True)
class EndAtRandom:
  """Benchmark-only chooser: a temperature-1 draw that never picks `end_id`, replaced by `end_id`
  with probability `p`, decided by a uniform drawn from the row's own key (folded with a salt):
  lengths are geometric (mean 1/p) and, like the draws, a function of (seed, prompt id, sample
  index), so every sampler of ours draws the same ones (`ragged_lengths` computes them)."""
  p: float
  end_id: int = END

  def __call__(self, logits, keys):
    import jax.numpy as jnp
    from wcse_jax.sampling import Temperature
    token = Temperature(1.0)(logits.at[:, self.end_id].set(-jnp.inf), keys)
    return jnp.where(_ends(keys, self.p), self.end_id, token).astype(jnp.int32)


def _ends(keys, p: float):
  """Whether each row (by its step's key) ends here."""
  import jax
  return jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 0x5EED)))(keys) < p


def ragged_lengths(workload: Ragged, rng: int = 0) -> np.ndarray:
  """[problems, samples] lengths EndAtRandom gives under the samplers' keys, fold_in(fold_in(
  fold_in(key(rng), problem), sample), step), capped at workload.cap."""
  import jax
  import jax.numpy as jnp
  base = jax.random.key(rng)
  item = lambda p, j: jax.random.fold_in(jax.random.fold_in(base, p), j)
  keys = jax.vmap(lambda p: jax.vmap(lambda j: item(p, j))(jnp.arange(workload.samples)))(
      jnp.arange(workload.problems))
  steps = jnp.arange(workload.cap)
  ends = jax.vmap(lambda k: _ends(jax.vmap(jax.random.fold_in, (None, 0))(k, steps),
                                  1 / workload.mean))(keys.reshape(-1))
  first = jnp.where(ends.any(axis=1), jnp.argmax(ends, axis=1) + 1, workload.cap)
  return np.asarray(first).reshape(workload.problems, workload.samples)


def ours_ragged(config, params, workload: Ragged, refill: bool,
                calls: int | None = None) -> Callable[[], Call]:
  """Ours on the ragged workload: one call on `rows` rows with refill, else one call per batch
  (the first `calls` only, when given: a warm-up that compiles the same programs)."""
  from wcse_jax.models import gemma2
  from wcse_jax.sampling import Sampler
  sampler = Sampler(gemma2.make_model(config), eos_ids=(END,), cache_length=config.max_len,
                    refill=refill, rows=workload.rows if refill else None)
  chooser = EndAtRandom(1 / workload.mean)
  calls = ([(workload.prompts(config.vocab_size), list(range(workload.problems)))] if refill
           else workload.batches(config.vocab_size)[:calls])

  def run() -> Call:
    outs = [sampler.sample(params, prompts, workload.samples, workload.cap, chooser, rng=0,
                           prompt_ids=ids) for prompts, ids in calls]
    return sum(int(o.lengths.sum()) for o in outs), _idle(outs)
  return run


def gemma_package(config, params, prompts, samples, new) -> Callable[[], Call]:
  from wcse_jax.reference import gm as get_gm
  from wcse_jax.reference import sampler as reference
  gm = get_gm()
  length = len(prompts[0])
  sampler = reference.reference_sampler(
      config, params, eos_id=config.vocab_size, cache_length=length + new, max_out_length=new,
      pad_length=(length,), sampling=gm.text.RandomSampling(temperature=1.0))
  # It adds BOS itself; one row per sample.
  texts = [reference.IdTokenizer.to_text(p[1:]) for p in prompts for _ in range(samples)]

  def run() -> Call:
    out = sampler.sample(texts, max_new_tokens=new, rng=0, return_state=True)
    return int(out.state.step) * len(texts), None
  return run


def peer_batches(workload: Ragged, vocab: int, lengths: np.ndarray, count: int) -> list:
  """The first `count` batches of the ragged workload as a peer runs them: (prompts, samples'
  lengths [problems, samples]); the peer decodes each batch for its longest row's length."""
  step = workload.batch_problems
  return [(prompts, lengths[ids[0]:ids[0] + step])
          for prompts, ids in workload.batches(vocab)[:count]]


def batch_call(lengths_of_batches: list[np.ndarray]) -> Call:
  """(useful tokens, idle share) of batches each run to its longest row."""
  useful = sum(int(b.sum()) for b in lengths_of_batches)
  steps = sum(b.size * (int(b.max()) - 1) for b in lengths_of_batches)
  return useful, 1 - sum(int((b - 1).sum()) for b in lengths_of_batches) / steps


def gemma_ragged(config, params, batches: list) -> Callable[[], Call]:
  from wcse_jax.reference import gm as get_gm
  from wcse_jax.reference import sampler as reference
  gm = get_gm()
  longest_prompt = max(len(p) for prompts, _ in batches for p in prompts)
  longest = max(int(lengths.max()) for _, lengths in batches)
  sampler = reference.reference_sampler(
      config, params, eos_id=config.vocab_size, cache_length=longest_prompt + longest,
      max_out_length=longest, pad_length=(longest_prompt,),
      sampling=gm.text.RandomSampling(temperature=1.0))
  to_text = reference.IdTokenizer.to_text
  calls = [([to_text(p[1:]) for p in prompts for _ in range(lengths.shape[1])], int(lengths.max()))
           for prompts, lengths in batches]

  def run() -> Call:
    for texts, steps in calls:
      out = sampler.sample(texts, max_new_tokens=steps, rng=0, return_state=True)
      if int(out.state.step) != steps:
        raise RuntimeError(f"the gemma sampler ran {int(out.state.step)} steps, not {steps}")
    return batch_call([lengths for _, lengths in batches])
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
           "--presets", *args.presets, "--workloads", *args.workloads,
           "--ragged-presets", *args.ragged_presets, "--peer-batches", str(args.peer_batches)]
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
        f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}, load average "
        f"{os.getloadavg()[0]:.1f}")
  every = sorted(set(args.presets) | set(args.ragged_presets))
  params = {p: gemma2.init_params(gemma2.make_model(presets.get_preset(p)), jax.random.key(0))
            for p in every}
  cases = [(p, "ragged") for p in args.ragged_presets]
  cases += [(p, w) for p in args.presets for w in args.workloads]
  lengths = ragged_lengths(RAGGED)  # the same for every preset: keyed by seed and ids only
  results: list[Result] = []
  with tempfile.TemporaryDirectory() as tmp:
    weights = os.path.join(tmp, "weights.npz")
    np.savez(weights, ragged_lengths=lengths,
             **{f"{p}/{k}": v for p in every for k, v in _reference_tree(params[p]).items()})
    peers, remote = [], {}  # remote: "preset/workload" -> [Remote]
    for peer in PEER_NAMES:
      if not os.path.exists(args.peer_python):
        results += [Result(PEER_NAMES[peer], p, w, note=f"not installed ({args.peer_python} "
                           "missing; see the top of this file)") for p, w in cases]
        continue
      peers.append((peer, PeerProcess(peer, args.peer_python, weights, args)))
    for peer, process in peers:
      try:
        for key, (name, compiles) in process.runs().items():
          remote.setdefault(key, []).append(Remote(process, key, name, compiles))
      except RuntimeError as e:  # the peer could not be imported or built
        results += [Result(PEER_NAMES[peer], p, w, note=f"could not run: {e}") for p, w in cases]
    for preset, workload in cases:
      config, weights_ = presets.get_preset(preset), params[preset]
      if workload == "ragged":
        runs = [Local(OURS, ours_ragged(config, weights_, RAGGED, refill=True)),
                # Without refill each of the 4 calls takes as long as the first, and all run one
                # program: warming up on one call costs a quarter of the timed work, compiling
                # within the timed calls a few percent of it (--ragged-plain-warmup).
                Local(OURS_PLAIN, ours_ragged(config, weights_, RAGGED, refill=False),
                      compiles=args.ragged_plain_warmup,
                      warm=ours_ragged(config, weights_, RAGGED, refill=False, calls=1))]
        batches = peer_batches(RAGGED, config.vocab_size, lengths, args.peer_batches)
        if batches:
          runs.append(Local("gemma gm.text.Sampler", gemma_ragged(config, weights_, batches)))
          peer_useful = batch_call([b for _, b in batches])[0]
        else:
          results.append(Result("gemma gm.text.Sampler", preset, workload,
                                note="not run (--peer-batches 0)"))
        expected = lambda name: int(lengths.sum()) if name.startswith("wcse") else peer_useful
      else:
        count, length, samples, new = WORKLOADS[workload]
        prompts = make_prompts(config.vocab_size, count, length)
        runs = [Local(OURS, ours(config, weights_, prompts, samples, new, refill=True)),
                Local(OURS_PLAIN, ours(config, weights_, prompts, samples, new, refill=False)),
                Local("gemma gm.text.Sampler",
                      gemma_package(config, weights_, prompts, samples, new))]
        expected = lambda name, n=count * samples * new: n
      runs += remote.get(f"{preset}/{workload}", [])
      results += measure(runs, expected, args, preset, workload)
    for _, process in peers:
      process.close()
  report(results, args.peer_batches)


OURS, OURS_PLAIN = "wcse_jax Sampler (refill)", "wcse_jax Sampler, refill=False"


def report(results: list[Result], peer_batches_: int) -> None:
  print("\n| preset | workload | sampler | tokens/s | idle | compile s | peak RSS increase MB | "
        "note |")
  print("|---|---|---|---:|---:|---:|---:|---|")
  fmt = lambda x, spec: "-" if x is None else format(x, spec)
  for r in results:
    print(f"| {r.preset} | {r.workload} | {r.sampler} | {fmt(r.tokens_per_s, '.0f')} | "
          f"{fmt(r.idle, '.0%')} | {fmt(r.compile_s, '.1f')} | {fmt(r.peak_mb, '.0f')} | "
          f"{r.note} |")
  if any(r.workload == "ragged" for r in results):
    print(f"\n(ragged: tokens/s are useful tokens/s; the peers ran the first {peer_batches_} of "
          f"the {RAGGED.problems // RAGGED.batch_problems} batches.)")
  print("\n| preset | workload | ours tokens/s | refill=False | speed-up | fastest peer | "
        "its tokens/s | speed-up |")
  print("|---|---|---:|---:|---:|---|---:|---:|")
  for preset, workload in dict.fromkeys((r.preset, r.workload) for r in results):
    rows = [r for r in results if (r.preset, r.workload) == (preset, workload)]
    mine = next(r for r in rows if r.sampler == OURS)
    plain = next(r for r in rows if r.sampler == OURS_PLAIN)
    peers = [r for r in rows if not r.sampler.startswith("wcse_jax") and r.tokens_per_s]
    best = max(peers, key=lambda r: r.tokens_per_s) if peers else None
    print(f"| {preset} | {workload} | {mine.tokens_per_s:.0f} | {plain.tokens_per_s:.0f} | "
          f"{mine.tokens_per_s / plain.tokens_per_s:.2f}x | "
          f"{best.sampler if best else '-'} | {best.tokens_per_s if best else 0:.0f} | "
          f"{mine.tokens_per_s / best.tokens_per_s if best else 0:.2f}x |")


# ---------------------------------------------------------------- GPU roofline

HBM_GBPS = {"H100": 3350, "H200": 4800, "A100": 2039, "L4": 300, "A10": 600}  # per device


def _time_gpu(run: Callable, repeats: int) -> tuple[float, float, Any]:
  """(the first call's seconds, compilation included; the best of `repeats` more; its output)."""
  start = time.perf_counter()
  run()
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    out = run()
    times.append(time.perf_counter() - start)
  return first, min(times), out


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
  first, best, out = _time_gpu(run, args.repeats)
  rows = count * samples
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
  if args.gpu_ragged_rows:
    gpu_ragged(args, config, model, params, bandwidth, weight_bytes, kv_per_token)


def gpu_ragged(args, config, model, params, bandwidth: float, weight_bytes: int,
               kv_per_token: int) -> None:
  """The ragged workload at `--gpu-ragged-rows` rows, refill on, against the roofline of an
  ideal sampler: every step all rows busy, each step reading every weight and the shared
  prefix's global keys and values once, and each row its own visible cache (its global steps
  after the prefix; the window of the whole context on local layers)."""
  from wcse_jax.sampling import Sampler
  workload = dataclasses.replace(RAGGED, rows=args.gpu_ragged_rows)
  prompts, lengths = workload.prompts(config.vocab_size), ragged_lengths(workload)
  sampler = Sampler(model, eos_ids=(END,), cache_length=config.max_len, refill=True,
                    rows=workload.rows)
  run = lambda: sampler.sample(params, prompts, workload.samples, workload.cap,
                               EndAtRandom(1 / workload.mean), rng=0)
  first, best, out = _time_gpu(run, args.repeats)
  if not (out.lengths == lengths).all():
    raise RuntimeError("the sampler's lengths are not EndAtRandom's")
  pairs = config.num_layers // 2
  fed = [(len(p) + np.arange(g - 1)) for p, row in zip(prompts, lengths) for g in row]
  contexts = np.concatenate(fed) + 1  # keys each fed token sees, itself included
  own = np.sum(contexts - workload.prefix + np.minimum(contexts, config.sliding_window))
  steps = len(contexts) / workload.rows
  seconds = (steps * (weight_bytes + workload.prefix * kv_per_token * pairs)
             + own * kv_per_token * pairs) / (bandwidth * 1e9)
  useful = int(lengths.sum())
  print(f"ragged: {workload.problems} problems x {workload.samples} samples on {workload.rows} "
        f"rows, {workload.prefix}-token shared prefix; useful tokens/s {useful / best:.0f}; "
        f"roofline {useful / seconds:.0f}; fraction {useful / best / (useful / seconds):.2f}; "
        f"idle {_idle([out]):.0%}; compile {first - best:.1f} s")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--repeats", type=int, default=2, help="timed calls per sampler (best kept)")
  parser.add_argument("--slow-s", type=float, default=15.0,
                      help="a sampler slower than this per call is timed once")
  parser.add_argument("--presets", nargs="*", default=list(PRESETS), choices=presets.preset_names())
  parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
  parser.add_argument("--ragged-presets", nargs="*", default=["small"],
                      choices=presets.preset_names(), help="presets the ragged workload runs on")
  parser.add_argument("--ragged-plain-warmup", action=argparse.BooleanOptionalAction,
                      default=True, help="warm our sampler without refill up on one ragged call "
                      "(else its compilation is inside its timed calls)")
  parser.add_argument("--peer-batches", type=int, default=RAGGED.problems // RAGGED.batch_problems,
                      help="ragged batches (of 128 rows) the peers run, from the first")
  parser.add_argument("--peer-python", default="/tmp/benchvenv/bin/python",
                      help="python of the venv holding torch, transformers and google-tunix")
  parser.add_argument("--gpu", action="store_true", help="Gemma2-2B bfloat16 roofline run")
  parser.add_argument("--hbm-gbps", type=float, help="HBM bandwidth, GB/s (else by device kind)")
  parser.add_argument("--gpu-preset", default="gemma2_2b")
  parser.add_argument("--gpu-prompts", type=int, default=16)
  parser.add_argument("--gpu-samples", type=int, default=16)
  parser.add_argument("--gpu-prompt-len", type=int, default=256)
  parser.add_argument("--gpu-new", type=int, default=256)
  parser.add_argument("--gpu-ragged-rows", type=int, default=256,
                      help="rows for the ragged workload on the GPU (0: skip it)")
  args = parser.parse_args()
  if args.gpu:
    gpu_main(args)
  else:
    cpu_main(args)


if __name__ == "__main__":
  main()
