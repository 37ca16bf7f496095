"""AdamW with linear warmup + cosine decay, global-norm clipping and a weight-decay mask.

No weight decay on norm scales, biases and the (tied) embedding table:
- RMSNorm scales are (1 + scale): decay pulls the effective gain towards 1, a constraint on
  the function rather than a regulariser of capacity;
- biases (of scalar heads) likewise only shift outputs;
- Gemma's embedding table is tied to the output layer and sized by the vocabulary: decay would
  shrink the rows of every token the batch does not contain, i.e. most of a 256k vocabulary
  at every step, drifting rare tokens' logits for no signal.
Everything else (attention, MLP and head kernels) is decayed, as in decoupled AdamW.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import optax

NO_DECAY_NAMES = frozenset({"scale", "bias", "input_embedding"})


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  learning_rate: float = 1e-5  # peak, reached after warmup_steps
  warmup_steps: int = 0
  total_steps: int = 1000  # cosine decay ends here
  end_lr_fraction: float = 0.0  # final learning rate / peak
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  weight_decay: float = 1e-2  # GenRM's AdamW setting
  clip_norm: float | None = 1.0  # global gradient norm; None disables clipping

  def __post_init__(self):
    if self.total_steps < 1 or not 0 <= self.warmup_steps <= self.total_steps:
      raise ValueError(f"OptimizerConfig: need 0 <= warmup_steps <= total_steps and "
                       f"total_steps >= 1; got warmup_steps={self.warmup_steps}, "
                       f"total_steps={self.total_steps}")
    if self.clip_norm is not None and self.clip_norm <= 0:
      raise ValueError(f"OptimizerConfig: clip_norm must be > 0 or None, got {self.clip_norm}")


def make_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then cosine decay to end_lr_fraction * peak."""
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
      decay_steps=cfg.total_steps, end_value=cfg.learning_rate * cfg.end_lr_fraction)


def decay_mask(params: Any) -> Any:
  """True for leaves that get weight decay (see the module docstring)."""
  def decays(path, _):
    name = getattr(path[-1], "key", getattr(path[-1], "name", None))
    return name not in NO_DECAY_NAMES
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  adamw = optax.adamw(make_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                      weight_decay=cfg.weight_decay, mask=decay_mask)
  if cfg.clip_norm is None:
    return adamw
  return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), adamw)


__all__ = ["OptimizerConfig", "make_schedule", "make_optimizer", "decay_mask", "NO_DECAY_NAMES"]
