"""Gemma 2 decoder in Flax: scanned (local, global) layer pairs, remat, logical axes, KV cache.

Numerically this is the official `gemma` package's Gemma 2 (tests compare logits on the same
parameters); structurally it differs where pod-scale training needs it:
- layers are stacked as (local sliding-window, global) pairs and run with `nn.scan`, so compile
  time does not grow with depth and every parameter carries a leading "layers" axis;
- the pair block can be rematerialised with a named policy (`remat_policy`); the attention
  core (attention.py) has a flash-style backward pass whose small residuals those policies save;
- every parameter and the main activations carry logical axis names (see wcse_jax/parallel.py);
- the KV cache (cache.py) keeps only the window on local layers (a ring buffer) and the full
  length on global layers, one buffer per layer, keys stored as [.., head_dim, time] and values
  as [.., time, head_dim]: the layouts the attention matmuls read, so a decode step copies none;
- with a cache (prefill and decode steps) the layer pairs run as a Python loop over static
  slices of the stacked parameters, like the reference's unrolled layers. (Inside the scan, the
  dynamic layer index made XLA copy every layer's cache out of a stacked buffer at every step.)
- `return_hidden=True` also returns the final-norm hidden states for scalar heads;
- a cache may carry a shared prefix (cache.py), stored once for all rows: global layers then
  attend over its keys and the row's own in one softmax (`_attend_with_prefix`), so a batch of
  few-shot prompts does not hold (nor read at every decode step) one copy of the exemplars per row.

Masking is positional: a key is visible to a query when its position is >= 0 (negative positions
mark padding), not after the query's position, in the same segment (packed batches), and, on
local layers, fewer than `sliding_window` positions behind.
"""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from wcse_jax import parallel
from wcse_jax.models import attention as attention_lib
from wcse_jax.models import cache as cache_lib
from wcse_jax.models import project as project_lib
from wcse_jax.models.attention import attend
from wcse_jax.models.presets import Gemma2Config
from wcse_jax.models.project import project

# The weight projections (project.py) and the attention core (attention.py) run inside custom_vjps,
# whose matmuls jax's matmul policies cannot see; "dots" and "dots_no_batch" save them by name
# instead: every projection's output, and the attention's output and row statistics (so its
# backward pass does not re-run the forward attention). As the layer pair has no other matmul,
# the two save the same arrays (both names are kept for configs that use them).
_SAVE_NAMED = jax.checkpoint_policies.save_only_these_names(project_lib.NAME,
                                                            attention_lib.STATS_NAME)
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.checkpoint_dots, _SAVE_NAMED),
    "dots_no_batch": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable, _SAVE_NAMED),
}


def _param(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str | None, ...],
           init: Any, dtype: Any) -> jax.Array:
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


def _constrain(x: jax.Array, axes: tuple[str | None, ...]) -> jax.Array:
  return parallel.constrain(x, axes)


def apply_rope(x: jax.Array, positions: jax.Array, base: float) -> jax.Array:
  """Rotary embedding on [B, L, N, H], rotating the two halves of the head dimension."""
  half = x.shape[-1] // 2
  timescale = base ** (2.0 * jnp.arange(half, dtype=jnp.float32) / x.shape[-1])
  angles = positions[..., None, None].astype(jnp.float32) / timescale
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  first, second = jnp.split(x, 2, axis=-1)
  out = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
  return out.astype(x.dtype)


class _Weight(nn.Module):
  """One weight named "w" in its own scope, matching the reference's `Einsum` layout."""
  shape: tuple[int, ...]
  axes: tuple[str | None, ...]
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self) -> jax.Array:
    return _param(self, "w", self.shape, self.axes, nn.initializers.normal(0.02), self.param_dtype)


class RMSNorm(nn.Module):
  """RMSNorm with Gemma's (1 + scale); statistics in float32 whatever the compute dtype."""
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = _param(self, "scale", (x.shape[-1],), ("norm",), nn.initializers.zeros_init(),
                   self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + 1e-6)
    return (normed * (1 + scale.astype(jnp.float32))).astype(x.dtype)


