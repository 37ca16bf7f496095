"""project(): the einsum it stands for, forward and backward, for every projection the model
uses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wcse_jax.models.project import project

# (equation, x shape, w shape): the model's projections, with both orientations of the weight
# gradient (contracted features <= or > the weight's output features).
CASES = [
    ("BTD,NDH->BTNH", (2, 5, 8), (3, 8, 4)),      # queries: 8 contracted <= 12 out
    ("BSD,CKDH->CBSKH", (2, 5, 8), (2, 1, 8, 3)),  # keys and values: 8 > 6
    ("BTNH,NHD->BTD", (2, 5, 3, 4), (3, 4, 8)),  # attention output: 12 > 8
    ("BTD,DF->BTF", (2, 5, 6), (6, 10)),          # gating half
    ("BTD,FD->BTF", (2, 5, 6), (10, 6)),          # gating half, 9B/27B layout
    ("BTF,FD->BTD", (2, 5, 10), (10, 6)),         # MLP output: 10 > 6
    ("BTD,VD->BTV", (2, 5, 6), (16, 6)),          # tied output embedding
]


@pytest.mark.parametrize("eq,x_shape,w_shape", CASES)
def test_forward_and_gradients_equal_the_einsum(eq, x_shape, w_shape):
  kx, kw, kg = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, x_shape)
  w = jax.random.normal(kw, w_shape)
  out, vjp = jax.vjp(lambda a, b: project(eq, a, b), x, w)
  ref, ref_vjp = jax.vjp(lambda a, b: jnp.einsum(eq, a, b), x, w)
  np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-6)
  g = jax.random.normal(kg, out.shape)
  for got, want in zip(vjp(g), ref_vjp(g)):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_low_precision_inputs_get_gradients_in_their_own_dtype():
  x = jnp.ones((2, 3, 4), jnp.bfloat16)
  w = jnp.ones((5, 4), jnp.bfloat16)
  out, vjp = jax.vjp(lambda a, b: project("BTD,VD->BTV", a, b, preferred_element_type=jnp.float32),
                     x, w)
  assert out.dtype == jnp.float32
  dx, dw = vjp(jnp.ones_like(out))
  assert (dx.dtype, dw.dtype) == (jnp.bfloat16, jnp.bfloat16)
  np.testing.assert_array_equal(np.asarray(dw, np.float32), np.full((5, 4), 6.0))


def test_a_non_projection_is_refused_by_name():
  with pytest.raises(ValueError, match="'BTD,BD->BT' is not a projection"):
    project("BTD,BD->BT", jnp.ones((2, 3, 4)), jnp.ones((2, 4)))
