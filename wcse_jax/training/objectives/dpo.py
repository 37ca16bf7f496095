"""DPO on (chosen, rejected) pairs against a frozen reference model.

loss = -log σ(β [(log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l))])

Batch fields ([B, 2, L]; index 0 of the second axis is the chosen completion y_w, 1 the rejected
y_l; one sequence per row, padded):
  tokens, positions  as for weighted_nll.
  loss_mask          float32 1 on completion tokens (their log-probabilities are summed into
                     log π(y)), 0 on the prompt and padding.

The reference log-probabilities are computed in the step from frozen reference parameters
(`params["reference"]`, kept in TrainState.frozen, never updated), under stop_gradient. We chose
this over precomputing them on the host because it keeps the data pipeline model-free and works
unchanged for freshly sampled (on-policy) pairs; it costs one extra forward pass per step (about
a third more compute than fwd+bwd) and a second copy of the weights, which may be stored in
bfloat16. A pair whose chosen or rejected completion has no masked token is padding:
total = sum over real pairs, weight = number of real pairs.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp

from wcse_jax.models import gemma2
from wcse_jax.training.objectives.base import LossOut, register
from wcse_jax.training.objectives.weighted_nll import shift_targets, token_nll


def sequence_logprob(model: gemma2.Gemma2, params: Any, tokens: jax.Array, positions: jax.Array,
                     loss_mask: jax.Array) -> jax.Array:
  """sum_t loss_mask_t log p(token_t | prefix) per row of [N, L] inputs."""
  logits = gemma2.forward(model, params, tokens, positions).logits
  targets, weights = shift_targets(tokens, positions, loss_mask, None)
  nll, _ = token_nll(logits, targets)
  return -(weights * nll).sum(-1)


def dpo_from_logprobs(policy: jax.Array, reference: jax.Array, beta: float,
                      valid: jax.Array) -> LossOut:
  """The loss from [B, 2] (chosen, rejected) sequence log-probabilities and a [B] validity mask."""
  rewards = beta * (policy - jax.lax.stop_gradient(reference))
  margin = rewards[:, 0] - rewards[:, 1]
  valid = valid.astype(jnp.float32)
  n = valid.sum()
  mean = lambda v: ((valid * v).sum(), n)
  return LossOut(total=(valid * -jax.nn.log_sigmoid(margin)).sum(), weight=n,
                 metrics={"accuracy": mean(margin > 0), "margin": mean(margin),
                          "chosen_reward": mean(rewards[:, 0]),
                          "rejected_reward": mean(rewards[:, 1])})


@register("dpo")
@dataclasses.dataclass(frozen=True)
class DPO:
  """See the module docstring. `beta`: the inverse temperature (GenRM's DPO verifier used 0.1)."""
  model: gemma2.Gemma2
  beta: float = 0.1
  name: ClassVar[str] = "dpo"
  batch_fields: ClassVar[tuple[str, ...]] = ("tokens", "positions", "loss_mask")

  def __post_init__(self):
    if not self.beta > 0:
      raise ValueError(f"dpo: beta must be > 0, got {self.beta}")

  def loss(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array],
           rng: jax.Array) -> LossOut:
    del rng  # deterministic
    tokens, positions, mask = batch["tokens"], batch["positions"], batch["loss_mask"]
    if tokens.ndim != 3 or tokens.shape[1] != 2:
      raise ValueError("dpo: batch['tokens'] must be [B, 2, L] (chosen, rejected), "
                       f"got {tokens.shape}")
    b, _, length = tokens.shape
    # Chosen and rejected rows go through one forward pass of 2B rows.
    flat = lambda x: x.reshape(2 * b, length)
    logp = lambda p: sequence_logprob(self.model, p, flat(tokens), flat(positions),
                                      flat(mask)).reshape(b, 2)
    valid = (mask.sum(-1) > 0).all(-1)
    return dpo_from_logprobs(logp(params["model"]), logp(params["reference"]), self.beta, valid)

  def abstract_params(self) -> dict[str, Any]:
    return {"model": gemma2.abstract_params(self.model)}

  def init_params(self, rng: jax.Array) -> dict[str, Any]:
    return {"model": gemma2.init_params(self.model, rng)}

  def abstract_frozen(self) -> dict[str, Any]:
    return {"reference": gemma2.abstract_params(self.model)}
