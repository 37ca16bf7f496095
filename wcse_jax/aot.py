"""Ahead-of-time "will it fit": compile THE train step or the sampler for a TPU slice from a CPU.

    python -m wcse_jax.aot --preset gemma2_27b --topology v5e-16 --mesh fsdp=16 \
        --task train --rows 32 --length 2048 --remat full --microbatches 2
    python -m wcse_jax.aot --preset gemma2_9b --topology v5e-16 --task sample \
        --rows 16 --samples 4 --prompt-length 512 --new-tokens 1024
    python -m wcse_jax.aot ... --topology cpu:16     # the same report for 16 CPU devices

How. `jax.experimental.topologies.get_topology_desc` asks libtpu's compiler for compile-only
devices of a slice (no TPU is needed; this is how MaxText's train_compile.py works), the mesh is
laid over them, every input is a `jax.ShapeDtypeStruct` carrying its sharding (no parameter is
ever allocated), and the real programs are lowered and compiled for them: for `train`, the step
of training/step.py with the weighted_nll objective, training/optim.py's AdamW, float32 master
weights and bfloat16 compute; for `sample`, sampling/sampler.py's prefill and decode loop at the
shapes `Sampler.sample` would use.

Reported per device, from `compiled.memory_analysis()`: arguments, outputs, the part of them
aliased (donated state), temporaries and generated code, and "peak" = their sum less the alias,
beside the chip's HBM; "fits" compares the two. XLA:TPU itself refuses to compile (reported as
"does not fit", with its RESOURCE_EXHAUSTED message) only when the temporaries alone exceed the
usable HBM (15.75 of a v5e chip's 16 GiB), not when arguments plus temporaries do.

FLOPs. XLA's `compiled.cost_analysis()` counts a while loop's body once (a 10-step scan of
matmuls reports one step's FLOPs, on TPU and CPU alike), and the layers, the microbatches and
decoding are loops here, so its figure is not a step's. We count the matmul FLOPs of the traced
program instead (`matmul_flops`: every dot_general, scan bodies times their length, the decode
loop times its steps, dead code skipped), i.e. what the devices execute: remat recomputation,
full masked attention squares and the flash backward's recomputed scores included. Beside it is
the model formula (training/flops.py, sampling/flops.py), which counts only what the tokens
need; the ratio is the overhead (below 1 for a prefill: the formula counts the output layer at
every prompt token, the sampler computes it at the last one only).

libtpu: `pip install -e '.[tpu]'` installs the libtpu jax 0.10.2 was built with (0.0.42.*). To
keep a CPU environment without it (with libtpu installed, jax probes for TPUs at start-up), put
it aside, `pip install --target DIR "libtpu==0.0.42.*"`, and run with
TPU_LIBRARY_PATH=DIR/libtpu/libtpu.so. `--topology cpu:N` needs no libtpu: the same programs on
N host devices (CPU memory figures, not TPU ones; XLA:CPU never refuses for lack of memory).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from jax.experimental import mesh_utils, topologies
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from wcse_jax import parallel
from wcse_jax.models import gemma2, presets
from wcse_jax.sampling import flops as sample_flops
from wcse_jax.sampling import sampler as sampler_lib
from wcse_jax.sampling.buckets import pow2
from wcse_jax.sampling.choosers import Greedy, TopP
from wcse_jax.training import flops as train_flops
from wcse_jax.training import objectives, optim
from wcse_jax.training import state as state_lib
from wcse_jax.training import step as step_lib

GIB = 1 << 30
# Google Cloud's HBM per chip. v4 and v5p chips have two TensorCores that jax drives as one
# device ("megacore"), and their accelerator names count cores: v4-32 is 16 chips.
_GENERATIONS = {  # accelerator-name prefix -> (libtpu topology prefix, megacore, HBM GiB)
    "v4": ("v4", True, 32), "v5p": ("v5", True, 95), "v5e": ("v5e", False, 16),
    "v5litepod": ("v5e", False, 16), "v6e": ("v6e", False, 32)}
_SETTINGS = {  # the flags each task reads, echoed in its report
    "train": ("rows", "length", "microbatches", "remat", "compute_dtype"),
    "sample": ("rows", "prompt_length", "new_tokens", "samples", "top_p", "compute_dtype",
               "param_dtype")}


# --- devices -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TpuTopology:
  name: str  # libtpu's, e.g. "v5e:4x4"
  chip_config: str  # "megacore" or "default"
  host_bounds: tuple[int, int, int]  # chips per host along each axis
  hbm_bytes: int


def _grid(chips: int, dims: int) -> list[int]:
  """The slice shapes Cloud TPU uses for a power-of-two chip count: v5e-16 is 4x4, v4-32
  (16 chips) 2x2x4. Doubling the last of the smallest sides reproduces them."""
  grid = [2, 2, 1] if dims == 3 else [1, 1]
  while math.prod(grid) < chips:
    i = max(j for j, n in enumerate(grid) if n == min(grid))
    grid[i] *= 2
  return grid


def tpu_topology(accelerator: str) -> TpuTopology:
  """libtpu's description of a Cloud TPU accelerator type ("v5e-16", "v4-32", "v5p-8", ...)."""
  prefix, _, count = accelerator.rpartition("-")
  if prefix not in _GENERATIONS or not count.isdigit():
    raise ValueError(f"unknown TPU accelerator type {accelerator!r}; give one as gcloud names it, "
                     f"<generation>-<size> with generation in {sorted(_GENERATIONS)}, or "
                     "cpu:N for N CPU devices")
  name, megacore, hbm_gib = _GENERATIONS[prefix]
  chips = int(count) // 2 if megacore else int(count)
  smallest = 4 if megacore else 1
  if chips < smallest or chips & (chips - 1):
    raise ValueError(f"{accelerator}: {chips} chips; only power-of-two slices of at least "
                     f"{smallest} chips are laid out here")
  grid = _grid(chips, 3 if megacore else 2)
  bounds = tuple(min(g, b) for g, b in zip(grid + [1] * (3 - len(grid)), (2, 2, 1)))
  return TpuTopology(f"{name}:{'x'.join(map(str, grid))}", "megacore" if megacore else "default",
                     bounds, hbm_gib * GIB)


