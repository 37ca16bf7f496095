"""Gemma 2 architecture presets: the published 2B/9B/27B shapes and tiny ones for CPU work.

A preset is a frozen dataclass that carries every shape, so a checkpoint or tokenizer of another
size fails loudly against it (see checkpoints.py and tokenizer.check_vocab).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Gemma2Config:
  name: str
  num_layers: int  # even: layers alternate local (sliding window) then global attention
  embed_dim: int
  hidden_dim: int  # per GeGLU branch (HF `intermediate_size`)
  num_heads: int
  num_kv_heads: int
  head_dim: int
  vocab_size: int = 256_128
  query_pre_attn_scalar: int | None = None  # queries are scaled by this**-0.5; None: head_dim
  sliding_window: int = 4096
  attn_softcap: float = 50.0
  final_softcap: float = 30.0
  rope_base: float = 10_000.0
  max_len: int = 8192
  # The 9B and 27B checkpoints store the GeGLU gating weight as [2, hidden, embed], not
  # [2, embed, hidden]; our tree keeps each checkpoint's own layout.
  transpose_gating: bool = False

  def __post_init__(self):
    if self.num_layers % 2:
      raise ValueError(f"{self.name}: num_layers must be even, got {self.num_layers}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"{self.name}: num_heads {self.num_heads} is not a multiple of "
                       f"num_kv_heads {self.num_kv_heads}")
    if self.head_dim % 2:
      raise ValueError(f"{self.name}: head_dim must be even for RoPE, got {self.head_dim}")

  @property
  def query_scale(self) -> float:
    return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

  def param_count(self, embedding: bool = True) -> int:
    d, h = self.embed_dim, self.head_dim
    attn = d * h * (2 * self.num_heads + 2 * self.num_kv_heads)
    layer = attn + 3 * d * self.hidden_dim + 4 * d
    total = self.num_layers * layer + d
    return total + (self.vocab_size * d if embedding else 0)

  def flops_per_token(self, context: int) -> float:
    """Forward FLOPs of one token attending to `context` earlier tokens (matmuls only).

    2 per multiply-add over the non-embedding weights and the logit projection, plus attention
    scores and weighted values (4 * heads * head_dim per visible key); local layers see at most
    the window.
    """
    dense = 2 * (self.param_count(embedding=False) + self.vocab_size * self.embed_dim)
    per_key = 4 * self.num_heads * self.head_dim
    pairs = self.num_layers // 2
    visible = min(context, self.sliding_window) + context
    return float(dense + pairs * per_key * visible)


_PRESETS = {
    "gemma2_2b": Gemma2Config("gemma2_2b", num_layers=26, embed_dim=2304, hidden_dim=9216,
                              num_heads=8, num_kv_heads=4, head_dim=256),
    "gemma2_9b": Gemma2Config("gemma2_9b", num_layers=42, embed_dim=3584, hidden_dim=14336,
                              num_heads=16, num_kv_heads=8, head_dim=256, transpose_gating=True),
    # 27B scales queries by (d_model / num_heads)**-0.5 = 144**-0.5, not head_dim**-0.5.
    "gemma2_27b": Gemma2Config("gemma2_27b", num_layers=46, embed_dim=4608, hidden_dim=36864,
                               num_heads=32, num_kv_heads=16, head_dim=128,
                               query_pre_attn_scalar=4608 // 32, transpose_gating=True),
    # Tiny shapes for tests and CPU benchmarks (the benchmark's "tiny" and "small" configs).
    "tiny": Gemma2Config("tiny", num_layers=4, embed_dim=256, hidden_dim=1024, num_heads=4,
                         num_kv_heads=2, head_dim=64, vocab_size=1024, sliding_window=64,
                         max_len=2048),
    "small": Gemma2Config("small", num_layers=8, embed_dim=512, hidden_dim=2048, num_heads=8,
                          num_kv_heads=4, head_dim=64, vocab_size=1024, sliding_window=128,
                          max_len=2048),
    "test": Gemma2Config("test", num_layers=4, embed_dim=32, hidden_dim=64, num_heads=4,
                         num_kv_heads=2, head_dim=16, vocab_size=64, sliding_window=4, max_len=128),
    # The embedded zoo's weak-cheap and strong-expensive base models (vocab set by the tokenizer).
    "zoo_wc": Gemma2Config("zoo_wc", num_layers=2, embed_dim=128, hidden_dim=384, num_heads=4,
                           num_kv_heads=2, head_dim=32, vocab_size=512, sliding_window=64,
                           max_len=512),
    # Deeper as well as wider: the 2-layer d224 model often stalled on a loss plateau for
    # hundreds of steps (whether it escaped by step 600 changed with the seed and the data order),
    # while this 4-layer one left it by step ~400 in both seeds tried; 2.86x zoo_wc's parameters.
    "zoo_se": Gemma2Config("zoo_se", num_layers=4, embed_dim=160, hidden_dim=480, num_heads=4,
                           num_kv_heads=2, head_dim=40, vocab_size=512, sliding_window=64,
                           max_len=512),
    # The quickstart's pair (configs/quickstart.py), on arith_chain with fewer reference paths
    # (swap_probability=0, shuffle_probability=0.5): 2.93x parameters apart, both learn the task in
    # 1-4 CPU-minutes. Measured (8,000 train problems, greedy test accuracy): the 4-layer d80 model
    # 76% after 600 steps, a 4-layer d88 one 30% (its loss plateau lasted longer); the 2-layer
    # d64 one 68.5% after 900 steps and 79% after 1,000 (81% with another seed). On this task the
    # number of steps matters as much as size at these budgets (README, "What it gave").
    "zoo_wc_2x64": Gemma2Config("zoo_wc_2x64", num_layers=2, embed_dim=64, hidden_dim=160,
                                num_heads=4, num_kv_heads=2, head_dim=16, vocab_size=512,
                                sliding_window=64, max_len=512),
    "zoo_se_4x80": Gemma2Config("zoo_se_4x80", num_layers=4, embed_dim=80, hidden_dim=240,
                                num_heads=4, num_kv_heads=2, head_dim=20, vocab_size=512,
                                sliding_window=64, max_len=512),
}


def get_preset(name: str, **overrides) -> Gemma2Config:
  """A preset by name, with fields overridden (e.g. vocab_size from a trained tokenizer)."""
  if name not in _PRESETS:
    raise ValueError(f"unknown model preset {name!r}; known presets: {sorted(_PRESETS)}")
  unknown = set(overrides) - {f.name for f in dataclasses.fields(Gemma2Config)}
  if unknown:
    raise ValueError(f"unknown Gemma2Config fields {sorted(unknown)} for preset {name!r}")
  return dataclasses.replace(_PRESETS[name], **overrides)


def preset_names() -> list[str]:
  return sorted(_PRESETS)


def nominal_params(config: Gemma2Config) -> float:
  """Parameter count, as used for compute-matched sampling ratios (papers.md §1)."""
  return float(config.param_count())


__all__ = ["Gemma2Config", "get_preset", "preset_names", "nominal_params"]