class Attention(nn.Module):
  """Grouped-query attention with soft-capped logits; local layers see a sliding window."""
  config: Gemma2Config
  local: bool
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, segment_ids, kv, kv_pos, index, prefix=None):
    """prefix: None, or a shared prefix's (keys [K, H, Lp], values [K, Lp, H], positions [Lp])
    (global layers only; `index` then counts this layer's own buffer's steps)."""
    cfg = self.config
    weight = lambda name, shape, axes: _Weight(shape, axes, self.param_dtype, name=name)()
    wq = weight("q_einsum", (cfg.num_heads, cfg.embed_dim, cfg.head_dim),
                ("heads", "embed", "head_dim"))
    wkv = weight("kv_einsum", (2, cfg.num_kv_heads, cfg.embed_dim, cfg.head_dim),
                 (None, "kv_heads", "embed", "head_dim"))
    wo = weight("attn_vec_einsum", (cfg.num_heads, cfg.head_dim, cfg.embed_dim),
                ("heads", "head_dim", "embed"))
    x = x.astype(self.dtype)
    q = project("BTD,NDH->BTNH", x, wq.astype(self.dtype))
    k, v = project("BSD,CKDH->CBSKH", x, wkv.astype(self.dtype))
    q = apply_rope(q, positions, cfg.rope_base) * jnp.asarray(cfg.query_scale, self.dtype)
    k = apply_rope(k, positions, cfg.rope_base)
    q = _constrain(q, ("batch", "length", "heads", "head_dim"))

    # Keys as [B, K, H, S] and values as [B, K, S, H], the layouts the two matmuls read (and the
    # cache keeps), queries grouped by kv head as [B, K, G, T, H]: then neither the [.., T, S]
    # scores nor their gradients need a transposed copy.
    keys, values = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)
    new_kv = None
    key_pos, key_seg = positions, segment_ids
    if kv is not None:
      # kv: this layer's (keys, values) cache buffers. With a per-row index, padding is not
      # written (cache.py).
      valid = positions >= 0 if jnp.ndim(index) else None
      new_kv = (cache_lib.write_kv(kv[0], keys, index, self.local, 3, valid),
                cache_lib.write_kv(kv[1], values, index, self.local, 2, valid))
      if self.local and x.shape[1] > 1:
        # A chunk longer than one step may overwrite ring slots its own earlier queries still
        # need, so attend over (old ring ++ chunk) and only then keep the ring's last W steps.
        keys = jnp.concatenate([kv[0].astype(self.dtype), keys], axis=3)
        values = jnp.concatenate([kv[1].astype(self.dtype), values], axis=2)
        key_pos = jnp.concatenate([kv_pos, positions], axis=1)
      else:
        keys, values = (a.astype(self.dtype) for a in new_kv)
        # The caller passes global positions already updated; the ring's are updated here.
        key_pos = cache_lib.write_ring(kv_pos, positions, index, valid) if self.local else kv_pos
      key_seg = None

    b, t, n, h = q.shape
    groups = n // cfg.num_kv_heads
    q = q.reshape(b, t, cfg.num_kv_heads, groups, h).transpose(0, 2, 3, 1, 4)
    qp, kp = positions[:, :, None], key_pos[:, None, :]
    mask = (kp >= 0) & (kp <= qp)
    if key_seg is not None:
      mask &= segment_ids[:, :, None] == key_seg[:, None, :]
    if self.local:
      mask &= kp > qp - cfg.sliding_window
    if prefix is None:
      out = attend(q, keys, values, mask, cfg.attn_softcap)
    else:
      prefix_k, prefix_v, prefix_pos = prefix
      prefix_mask = (prefix_pos[None, None, :] >= 0) & (prefix_pos[None, None, :] <= qp)
      out = _attend_with_prefix(q, keys, values, mask, prefix_k.astype(self.dtype),
                                prefix_v.astype(self.dtype), prefix_mask, cfg.attn_softcap)
    out = out.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h)
    out = _constrain(out, ("batch", "length", "heads", "head_dim"))
    return project("BTNH,NHD->BTD", out, wo.astype(self.dtype)), new_kv