def topology_devices(topology: str) -> tuple[list, int | None]:
  """(compile-target devices, HBM bytes per device or None) for "v5e-16"-style names or "cpu:N".

  For "cpu:N" this process must not have started jax's CPU backend with fewer devices (the
  command line sets jax_num_cpu_devices first).
  """
  if topology.startswith("cpu:"):
    count = int(topology[4:])
    try:
      jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:
      pass  # The backend is already up; its devices may still be enough.
    devices = jax.devices("cpu")
    if len(devices) < count:
      raise ValueError(f"--topology {topology} needs {count} CPU devices and this process has "
                       f"{len(devices)}; run `python -m wcse_jax.aot` in a fresh process (it "
                       f"sets jax_num_cpu_devices before jax starts) or set XLA_FLAGS="
                       f"--xla_force_host_platform_device_count={count}")
    return devices[:count], None
  tpu = tpu_topology(topology)
  # libtpu also describes the host it is loaded on from these; a CPU host has none, and it then
  # logs errors about them. The compile target is the topology asked for either way.
  os.environ.setdefault("TPU_ACCELERATOR_TYPE", topology)
  os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
  # Only the compiler is used, no chip is opened: so two reports at once (or one beside a run on
  # a TPU VM) need not contend for libtpu's one-process lock file.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=tpu.name,
                                        chip_config_name=tpu.chip_config,
                                        chips_per_host_bounds=tpu.host_bounds, num_slices=1)
  except RuntimeError as e:
    if "TPU support not installed" not in str(e):
      raise
    raise RuntimeError("compiling for a TPU topology needs libtpu: `pip install -e '.[tpu]'`, or "
                       "`pip install --target DIR \"libtpu==0.0.42.*\"` and "
                       "TPU_LIBRARY_PATH=DIR/libtpu/libtpu.so (see wcse_jax/aot.py); "
                       "--topology cpu:N needs none") from e
  return list(desc.devices), tpu.hbm_bytes


def build_mesh(devices: Sequence[Any], shape: dict[str, int]) -> Mesh:
  """Our ("data", "fsdp", "tensor") mesh over `devices`, in the physical order jax picks for
  TPU slices (neighbouring chips share the inner axes)."""
  logical = parallel.make_mesh(shape, devices)  # validates and resolves a -1
  try:
    ordered = mesh_utils.create_device_mesh(logical.devices.shape, list(devices))
  except NotImplementedError:
    # An axis that is no product of whole torus sides (tensor=4 on v5e-64's 8x8) must split one.
    ordered = mesh_utils.create_device_mesh(logical.devices.shape, list(devices),
                                            allow_split_physical_axes=True)
  return parallel.make_mesh(logical.devices.shape, list(ordered.flat))


# --- FLOPs ---------------------------------------------------------------------------------------

