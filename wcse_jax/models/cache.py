"""The KV cache of Gemma 2 decoding: one buffer pair per layer, ring buffers on local layers.

Shared by the model (which writes it), the sampler (which repeats it for N samples) and the
scorer (which repeats a prefix's cache for each of its continuations).
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp

from wcse_jax import parallel
from wcse_jax.models.presets import Gemma2Config


@flax.struct.dataclass
class Cache:
  """Decoding state shared by all layers.

  local_k / local_v: one buffer per (local, global) pair, [B, kv_heads, head_dim, W] keys and
  [B, kv_heads, W, head_dim] values, ring buffers of W = min(sliding_window, length) slots;
  global_k / global_v: the same with S time slots. Keys are kept transposed (time last): that is
  the layout the query-key matmul reads. *_pos: [B, W] and [B, S], the position held in each slot,
  -1 when empty; index: the next time step (slot S is the cache end: the caller must stop before
  it).
  """
  local_k: tuple[jax.Array, ...]
  local_v: tuple[jax.Array, ...]
  global_k: tuple[jax.Array, ...]
  global_v: tuple[jax.Array, ...]
  local_pos: jax.Array
  global_pos: jax.Array
  index: jax.Array

  @property
  def length(self) -> int:
    return self.global_pos.shape[1]

  @property
  def window(self) -> int:
    return self.local_pos.shape[1]

  def repeat(self, n: int) -> "Cache":
    """Each row repeated n times (row i -> rows i*n .. i*n+n-1): N samples share one prefill."""
    return jax.tree.map(lambda a: a if a.ndim == 0 else jnp.repeat(a, n, axis=0), self)


def init_cache(config: Gemma2Config, batch: int, length: int, dtype: Any = jnp.float32) -> Cache:
  """An empty cache for `batch` rows and `length` time steps."""
  window = min(config.sliding_window, length)
  per_pair = lambda *shape: tuple(jnp.zeros((batch, config.num_kv_heads) + shape, dtype)
                                  for _ in range(config.num_layers // 2))
  h = config.head_dim
  return Cache(
      local_k=per_pair(h, window), local_v=per_pair(window, h),
      global_k=per_pair(h, length), global_v=per_pair(length, h),
      local_pos=jnp.full((batch, window), -1, jnp.int32),
      global_pos=jnp.full((batch, length), -1, jnp.int32),
      index=jnp.zeros((), jnp.int32))


def ring_slots(index: jax.Array, num_new: int, size: int) -> tuple[int, jax.Array]:
  """Which of the new steps land in a ring of `size` slots (only the last `size` can) and where."""
  keep = min(num_new, size)
  slots = (index + num_new - keep + jnp.arange(keep)) % size
  return keep, slots


def write_ring(buf: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
  """Writes new[:, -keep:] into the ring `buf` ([B, W, ...]) at time steps index.. ."""
  keep, slots = ring_slots(index, new.shape[1], buf.shape[1])
  return buf.at[:, slots].set(new[:, new.shape[1] - keep:].astype(buf.dtype))


def write_linear(buf: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
  start = (0, index) + (0,) * (buf.ndim - 2)
  return jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), start)


def write_kv(buf: jax.Array, new: jax.Array, index: jax.Array, ring: bool,
              time_axis: int) -> jax.Array:
  """Writes new (time on `time_axis`) into a layer's cache buffer at time steps index.. (modulo
  the buffer's length when `ring`). Only the written slots are touched, so inside a decode loop
  the update happens in place rather than as a copy of the whole buffer every step."""
  steps = new.shape[time_axis]
  if ring:
    keep, slots = ring_slots(index, steps, buf.shape[time_axis])
    chunk = jax.lax.slice_in_dim(new, steps - keep, steps, axis=time_axis)
    where = (slice(None),) * time_axis + (slots,)
    return buf.at[where].set(chunk.astype(buf.dtype))
  start = [0] * buf.ndim
  start[time_axis] = index
  return jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), start)


def constrain(cache: Cache) -> Cache:
  """Constrains every buffer to the batch sharding (rows over the data axes)."""
  k = lambda bufs: tuple(parallel.constrain(a, ("batch", "kv_heads", "head_dim", "cache_length"))
                        for a in bufs)
  v = lambda bufs: tuple(parallel.constrain(a, ("batch", "kv_heads", "cache_length", "head_dim"))
                        for a in bufs)
  pos = lambda a: parallel.constrain(a, ("batch", "cache_length"))
  return cache.replace(local_k=k(cache.local_k), local_v=v(cache.local_v),
                       global_k=k(cache.global_k), global_v=v(cache.global_v),
                       local_pos=pos(cache.local_pos), global_pos=pos(cache.global_pos))


__all__ = ["Cache", "init_cache", "constrain", "write_kv", "write_ring", "write_linear"]
