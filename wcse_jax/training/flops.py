"""FLOPs of a training step and the device's measured matmul rate (for MFU).

Training FLOPs = `passes` x forward FLOPs, with passes = 3 for forward + backward (the backward
does two matmuls for each forward one). Forward FLOPs per token come from the model config
(`Gemma2Config.flops_per_token`: 2 x non-embedding params + the logit projection + attention over
the keys the token sees), evaluated at each real token's own context length (position + 1), so
padding costs nothing and packed segments count their own, shorter, attention.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from wcse_jax.models.presets import Gemma2Config


def train_flops(config: Gemma2Config, positions: np.ndarray, passes: int = 3) -> float:
  """FLOPs of a step over a batch with these positions (negative = padding)."""
  positions = np.asarray(positions).reshape(-1)
  contexts, counts = np.unique(positions[positions >= 0] + 1, return_counts=True)
  forward = sum(config.flops_per_token(int(c)) * int(n) for c, n in zip(contexts, counts))
  return float(passes * forward)


def measure_matmul_flops(size: int = 2048, dtype=jnp.float32, repeats: int = 10,
                         device: jax.Device | None = None) -> float:
  """FLOP/s of a [size, size] x [size, size] matmul on one device (best of `repeats`)."""
  device = device or jax.devices()[0]
  a = jax.device_put(jnp.ones((size, size), dtype), device)
  matmul = jax.jit(lambda x, y: x @ y)
  matmul(a, a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    matmul(a, a).block_until_ready()
    best = min(best, time.perf_counter() - start)
  return 2.0 * size ** 3 / best


__all__ = ["train_flops", "measure_matmul_flops"]