def _attend_with_prefix(q, keys, values, mask, prefix_k, prefix_v, prefix_mask, softcap):
  """`attend` over (shared prefix ++ the row's own keys), the prefix read once for all rows.

  The prefix's logits are one matmul of every row's queries against the same [K, H, Lp] keys,
  so a decode step reads the exemplars once rather than once per row. One softmax spans both
  parts (a common row maximum), as over the concatenated keys. Inference only (no custom
  backward pass). q [B, K, G, T, H]; keys/values/mask as in `attend`; prefix_mask [B, T, Lp].
  """
  capped = lambda logits, m: jnp.where(m[:, None, None], jnp.tanh(logits / softcap) * softcap,
                                       attention_lib.MASK_VALUE)
  own = capped(jnp.einsum("BKGTH,BKHS->BKGTS", q, keys, preferred_element_type=jnp.float32),
               mask)
  shared = capped(jnp.einsum("BKGTH,KHS->BKGTS", q, prefix_k,
                             preferred_element_type=jnp.float32), prefix_mask)
  row_max = jnp.maximum(jnp.max(own, axis=-1), jnp.max(shared, axis=-1))[..., None]
  e_own, e_shared = jnp.exp(own - row_max), jnp.exp(shared - row_max)
  total = (jnp.sum(e_own, axis=-1) + jnp.sum(e_shared, axis=-1))[..., None]
  out = jnp.einsum("BKGTS,BKSH->BKGTH", (e_own / total).astype(q.dtype), values)
  return out + jnp.einsum("BKGTS,KSH->BKGTH", (e_shared / total).astype(q.dtype), prefix_v)


class FeedForward(nn.Module):
  """GeGLU MLP with the tanh-approximate GELU."""
  config: Gemma2Config
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    init = nn.initializers.normal(0.02)
    if cfg.transpose_gating:
      shape, axes, eq = (2, cfg.hidden_dim, cfg.embed_dim), (None, "mlp", "embed"), "BTD,FD->BTF"
    else:
      shape, axes, eq = (2, cfg.embed_dim, cfg.hidden_dim), (None, "embed", "mlp"), "BTD,DF->BTF"
    w_gate = _param(self, "gating_einsum", shape, axes, init, self.param_dtype)
    w_out = _param(self, "linear", (cfg.hidden_dim, cfg.embed_dim), ("mlp", "embed"), init,
                   self.param_dtype)
    # One matmul per half of the gating weight, each read in place: a single einsum producing
    # [.., 2, F] makes XLA copy the weight transposed (at every decode step) and pad and
    # concatenate the two halves' gradients.
    x, w_gate = x.astype(self.dtype), w_gate.astype(self.dtype)
    gate, up = (project(eq, x, w_gate[i]) for i in range(2))
    hidden = nn.gelu(gate, approximate=True) * up
    hidden = _constrain(hidden, ("batch", "length", "mlp"))
    return project("BTF,FD->BTD", hidden, w_out.astype(self.dtype))


class Block(nn.Module):
  """Pre- and post-normed attention and MLP, each added to the residual stream."""
  config: Gemma2Config
  local: bool
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, segment_ids, kv, kv_pos, index, prefix=None):
    norm = lambda name: RMSNorm(self.param_dtype, name=name)
    attention = Attention(self.config, self.local, self.dtype, self.param_dtype, name="attn")
    attn_out, new_kv = attention(norm("pre_attention_norm")(x), positions, segment_ids, kv,
                                 kv_pos, index, prefix)
    x = x + norm("post_attention_norm")(attn_out)
    mlp_out = FeedForward(self.config, self.dtype, self.param_dtype, name="mlp")(
        norm("pre_ffw_norm")(x))
    x = x + norm("post_ffw_norm")(mlp_out)
    return _constrain(x, ("batch", "length", "embed")), new_kv


