"""FLOPs of a sampling or scoring call: the unit of the compute-matched budgets.

Counted with the preset's own formula, `Gemma2Config.flops_per_token(context)` (forward matmuls,
attention included, local layers capped at the window), where `context` is the number of keys the
token sees, itself included (position + 1). What is counted is the work the samples *need*, not
what a batched implementation happens to run, so it does not depend on batching or padding:

- prefill: once per distinct prompt, every prompt token (contexts 1 .. L);
- decode: a completion of g tokens needs g - 1 further forward steps, because its first token comes
  from the prefill's last logits and its last token is never fed back (contexts L+1 .. L+g-1);
- scoring (score.py): every token of a continuation (and of the suffix after it) is fed, on top
  of its prefix's cache (contexts L+1 .. L+k); the prefix's prefill is counted once per distinct
  prefix, whatever the number of its continuations.

Padding rows and padding positions, and steps that finished rows idle through while others still
decode, are implementation overhead and are not counted.
"""
from __future__ import annotations

import functools

import numpy as np

from wcse_jax.models.presets import Gemma2Config


@functools.lru_cache(maxsize=16)
def _cumulative(config: Gemma2Config, max_context: int) -> np.ndarray:
  """cum[c] = sum of flops_per_token(k) for k = 1 .. c (cum[0] = 0), in float64."""
  per_token = [config.flops_per_token(c) for c in range(1, max_context + 1)]
  return np.concatenate([[0.0], np.cumsum(per_token, dtype=np.float64)])


def _table(config: Gemma2Config, needed: int) -> np.ndarray:
  # Grow in powers of two so repeated calls reuse one cached table.
  return _cumulative(config, 1 << max(int(needed), 1).bit_length())


def prefill_flops(config: Gemma2Config, prompt_lengths: np.ndarray) -> float:
  """FLOPs to prefill prompts of these lengths, once each."""
  lengths = np.asarray(prompt_lengths, np.int64)
  if lengths.size == 0:
    return 0.0
  return float(_table(config, lengths.max())[lengths].sum())


def continuation_flops(config: Gemma2Config, prefix_lengths: np.ndarray,
                       continuation_lengths: np.ndarray) -> float:
  """FLOPs to feed `continuation_lengths[i]` tokens after a cached prefix of `prefix_lengths[i]`
  tokens (contexts L+1 .. L+k)."""
  lengths = np.asarray(prefix_lengths, np.int64)
  if lengths.size == 0:
    return 0.0
  last = lengths + np.asarray(continuation_lengths, np.int64)
  cum = _table(config, last.max())
  return float((cum[last] - cum[lengths]).sum())


def decode_flops(config: Gemma2Config, prompt_lengths: np.ndarray, generated: np.ndarray) -> float:
  """FLOPs to decode `generated[i]` tokens after a prompt of `prompt_lengths[i]` tokens."""
  return continuation_flops(config, prompt_lengths,
                            np.maximum(np.asarray(generated, np.int64) - 1, 0))


__all__ = ["prefill_flops", "continuation_flops", "decode_flops"]
