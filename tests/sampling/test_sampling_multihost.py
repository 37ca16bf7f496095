"""Two local CPU processes sample over one global mesh: each passes its own prompts and gets its
own rows back, equal to one process sampling all prompts (randomness is keyed by prompt id), on
the plain and the refilling path."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
from cpu_devices import NO_COMPILATION_CACHE, xla_flags

from wcse_jax.sampling import TopP

PROMPTS = [[2, 5, 9, 11, 4, 7], [2, 17, 3], [2, 44, 45, 46, 47, 48, 49], [2, 9]]

_WORKER = textwrap.dedent("""
    import json, sys
    import jax
    from wcse_jax import parallel
    from wcse_jax.models import gemma2, presets
    from wcse_jax.sampling import Sampler, TopP
    port, pid, out, prompts = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    parallel.initialize_distributed(f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                                    cpu_collectives="gloo")
    assert jax.process_count() == 2 and jax.device_count() == 4
    model = gemma2.make_model(presets.get_preset("test"))
    mesh = parallel.make_mesh((2, 2, 1))
    params = gemma2.init_params(model, jax.random.key(0),
                                parallel.logical_shardings(gemma2.abstract_params(model), mesh))
    mine = prompts[2 * pid:2 * pid + 2]  # each process samples its own prompts
    result = Sampler(model, mesh=mesh, eos_ids=(64,), cache_length=32).sample(
        params, mine, num_samples=2, max_new_tokens=8, chooser=TopP(0.9), rng=3,
        prompt_ids=[2 * pid, 2 * pid + 1])
    # The refilling path: 2 rows per process for 4 items, the common BOS as a shared prefix.
    refilled = Sampler(model, mesh=mesh, eos_ids=(64,), cache_length=32, refill=True, rows=2,
                       min_shared_prefix=1).sample(
        params, mine, num_samples=2, max_new_tokens=8, chooser=TopP(0.9), rng=3,
        prompt_ids=[2 * pid, 2 * pid + 1])
    json.dump({"tokens": result.tokens.tolist(), "flops": result.flops,
               "refilled": refilled.tokens.tolist()}, open(out, "w"))
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path, model):
  import jax
  from wcse_jax.models import gemma2
  from wcse_jax.sampling import Sampler

  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  env = dict(os.environ, XLA_FLAGS=xla_flags(2), JAX_PLATFORMS="cpu", **NO_COMPILATION_CACHE)
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, str(script), str(port), str(i),
                             str(tmp_path / f"{i}.json"), json.dumps(PROMPTS)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  for p in procs:
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]
  parts = [json.load(open(tmp_path / f"{i}.json")) for i in range(2)]

  params = gemma2.init_params(model, jax.random.key(0))
  whole = Sampler(model, eos_ids=(64,), cache_length=32).sample(
      params, PROMPTS, num_samples=2, max_new_tokens=8, chooser=TopP(0.9), rng=3)
  np.testing.assert_array_equal(np.concatenate([p["tokens"] for p in parts]), whole.tokens)
  assert sum(p["flops"] for p in parts) == whole.flops
  np.testing.assert_array_equal(np.concatenate([p["refilled"] for p in parts]), whole.tokens)
