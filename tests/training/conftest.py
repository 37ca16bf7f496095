"""Fixtures for the training tests: the "test" preset model and its parameters."""
import jax
import pytest

from wcse_jax.models import gemma2, presets


@pytest.fixture(scope="session")
def model():
  return gemma2.make_model(presets.get_preset("test"))


@pytest.fixture(scope="session")
def model_params(model):
  return jax.jit(lambda key: gemma2.init_params(model, key))(jax.random.key(0))
