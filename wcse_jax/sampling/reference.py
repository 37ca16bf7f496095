"""The `gemma` package's sampler on our parameters: the reference for parity tests and benchmarks.

Only tests and benchmarks import this module (it pulls in the `gemma` package, hence tensorflow).
Our tree stacks layers as (local, global) pairs: layer 2p is local[p], layer 2p+1 is global[p]; the
reference names them layer_0 .. layer_{L-1} with the same leaf names.
"""
from __future__ import annotations

import enum
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from wcse_jax.models.presets import Gemma2Config
from wcse_jax.reference import gm as _gm


def to_reference_params(params: Any, config: Gemma2Config) -> dict:
  """Our scanned parameter tree -> the reference's per-layer tree (same arrays, no copy of leaves
  beyond the per-layer slices)."""
  out = {"embedder": params["embedder"], "final_norm": params["final_norm"]}
  for layer in range(config.num_layers):
    kind = "global" if layer % 2 else "local"
    out[f"layer_{layer}"] = jax.tree.map(lambda x, p=layer // 2: x[p], params["layers"][kind])
  return out


def reference_model(config: Gemma2Config, dtype: Any = jnp.float32) -> Any:
  """gm.nn.Transformer with our config's architecture."""
  gm = _gm()
  norm = gm.nn.config.QueryPreAttentionNormalisation
  if config.query_pre_attn_scalar is None:
    query_norm = norm.BY_ONE_OVER_SQRT_HEAD_DIM
  elif config.query_pre_attn_scalar == config.embed_dim // config.num_heads:
    query_norm = norm.BY_EMBED_DIM_DIV_NUM_HEADS
  else:
    raise ValueError(f"{config.name}: query_pre_attn_scalar={config.query_pre_attn_scalar} has no "
                     "reference equivalent")
  kinds = gm.nn.config.AttentionType
  ref_config = gm.nn.config.TransformerConfig(
      num_embed=config.vocab_size, embed_dim=config.embed_dim, hidden_dim=config.hidden_dim,
      num_heads=config.num_heads, head_dim=config.head_dim, num_kv_heads=config.num_kv_heads,
      final_logit_softcap=config.final_softcap, use_post_attn_norm=True, use_post_ffw_norm=True,
      # A tuple, not a list: the reference hashes its model as a static jit argument.
      attention_types=(kinds.LOCAL_SLIDING, kinds.GLOBAL) * (config.num_layers // 2),
      query_pre_attn_norm=query_norm, attn_logits_soft_cap=config.attn_softcap,
      transpose_gating_einsum=config.transpose_gating,
      sliding_window_size=config.sliding_window, local_base_frequency=int(config.rope_base),
      global_base_frequency=int(config.rope_base))
  return gm.nn.Transformer(config=ref_config, dtype=dtype)


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
      model=reference_model(config, dtype), params=to_reference_params(params, config),
      tokenizer=IdTokenizer(eos_id), sampling=sampling or gm.text.Greedy(),
      cache_length=cache_length, max_out_length=max_out_length, pad_length=pad_length)


__all__ = ["to_reference_params", "reference_model", "IdTokenizer", "reference_sampler"]
