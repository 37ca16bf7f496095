"""Published Gemma 2 checkpoints load into our sharded tree; exports read back in the reference."""
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import linen as nn

from wcse_jax import checkpoints, parallel, reference
from wcse_jax.models import gemma2, presets


def _write_published(path, config, seed=0):
  """A checkpoint as the published files are: flat module keys, bfloat16, written by orbax."""
  ref = reference.transformer(config)
  params = ref.init(jax.random.key(seed), jnp.zeros((1, 4), jnp.int32))["params"]
  params = jax.tree.map(lambda x: (x + 0.05 * jax.random.normal(jax.random.key(seed + 1), x.shape)
                                   ).astype(jnp.bfloat16), params)
  ocp.PyTreeCheckpointer().save(str(path), checkpoints.nested_to_flat(params))
  return params


def test_load_published_checkpoint_sharded_and_matches_reference(tmp_path):
  config = presets.get_preset("test")
  ref_params = _write_published(tmp_path / "ckpt", config)
  model = gemma2.make_model(config)
  boxed = gemma2.abstract_params(model)
  mesh = parallel.make_mesh((2, 2, 2))
  shardings = parallel.logical_shardings(boxed, mesh)
  params = checkpoints.load_gemma(tmp_path / "ckpt", nn.meta.unbox(boxed), shardings)
  q = params["layers"]["global"]["attn"]["q_einsum"]["w"]
  assert q.sharding == shardings["layers"]["global"]["attn"]["q_einsum"]["w"]
  assert q.dtype == jnp.float32
  tokens = jax.random.randint(jax.random.key(3), (2, 9), 1, config.vocab_size)
  positions = gemma2.default_positions(tokens)
  ours = gemma2.forward(model, jax.device_get(params), tokens, positions).logits
  f32 = jax.tree.map(lambda x: x.astype(jnp.float32), ref_params)
  theirs = reference.transformer(config).apply({"params": f32}, tokens).logits
  np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_shape_mismatch_names_the_parameter(tmp_path):
  _write_published(tmp_path / "ckpt", presets.get_preset("test", vocab_size=80))
  model = gemma2.make_model(presets.get_preset("test"))
  abstract = nn.meta.unbox(gemma2.abstract_params(model))
  with pytest.raises(ValueError,
                     match=r"transformer/embedder/input_embedding has shape \(80, 32\), "
                           r"the model expects \(64, 32\)"):
    checkpoints.load_gemma(tmp_path / "ckpt", abstract)


def test_missing_checkpoint_path(tmp_path):
  abstract = nn.meta.unbox(gemma2.abstract_params(gemma2.make_model(presets.get_preset("test"))))
  with pytest.raises(FileNotFoundError, match="nowhere"):
    checkpoints.load_gemma(tmp_path / "nowhere", abstract)


def test_export_reads_back_in_reference_loader(tmp_path):
  config = presets.get_preset("test", transpose_gating=True)
  model = gemma2.make_model(config)
  params = gemma2.init_params(model, jax.random.key(4))
  checkpoints.export_gemma(params, tmp_path / "export")
  loaded = reference.gm().ckpts.load_params(str(tmp_path / "export"))
  expected = checkpoints.to_nested(params)
  assert jax.tree.structure(loaded) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)
  back = checkpoints.load_gemma(tmp_path / "export", nn.meta.unbox(gemma2.abstract_params(model)))
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)


def test_orbax_roundtrip_of_our_tree_into_shardings(tmp_path):
  model = gemma2.make_model(presets.get_preset("test"))
  boxed = gemma2.abstract_params(model)
  params = gemma2.init_params(model, jax.random.key(5))
  checkpoints.save(params, tmp_path / "ours")
  shardings = parallel.logical_shardings(boxed, parallel.make_mesh((1, 4, 2)))
  restored = checkpoints.restore(tmp_path / "ours", nn.meta.unbox(boxed), shardings)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  emb = restored["embedder"]["input_embedding"]
  assert emb.sharding == shardings["embedder"]["input_embedding"]
  wrong = nn.meta.unbox(gemma2.abstract_params(
      gemma2.make_model(presets.get_preset("test", hidden_dim=32))))
  with pytest.raises(ValueError, match="mlp/gating_einsum has shape"):
    checkpoints.restore(tmp_path / "ours", wrong)