def matmul_flops(jaxpr: Any, while_trips: int = 1) -> float:
  """Matmul FLOPs of a (closed) jaxpr: 2 per multiply-add of every live dot_general, scan bodies
  counted `length` times, while-loop bodies `while_trips` times, a cond's costliest branch."""
  if isinstance(jaxpr, jex.core.ClosedJaxpr):
    jaxpr = jaxpr.jaxpr
  live = {v for v in jaxpr.outvars if isinstance(v, jex.core.Var)}
  total = 0.0
  for eqn in reversed(jaxpr.eqns):
    # Dead code (e.g. the model's full-sequence logits the sampler's prefill never reads) is
    # traced but XLA removes it, so it is not counted.
    if not eqn.effects and not any(v in live for v in eqn.outvars):
      continue
    live.update(v for v in eqn.invars if isinstance(v, jex.core.Var))
    name = eqn.primitive.name
    if name == "dot_general":
      (contracting, _), _ = eqn.params["dimension_numbers"]
      lhs = eqn.invars[0].aval.shape
      total += 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contracting)
    inner = [matmul_flops(sub, while_trips) for sub in jex.core.jaxprs_in_params(eqn.params)]
    if name == "cond":
      total += max(inner)
    else:
      times = eqn.params["length"] if name == "scan" else while_trips if name == "while" else 1
      total += times * sum(inner)
  return total


# --- compiling -----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Executable:
  """One compiled program: per-device memory in bytes, and matmul FLOPs of one call."""
  name: str
  compile_seconds: float
  flops: float  # counted over all devices (matmul_flops)
  model_flops: float  # the model formula's FLOPs for the same work
  memory: dict[str, int] | None  # None when XLA refused it for lack of memory
  error: str | None = None


def _memory(compiled) -> dict[str, int]:
  m = compiled.memory_analysis()
  out = {"arguments": m.argument_size_in_bytes, "outputs": m.output_size_in_bytes,
         "aliased": m.alias_size_in_bytes, "temporaries": m.temp_size_in_bytes,
         "code": m.generated_code_size_in_bytes}
  out["peak"] = (out["arguments"] + out["outputs"] - out["aliased"] + out["temporaries"]
                 + out["code"])
  return out


def _compile(name: str, traced, model_flops: float, while_trips: int = 1) -> Executable:
  flops = matmul_flops(traced.jaxpr, while_trips)
  start = time.perf_counter()
  try:
    compiled = traced.lower().compile()
  except jax.errors.JaxRuntimeError as e:
    if "RESOURCE_EXHAUSTED" not in str(e):
      raise
    return Executable(name, time.perf_counter() - start, flops, model_flops, None,
                      str(e).strip().splitlines()[0])
  return Executable(name, time.perf_counter() - start, flops, model_flops, _memory(compiled))


def _abstract(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)


def compile_train(config: presets.Gemma2Config, mesh: Mesh, rows: int, length: int, *,
                  microbatches: int = 1, remat: str = "full", compute_dtype: Any = jnp.bfloat16,
                  rules=parallel.DEFAULT_RULES) -> list[Executable]:
  """THE train step (weighted_nll, AdamW, float32 master weights) for a [rows, length] batch."""
  model = gemma2.make_model(config, dtype=compute_dtype, param_dtype=jnp.float32,
                            remat_policy=remat)
  objective = objectives.make_objective("weighted_nll", model)
  optimizer = optim.make_optimizer(optim.OptimizerConfig())
  shardings = state_lib.state_shardings(objective, optimizer, mesh, rules)
  state = state_lib.abstract_train_state(objective, optimizer, shardings)
  step = step_lib.make_train_step(objective, optimizer, microbatches, shardings, rules=rules)
  batch_sharding = parallel.batch_sharding(mesh, 2, rules)
  batch = {key: jax.ShapeDtypeStruct((rows, length), dtype, sharding=batch_sharding)
           for key, dtype in (("tokens", jnp.int32), ("positions", jnp.int32),
                              ("loss_weight", jnp.float32))}
  with parallel.activate(mesh, rules):
    traced = step.jitted.trace(state, batch)
  positions = np.broadcast_to(np.arange(length), (rows, length))
  return [_compile("train_step", traced, train_flops.train_flops(config, positions))]


