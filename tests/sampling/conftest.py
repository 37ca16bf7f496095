"""Shared fixtures: the "test" preset with weights rescaled so next-token distributions are
varied but not flat (the training init, std 0.02, gives near-uniform logits on a random model, where
float rounding could flip greedy choices), and a character-level tokenizer with a few
multi-character tokens (char_tokenizer.py, imported by the tests that need it)."""
import jax
import pytest
from char_tokenizer import CharTokenizer

from wcse_jax.models import gemma2, presets


@pytest.fixture(scope="session")
def config():
  return presets.get_preset("test")


@pytest.fixture(scope="session")
def model(config):
  return gemma2.make_model(config)


@pytest.fixture(scope="session")
def params(model):
  def rescale(path, x):  # to a fixed std whatever the init: embeddings 0.3, weights 0.1
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return x
    return x * ((0.3 if "input_embedding" in name else 0.1) / x.std())
  return jax.tree_util.tree_map_with_path(rescale, gemma2.init_params(model, jax.random.key(0)))


@pytest.fixture(scope="session")
def tokenizer():
  return CharTokenizer()
