"""Two local CPU processes run one sharded forward pass over a global mesh (jax.distributed)."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
from cpu_devices import NO_COMPILATION_CACHE, xla_flags

from wcse_jax.models import gemma2, presets

_WORKER = textwrap.dedent("""
    import json, os, sys
    import jax, numpy as np
    from wcse_jax import parallel
    from wcse_jax.models import gemma2, presets
    port, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    parallel.initialize_distributed(f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                                    cpu_collectives="gloo")
    assert jax.process_count() == 2 and jax.device_count() == 4
    config = presets.get_preset("test")
    model = gemma2.make_model(config)
    mesh = parallel.make_mesh((2, 2, 1))
    shardings = parallel.logical_shardings(gemma2.abstract_params(model), mesh)
    params = gemma2.init_params(model, jax.random.key(0), shardings)
    tokens = np.asarray(jax.random.randint(jax.random.key(1), (4, 10), 1, config.vocab_size))
    local = tokens[pid * 2:(pid + 1) * 2]  # each process feeds its own rows
    batch = parallel.global_batch({"tokens": local}, mesh)
    with parallel.activate(mesh):
      f = jax.jit(lambda p, t: gemma2.forward(model, p, t, gemma2.default_positions(t))
                  .logits.sum(-1),
                  out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
      summed = f(params, batch["tokens"])
    json.dump(np.asarray(summed).tolist(), open(out, "w"))
""")


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_agree_with_one(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(_WORKER)
  env = dict(os.environ, XLA_FLAGS=xla_flags(2), JAX_PLATFORMS="cpu", **NO_COMPILATION_CACHE)
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, str(script), str(port), str(i),
                             str(tmp_path / f"{i}.json")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  for p in procs:
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out[-3000:]
  results = [np.array(json.load(open(tmp_path / f"{i}.json"))) for i in range(2)]

  config = presets.get_preset("test")
  model = gemma2.make_model(config)
  params = gemma2.init_params(model, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (4, 10), 1, config.vocab_size)
  expected = gemma2.forward(model, params, tokens, gemma2.default_positions(tokens)).logits.sum(-1)
  for r in results:
    np.testing.assert_allclose(r, expected, atol=1e-4)
