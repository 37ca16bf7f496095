"""Scalar heads on the decoder's final-norm hidden state (discriminative reward models).

A head is one Dense layer: 1 output (a logit, for balanced BCE) or `num_outputs` logits over value
bins (HL-Gauss, papers.md §11). Its kernel carries the logical axes ("embed", None), so it shards
with the model's embedding dimension and its outputs stay replicated.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class ScalarHead(nn.Module):
  """hidden [..., D] -> logits [..., num_outputs] in float32."""
  num_outputs: int = 1
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, hidden: jax.Array) -> jax.Array:
    if self.num_outputs < 1:
      raise ValueError(f"ScalarHead: num_outputs must be >= 1, got {self.num_outputs}")
    dense = nn.Dense(
        self.num_outputs, dtype=jnp.float32, param_dtype=self.param_dtype, name="dense",
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("embed", None)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)))
    return dense(hidden.astype(jnp.float32))


def abstract_head_params(head: ScalarHead, embed_dim: int) -> Any:
  """Shapes and logical axes of the head's parameters, without allocating them."""
  return jax.eval_shape(lambda: head.init(jax.random.key(0), jnp.zeros((1, embed_dim))))["params"]


def init_head_params(head: ScalarHead, embed_dim: int, rng: jax.Array) -> Any:
  """Freshly initialised (unboxed) head parameters."""
  return nn.meta.unbox(head.init(rng, jnp.zeros((1, embed_dim)))["params"])


__all__ = ["ScalarHead", "abstract_head_params", "init_head_params"]
