"""The refilling sampler (refill.py) against the plain path: the same tokens, log-probs, lengths,
finish reasons and FLOPs for the same (seed, prompt id, sample index), with rows refilled (fewer
rows than work items), rows dropped once none is pending, a shared prefix longer than the sliding
window, end tokens and stop sequences, on 1 and 8 devices; and the model pieces it relies on: a
per-row cache index and a shared prefix stored once."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wcse_jax import parallel
from wcse_jax.models import cache as cache_lib
from wcse_jax.models import gemma2
from wcse_jax.sampling import FinishReason, Greedy, Sampler, StopMatcher, TopP
from wcse_jax.sampling import refill as refill_lib

END = 15  # an end token the test model produces now and then (rows end at different steps)
NEW = 20

# One 38-token prefix (BOS included) shared by every prompt, then 1 to 9 tokens each: the prefix is
# longer than the test preset's sliding window (4), and one prompt has a single token of its own.
_rng = np.random.default_rng(0)
_PREFIX = [2] + _rng.integers(3, 60, 37).tolist()
FEW_SHOT = [_PREFIX + _rng.integers(3, 60, n).tolist() for n in (3, 9, 1, 5, 6)]
# No common prefix worth sharing (only BOS): the refill path without one.
PLAIN = [[2, 5, 9, 11, 4, 7, 30, 31, 8, 12, 40], [2, 17, 3], [2, 44, 45, 46, 47, 48], [2, 9, 9, 9]]


def _sampler(model, **kwargs):
  return Sampler(model, eos_ids=(END,), cache_length=96, min_shared_prefix=8, **kwargs)


def _assert_same(a, b):
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.lengths, b.lengths)
  np.testing.assert_array_equal(a.finish_reasons, b.finish_reasons)
  np.testing.assert_allclose(a.logprobs, b.logprobs, atol=2e-5)
  assert a.flops == b.flops


@pytest.fixture(scope="module")
def plain_sampled(model, params):
  """The plain path's 4 samples of each few-shot prompt (sampled; the reference results)."""
  return _sampler(model).sample(params, FEW_SHOT, 4, NEW, TopP(0.9), rng=7)


def test_refill_with_shared_prefix_equals_the_plain_path(model, params, plain_sampled):
  lengths = plain_sampled.lengths
  assert (lengths < NEW).any() and (lengths == NEW).any()  # rows end at different steps
  assert (plain_sampled.finish_reasons == FinishReason.EOS).any()
  # 20 items on 5 rows: every row takes several items in turn.
  out = _sampler(model, refill=True, rows=5).sample(params, FEW_SHOT, 4, NEW, TopP(0.9), rng=7)
  _assert_same(plain_sampled, out)
  assert out.decode_row_steps < plain_sampled.decode_row_steps


def test_shared_prefix_is_detected_and_bounded():
  prompts = [np.asarray(p) for p in FEW_SHOT]
  assert refill_lib.shared_prefix(prompts, minimum=8) == len(_PREFIX)
  assert refill_lib.shared_prefix(prompts, minimum=64) == 0  # too short to be worth it
  # Each prompt keeps at least one token of its own (its first token comes from its logits).
  assert refill_lib.shared_prefix([np.arange(10), np.arange(12)], minimum=1) == 9
  assert refill_lib.shared_prefix([np.arange(5)], minimum=1) == 4


def test_refill_without_shared_prefix_greedy_with_stops_equals_the_plain_path(model, params,
                                                                              config):
  # Greedy texts of the test model: prompt 1 repeats token 3 (made an end token here), prompt 2
  # reads 48 48 48 28 28 ... (a stop on 28 28), prompts 0 and 3 run to max_new_tokens.
  stop = StopMatcher.from_token_sequences([[28, 28]], config.vocab_size)
  sampler = Sampler(model, eos_ids=(END, 3), cache_length=96)
  plain = sampler.sample(params, PLAIN, 4, NEW, Greedy(), stop=stop)
  np.testing.assert_array_equal(plain.finish_reasons[:, 0], [FinishReason.MAX_TOKENS,
                                                             FinishReason.EOS, FinishReason.STOP,
                                                             FinishReason.MAX_TOKENS])
  out = dataclasses.replace(sampler, refill=True, rows=3).sample(params, PLAIN, 4, NEW, Greedy(),
                                                                stop=stop)
  _assert_same(plain, out)