class PairBlock(nn.Module):
  """One local (sliding-window) layer followed by one global layer: the unit that is scanned."""
  config: Gemma2Config
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, positions, segment_ids, kv, local_pos, global_pos, index, prefix=None):
    """kv: this pair's cache buffers (local_k, local_v, global_k, global_v), or None; prefix:
    the global layer's shared prefix (keys, values, positions), or None.
    Returns (x, the updated buffers or None): the scan's (carry, per-layer output)."""
    local_kv = global_kv = None
    if kv is not None:
      local_kv, global_kv = kv[:2], kv[2:]
    x, local_kv = Block(self.config, True, self.dtype, self.param_dtype, name="local")(
        x, positions, segment_ids, local_kv, local_pos, index)
    # The global buffers start after the shared prefix's steps (cache.py).
    global_index = index if prefix is None else index - prefix[2].shape[0]
    x, global_kv = Block(self.config, False, self.dtype, self.param_dtype, name="global")(
        x, positions, segment_ids, global_kv, global_pos, global_index, prefix)
    return x, None if kv is None else local_kv + global_kv


@flax.struct.dataclass
class Output:
  logits: jax.Array  # [B, L, vocab], float32
  cache: cache_lib.Cache | None
  hidden: jax.Array | None  # [B, L, embed] after the final norm, when asked for


class Gemma2(nn.Module):
  """The Gemma 2 decoder.

  Attributes:
    config: the architecture (see presets.py).
    dtype: compute dtype (float32, or bfloat16 with float32 master weights in `param_dtype`).
    remat_policy: one of REMAT_POLICIES, applied to each scanned (local, global) pair.
  """
  config: Gemma2Config
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat_policy: str = "none"

  @nn.compact
  def __call__(self, tokens: jax.Array, positions: jax.Array, *,
               segment_ids: jax.Array | None = None,
               cache: cache_lib.Cache | None = None, return_hidden: bool = False) -> Output:
    """Runs the decoder.

    Args:
      tokens: [B, L] token ids.
      positions: [B, L] absolute positions; negative marks padding (never attended to).
      segment_ids: [B, L] ids of packed sequences (tokens attend only within their segment).
        Not allowed together with `cache`.
      cache: decoding state; the L tokens are written at time steps cache.index .. +L-1
        (each row at its own when the index is per row; see cache.py).
      return_hidden: also return the final-norm hidden states.
    """
    cfg = self.config
    if cfg.num_layers % 2:
      raise ValueError(f"{cfg.name}: num_layers must be even (local, global pairs), "
                       f"got {cfg.num_layers}")
    if cache is not None and segment_ids is not None:
      raise ValueError("segment_ids (packing) cannot be combined with a KV cache")
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f"remat_policy {self.remat_policy!r} is not one of {sorted(REMAT_POLICIES)}")

    embedding = _Embedding(cfg, self.param_dtype, name="embedder")
    x = embedding.encode(tokens).astype(self.dtype)
    x = _constrain(x, ("batch", "length", "embed"))

    pairs = cfg.num_layers // 2
    new_cache = None
    if cache is None:
      block = PairBlock
      if self.remat_policy != "none":
        block = nn.remat(block, policy=REMAT_POLICIES[self.remat_policy], prevent_cse=False)
      scanned = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                        in_axes=(nn.broadcast,) * 6, length=pairs,
                        metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = scanned(cfg, self.dtype, self.param_dtype, name="layers")(
          x, positions, segment_ids, None, None, None, None)
    else:
      if self.is_initializing():
        raise ValueError("initialize the model without a cache (init_params does)")
      index = cache.index
      valid = positions >= 0 if index.ndim else None  # padding is not written (cache.py)
      # Global layers attend over the cache after writing; they need the new positions already.
      global_pos = cache_lib.write_linear(cache.global_pos, positions,
                                          index - cache.prefix_length, valid)
      # A Python loop over static slices of the stacked weights (see the module docstring).
      pair = PairBlock(cfg, self.dtype, self.param_dtype, parent=None)
      buffers = []
      for layer in range(pairs):
        weights = jax.tree.map(lambda w: w[layer], self.variables["params"]["layers"])
        kv = (cache.local_k[layer], cache.local_v[layer], cache.global_k[layer],
              cache.global_v[layer])
        prefix = None
        if cache.prefix_pos is not None:
          prefix = (cache.prefix_k[layer], cache.prefix_v[layer], cache.prefix_pos)
        x, kv = pair.apply({"params": weights}, x, positions, None, kv, cache.local_pos,
                           global_pos, index, prefix)
        buffers.append(kv)
      lk, lv, gk, gv = (tuple(b) for b in zip(*buffers))
      local_pos = cache_lib.write_ring(cache.local_pos, positions, index, valid)
      new_cache = cache.replace(local_k=lk, local_v=lv, global_k=gk, global_v=gv,
                                local_pos=local_pos, global_pos=global_pos,
                                index=index + tokens.shape[1])
    x = RMSNorm(self.param_dtype, name="final_norm")(x)

    logits = embedding.decode(x)
    logits = jnp.tanh(logits / cfg.final_softcap) * cfg.final_softcap
    return Output(logits=logits, cache=new_cache, hidden=x if return_hidden else None)