def compile_sample(config: presets.Gemma2Config, mesh: Mesh, rows: int, prompt_length: int,
                   new_tokens: int, *, samples: int = 1, top_p: float | None = None,
                   compute_dtype: Any = jnp.bfloat16, param_dtype: Any = jnp.float32,
                   rules=parallel.DEFAULT_RULES) -> list[Executable]:
  """The sampler's prefill and decode loop for `rows` prompts of `prompt_length` tokens, each
  sampled `samples` times for `new_tokens` tokens (every row running to the end)."""
  model = gemma2.make_model(config, dtype=compute_dtype, param_dtype=param_dtype)
  sampler = sampler_lib.Sampler(model, mesh=mesh, rules=rules)
  # The shapes Sampler.sample pads a call to (its step 1), and below its jitted prefill and
  # decode: sampler.py's private pieces, used as they are so the programs are exactly its own.
  bucket = min(max(pow2(prompt_length), sampler_lib.MIN_BUCKET), sampler.cache_length)
  dp = sampler.data_parallel
  batch = -(-pow2(rows) // dp) * dp
  out_len = pow2(new_tokens)
  cache_size = min(sampler.cache_length, bucket + out_len)

  boxed = gemma2.abstract_params(model)
  params = _abstract(nn.meta.unbox(boxed), parallel.logical_shardings(boxed, mesh, rules))
  rows_sharding = lambda ndim: parallel.batch_sharding(mesh, ndim, rules)
  replicated = NamedSharding(mesh, PartitionSpec())
  inputs = dict(
      tokens=jax.ShapeDtypeStruct((batch, bucket), jnp.int32, sharding=rows_sharding(2)),
      prompt_lengths=jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=rows_sharding(1)),
      prompt_ids=jax.ShapeDtypeStruct((batch,), jnp.uint32, sharding=rows_sharding(1)),
      valid=jax.ShapeDtypeStruct((batch,), jnp.bool_, sharding=rows_sharding(1)),
      key_data=jax.ShapeDtypeStruct(jax.random.key_data(jax.random.key(0)).shape, jnp.uint32,
                                    sharding=replicated),
      max_new=jax.ShapeDtypeStruct((), jnp.int32, sharding=replicated))
  static = dict(model=model, chooser=Greedy() if top_p is None else TopP(top_p),
                eos_ids=sampler.eos_ids, pad_id=sampler.pad_id)
  with parallel.activate(mesh, rules):
    prefill = sampler_lib._prefill_jit.trace(
        **static, num_samples=samples, cache_size=cache_size, out_len=out_len, params=params,
        stop_table=None, **inputs)
    state = jax.tree.map(lambda o: jax.ShapeDtypeStruct(o.shape, o.dtype, sharding=o.sharding),
                         prefill.out_info)
    decode = sampler_lib._decode_jit.trace(**static, params=params, state=state,
                                           stop_table=None)
  lengths = np.full(rows, prompt_length)
  # The prefill chooses each row's first token, so the loop runs new_tokens - 1 steps.
  steps = max(new_tokens - 1, 0)
  return [
      _compile("prefill", prefill, sample_flops.prefill_flops(config, lengths)),
      _compile("decode", decode, sample_flops.decode_flops(
          config, np.repeat(lengths, samples), np.full(rows * samples, new_tokens)),
          while_trips=steps)]


# --- the report ----------------------------------------------------------------------------------

def _parse_mesh(text: str) -> dict[str, int]:
  out = {}
  for part in filter(None, text.split(",")):
    axis, _, size = part.partition("=")
    if axis not in parallel.MESH_AXES or not size.lstrip("-").isdigit():
      raise ValueError(f"--mesh {text!r}: expected comma-separated AXIS=SIZE with AXIS in "
                       f"{parallel.MESH_AXES} (one SIZE may be -1), e.g. data=2,fsdp=8")
    out[axis] = int(size)
  return out


def run(args: argparse.Namespace) -> dict:
  """Compiles what `args` describe; returns the report as a JSON-ready dict."""
  config = presets.get_preset(args.preset)
  devices, hbm = topology_devices(args.topology)
  mesh = build_mesh(devices, _parse_mesh(args.mesh))
  dtype = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}[args.compute_dtype]
  if args.task == "train":
    executables = compile_train(config, mesh, args.rows, args.length,
                                microbatches=args.microbatches, remat=args.remat,
                                compute_dtype=dtype)
  else:
    executables = compile_sample(
        config, mesh, args.rows, args.prompt_length, args.new_tokens, samples=args.samples,
        top_p=args.top_p, compute_dtype=dtype,
        param_dtype={"bfloat16": jnp.bfloat16, "float32": jnp.float32}[args.param_dtype])
  return {"preset": args.preset, "task": args.task, "topology": args.topology,
          "devices": len(devices), "mesh": dict(mesh.shape), "hbm_bytes_per_device": hbm,
          "settings": {name: getattr(args, name) for name in _SETTINGS[args.task]},
          "executables": [dataclasses.asdict(e) for e in executables]}