def test_rows_shrink_once_nothing_is_pending(model, params):
  # 4 prompts x 16 samples on 32 rows: refills, then the rows drop to 8 for the longest samples.
  prompts = [p[-6:] for p in FEW_SHOT[:4]]
  plain = _sampler(model).sample(params, prompts, 16, NEW, TopP(0.9), rng=5)
  shrinks = refill_lib._shrink_jit._cache_size()
  out = _sampler(model, refill=True, rows=32).sample(params, prompts, 16, NEW, TopP(0.9), rng=5)
  _assert_same(plain, out)
  assert refill_lib._shrink_jit._cache_size() == shrinks + 1
  assert out.decode_row_steps % 32  # the last steps ran on 8 rows


def test_refill_over_eight_devices_equals_one_device(model, params, plain_sampled):
  assert jax.device_count() == 8
  mesh = parallel.make_mesh((2, 2, 2))
  sharded = jax.device_put(params, parallel.logical_shardings(gemma2.abstract_params(model), mesh))
  sampler = _sampler(model, mesh=mesh, refill=True, rows=8)  # 2 rows per data shard
  assert sampler.data_parallel == 4
  _assert_same(plain_sampled, sampler.sample(sharded, FEW_SHOT, 4, NEW, TopP(0.9), rng=7))


def test_a_full_cache_is_flagged(model, params):
  # Prefix bucket 44 (48 cut to fit), suffix bucket 16: each row has 16 steps of its own, its
  # suffix's and then fed tokens', so a suffix of n tokens lets 17 - n tokens be generated.
  out = Sampler(model, eos_ids=(64,), cache_length=60, min_shared_prefix=8, refill=True,
                rows=2).sample(params, FEW_SHOT, 2, NEW)
  assert (out.finish_reasons == FinishReason.OUT_OF_CACHE).all()
  own = np.array([len(p) - len(_PREFIX) for p in FEW_SHOT])
  np.testing.assert_array_equal(out.lengths, np.repeat(17 - own[:, None], 2, axis=1))
  full = Sampler(model, eos_ids=(64,), cache_length=96).sample(params, FEW_SHOT, 2, NEW)
  for i, n in enumerate(17 - own):
    np.testing.assert_array_equal(out.tokens[i, :, :n], full.tokens[i, :, :n])
    assert (out.tokens[i, :, n:] == 0).all()


def test_shared_prefix_then_suffix_equals_the_whole_prompt(model, params, config):
  """Model level: a prefix prefilled once (left-padded, stored without a batch dimension), then
  suffixes of different lengths against it (their padding not written, a per-row index), then
  decode steps, give the full forward's logits."""
  prefix, suffixes = _PREFIX, [[7, 8, 9], [10], [11, 12, 13, 14, 15, 16]]
  width = 8  # suffix bucket
  seqs = [prefix + s + [20 + i, 30 + i] for i, s in enumerate(suffixes)]  # two decode steps
  longest = max(map(len, seqs))
  padded = np.array([s + [0] * (longest - len(s)) for s in seqs])
  full = np.asarray(gemma2.forward(model, params, padded, np.where(
      padded > 0, np.arange(longest), -1)).logits)  # right padding, never attended
  forward = jax.jit(lambda t, p, c: gemma2.forward(model, params, t, p, cache=c))
  lp = 48  # prefix bucket: 10 padding steps first
  one = cache_lib.init_cache(config, 1, lp, window=lp + 16)
  tokens = np.zeros((1, lp), np.int32)
  tokens[0, lp - len(prefix):] = prefix
  positions = np.full((1, lp), -1, np.int32)
  positions[0, lp - len(prefix):] = np.arange(len(prefix))
  pre = forward(tokens, positions, one).cache
  rows = len(suffixes)
  own = np.array([len(s) for s in suffixes])
  cache = cache_lib.init_cache(config, rows, 16, window=lp + 16).replace(
      local_k=tuple(jnp.repeat(b, rows, 0) for b in pre.local_k),
      local_v=tuple(jnp.repeat(b, rows, 0) for b in pre.local_v),
      local_pos=jnp.repeat(pre.local_pos, rows, 0), index=jnp.asarray(lp - width + own),
      prefix_k=tuple(k[0] for k in pre.global_k), prefix_v=tuple(v[0] for v in pre.global_v),
      prefix_pos=pre.global_pos[0])
  assert cache.prefix_length == lp
  tokens = np.zeros((rows, width), np.int32)
  positions = np.full((rows, width), -1, np.int32)
  for i, s in enumerate(suffixes):
    tokens[i, width - len(s):] = s
    positions[i, width - len(s):] = np.arange(len(prefix), len(prefix) + len(s))
  out = forward(tokens, positions, cache)
  for i, s in enumerate(suffixes):
    np.testing.assert_allclose(out.logits[i, width - len(s):],
                               full[i][len(prefix):len(prefix) + len(s)], atol=1e-5)
  np.testing.assert_array_equal(out.cache.index, lp + own)
  cache = out.cache
  for step in range(2):
    fed = np.array([[seqs[i][len(prefix) + own[i] + step]] for i in range(rows)])
    out = forward(fed, (len(prefix) + own + step)[:, None], cache)
    for i in range(rows):
      np.testing.assert_allclose(out.logits[i, 0], full[i][len(prefix) + own[i] + step],
                                 atol=1e-5)
    cache = out.cache


