"""The sampling engine against full teacher-forced forwards, the `gemma` package's sampler, and a
naive cache-free sampler with the same randomness; finish reasons, FLOPs, compile counts, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wcse_jax import parallel
from wcse_jax.models import gemma2
from wcse_jax.sampling import FinishReason, Greedy, Sampler, StopMatcher, Temperature, TopK, TopP
from wcse_jax.sampling import flops as flops_lib
from wcse_jax.sampling import sampler as sampler_lib

NEVER = 64  # the vocabulary size: an end id no row can produce

# Lengths 3..11 share the 16 bucket (left padding differs per row); the window is 4, so 24 new
# tokens run far past it on the local layers' ring buffers.
PROMPTS = [[2, 5, 9, 11, 4, 7, 30, 31, 8, 12, 40], [2, 17, 3], [2, 44, 45, 46, 47, 48],
           [2, 9, 9, 9]]
NEW = 24


@pytest.fixture(scope="module")
def sampler(model):
  return Sampler(model, eos_ids=(NEVER,), cache_length=64)


@pytest.fixture(scope="module")
def greedy(params, sampler):
  """The call most tests share (one compilation): 2 greedy samples of each prompt."""
  return sampler.sample(params, PROMPTS, num_samples=2, max_new_tokens=NEW, chooser=Greedy())


def _full_logits(model, params, generated):
  """Teacher-forced logits predicting each generated token: one batched forward, no cache."""
  width = max(map(len, PROMPTS)) + NEW
  tokens = np.zeros((len(PROMPTS), width), np.int32)
  for i, p in enumerate(PROMPTS):
    tokens[i, :len(p) + NEW - 1] = list(p) + list(generated[i, :-1])
  positions = np.where(tokens > 0, np.arange(width), -1)  # right padding, never attended
  logits = np.asarray(gemma2.forward(model, params, tokens, positions).logits)
  return np.stack([logits[i, len(p) - 1:len(p) - 1 + NEW] for i, p in enumerate(PROMPTS)])


def test_greedy_equals_teacher_forced_argmax_at_every_step(model, params, greedy):
  assert (greedy.finish_reasons == FinishReason.MAX_TOKENS).all() and (greedy.lengths == NEW).all()
  np.testing.assert_array_equal(greedy.tokens[:, 0], greedy.tokens[:, 1])
  logits = _full_logits(model, params, greedy.tokens[:, 0])
  np.testing.assert_array_equal(greedy.tokens[:, 0], logits.argmax(-1))
  expected = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)),
                                greedy.tokens[:, 0, :, None], axis=-1)[..., 0]
  np.testing.assert_allclose(greedy.logprobs[:, 0], expected, atol=2e-4)
  assert len({tuple(t) for t in greedy.tokens[:, 0]}) == len(PROMPTS)  # not a degenerate model


def test_greedy_equals_the_gemma_package_sampler(config, params, greedy):
  from wcse_jax.reference import sampler as reference
  ours = greedy.tokens[:, 0]
  ref = reference.reference_sampler(config, params, eos_id=NEVER, cache_length=64,
                                    max_out_length=NEW, pad_length=(16,))
  # The reference prepends BOS itself and pads on the right; same tokens otherwise.
  texts = [reference.IdTokenizer.to_text(p[1:]) for p in PROMPTS]
  theirs = np.asarray(ref.sample(texts, max_new_tokens=NEW, rng=0, return_state=True)
                      .state.predicted_tokens)[:, :NEW]
  np.testing.assert_array_equal(ours, theirs)


def _naive_sample(model, params, prompts, num_samples, new, chooser, seed):
  """Repeated prompts, no KV cache, a full forward per token, keys fold_in(seed, id, j, t)."""
  rows = [list(p) for p in prompts for _ in range(num_samples)]
  width = max(map(len, rows)) + new
  base = jax.random.key(seed)
  keys = jnp.stack([jax.random.fold_in(jax.random.fold_in(base, i), j)
                    for i in range(len(prompts)) for j in range(num_samples)])

  @jax.jit
  def next_logits(tokens, lengths):
    positions = jnp.where(jnp.arange(width)[None] < lengths[:, None], jnp.arange(width)[None], -1)
    logits = gemma2.forward(model, params, tokens, positions).logits
    return logits[jnp.arange(len(rows)), lengths - 1]

  out = []
  for t in range(new):
    tokens = np.zeros((len(rows), width), np.int32)
    for r, row in enumerate(rows):
      tokens[r, :len(row)] = row
    logits = next_logits(tokens, np.array([len(r) for r in rows]))
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, t)
    chosen = np.asarray(chooser(logits, step_keys))
    for r, row in enumerate(rows):
      row.append(int(chosen[r]))
    out.append(chosen)
  return np.stack(out, axis=1).reshape(len(prompts), num_samples, new)


@pytest.mark.parametrize("chooser", [Temperature(1.0), TopP(0.9)])
def test_samples_from_the_repeated_cache_equal_naive_sampling_of_repeated_prompts(
    model, params, sampler, chooser):
  ours = sampler.sample(params, PROMPTS, num_samples=2, max_new_tokens=NEW, chooser=chooser, rng=7)
  naive = _naive_sample(model, params, PROMPTS, 2, NEW, chooser, seed=7)
  np.testing.assert_array_equal(ours.tokens, naive)
  assert len({tuple(t) for t in ours.tokens.reshape(-1, NEW)}) == 2 * len(PROMPTS)


def test_results_do_not_depend_on_batching(params, sampler):
  sample = lambda prompts, n, **kw: sampler.sample(params, prompts, num_samples=n,
                                                   max_new_tokens=NEW, chooser=Temperature(1.0),
                                                   rng=3, **kw).tokens
  whole = sample(PROMPTS, 2)
  np.testing.assert_array_equal(whole[:2], sample(PROMPTS[:2], 2))
  # Other prompts, their ids given; fewer samples: a prefix of the samples.
  np.testing.assert_array_equal(whole[2:, :1], sample(PROMPTS[2:], 1, prompt_ids=[2, 3]))


def test_end_token_finishes_a_row_and_masks_the_rest(model, params, greedy):
  free = greedy.tokens[:, 0]
  eos = int(free[0, 5])
  ended = Sampler(model, eos_ids=(eos,), cache_length=64).sample(
      params, PROMPTS, num_samples=1, max_new_tokens=NEW)
  for i in range(len(PROMPTS)):
    hits = np.flatnonzero(free[i] == eos)
    tokens, length = ended.tokens[i, 0], ended.lengths[i, 0]
    if hits.size:
      assert length == hits[0] + 1 and ended.finish_reasons[i, 0] == FinishReason.EOS
    else:
      assert length == NEW and ended.finish_reasons[i, 0] == FinishReason.MAX_TOKENS
    np.testing.assert_array_equal(tokens[:length], free[i, :length])  # the end token included
    assert (tokens[length:] == 0).all() and (ended.logprobs[i, 0, length:] == 0).all()
    assert (ended.logprobs[i, 0, :length] < 0).all()


def test_stop_token_sequence(params, sampler, config, greedy):
  free = greedy.tokens[:, 0]
  stop_seq = free[2, 6:8].tolist()
  stop = StopMatcher.from_token_sequences([stop_seq], config.vocab_size)
  out = sampler.sample(params, PROMPTS, num_samples=1, max_new_tokens=NEW, stop=stop)
  for i in range(len(PROMPTS)):
    ends = [k + 2 for k in range(NEW - 1) if free[i, k:k + 2].tolist() == stop_seq]
    expected = ends[0] if ends else NEW
    assert out.lengths[i, 0] == expected
    assert out.finish_reasons[i, 0] == (FinishReason.STOP if ends else FinishReason.MAX_TOKENS)
  assert out.lengths[2, 0] <= 8


def test_a_full_cache_is_flagged_never_silently_cut(model, params, greedy):
  # Bucket 16 + at most 24 - 1 fed tokens do not fit in 30 slots: 30 - 16 = 14 tokens can be fed
  # back, so every row stops after 15 tokens, flagged.
  small = Sampler(model, eos_ids=(NEVER,), cache_length=30)
  out = small.sample(params, PROMPTS, num_samples=2, max_new_tokens=NEW)
  full = greedy
  assert (out.finish_reasons == FinishReason.OUT_OF_CACHE).all() and (out.lengths == 15).all()
  np.testing.assert_array_equal(out.tokens[..., :15], full.tokens[..., :15])
  assert (out.tokens[..., 15:] == 0).all()


def test_flops_count_prefill_once_and_each_fed_token(config, greedy):
  out = greedy
  prefill = sum(config.flops_per_token(c) for p in PROMPTS for c in range(1, len(p) + 1))
  decode = 2 * sum(config.flops_per_token(c) for p in PROMPTS
                   for c in range(len(p) + 1, len(p) + NEW))
  assert out.prefill_flops == pytest.approx(prefill)
  assert out.decode_flops == pytest.approx(decode)
  assert out.flops == pytest.approx(prefill + decode)
  assert flops_lib.decode_flops(config, [4], [1]) == 0  # the first token comes from prefill


def test_decode_compiles_once_per_bucket(model, params):
  sampler = Sampler(model, eos_ids=(NEVER,), cache_length=48)
  # 3 or 4 prompts (a batch of 4), 9 to 16 tokens (bucket 16), 9 to 16 new tokens (buffer 16).
  calls = [(PROMPTS[:3], 10), ([[2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]] * 4, 12),
           ([[2, 30] * 5] * 3, 16), (PROMPTS[::-1], 9)]
  before = None
  for prompts, new in calls:
    sampler.sample(params, prompts, num_samples=2, max_new_tokens=new, chooser=TopK(4), rng=1)
    sizes = (sampler_lib._prefill_jit._cache_size(), sampler_lib._decode_jit._cache_size())
    before = before or (sizes[0] - 1, sizes[1] - 1)
    assert sizes == (before[0] + 1, before[1] + 1)


def test_bad_inputs_name_the_value(model, params, sampler):
  call = lambda prompts=PROMPTS, n=1, new=4: sampler.sample(params, prompts, n, new)
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    call(prompts=[[2, 3], []])
  with pytest.raises(ValueError, match="prompt 0 has 65 tokens, more than cache_length=64"):
    call(prompts=[[2] * 65])
  with pytest.raises(ValueError, match="num_samples must be an integer >= 1, got 0"):
    call(n=0)
  with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1, got 0"):
    call(new=0)
  with pytest.raises(ValueError, match=r"outside \[0, 64\): \[64\]"):
    call(prompts=[[2, 64]])
  with pytest.raises(ValueError, match="no prompts"):
    call(prompts=[])
  with pytest.raises(ValueError, match="p=1.2"):
    sampler.sample(params, PROMPTS, 1, 4, chooser=TopP(1.2))


def test_sharded_over_eight_devices_equals_one_device(model, params, sampler):
  assert jax.device_count() == 8
  mesh = parallel.make_mesh((2, 2, 2))
  shardings = parallel.logical_shardings(gemma2.abstract_params(model), mesh)
  sharded_params = jax.device_put(params, shardings)
  sharded = Sampler(model, mesh=mesh, eos_ids=(NEVER,), cache_length=64)
  assert sharded.data_parallel == 4
  kwargs = dict(num_samples=2, max_new_tokens=NEW, chooser=TopP(0.9), rng=7)
  a = sharded.sample(sharded_params, PROMPTS, **kwargs)
  b = sampler.sample(params, PROMPTS, **kwargs)
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
  assert a.flops == b.flops
