"""A (2,2,2) mesh over 8 CPU devices gives the single-device numbers and really shards."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax.sharding import PartitionSpec as P

from wcse_jax import parallel
from wcse_jax.models import gemma2, presets


def _loss(model, params, tokens, positions):
  logits = gemma2.forward(model, params, tokens, positions).logits
  logp = jax.nn.log_softmax(logits[:, :-1])
  target = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  mask = (positions[:, 1:] >= 0)
  return -(target * mask).sum() / mask.sum()


def test_mesh_222_matches_one_device():
  assert jax.device_count() == 8
  config = presets.get_preset("test")
  model = gemma2.make_model(config)
  abstract = gemma2.abstract_params(model)
  tokens = jax.random.randint(jax.random.key(1), (8, 12), 1, config.vocab_size)
  tokens = tokens.at[:, :2].set(0)
  positions = gemma2.default_positions(tokens)

  one = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  params_one = gemma2.init_params(model, jax.random.key(0),
                                  parallel.logical_shardings(abstract, one))
  with parallel.activate(one):
    loss_one, grad_one = jax.jit(jax.value_and_grad(
        lambda p: _loss(model, p, tokens, positions)))(params_one)
    logits_one = jax.jit(lambda p: gemma2.forward(model, p, tokens, positions).logits)(params_one)

  mesh = parallel.make_mesh((2, 2, 2))
  shardings = parallel.logical_shardings(abstract, mesh)
  params = jax.device_put(params_one, shardings)
  batch = parallel.global_batch(
      {"tokens": np.asarray(tokens), "positions": np.asarray(positions)}, mesh)
  with parallel.activate(mesh):
    loss, grad = jax.jit(jax.value_and_grad(
        lambda p, b: _loss(model, p, b["tokens"], b["positions"])))(params, batch)
    logits = jax.jit(
        lambda p, b: gemma2.forward(model, p, b["tokens"], b["positions"]).logits)(params, batch)

  np.testing.assert_allclose(logits, logits_one, atol=1e-5)
  np.testing.assert_allclose(loss, loss_one, atol=1e-5)
  for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(grad_one)):
    np.testing.assert_allclose(a, b, atol=1e-5)
  # The arrays are really distributed as the rules say.
  q = params["layers"]["local"]["attn"]["q_einsum"]["w"]  # (layers, heads, embed, head_dim)
  assert q.sharding.spec == P(None, "tensor", "fsdp", None)
  assert q.addressable_shards[0].data.shape == (2, 2, 16, 16)
  assert params["embedder"]["input_embedding"].sharding.spec == P("tensor", "fsdp")
  assert batch["tokens"].sharding.spec == P(("data", "fsdp"), None)
  assert logits.sharding.spec == P(("data", "fsdp"), None, "tensor")


def test_every_parameter_has_a_rule_and_replication_is_reported():
  model = gemma2.make_model(presets.get_preset("gemma2_2b"))
  abstract = gemma2.abstract_params(model)
  mesh = parallel.make_mesh((2, 2, 2))
  report = parallel.check_rules(abstract, mesh=mesh)
  assert report["params"] == presets.get_preset("gemma2_2b").param_count()
  # Only the norm scales are replicated: 4 per layer plus the final norm, 2304 each.
  assert report["replicated"] == (4 * 26 + 1) * 2304
  bad_rules = tuple(r for r in parallel.DEFAULT_RULES if r[0] != "mlp")
  with pytest.raises(ValueError, match=r"logical axes \['mlp'\] have no sharding rule"):
    parallel.check_rules(abstract, bad_rules)


def test_activation_constraints_are_live_on_cpu():
  config = presets.get_preset("test")
  model = gemma2.make_model(config)
  params = gemma2.init_params(model, jax.random.key(0))
  tokens = jnp.ones((8, 4), jnp.int32)
  mesh = parallel.make_mesh((2, 2, 2))
  with parallel.activate(mesh):
    hlo = jax.jit(lambda p: gemma2.forward(model, p, tokens,
                                           gemma2.default_positions(tokens)).logits
                  ).lower(params).as_text()
  assert hlo.count("sharding_constraint") >= 5


def test_bad_mesh_is_a_clear_error():
  with pytest.raises(ValueError, match="needs 12 devices, but 8 are available"):
    parallel.make_mesh((3, 2, 2))
  with pytest.raises(ValueError, match="does not divide the 8 available devices"):
    parallel.make_mesh((3, -1, 1))
  with pytest.raises(ValueError, match="unknown axis names"):
    parallel.make_mesh({"model": 8})
  assert parallel.make_mesh({"data": -1, "tensor": 2}).shape == {"data": 4, "fsdp": 1, "tensor": 2}
