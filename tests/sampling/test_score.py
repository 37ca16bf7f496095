"""The scorer against full cache-free forwards of every concatenated prefix + continuation + suffix;
8 devices against 1, compile counts, FLOPs and errors."""
import jax
import numpy as np
import pytest

from wcse_jax import parallel
from wcse_jax.models import gemma2
from wcse_jax.sampling import flops as flops_lib
from wcse_jax.sampling import score as score_lib
from wcse_jax.sampling.score import Scorer

# Prefix lengths 3..11 share the 16 bucket (left padding differs per row); prefix 3 repeats
# prefix 0 (merged: one prefill), prefix 4 has nothing to score. Continuations are ragged (one
# empty) and, with the suffix, run past the window of 4 on the local layers.
PREFIXES = [[2, 5, 9, 11, 4, 7, 30, 31, 8, 12, 40], [2, 17, 3], [2, 44, 45, 46, 47, 48],
            [2, 5, 9, 11, 4, 7, 30, 31, 8, 12, 40], [2, 9, 9, 9]]
CONTINUATIONS = [
    [[13, 14, 15, 16, 17, 18, 19, 20, 21], [22], []],
    [[23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34]],
    [[35, 36], [37, 38, 39, 40, 41]],
    [[50, 51, 52]],
    [],
]
SUFFIX = [10, 20, 30, 40, 50]
NEXT = [3, 7, 60]
PAIRS = [(i, j) for i, cs in enumerate(CONTINUATIONS) for j in range(len(cs))]


@pytest.fixture(scope="module")
def scorer(model):
  return Scorer(model, cache_length=64)


def _reference(model, params, suffix):
  """Per pair: token log-probs, next-token log-softmax and hidden state at the last token, from
  one batched forward with no cache (right padding at position -1, never attended to)."""
  seqs = [PREFIXES[i] + CONTINUATIONS[i][j] + list(suffix) for i, j in PAIRS]
  width = max(map(len, seqs))
  tokens = np.zeros((len(seqs), width), np.int32)
  for r, s in enumerate(seqs):
    tokens[r, :len(s)] = s
  positions = np.where(np.arange(width) < np.array([len(s) for s in seqs])[:, None],
                       np.arange(width), -1)
  out = gemma2.forward(model, params, tokens, positions, return_hidden=True)
  logprobs = np.asarray(jax.nn.log_softmax(out.logits, axis=-1))
  hidden = np.asarray(out.hidden)
  token_lps, last_lps, last_hidden = [], [], []
  for r, (i, j) in enumerate(PAIRS):
    start, cont = len(PREFIXES[i]), CONTINUATIONS[i][j]
    token_lps.append(np.array([logprobs[r, start - 1 + t, c] for t, c in enumerate(cont)]))
    last_lps.append(logprobs[r, len(seqs[r]) - 1])
    last_hidden.append(hidden[r, len(seqs[r]) - 1])
  return token_lps, np.stack(last_lps), np.stack(last_hidden)


@pytest.fixture(scope="module")
def scored(params, scorer):
  """One call per suffix, shared by the tests below."""
  return {len(s): scorer.score(params, PREFIXES, CONTINUATIONS, suffix=s, next_token_ids=NEXT,
                               return_hidden=True, return_distribution=True)
          for s in ((), SUFFIX)}


@pytest.fixture(scope="module")
def reference(model, params):
  return {len(s): _reference(model, params, s) for s in ((), SUFFIX)}


@pytest.mark.parametrize("suffix, batch_rows", [((), 64), (SUFFIX, 64), (SUFFIX, 2)],
                         ids=["no_suffix", "suffix", "suffix_2_rows"])
def test_equals_the_full_forward_of_each_concatenated_sequence(model, params, scored, reference,
                                                               suffix, batch_rows):
  if batch_rows == 64:
    out = scored[len(suffix)]
  else:  # one continuation row per prefix per call over 2: several prefills and continue calls
    out = Scorer(model, cache_length=64, batch_rows=batch_rows).score(
        params, PREFIXES, CONTINUATIONS, suffix=suffix, next_token_ids=NEXT, return_hidden=True,
        return_distribution=True)
  token_lps, last_lps, last_hidden = reference[len(suffix)]
  assert [out.rows(i) for i in range(len(PREFIXES))] == [slice(0, 3), slice(3, 4), slice(4, 6),
                                                        slice(6, 7), slice(7, 7)]
  np.testing.assert_array_equal(out.lengths, [len(CONTINUATIONS[i][j]) for i, j in PAIRS])
  assert out.token_logprobs.shape == (len(PAIRS), 12)
  for r, expected in enumerate(token_lps):
    np.testing.assert_allclose(out.token_logprobs[r, :len(expected)], expected, atol=1e-5)
    assert (out.token_logprobs[r, len(expected):] == 0).all()
    np.testing.assert_allclose(out.logprob_sum[r], expected.sum(), atol=1e-5)
  np.testing.assert_allclose(out.next_token_logprobs, last_lps[:, NEXT], atol=1e-5)
  np.testing.assert_allclose(out.distribution, last_lps, atol=1e-5)
  np.testing.assert_allclose(out.hidden, last_hidden, atol=1e-5)
  assert out.logprob_sum[2] == 0 and len(set(out.logprob_sum.round(3))) == len(PAIRS)  # varied


