"""The official `gemma` package, imported for use as the numerical and layout reference.

Only tests, parity checks and benchmarks import this module; the core (model, sampler, training
step) never does, so it runs on images without tensorflow or the `gemma` package.

gemma 3.3.0 (the newest release on PyPI) subclasses `kauldron.checkpoints.AbstractPartialLoader`,
which kauldron 1.4.2 ships as `PartialKauldronLoader`. We alias the old name before the first
import; nothing else of gemma's checkpoint loader depends on the difference.
"""
from __future__ import annotations

import functools


@functools.cache
def gm():
  """Returns the `gemma.gm` module (the official reference implementation)."""
  from kauldron import checkpoints as kd_ckpts
  if not hasattr(kd_ckpts, "AbstractPartialLoader"):
    kd_ckpts.AbstractPartialLoader = kd_ckpts.PartialKauldronLoader
  from gemma import gm as gemma_gm
  return gemma_gm


def transformer(config, dtype=None):
  """The reference `gm.nn.Transformer` with the same architecture as our `Gemma2Config`.

  Its parameters are our tree in the nested layout: `checkpoints.to_nested(params)`.
  """
  import jax.numpy as jnp
  g = gm()
  attention = g.nn.config.AttentionType
  scalar = config.query_pre_attn_scalar or config.head_dim
  if scalar == config.head_dim:
    norm = g.nn.config.QueryPreAttentionNormalisation.BY_ONE_OVER_SQRT_HEAD_DIM
  elif scalar == config.embed_dim // config.num_heads:
    norm = g.nn.config.QueryPreAttentionNormalisation.BY_ONE_OVER_SQRT_EMBED_DIM_DIV_NUM_HEADS
  else:
    raise ValueError(f"the reference cannot express query_pre_attn_scalar={scalar}")
  tconfig = g.nn.config.TransformerConfig(
      num_embed=config.vocab_size, embed_dim=config.embed_dim, hidden_dim=config.hidden_dim,
      num_heads=config.num_heads, head_dim=config.head_dim, num_kv_heads=config.num_kv_heads,
      final_logit_softcap=config.final_softcap, use_post_attn_norm=True, use_post_ffw_norm=True,
      attention_types=(attention.LOCAL_SLIDING, attention.GLOBAL)
      * (config.num_layers // 2),
      query_pre_attn_norm=norm, attn_logits_soft_cap=config.attn_softcap,
      sliding_window_size=config.sliding_window, transpose_gating_einsum=config.transpose_gating)
  return g.nn.Transformer(config=tconfig, dtype=dtype or jnp.float32)
