"""Every test sees 8 CPU devices, so sharding and mesh code really run distributed."""
import os
import tempfile

import pytest

from cpu_devices import xla_flags

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(8)).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compilation is most of a micro run's time, and many tests (and the processes some of them start)
# compile the same small programs: every test process shares one persistent compilation cache.
# A size limit turns on its file lock, which two processes writing an entry at once need.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"wcse_jax_tests_xla_{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(8 << 30))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Most tests compile far longer than they run their test-sized programs: without LLVM's
# optimisations XLA compiles about twice as fast (tests/training/test_training_step.py: 85 s ->
# 49 s, measured with the same setting as an XLA flag) and runs about four times slower. Tests that train to a result take
# `optimized_compilation`. Processes the tests start inherit the variable.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")


@pytest.fixture
def private_stage_registry(monkeypatch):
  """Stages registered by the test go into a copy of the registry, gone after it."""
  from wcse_jax import experiment
  monkeypatch.setattr(experiment, "_REGISTRY", dict(experiment._REGISTRY))


@pytest.fixture
def optimized_compilation():
  """XLA's optimisations back on, for a test that runs its programs far longer than it compiles
  them (training a model until it learns). The persistent cache keys on the compile options, so
  the two kinds of executable never mix there."""
  import jax
  before = jax.config.values["jax_disable_most_optimizations"]
  jax.config.update("jax_disable_most_optimizations", False)
  yield
  jax.config.update("jax_disable_most_optimizations", before)