def test_per_row_index_decode_equals_a_shared_index(model, params, config):
  """Rows at different cache steps (a per-row index) decode as they would with a shared one."""
  tokens = jax.random.randint(jax.random.key(1), (2, 9), 3, config.vocab_size)
  positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
  full = gemma2.forward(model, params, tokens, positions).logits
  forward = jax.jit(lambda t, p, c: gemma2.forward(model, params, t, p, cache=c))
  # Row 0 prefilled 5 steps, row 1 only 2; each then decodes from its own step.
  ahead, behind = (forward(tokens[:, :n], positions[:, :n], cache_lib.init_cache(config, 2, 12))
                   .cache for n in (5, 2))
  cache = jax.tree.map(lambda a, b: a if a.ndim == 0 else a.at[1].set(b[1]), ahead, behind)
  cache = cache.replace(index=jnp.array([5, 2]))
  steps = np.array([5, 2])
  for _ in range(4):
    out = forward(tokens[jnp.arange(2), steps][:, None], jnp.asarray(steps)[:, None], cache)
    np.testing.assert_allclose(out.logits[:, 0], full[jnp.arange(2), steps], atol=1e-5)
    cache, steps = out.cache, steps + 1
  np.testing.assert_array_equal(cache.index, [9, 6])


def test_bad_rows(model):
  with pytest.raises(ValueError, match="rows must be >= 1"):
    dataclasses.replace(Sampler(model), rows=0)


def test_text_sampler_takes_the_refilling_path_with_the_same_results(model, params, config):
  from char_tokenizer import CharTokenizer
  from wcse_jax.sampling import Temperature
  from wcse_jax.sampling.text import TextSampler
  tok = CharTokenizer(size=config.vocab_size)
  shots = "Q: 12 ab? A: 3.\n\nQ: the 45? A: 9.\n\n"  # 36 tokens with BOS: a shared prefix
  prompts = [shots + q for q in ("Q: ab?", "Q: 7 x", "Q: 1", "Q: the 2?")]
  text = TextSampler(model, tok, cache_length=96, batch_size=2)
  assert text.sampler.refill
  plain = TextSampler(model, tok, cache_length=96, batch_size=2)
  plain.sampler = dataclasses.replace(plain.sampler, refill=False)
  kwargs = dict(num_samples=3, max_new_tokens=12, chooser=Temperature(1.0), seed=2,
                stop=["\n\n"], progress=False)
  a, b = text(params, prompts, **kwargs), plain(params, prompts, **kwargs)
  assert a.texts == b.texts and a.flops == b.flops
  for row_a, row_b in zip(a.completions, b.completions):
    for x, y in zip(row_a, row_b):
      np.testing.assert_array_equal(x.tokens, y.tokens)
      assert x.finish_reason == y.finish_reason


def test_a_call_with_nothing_to_refill_or_share_takes_the_plain_path(model, params):
  decodes = refill_lib._decode_jit._cache_size()
  plain = _sampler(model).sample(params, PLAIN, 3, NEW, TopP(0.9), rng=4)
  out = _sampler(model, refill=True).sample(params, PLAIN, 3, NEW, TopP(0.9), rng=4)
  _assert_same(plain, out)
  assert refill_lib._decode_jit._cache_size() == decodes  # refill.py's decode never ran