class _Embedding(nn.Module):
  """Tied input/output embedding; inputs scaled by sqrt(embed_dim)."""
  config: Gemma2Config
  param_dtype: Any = jnp.float32

  def setup(self):
    cfg = self.config
    self.input_embedding = _param(self, "input_embedding", (cfg.vocab_size, cfg.embed_dim),
                                  ("vocab", "embed"), nn.initializers.normal(0.02),
                                  self.param_dtype)

  def encode(self, tokens: jax.Array) -> jax.Array:
    x = jnp.take(self.input_embedding, tokens, axis=0)
    return x * jnp.sqrt(self.config.embed_dim).astype(x.dtype)

  def decode(self, x: jax.Array) -> jax.Array:
    logits = project("BTD,VD->BTV", x, self.input_embedding.astype(x.dtype),
                    preferred_element_type=jnp.float32)
    return _constrain(logits, ("batch", "length", "vocab"))


def make_model(config: Gemma2Config, *, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32,
               remat_policy: str = "none") -> Gemma2:
  return Gemma2(config, dtype=dtype, param_dtype=param_dtype, remat_policy=remat_policy)


def abstract_params(model: Gemma2) -> Any:
  """Shapes, dtypes and logical axes of the parameters, without allocating them."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens))["params"]


def init_params(model: Gemma2, rng: jax.Array, shardings: Any = None) -> Any:
  """Freshly initialised (unboxed) parameters, created directly with `shardings` when given."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  init = lambda r: nn.meta.unbox(model.init(r, tokens, tokens)["params"])
  if shardings is not None:
    init = jax.jit(init, out_shardings=shardings)
  return init(rng)


def forward(model: Gemma2, params: Any, tokens: jax.Array, positions: jax.Array,
            **kwargs) -> Output:
  return model.apply({"params": params}, tokens, positions, **kwargs)


def default_positions(tokens: jax.Array, pad_id: int = 0) -> jax.Array:
  """Positions counting non-pad tokens from 0, -1 on pads (works for left or right padding)."""
  valid = tokens != pad_id
  return jnp.where(valid, jnp.cumsum(valid, axis=-1) - 1, -1).astype(jnp.int32)


__all__ = ["Gemma2", "Output", "make_model", "abstract_params",
           "init_params", "forward", "default_positions", "apply_rope", "REMAT_POLICIES"]