def format_report(report: dict) -> str:
  def gib(b: int) -> str:
    return (f"{b / GIB:.2f}G" if b >= GIB else f"{b / (1 << 20):.1f}M" if b >= 1 << 20 else
            f"{b / 1024:.0f}K")
  hbm = report["hbm_bytes_per_device"]
  mesh = " ".join(f"{k}={v}" for k, v in report["mesh"].items())
  settings = ", ".join(f"{k}={v}" for k, v in report["settings"].items() if v is not None)
  lines = [f"{report['preset']} {report['task']} on {report['topology']} "
           f"({report['devices']} devices, mesh {mesh}); {settings}",
           f"{'per device':<16}{'arguments':>10}{'outputs':>9}{'aliased':>9}{'temps':>8}"
           f"{'code':>7}{'peak':>8}{'HBM':>7}  fits   compile"]
  for e in report["executables"]:
    if e["memory"] is None:
      lines.append(f"{e['name']:<16}does not fit: {e['error']}")
      continue
    m = e["memory"]
    fits = "-" if hbm is None else ("yes" if m["peak"] <= hbm else "NO")
    lines.append(f"{e['name']:<16}{gib(m['arguments']):>10}{gib(m['outputs']):>9}"
                 f"{gib(m['aliased']):>9}{gib(m['temporaries']):>8}{gib(m['code']):>7}"
                 f"{gib(m['peak']):>8}{'-' if hbm is None else gib(hbm):>7}  {fits:<5}"
                 f"{e['compile_seconds']:7.1f}s")
  for e in report["executables"]:
    ratio = e["flops"] / e["model_flops"] if e["model_flops"] else float("nan")
    lines.append(f"{e['name']}: {e['flops']:.3e} matmul FLOPs per call (all devices; "
                 f"{e['flops'] / report['devices']:.3e} per device), model formula "
                 f"{e['model_flops']:.3e} (counted / formula = {ratio:.2f})")
  return "\n".join(lines)


def _arguments() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m wcse_jax.aot",
      description="Compile the train step or the sampler for a TPU slice (or N CPU devices) "
                  "without the hardware, and print per-device memory and FLOPs per step.")
  p.add_argument("--preset", required=True, help=f"one of {', '.join(presets.preset_names())}")
  p.add_argument("--topology", required=True,
                 help="Cloud TPU accelerator type (v5e-16, v4-32, v5p-8, v6e-8, ...) or cpu:N")
  p.add_argument("--mesh", default="fsdp=-1",
                 help="mesh axes, e.g. fsdp=16 or data=2,fsdp=8; absent axes are 1, one may be "
                      "-1 (default: fsdp=-1, every device on fsdp)")
  p.add_argument("--task", choices=("train", "sample"), required=True)
  p.add_argument("--rows", type=int, required=True,
                 help="train: batch rows per step; sample: prompts per call")
  p.add_argument("--compute-dtype", choices=("bfloat16", "float32"), default="bfloat16")
  train = p.add_argument_group("train")
  train.add_argument("--length", type=int, help="tokens per row")
  train.add_argument("--microbatches", type=int, default=1)
  train.add_argument("--remat", choices=sorted(gemma2.REMAT_POLICIES), default="full",
                     help="remat policy of each scanned layer pair (default: full)")
  sample = p.add_argument_group("sample")
  sample.add_argument("--prompt-length", type=int)
  sample.add_argument("--new-tokens", type=int)
  sample.add_argument("--samples", type=int, default=1, help="samples per prompt")
  sample.add_argument("--top-p", type=float, help="nucleus sampling (default: greedy)")
  sample.add_argument("--param-dtype", choices=("float32", "bfloat16"), default="float32",
                      help="dtype the parameters are held in while sampling")
  p.add_argument("--json", action="store_true", help="print the report as JSON")
  return p


def main(argv: Sequence[str] | None = None) -> None:
  parser = _arguments()
  args = parser.parse_args(argv)
  needed = ("length",) if args.task == "train" else ("prompt_length", "new_tokens")
  missing = [f"--{n.replace('_', '-')}" for n in needed if getattr(args, n) is None]
  if missing:
    parser.error(f"--task {args.task} needs {' and '.join(missing)}")
  # Only the CPU backend is started: on a host with libtpu but no TPU, jax would otherwise probe
  # for TPU chips; the TPU compiler comes from the topology API alone.
  jax.config.update("jax_platforms", "cpu")
  report = run(args)
  print(json.dumps(report, indent=1) if args.json else format_report(report))


__all__ = ["tpu_topology", "topology_devices", "build_mesh", "matmul_flops", "compile_train",
           "compile_sample", "Executable", "run", "format_report", "main"]


if __name__ == "__main__":
  main(sys.argv[1:])
