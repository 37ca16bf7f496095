"""Weighted next-token log-likelihood: SFT, GenRM targets and BoN-aware per-sequence weights.

Batch fields (row-major [B, L]; rows may be padded or packed):
  tokens       int32   token ids (0 = pad).
  positions    int32   position within the sequence; negative marks padding.
  segment_ids  int32   optional, for packed rows: tokens attend and are predicted only within
                       their segment (positions restart at 0 in each).
  loss_weight  float32 weight of token t *as a target* (predicted from tokens < t of its own
                       segment): 1 on SFT completion tokens, 0 on prompts, a per-sequence weight
                       (possibly negative, for BoN-RL) times the completion mask, or a mixing
                       coefficient (GenRM's lambda) on generation-SFT tokens.

Loss: total = -sum_t w_t log p(token_t | prefix), weight = #{t : w_t != 0}.
The normaliser counts the weighted tokens, not the signed sum of weights: with positive and
negative sequence weights the signed sum can be near zero (or negative) and would blow the step
up, while the count keeps the learning rate meaning "per target token" whatever the weights. A
sequence given weight 0 (a BoN prompt without signal) does not count. Weights on the first token
of a row or segment, or on padding, have no prediction to attach to and are ignored.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp

from wcse_jax.models import gemma2
from wcse_jax.training.objectives.base import LossOut, register


def shift_targets(tokens: jax.Array, positions: jax.Array, weight: jax.Array,
                  segment_ids: jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """Targets and their weights aligned with the logits that predict them ([..., L], last = 0).

  Shifting the small integer arrays instead of slicing the [B, L, V] logits avoids a copy of the
  largest array in the step.
  """
  def pad(x, fill):
    return jnp.concatenate([x[..., 1:], jnp.full_like(x[..., :1], fill)], axis=-1)
  targets = pad(tokens, 0)
  valid = pad(positions, -1) >= 0
  if segment_ids is not None:
    valid &= pad(segment_ids, -1) == segment_ids
  return targets, jnp.where(valid, pad(weight, 0).astype(jnp.float32), 0.0)


def token_nll(logits: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
  """-log softmax(logits)[target] and whether the target has the top logit, per position.

  The target logit is read with a one-hot product rather than a gather: its gradient is then an
  elementwise product that fuses with the softmax's, instead of a scatter into a zero [.., V]
  array; and "correct" compares with the max the logsumexp computes anyway (a tie counts).
  """
  logits = logits.astype(jnp.float32)
  lse = jax.nn.logsumexp(logits, axis=-1)
  onehot = jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)
  target_logit = (logits * onehot).sum(-1)
  correct = target_logit >= jax.lax.stop_gradient(logits.max(-1))
  return lse - target_logit, correct


def weighted_nll_from_logits(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> LossOut:
  """The loss on logits [..., V] and already shifted targets/weights (see module docstring)."""
  nll, correct = token_nll(logits, targets)
  counted = (weights != 0).astype(jnp.float32)
  count = counted.sum()
  return LossOut(total=(weights * nll).sum(), weight=count,
                 metrics={"nll": ((counted * nll).sum(), count),
                          "accuracy": ((counted * correct).sum(), count)})


@register("weighted_nll")
@dataclasses.dataclass(frozen=True)
class WeightedNLL:
  """See the module docstring."""
  model: gemma2.Gemma2
  name: ClassVar[str] = "weighted_nll"
  batch_fields: ClassVar[tuple[str, ...]] = ("tokens", "positions", "loss_weight")

  def loss(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array],
           rng: jax.Array) -> LossOut:
    del rng  # deterministic: the model has no dropout
    segment_ids = batch.get("segment_ids")
    out = gemma2.forward(self.model, params["model"], batch["tokens"], batch["positions"],
                         segment_ids=segment_ids)
    targets, weights = shift_targets(batch["tokens"], batch["positions"], batch["loss_weight"],
                                     segment_ids)
    return weighted_nll_from_logits(out.logits, targets, weights)

  def abstract_params(self) -> dict[str, Any]:
    return {"model": gemma2.abstract_params(self.model)}

  def init_params(self, rng: jax.Array) -> dict[str, Any]:
    return {"model": gemma2.init_params(self.model, rng)}

  def abstract_frozen(self) -> dict[str, Any]:
    return {}
