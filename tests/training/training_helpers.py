"""Helpers shared by the training tests (importable: pytest puts this folder on sys.path)."""
import jax
import numpy as np


def nll_batch(rows: int, length: int, seed: int = 0, vocab: int = 64) -> dict:
  """Right-padded rows of random lengths; weights 1 after a short prompt, some rows negative."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(length // 2, length + 1, rows)
  tokens = np.zeros((rows, length), np.int32)
  positions = np.full((rows, length), -1, np.int32)
  loss_weight = np.zeros((rows, length), np.float32)
  for i, n in enumerate(lengths):
    tokens[i, :n] = rng.integers(3, vocab, n)
    positions[i, :n] = np.arange(n)
    loss_weight[i, 3:n] = 1.0 if i % 3 else -0.5
  return {"tokens": tokens, "positions": positions, "loss_weight": loss_weight}


def directional_fd(f, params, direction, eps=1e-2):
  """Central finite difference of f along `direction` (a tree like params)."""
  shift = lambda s: jax.tree.map(lambda p, d: p + s * d, params, direction)
  return (float(f(shift(eps))) - float(f(shift(-eps)))) / (2 * eps)


def random_direction(params, seed=1):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(treedef, [jax.random.normal(k, x.shape, x.dtype) * 0.05
                                      for k, x in zip(keys, leaves)])
