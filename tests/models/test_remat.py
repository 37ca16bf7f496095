"""Remat policies keep their meaning: "dots" / "dots_no_batch" save the projections' outputs and
the attention's output and row statistics; "full" saves none of them."""
import contextlib
import io

import jax
import jax.numpy as jnp
import pytest
from jax.ad_checkpoint import print_saved_residuals

from wcse_jax.models import gemma2, presets


def _saved_shapes(policy: str) -> set[str]:
  config = presets.get_preset("test")
  model = gemma2.make_model(config, remat_policy=policy)
  params = gemma2.init_params(model, jax.random.key(0))
  tokens = jnp.ones((2, 8), jnp.int32)
  positions = jnp.broadcast_to(jnp.arange(8), (2, 8))
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    print_saved_residuals(lambda p: gemma2.forward(model, p, tokens, positions).logits.sum(),
                          params)
  return {line.split()[0] for line in out.getvalue().splitlines()}


@pytest.mark.parametrize("policy", ["dots", "dots_no_batch"])
def test_matmul_policies_save_the_projections(policy):
  # The projections run inside a custom_vjp (models/project.py), invisible to jax's matmul
  # policies; the model's policies must still save them. Stacked over the 2 layer pairs:
  queries = "f32[2,2,8,4,16]"  # [pairs, B, T, heads, head_dim]
  gating_half = "f32[2,2,8,64]"  # [pairs, B, T, hidden]
  # The attention's residuals (models/attention.py), so its backward pass does not re-run it:
  attention_out = "f32[2,2,2,2,8,16]"  # [pairs, B, kv_heads, groups, T, head_dim]
  row_stats = "f32[2,2,2,2,8]"  # row maxima and sums, [pairs, B, kv_heads, groups, T]
  expected = {queries, gating_half, attention_out, row_stats}
  saved = _saved_shapes(policy)
  assert expected <= saved
  assert not expected & _saved_shapes("full")
