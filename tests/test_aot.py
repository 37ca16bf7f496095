"""wcse_jax/aot.py: compile-only memory and FLOPs reports, on CPU device meshes (TPU where libtpu
is installed)."""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from wcse_jax import aot, parallel
from wcse_jax.models import presets

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cli(*args: str) -> dict:
  """The command line in a fresh process, as users run it (it sets up its own devices)."""
  out = subprocess.run([sys.executable, "-m", "wcse_jax.aot", *args, "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout)


def test_cpu_train_report_memory_and_flops_against_the_formula():
  report = _cli("--preset", "test", "--topology", "cpu:8", "--task", "train", "--rows", "16",
                "--length", "32", "--remat", "none")
  assert report["devices"] == 8 and report["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  (step,) = report["executables"]
  memory = step["memory"]
  for key in ("arguments", "outputs", "aliased", "temporaries", "peak"):
    assert memory[key] > 0, key
  assert memory["aliased"] <= memory["outputs"]  # the donated state
  # The counted FLOPs are the formula's (training/flops.train_flops) with two differences, both
  # known exactly: the formula counts 2 FLOPs per norm scale per token (no matmul does), and
  # attention over the causal keys only, 3 x 2 matmuls, while the step multiplies the whole
  # masked [L, L] square, 2 matmuls forward and 5 in the flash backward pass. So they agree to
  # within the attention share (here counted / formula = 1.23), and this identity is exact:
  cfg, rows, length = presets.get_preset("test"), 16, 32
  tokens = rows * length
  norms = 4 * cfg.embed_dim * cfg.num_layers + cfg.embed_dim
  dense = 3 * tokens * (cfg.flops_per_token(0) - 2 * norms)
  square = rows * cfg.num_layers * 7 * 2 * cfg.num_heads * cfg.head_dim * length ** 2
  assert step["flops"] == pytest.approx(dense + square, rel=1e-9)
  assert 1.0 < step["flops"] / step["model_flops"] < 1.3


def test_sample_report_on_an_eight_device_mesh():
  mesh = parallel.make_mesh({"data": 2, "fsdp": 4})
  prefill, decode = aot.compile_sample(presets.get_preset("test"), mesh, rows=8,
                                       prompt_length=12, new_tokens=9, samples=3)
  for e in (prefill, decode):
    assert e.memory["arguments"] > 0 and e.memory["peak"] > 0 and e.flops > 0
  assert decode.memory["aliased"] > 0  # the decode state (KV cache) is donated
  # The programs do more than the tokens need: prompts padded to a 16-token bucket, and every
  # step attending over the whole 32-slot cache (masked), which at this tiny width dominates.
  assert prefill.flops > 16 / 12 * prefill.model_flops
  assert decode.flops > decode.model_flops


def test_matmul_flops_counts_loops_and_skips_dead_code():
  w = jnp.zeros((8, 8))

  def f(x):
    dead = x @ w  # never used: XLA drops it, so it is not counted
    del dead
    y = jax.lax.scan(lambda c, _: (c @ w, None), x, length=5)[0]
    y = jax.lax.while_loop(lambda c: c[0, 0] < 1, lambda c: c @ w, y)
    return jax.lax.cond(y[0, 0] > 0, lambda: y @ w @ w, lambda: y @ w)

  matmul = 2 * 4 * 8 * 8
  jaxpr = jax.make_jaxpr(f)(jnp.zeros((4, 8)))
  assert aot.matmul_flops(jaxpr) == (5 + 1 + 2) * matmul
  assert aot.matmul_flops(jaxpr, while_trips=7) == (5 + 7 + 2) * matmul


@pytest.mark.parametrize("name,topology,chip_config,hbm_gib", [
    ("v5e-16", "v5e:4x4", "default", 16), ("v5litepod-8", "v5e:2x4", "default", 16),
    ("v5e-256", "v5e:16x16", "default", 16), ("v4-8", "v4:2x2x1", "megacore", 32),
    ("v4-32", "v4:2x2x4", "megacore", 32), ("v4-128", "v4:4x4x4", "megacore", 32),
    ("v5p-256", "v5:4x4x8", "megacore", 95), ("v6e-64", "v6e:8x8", "default", 32)])
def test_accelerator_names_map_to_libtpu_topologies(name, topology, chip_config, hbm_gib):
  tpu = aot.tpu_topology(name)
  assert (tpu.name, tpu.chip_config, tpu.hbm_bytes) == (topology, chip_config, hbm_gib << 30)


@pytest.mark.parametrize("name,message", [("v9-8", "unknown TPU accelerator type"),
                                          ("v5p-384", "power-of-two")])
def test_unknown_topologies_are_refused(name, message):
  with pytest.raises(ValueError, match=message):
    aot.tpu_topology(name)


def test_too_few_cpu_devices_says_to_use_a_fresh_process():
  jax.devices()  # this process's backend is up with 8 devices
  with pytest.raises(ValueError, match="needs 16 CPU devices and this process has 8"):
    aot.topology_devices("cpu:16")


def test_task_flags_are_required():
  with pytest.raises(SystemExit):
    aot.main(["--preset", "test", "--topology", "cpu:8", "--task", "sample", "--rows", "2"])


@pytest.mark.skipif(not (os.environ.get("TPU_LIBRARY_PATH")
                         or importlib.util.find_spec("libtpu")),
                    reason="needs libtpu: pip install -e '.[tpu]', or set TPU_LIBRARY_PATH "
                           "(see wcse_jax/aot.py)")
def test_tpu_topology_compiles_without_a_tpu():
  # tensor=8 is no product of the 4x4 torus's sides: the mesh must split one.
  report = _cli("--preset", "test", "--topology", "v5e-16", "--mesh", "fsdp=2,tensor=8",
                "--task", "train", "--rows", "16", "--length", "32")
  (step,) = report["executables"]
  assert report["mesh"] == {"data": 1, "fsdp": 2, "tensor": 8}
  assert report["hbm_bytes_per_device"] == 16 << 30
  assert step["memory"]["arguments"] > 0 and step["memory"]["code"] > 0 and step["flops"] > 0
