"""`attend(q, keys, values, mask, softcap)`: soft-capped, masked softmax attention with a
flash-style backward pass.

The forward pass is the reference's: logits = q k (float32), soft-capped by tanh, masked keys set
to a large negative logit, softmax, probabilities (in the compute dtype) times values. Its
residuals are the inputs, the output and two float32 statistics per query row (the row's maximum
logit and the sum of its exponentials); the backward pass recomputes the probabilities from them
in one elementwise pass and uses D = rowsum(dO * O) in place of rowsum(P * dP) (equal in exact
arithmetic), as flash attention does. Left to autodiff under the model's remat policies, the
backward pass re-ran the forward softmax, and XLA:CPU wrote a [.., T, S] array a second time,
transposed, for one of the gradient matmuls.

The output and the statistics are named STATS_NAME, so remat policies that save them (the
model's "dots" and "dots_no_batch") run the backward pass without re-running the forward
attention: the saved arrays are the size of the queries, not of the [T, S] scores.

Layouts (those the KV cache keeps, gemma2.py): q [B, K, G, T, H] (queries grouped by their kv
head), keys [B, K, H, S], values [B, K, S, H], mask [B, T, S] (True where a query sees a key).
A query row with no visible key attends uniformly to all S keys, as the reference does.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

MASK_VALUE = -2.3819763e38  # The reference's large negative logit for masked keys.
STATS_NAME = "attention_stats"  # what remat policies see the output and row statistics as


def _capped_logits(q, keys, mask, softcap):
  """(capped logits with masked keys at MASK_VALUE, tanh of the scaled logits), float32."""
  logits = jnp.einsum("BKGTH,BKHS->BKGTS", q, keys, preferred_element_type=jnp.float32)
  t = jnp.tanh(logits / softcap)
  return jnp.where(mask[:, None, None], t * softcap, MASK_VALUE), t


def _attend(q, keys, values, mask, softcap):
  """(output, row maxima, row sums of exponentials)."""
  logits, _ = _capped_logits(q, keys, mask, softcap)
  row_max = jnp.max(logits, axis=-1)
  e = jnp.exp(logits - row_max[..., None])
  row_sum = jnp.sum(e, axis=-1)
  probs = (e / row_sum[..., None]).astype(q.dtype)
  return jnp.einsum("BKGTS,BKSH->BKGTH", probs, values), row_max, row_sum


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def attend(q: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array,
           softcap: float) -> jax.Array:
  """Attention output [B, K, G, T, H] (see the module docstring)."""
  return _attend(q, keys, values, mask, softcap)[0]


def _forward(q, keys, values, mask, softcap):
  out, row_max, row_sum = (checkpoint_name(a, STATS_NAME)
                           for a in _attend(q, keys, values, mask, softcap))
  return out, (q, keys, values, mask, out, row_max, row_sum)


def _backward(softcap, residuals, d_out):
  q, keys, values, mask, out, row_max, row_sum = residuals
  logits, t = _capped_logits(q, keys, mask, softcap)
  probs = jnp.exp(logits - row_max[..., None]) / row_sum[..., None]
  # dV^T = dO^T P, then a transpose of the small result: XLA then transposes dO, not P.
  d_values = jnp.einsum("BKGTH,BKGTS->BKHS", d_out, probs.astype(d_out.dtype)).swapaxes(2, 3)
  d_probs = jnp.einsum("BKGTH,BKSH->BKGTS", d_out, values, preferred_element_type=jnp.float32)
  delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
  # Softmax, then the soft-cap's derivative 1 - tanh^2; masked keys get no gradient. The factor
  # independent of dP is formed beside the probabilities, in one pass over [.., T, S].
  scale = jnp.where(mask[:, None, None], probs * (1 - t * t), 0)
  d_logits = (scale * (d_probs - delta[..., None])).astype(q.dtype)
  d_q = jnp.einsum("BKGTS,BKHS->BKGTH", d_logits, keys)
  d_keys = jnp.einsum("BKGTH,BKGTS->BKHS", q, d_logits)
  return d_q, d_keys.astype(keys.dtype), d_values.astype(values.dtype), None


attend.defvjp(_forward, _backward)

__all__ = ["attend", "MASK_VALUE", "STATS_NAME"]
