"""Token choosers: exact rules for greedy / top-k / top-p support, and frequencies that match the
intended distribution (chi-square on an 8-token vocabulary)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from wcse_jax.sampling import Greedy, Temperature, TopK, TopP
from wcse_jax.sampling.choosers import invert_cdf

LOGITS = jnp.array([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0])
DRAWS = 20_000


def _frequencies(chooser):
  keys = jax.random.split(jax.random.key(0), DRAWS)
  tokens = jax.jit(chooser)(jnp.tile(LOGITS, (DRAWS, 1)), keys)
  assert tokens.dtype == jnp.int32 and tokens.shape == (DRAWS,)
  return np.bincount(np.asarray(tokens), minlength=LOGITS.size)


def _assert_matches(counts, probs):
  """Chi-square goodness of fit over the tokens with nonzero probability; none elsewhere."""
  probs = np.asarray(probs, np.float64)
  assert counts[probs == 0].sum() == 0, f"drew tokens outside the support: {counts}"
  support = probs > 0
  expected = probs[support] / probs[support].sum() * counts.sum()
  if support.sum() > 1:
    p_value = stats.chisquare(counts[support], expected).pvalue
    assert p_value > 1e-4, f"counts {counts} vs expected {expected.round()} (p={p_value:.2g})"


def test_greedy_is_argmax():
  logits = jax.random.normal(jax.random.key(1), (16, 50))
  keys = jax.random.split(jax.random.key(2), 16)
  np.testing.assert_array_equal(Greedy()(logits, keys), jnp.argmax(logits, -1))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_frequencies_match_softmax(temperature):
  _assert_matches(_frequencies(Temperature(temperature)), jax.nn.softmax(LOGITS / temperature))


def test_a_wrong_distribution_is_rejected():
  """The chi-square check above can fail: T=1 draws do not pass as T=2 draws."""
  with pytest.raises(AssertionError):
    _assert_matches(_frequencies(Temperature(1.0)), jax.nn.softmax(LOGITS / 2.0))


@pytest.mark.parametrize("k", [1, 3])
def test_top_k_frequencies(k):
  probs = np.array(jax.nn.softmax(LOGITS / 0.7))
  probs[k:] = 0  # LOGITS are sorted, so the top k are the first k.
  _assert_matches(_frequencies(TopK(k, temperature=0.7)), probs)


@pytest.mark.parametrize("p,kept", [(0.5, 2), (0.8, 4), (1.0, 8)])
def test_top_p_frequencies(p, kept):
  probs = np.array(jax.nn.softmax(LOGITS))
  # The nucleus: the fewest most likely tokens whose mass reaches p.
  assert (np.cumsum(probs)[kept - 1] >= p) and (kept == 1 or np.cumsum(probs)[kept - 2] < p)
  probs[kept:] = 0
  _assert_matches(_frequencies(TopP(p)), probs)


def test_inverse_cdf_draw_never_picks_a_token_without_mass():
  """Each token owns the slice [cdf[i-1], cdf[i]) of [0, 1); excluded tokens own none, even at
  the ends of the range where u * total can round up to the total."""
  logits = jnp.array([[-jnp.inf, 0.0, -jnp.inf, jnp.log(3.0), -jnp.inf]] * 6)
  u = jnp.array([0.0, 0.2499, 0.25, 0.9, 1.0 - 2.0 ** -24, 1.0])
  np.testing.assert_array_equal(invert_cdf(logits, u), [1, 1, 3, 3, 3, 3])


def test_choosers_use_one_key_per_row():
  """Row i's draw depends only on its own key, not on the other rows of the batch."""
  logits = jax.random.normal(jax.random.key(3), (6, 40))
  keys = jax.random.split(jax.random.key(4), 6)
  for chooser in (Temperature(1.0), TopK(5), TopP(0.9)):
    together = chooser(logits, keys)
    alone = [int(chooser(logits[i:i + 1], keys[i:i + 1])[0]) for i in range(6)]
    np.testing.assert_array_equal(together, alone)


@pytest.mark.parametrize("make,value", [
    (lambda: TopP(0.0), "p=0.0"), (lambda: TopP(1.5), "p=1.5"), (lambda: TopP(-0.1), "p=-0.1"),
    (lambda: TopK(0), "k=0"), (lambda: TopK(2.5), "k=2.5"),
    (lambda: Temperature(0.0), "0.0"), (lambda: TopK(3, temperature=-1.0), "-1.0")])
def test_bad_parameters_name_the_value(make, value):
  with pytest.raises(ValueError, match=value.replace(".", r"\.")):
    make()
