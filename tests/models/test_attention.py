"""attend() (models/attention.py) against the reference's attention differentiated by autodiff."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads

from wcse_jax.models.attention import MASK_VALUE, attend

B, K, G, T, H = 2, 2, 3, 12, 8
SOFTCAP = 5.0  # small, so the soft-cap's derivative matters at these logit sizes


def _reference(q, keys, values, mask, softcap):
  """The gemma package's formulation, left to autodiff."""
  logits = jnp.einsum("BKGTH,BKHS->BKGTS", q, keys, preferred_element_type=jnp.float32)
  logits = jnp.tanh(logits / softcap) * softcap
  logits = jnp.where(mask[:, None, None], logits, MASK_VALUE)
  probs = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
  return jnp.einsum("BKGTS,BKSH->BKGTH", probs, values)


def _inputs(dtype):
  ks = jax.random.split(jax.random.key(0), 4)
  q = 2 * jax.random.normal(ks[0], (B, K, G, T, H))
  keys = 2 * jax.random.normal(ks[1], (B, K, H, T))
  values = jax.random.normal(ks[2], (B, K, T, H))
  cotangent = jax.random.normal(ks[3], (B, K, G, T, H))
  # Causal with a window of 4 on row 0; row 1 also has two padding queries (no visible key),
  # which attend uniformly to every key, as in the reference.
  pos = np.arange(T)
  causal = (pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - 4)
  mask = np.stack([causal, causal & (pos[:, None] < T - 2)])
  return [a.astype(dtype) for a in (q, keys, values)] + [jnp.asarray(mask), cotangent.astype(dtype)]


def _value_and_grads(fn, q, keys, values, mask, cotangent):
  out, vjp = jax.vjp(lambda *a: fn(*a, mask, SOFTCAP), q, keys, values)
  return (out,) + vjp(cotangent)


def test_forward_and_gradients_equal_the_reference():
  args = _inputs(jnp.float32)
  ours = _value_and_grads(attend, *args)
  ref = _value_and_grads(_reference, *args)
  for name, a, b in zip(["output", "d_q", "d_keys", "d_values"], ours, ref):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
  # Padding queries see every key equally.
  values = np.asarray(args[2])
  np.testing.assert_allclose(ours[0][1, :, :, -2:], np.broadcast_to(
      values[1].mean(axis=1)[:, None, None], (K, G, 2, H)), rtol=1e-5, atol=1e-6)


def test_jit_and_bfloat16():
  args = _inputs(jnp.bfloat16)
  ours = jax.jit(lambda *a: _value_and_grads(attend, *a))(*args)
  ref = _value_and_grads(_reference, *_inputs(jnp.float32))
  for name, a, b in zip(["output", "d_q", "d_keys", "d_values"], ours, ref):
    assert a.dtype == jnp.bfloat16, name
    scale = float(jnp.abs(b).max())
    np.testing.assert_allclose(a.astype(jnp.float32), b, atol=0.03 * scale, err_msg=name)


def test_gradients_against_finite_differences():
  # Independent of the reference: jax's numerical gradient check of the custom rule.
  q, keys, values, mask, _ = _inputs(jnp.float32)
  f = lambda q, keys, values: attend(q, keys, values, mask, SOFTCAP)
  check_grads(f, (q / 2, keys / 2, values), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