def test_continuations_of_at_most_one_token(params, scorer, scored):
  # The continuation bucket is 1: only the prefix's last logits score tokens; an empty
  # continuation reads the prefix's last position.
  out = scorer.score(params, PREFIXES[:2], [[[22], []], [[]]], next_token_ids=NEXT,
                     return_hidden=True)
  full = scored[0]
  assert out.token_logprobs.shape == (3, 1)
  np.testing.assert_allclose(out.token_logprobs[:2], full.token_logprobs[1:3, :1], atol=1e-5)
  for name in ("logprob_sum", "next_token_logprobs", "hidden"):
    np.testing.assert_allclose(getattr(out, name)[:2], getattr(full, name)[1:3], atol=1e-5,
                               err_msg=name)


def test_sharded_over_eight_devices_equals_one_device(model, params, scored):
  assert jax.device_count() == 8
  mesh = parallel.make_mesh((2, 2, 2))
  sharded_params = jax.device_put(
      params, parallel.logical_shardings(gemma2.abstract_params(model), mesh))
  sharded = Scorer(model, mesh=mesh, cache_length=64)
  assert sharded.data_parallel == 4
  a = sharded.score(sharded_params, PREFIXES, CONTINUATIONS, suffix=SUFFIX, next_token_ids=NEXT,
                    return_hidden=True, return_distribution=True)
  b = scored[len(SUFFIX)]
  for name in ("token_logprobs", "logprob_sum", "next_token_logprobs", "distribution", "hidden"):
    np.testing.assert_allclose(getattr(a, name), getattr(b, name), atol=1e-5, err_msg=name)
  assert a.flops == b.flops


def test_compiles_once_per_bucket(params, scorer, scored):
  # The buckets of `scored`'s call with the suffix: 3 or 4 distinct prefixes of 9 to 16 tokens,
  # 3 or 4 continuations at most per prefix, of 9 to 16 tokens; other contents reuse its
  # compilations.
  rng = np.random.default_rng(0)
  ids = lambda n: [2] + rng.integers(3, 64, n - 1).tolist()
  calls = [([ids(9), ids(16), ids(12)], [[ids(9)], [ids(16), ids(10), ids(9)], [ids(12)]]),
           ([ids(16), ids(16), ids(10), ids(10)], [[ids(9)] * 4, [], [ids(11)], [ids(13)]])]
  sizes = lambda: (score_lib._prefill_jit._cache_size(), score_lib._continue_jit._cache_size())
  compiled = sizes()
  for prefixes, conts in calls:
    scorer.score(params, prefixes, conts, suffix=SUFFIX[::-1], next_token_ids=[6, 5, 4],
                 return_distribution=True)
    assert sizes() == compiled


def test_flops_count_each_distinct_prefix_once_and_every_fed_token(config, scored):
  # Prefix 3 is prefix 0 (merged); prefix 4 has no continuation.
  prefill = sum(config.flops_per_token(c) for p in PREFIXES[:3] for c in range(1, len(p) + 1))
  for m, out in scored.items():
    fed = sum(config.flops_per_token(c) for i, j in PAIRS
              for c in range(len(PREFIXES[i]) + 1,
                             len(PREFIXES[i]) + len(CONTINUATIONS[i][j]) + m + 1))
    assert out.prefill_flops == pytest.approx(prefill)
    assert out.continuation_flops == pytest.approx(fed)
    assert out.flops == pytest.approx(prefill + fed)


def test_continuation_flops_is_the_sum_of_per_token_flops(config):
  lengths, fed = np.array([1, 3, 40, 7]), np.array([0, 5, 90, 1])
  brute = sum(config.flops_per_token(c) for n, k in zip(lengths, fed)
              for c in range(n + 1, n + k + 1))
  assert flops_lib.continuation_flops(config, lengths, fed) == pytest.approx(brute)
  assert flops_lib.continuation_flops(config, [], []) == 0
  # Decoding g tokens feeds g - 1 of them.
  assert flops_lib.decode_flops(config, lengths, fed + 1) == pytest.approx(brute)


def test_bad_inputs_name_the_value(model, params, scorer):
  call = lambda prefixes=PREFIXES[:2], conts=CONTINUATIONS[:2], **kw: scorer.score(
      params, prefixes, conts, **kw)
  with pytest.raises(ValueError, match="no prefixes given"):
    call(prefixes=[], conts=[])
  with pytest.raises(ValueError, match="no continuations given"):
    call(conts=[[], []])
  with pytest.raises(ValueError, match="2 prefixes but continuations for 1"):
    call(conts=CONTINUATIONS[:1])
  with pytest.raises(ValueError, match="prefix 1 is empty"):
    call(prefixes=[[2, 3], []])
  with pytest.raises(ValueError, match=r"prefix 0 has token ids outside \[0, 64\): \[64\]"):
    call(prefixes=[[2, 64], [2]])
  with pytest.raises(ValueError, match=r"continuation \(1, 0\) has token ids outside .*\[-1\]"):
    call(conts=[[[3]], [[-1, 4]]])
  with pytest.raises(ValueError, match=r"continuation \(0, 0\) must be a sequence of token ids"):
    call(conts=[[3, 4], [[5]]])  # a flat list where a list of continuations belongs
  with pytest.raises(ValueError, match=r"suffix has token ids outside .*\[99\]"):
    call(suffix=[3, 99])
  with pytest.raises(ValueError, match=r"next_token_ids has token ids outside .*\[64\]"):
    call(next_token_ids=[64])
  with pytest.raises(ValueError, match=r"prefix 1 \+ continuation 0 \+ suffix have 65 tokens, "
                                       "more than cache_length=64"):
    call(conts=[[[3]], [[4] * 60]], suffix=[5, 6])
  with pytest.raises(ValueError, match="batch_rows must be an integer >= 1, got 0"):
    Scorer(model, batch_rows=0)
