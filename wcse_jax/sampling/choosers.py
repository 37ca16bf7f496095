"""Token choosers: small frozen dataclasses, each one call from logits and keys to tokens.

A chooser sees the float32 logits of a batch of rows, `[B, V]`, and one PRNG key per row, `[B]`,
and returns the chosen token ids `[B]` (int32). One key per row (not one per batch) is what makes
a sample's randomness depend only on (seed, prompt id, sample index), never on which other rows
share its batch. Order of operations for the random choosers: temperature, then truncation
(top-k / top-p), then a categorical draw. Adding a new rule is a new class here, not a sampler flag.
"""
from __future__ import annotations

import dataclasses
from typing import Protocol

import jax
import jax.numpy as jnp

_NEG_INF = float("-inf")


def invert_cdf(logits: jax.Array, u: jax.Array) -> jax.Array:
  """The token whose slice of [0, 1) holds u, for each row: the inverse-CDF categorical draw.

  logits [B, V] (-inf marks excluded tokens), u [B] in [0, 1). A token with zero probability owns
  an empty slice, so it is never chosen; when u * total rounds up to the total, the last token
  with mass is the answer.
  """
  probs = jax.nn.softmax(logits, axis=-1)
  cdf = jnp.cumsum(probs, axis=-1)
  threshold = (u.astype(cdf.dtype) * cdf[:, -1])[:, None]
  token = jnp.sum(cdf <= threshold, axis=-1)
  last_with_mass = logits.shape[-1] - 1 - jnp.argmax(probs[:, ::-1] > 0, axis=-1)
  return jnp.minimum(token, last_with_mass).astype(jnp.int32)


def _draw(logits: jax.Array, keys: jax.Array) -> jax.Array:
  """One categorical draw per row, each with its own key.

  By inverting the CDF at one uniform per row rather than by the Gumbel-max trick of
  jax.random.categorical, which needs one random number per vocabulary entry: on a CPU those
  [rows, V] threefry draws were a fifth of a small model's decode step. Float32 rounding limits
  both methods alike (to tokens of probability below ~1e-7).
  """
  u = jax.vmap(jax.random.uniform)(keys)
  return invert_cdf(logits, u)


def _check_temperature(temperature: float) -> None:
  if not temperature > 0:
    raise ValueError(f"temperature must be > 0, got {temperature!r} (use Greedy() for argmax)")


@dataclasses.dataclass(frozen=True)
class Greedy:
  """The most likely token (ties go to the lowest id, as `argmax` does)."""

  def __call__(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
    del keys
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Temperature:
  """A draw from softmax(logits / temperature)."""
  temperature: float = 1.0

  def __post_init__(self):
    _check_temperature(self.temperature)

  def __call__(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
    return _draw(logits / self.temperature, keys)


@dataclasses.dataclass(frozen=True)
class TopK:
  """A draw from the k most likely tokens, renormalised, at `temperature`."""
  k: int
  temperature: float = 1.0

  def __post_init__(self):
    if not isinstance(self.k, int) or self.k < 1:
      raise ValueError(f"top-k needs an integer k >= 1, got k={self.k!r}")
    _check_temperature(self.temperature)

  def __call__(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
    k = min(self.k, logits.shape[-1])
    values, indices = jax.lax.top_k(logits / self.temperature, k)
    choice = _draw(values, keys)
    return jnp.take_along_axis(indices, choice[:, None], axis=-1)[:, 0].astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class TopP:
  """Nucleus sampling: a draw from the smallest set of most likely tokens whose probability
  (at `temperature`) reaches p. The most likely token is always kept; tokens tied with the last
  kept one are kept too."""
  p: float
  temperature: float = 1.0

  def __post_init__(self):
    if not 0 < self.p <= 1:
      raise ValueError(f"top-p needs 0 < p <= 1, got p={self.p!r}")
    _check_temperature(self.temperature)

  def __call__(self, logits: jax.Array, keys: jax.Array) -> jax.Array:
    logits = logits / self.temperature
    if self.p < 1:
      ordered = jnp.sort(logits, axis=-1, descending=True)
      probs = jax.nn.softmax(ordered, axis=-1)
      # A token is kept when the mass strictly before it is still below p.
      kept = (jnp.cumsum(probs, axis=-1) - probs) < self.p
      threshold = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
      logits = jnp.where(logits >= threshold, logits, _NEG_INF)
    return _draw(logits, keys)


class Chooser(Protocol):
  """What the sampler needs of a chooser; it must also be hashable (it is a static jit argument)."""

  def __call__(self, logits: jax.Array, keys: jax.Array) -> jax.Array: ...

__all__ = ["Greedy", "Temperature", "TopK", "TopP", "Chooser", "invert_cdf"]
