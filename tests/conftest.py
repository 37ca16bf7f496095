"""Every test sees 8 CPU devices, so sharding and mesh code really run distributed."""
import os

import pytest

from cpu_devices import xla_flags

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + xla_flags(8)).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def private_stage_registry(monkeypatch):
  """Stages registered by the test go into a copy of the registry, gone after it."""
  from wcse_jax import experiment
  monkeypatch.setattr(experiment, "_REGISTRY", dict(experiment._REGISTRY))
