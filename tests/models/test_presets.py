"""Presets carry the published Gemma 2 shapes; checked against the `gemma` package, nothing
allocated."""
import jax
import jax.numpy as jnp
import pytest
from flax import linen as nn

from wcse_jax import checkpoints, reference
from wcse_jax.models import gemma2, presets


@pytest.mark.parametrize("ours,theirs", [("gemma2_2b", "Gemma2_2B"), ("gemma2_9b", "Gemma2_9B"),
                                         ("gemma2_27b", "Gemma2_27B")])
def test_parameter_shapes_equal_reference(ours, theirs):
  config = presets.get_preset(ours)
  abstract = nn.meta.unbox(gemma2.abstract_params(gemma2.make_model(config)))
  ref_model = getattr(reference.gm().nn, theirs)(dtype=jnp.float32)
  tokens = jnp.zeros((1, 1), jnp.int32)
  ref_abstract = jax.eval_shape(lambda: ref_model.init(jax.random.key(0), tokens))["params"]
  ours_nested = jax.eval_shape(checkpoints.to_nested, abstract)
  shape = lambda t: jax.tree.map(lambda x: tuple(x.shape), t)
  assert shape(ours_nested) == shape(ref_abstract)
  assert config.param_count() == sum(x.size for x in jax.tree.leaves(ref_abstract))


def test_query_scaling_per_size():
  ref = reference.gm().nn
  for ours, theirs in [("gemma2_2b", ref.Gemma2_2B), ("gemma2_9b", ref.Gemma2_9B),
                       ("gemma2_27b", ref.Gemma2_27B)]:
    assert presets.get_preset(ours).query_scale == pytest.approx(
        theirs.config.query_pre_attn_scalar(), rel=1e-12)
  assert presets.get_preset("gemma2_27b").query_scale == pytest.approx(144 ** -0.5)
  assert presets.get_preset("gemma2_9b").query_scale == pytest.approx(256 ** -0.5)


def test_published_numbers():
  # Gemma 2 report (papers.md §13): embedding and non-embedding parameter counts.
  expected = {"gemma2_2b": (590_118_912, 2_024_517_888), "gemma2_9b": (917_962_752, 8_324_201_984),
              "gemma2_27b": (1_180_237_824, 26_047_480_320)}
  for name, (embedding, non_embedding) in expected.items():
    config = presets.get_preset(name)
    assert config.vocab_size * config.embed_dim == embedding
    assert config.param_count(embedding=False) == non_embedding
    assert (config.sliding_window, config.attn_softcap, config.final_softcap) == (4096, 50.0, 30.0)


def test_unknown_preset_and_field_are_clear_errors():
  with pytest.raises(ValueError, match="unknown model preset 'gemma2_3b'.*gemma2_27b"):
    presets.get_preset("gemma2_3b")
  with pytest.raises(ValueError, match="num_hidden"):
    presets.get_preset("tiny", num_hidden=3)
  with pytest.raises(ValueError, match="even"):
    presets.get_preset("tiny", num_layers=3)
