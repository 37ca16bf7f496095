"""The `gemma` package's sampler on our parameters: the reference for parity tests and benchmarks.

Only tests and benchmarks import this module (it pulls in the `gemma` package, hence tensorflow).
The model and parameter layout come from `wcse_jax.reference.transformer` and
`checkpoints.to_nested`.
"""
from __future__ import annotations

import enum
from typing import Any, Sequence

import jax.numpy as jnp

from wcse_jax import checkpoints, reference
from wcse_jax.models.presets import Gemma2Config
from wcse_jax.reference import gm as _gm


def _special_tokens(eos_id: int) -> type[enum.IntEnum]:
  """The reference sampler ends rows on EOS and END_OF_TURN: both are `eos_id` here."""
  return enum.IntEnum("IdSpecialTokens", dict(
      PAD=0, EOS=eos_id, BOS=2, UNK=3, MASK=4, CUSTOM=7, START_OF_TURN=eos_id,
      END_OF_TURN=eos_id, START_OF_IMAGE=eos_id, END_OF_IMAGE=eos_id))


class IdTokenizer:
  """Drives the reference sampler with raw token ids: a "text" is the ids separated by spaces.

  The reference pads with id 0 and prepends BOS (2) itself, so prompts passed to it exclude BOS.
  """
  FORBIDDEN_TOKENS: tuple[int, ...] = ()
  VERSION = 0

  def __init__(self, eos_id: int):
    self.special_tokens = _special_tokens(eos_id)

  @staticmethod
  def to_text(ids: Sequence[int]) -> str:
    return " ".join(str(int(t)) for t in ids)

  def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    del add_eos
    return ([2] if add_bos else []) + [int(t) for t in text.split()]

  def decode(self, ids: Sequence[int]) -> str:
    return self.to_text(ids)


def reference_sampler(config: Gemma2Config, params: Any, *, eos_id: int, cache_length: int,
                      max_out_length: int, pad_length: int | tuple[int, ...] | None,
                      sampling: Any = None, dtype: Any = jnp.float32) -> Any:
  """gm.text.Sampler on our parameters (pass prompts through `IdTokenizer.to_text`, no BOS)."""
  gm = _gm()
  return gm.text.Sampler(
      model=reference.transformer(config, dtype), params=checkpoints.to_nested(params),
      tokenizer=IdTokenizer(eos_id), sampling=sampling or gm.text.Greedy(),
      cache_length=cache_length, max_out_length=max_out_length, pad_length=pad_length)


__all__ = ["IdTokenizer", "reference_sampler"]
