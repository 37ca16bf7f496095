"""Our Gemma 2 equals the official `gemma` package's on the same parameters (float32, 1e-5)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wcse_jax import checkpoints, reference
from wcse_jax.models import cache as cache_lib
from wcse_jax.models import gemma2, presets


def _perturbed_params(model, seed=0):
  # Norm scales start at zero; perturb everything so every term of the block matters.
  params = gemma2.init_params(model, jax.random.key(seed))
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return treedef.unflatten([x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def _reference_logits(config, params, tokens, positions):
  ref = reference.transformer(config)
  length = tokens.shape[1]
  causal = jnp.arange(length)[None, None, :] <= jnp.arange(length)[None, :, None]
  mask = (positions[:, None, :] >= 0) & causal
  return ref.apply({"params": checkpoints.to_nested(params)}, tokens, positions=positions,
                   attention_mask=mask).logits


@pytest.mark.parametrize("preset,overrides", [
    ("test", {}),
    # 27B-style query scaling: (embed_dim / num_heads)**-0.5 with head_dim != embed_dim / heads.
    ("test", {"query_pre_attn_scalar": 8, "embed_dim": 32, "num_heads": 4}),
    ("test", {"transpose_gating": True}),  # the 9B/27B gating layout
])
def test_full_forward_matches_reference_with_padding(preset, overrides):
  config = presets.get_preset(preset, **overrides)
  model = gemma2.make_model(config)
  params = _perturbed_params(model)
  tokens = jax.random.randint(jax.random.key(2), (3, 13), 1, config.vocab_size)
  tokens = tokens.at[0, :4].set(0).at[1, :1].set(0)  # left padding, rows of different lengths
  positions = gemma2.default_positions(tokens)
  ours = gemma2.forward(model, params, tokens, positions).logits
  theirs = _reference_logits(config, params, tokens, positions)
  valid = np.asarray(positions >= 0)[..., None]
  assert tokens.shape[1] > config.sliding_window  # the window really cuts in
  np.testing.assert_allclose(np.where(valid, ours, 0), np.where(valid, theirs, 0), atol=1e-5)


def test_packed_row_equals_its_sequences_alone():
  # Two sequences packed in one row, both longer than the sliding window: each must see only
  # itself, on local and global layers.
  config = presets.get_preset("test")
  model = gemma2.make_model(config)
  params = _perturbed_params(model, seed=8)
  first, second = (jax.random.randint(jax.random.key(k), (1, n), 1, config.vocab_size)
                   for k, n in ((9, 7), (10, 9)))
  packed = jnp.concatenate([first, second], axis=1)
  positions = jnp.concatenate([jnp.arange(7), jnp.arange(9)])[None]
  segments = jnp.asarray([[1] * 7 + [2] * 9])
  logits = gemma2.forward(model, params, packed, positions, segment_ids=segments).logits
  for seq, span in ((first, slice(0, 7)), (second, slice(7, 16))):
    alone = gemma2.forward(model, params, seq, gemma2.default_positions(seq)).logits
    np.testing.assert_allclose(logits[:, span], alone, atol=1e-5)


def test_query_scaling_changes_logits():
  # Guards the test above: a wrong query scale would be visible in the logits.
  base = presets.get_preset("test")
  other = presets.get_preset("test", query_pre_attn_scalar=8)
  params = _perturbed_params(gemma2.make_model(base))
  tokens = jax.random.randint(jax.random.key(2), (1, 8), 1, base.vocab_size)
  positions = gemma2.default_positions(tokens)
  a = gemma2.forward(gemma2.make_model(base), params, tokens, positions).logits
  b = gemma2.forward(gemma2.make_model(other), params, tokens, positions).logits
  assert np.abs(a - b).max() > 1e-3


@pytest.mark.parametrize("chunks", [[1] * 14, [5, 1, 1, 7], [9, 5]])
def test_cached_decode_equals_full_forward(chunks):
  config = presets.get_preset("test")  # sliding window 4 < 14 tokens
  model = gemma2.make_model(config)
  params = _perturbed_params(model, seed=3)
  tokens = jax.random.randint(jax.random.key(4), (2, 14), 1, config.vocab_size)
  tokens = tokens.at[1, :3].set(0)
  positions = gemma2.default_positions(tokens)
  full = gemma2.forward(model, params, tokens, positions).logits
  cache = cache_lib.init_cache(config, batch=2, length=16)
  assert cache.window == config.sliding_window  # local layers keep only the window
  assert cache.length == 16
  pieces, start = [], 0
  step = jax.jit(lambda t, p, c: gemma2.forward(model, params, t, p, cache=c))
  for n in chunks:
    out = step(tokens[:, start:start + n], positions[:, start:start + n], cache)
    cache, start = out.cache, start + n
    pieces.append(out.logits)
  decoded = jnp.concatenate(pieces, axis=1)
  valid = np.asarray(positions >= 0)[..., None]
  np.testing.assert_allclose(np.where(valid, decoded, 0), np.where(valid, full, 0), atol=1e-5)
  assert int(cache.index) == 14


def test_cached_decode_matches_reference_decode():
  config = presets.get_preset("test")
  model = gemma2.make_model(config)
  params = _perturbed_params(model, seed=5)
  tokens = jax.random.randint(jax.random.key(6), (1, 10), 1, config.vocab_size)
  positions = gemma2.default_positions(tokens)
  ref = reference.transformer(config)
  ref_cache = ref.config.init_cache(batch_size=1, dtype=jnp.float32, cache_length=16)
  cache = cache_lib.init_cache(config, batch=1, length=16)
  nested = checkpoints.to_nested(params)
  for t in range(10):
    ours = gemma2.forward(model, params, tokens[:, t:t + 1], positions[:, t:t + 1], cache=cache)
    mask = (jnp.arange(16) <= t)[None, None, :]
    theirs = ref.apply({"params": nested}, tokens[:, t:t + 1], positions=positions[:, t:t + 1],
                       cache=ref_cache, attention_mask=mask)
    np.testing.assert_allclose(ours.logits, theirs.logits, atol=1e-5)
    cache, ref_cache = ours.cache, theirs.cache


def test_hidden_states_are_final_norm_output():
  config = presets.get_preset("test")
  model = gemma2.make_model(config)
  params = _perturbed_params(model)
  tokens = jax.random.randint(jax.random.key(7), (2, 6), 1, config.vocab_size)
  positions = gemma2.default_positions(tokens)
  out = gemma2.forward(model, params, tokens, positions, return_hidden=True)
  ref = reference.transformer(config).apply(
      {"params": checkpoints.to_nested(params)}, tokens, return_hidden_states=True)
  np.testing.assert_allclose(out.hidden, ref.hidden_states, atol=1e-5)
  assert out.hidden.shape == (2, 6, config.embed_dim)
