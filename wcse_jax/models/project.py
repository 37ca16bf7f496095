"""`project(eq, x, w)`: jnp.einsum for a weight projection, with a weight gradient XLA runs fast.

The forward pass is exactly `jnp.einsum(eq, x, w)`. The backward pass computes the input gradient
the usual way and the weight gradient as ONE two-dimensional matmul over the flattened token
axis, with the narrower of the two operands transposed: dW = X^T G when x has no more contracted
features than the output has weight features, (G^T X)^T otherwise. Left to autodiff, XLA:CPU
often picks the other orientation and transposes the wide operand in memory (a [tokens, hidden]
copy) before a matmul that then runs at about half speed; on the tiny preset's training step the
projections' backward passes were the largest non-matmul cost. Any backend benefits from one
plain matmul per weight.

`eq` must be a projection: every index of `w` appears in `x` or in the output but not both
("contracted" or "weight-free" indices), and the output's remaining indices come from `x` in the
same order as they appear there (the "token" indices, e.g. B and T).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name


def _parse(eq: str) -> tuple[str, str, str, str, str, str]:
  inputs, y = eq.replace(" ", "").split("->")
  x, w = inputs.split(",")
  tokens = "".join(c for c in x if c in y and c not in w)
  contracted = "".join(c for c in x if c in w and c not in y)
  free = "".join(c for c in w if c in y and c not in x)
  if (sorted(tokens + contracted) != sorted(x) or sorted(contracted + free) != sorted(w)
      or sorted(tokens + free) != sorted(y) or "".join(c for c in y if c in tokens) != tokens):
    raise ValueError(f"{eq!r} is not a projection (see wcse_jax/models/project.py)")
  return x, w, y, tokens, contracted, free


NAME = "projection"  # what remat policies see the output as (gemma2.REMAT_POLICIES)


def project(eq: str, x: jax.Array, w: jax.Array, preferred_element_type=None) -> jax.Array:
  """jnp.einsum(eq, x, w, preferred_element_type=...) (see the module docstring).

  The output is named NAME for rematerialisation: remat policies that look for matmuls do not
  see the one inside a custom_vjp, so the model's policies save projections by this name.
  """
  _parse(eq)
  return checkpoint_name(_project(eq, x, w, preferred_element_type), NAME)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 3))
def _project(eq, x, w, preferred_element_type):
  return jnp.einsum(eq, x, w, preferred_element_type=preferred_element_type)


def _forward(eq, x, w, preferred_element_type):
  return jnp.einsum(eq, x, w, preferred_element_type=preferred_element_type), (x, w)


def _backward(eq, preferred_element_type, residuals, g):
  del preferred_element_type
  x, w = residuals
  xs, ws, ys, tokens, contracted, free = _parse(eq)
  dx = jnp.einsum(f"{ys},{ws}->{xs}", g, w.astype(g.dtype)).astype(x.dtype)
  sizes = dict(zip(xs, x.shape)) | dict(zip(ys, g.shape))
  rows = math.prod(sizes[c] for c in tokens)
  # [tokens, contracted] and [tokens, free] as 2-D matrices (transposes of small index orders
  # only; with the usual layouts both are free reshapes).
  x2 = jnp.einsum(f"{xs}->{tokens}{contracted}", x).reshape(rows, -1).astype(g.dtype)
  g2 = jnp.einsum(f"{ys}->{tokens}{free}", g).reshape(rows, -1)
  if x2.shape[1] <= g2.shape[1]:
    dw2 = x2.T @ g2
  else:
    dw2 = (g2.T @ x2).T
  dw = dw2.reshape([sizes[c] for c in contracted + free])
  dw = jnp.einsum(f"{contracted}{free}->{ws}", dw).astype(w.dtype)
  return dx, dw


_project.defvjp(_forward, _backward)

__all__ = ["project", "NAME"]
