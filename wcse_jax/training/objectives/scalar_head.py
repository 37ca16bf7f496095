"""Discriminative reward model: a scalar head on the hidden state at one token per row.

Batch fields ([B] unless said):
  tokens, positions  [B, L] as for weighted_nll (one sequence per row, padded).
  score_index        int32: the token whose final-norm hidden state is scored (usually the last
                     non-pad token; `last_token_index` computes it).
  target             float32: the label, 1 correct / 0 incorrect for BCE; any scalar in
                     [v_min, v_max] (clipped into it) for HL-Gauss.
  example_weight     float32: the example's weight; 0 for padding rows. `balanced_weights` makes
                     the balanced-BCE weights.

Losses (`loss="bce"` or `"hl_gauss"`), per example, times example_weight:
  bce       softplus(x) - y x on the head's single logit x (= -y log r - (1-y) log(1-r), r = σ(x));
  hl_gauss  -sum_i p_i(y) log softmax(logits)_i over `num_bins` bins evenly covering
            [v_min, v_max], p(y) a Gaussian of sd sigma_ratio * bin width integrated over each
            bin and renormalised to the range (papers.md §11); the prediction is
            sum_i softmax_i c_i over bin centres c_i.
  plus z_loss * (log Z)^2 when z_loss > 0, log Z the log-partition of the class logits
  ([0, x] for BCE) — the stabiliser GenRM's discriminative baseline uses (1e-4).
total = sum_i w_i loss_i, weight = #{i : w_i != 0}.

Balanced BCE: the classes are reweighted on the host, over the whole batch (not per microbatch,
so microbatching cannot change the loss): `balanced_weights` gives every valid positive the
weight n / (2 n_pos) and every valid negative n / (2 n_neg), so each class carries total weight
n / 2 and the loss is (mean BCE over positives + mean BCE over negatives) / 2, i.e. papers.md §2's
-E_{D+}[log r] - E_{D-}[log(1-r)] up to the factor 1/2. A batch holding one class only keeps
weight 1 everywhere (nothing to balance against).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from wcse_jax.models import gemma2, heads
from wcse_jax.training.objectives.base import LossOut, register

LOSSES = ("bce", "hl_gauss")


def balanced_weights(labels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
  """Per-example weights giving the positives and negatives among `valid` equal total weight."""
  labels = np.asarray(labels) > 0.5
  valid = np.ones(labels.shape, bool) if valid is None else np.asarray(valid, bool)
  n, n_pos = valid.sum(), (valid & labels).sum()
  n_neg = n - n_pos
  if n_pos == 0 or n_neg == 0:
    return valid.astype(np.float32)
  w = np.where(labels, n / (2 * n_pos), n / (2 * n_neg))
  return np.where(valid, w, 0.0).astype(np.float32)


def last_token_index(positions: np.ndarray) -> np.ndarray:
  """Index of each row's last non-pad token (rows padded on either side)."""
  positions = np.asarray(positions)
  length = positions.shape[-1]
  return (length - 1 - np.argmax((positions >= 0)[..., ::-1], axis=-1)).astype(np.int32)


def hl_gauss_target(y: jax.Array, num_bins: int, v_min: float, v_max: float,
                    sigma_ratio: float) -> jax.Array:
  """HL-Gauss bin probabilities [..., num_bins] for scalar targets y (clipped into the range)."""
  edges = jnp.linspace(v_min, v_max, num_bins + 1, dtype=jnp.float32)
  sigma = sigma_ratio * (v_max - v_min) / num_bins
  y = jnp.clip(y.astype(jnp.float32), v_min, v_max)[..., None]
  cdf = jax.scipy.special.erf((edges - y) / (math.sqrt(2.0) * sigma))
  return (cdf[..., 1:] - cdf[..., :-1]) / (cdf[..., -1:] - cdf[..., :1])


def bin_centres(num_bins: int, v_min: float, v_max: float) -> jax.Array:
  edges = jnp.linspace(v_min, v_max, num_bins + 1, dtype=jnp.float32)
  return (edges[1:] + edges[:-1]) / 2


@register("scalar_head")
@dataclasses.dataclass(frozen=True)
class ScalarHeadObjective:
  """See the module docstring. `num_bins`, `v_min`, `v_max`, `sigma_ratio` apply to HL-Gauss."""
  model: gemma2.Gemma2
  loss_type: str = "bce"
  num_bins: int = 32
  v_min: float = 0.0
  v_max: float = 1.0
  sigma_ratio: float = 0.75
  z_loss: float = 0.0
  name: ClassVar[str] = "scalar_head"
  batch_fields: ClassVar[tuple[str, ...]] = (
      "tokens", "positions", "score_index", "target", "example_weight")

  def __post_init__(self):
    if self.loss_type not in LOSSES:
      raise ValueError(f"scalar_head: loss_type {self.loss_type!r} is not one of {LOSSES}")
    if self.loss_type == "hl_gauss" and not (self.num_bins >= 2 and self.v_max > self.v_min
                                             and self.sigma_ratio > 0):
      raise ValueError(f"scalar_head: HL-Gauss needs num_bins >= 2, v_max > v_min and "
                       f"sigma_ratio > 0; got num_bins={self.num_bins}, v_min={self.v_min}, "
                       f"v_max={self.v_max}, sigma_ratio={self.sigma_ratio}")

  @property
  def head(self) -> heads.ScalarHead:
    return heads.ScalarHead(1 if self.loss_type == "bce" else self.num_bins)

  def head_logits(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array]) -> jax.Array:
    """The head's logits [B, outputs] at each row's score_index."""
    out = gemma2.forward(self.model, params["model"], batch["tokens"], batch["positions"],
                         return_hidden=True)
    index = batch["score_index"].astype(jnp.int32)
    hidden = jnp.take_along_axis(out.hidden, index[:, None, None], axis=1)[:, 0]
    return self.head.apply({"params": params["head"]}, hidden)

  def loss(self, params: Mapping[str, Any], batch: Mapping[str, jax.Array],
           rng: jax.Array) -> LossOut:
    del rng  # deterministic
    logits = self.head_logits(params, batch)
    target = batch["target"].astype(jnp.float32)
    w = batch["example_weight"].astype(jnp.float32)
    counted = (w != 0).astype(jnp.float32)
    count = counted.sum()
    mean = lambda v: ((counted * v).sum(), count)
    if self.loss_type == "bce":
      x = logits[:, 0]
      per_example = jax.nn.softplus(x) - target * x
      log_z = jax.nn.softplus(x)
      metrics = {"bce": mean(per_example), "accuracy": mean((x > 0) == (target > 0.5)),
                 "prediction": mean(jax.nn.sigmoid(x))}
    else:
      p = hl_gauss_target(target, self.num_bins, self.v_min, self.v_max, self.sigma_ratio)
      log_probs = jax.nn.log_softmax(logits, axis=-1)
      per_example = -(p * log_probs).sum(-1)
      log_z = jax.nn.logsumexp(logits, axis=-1)
      prediction = (jnp.exp(log_probs) * bin_centres(self.num_bins, self.v_min, self.v_max)).sum(-1)
      clipped = jnp.clip(target, self.v_min, self.v_max)
      metrics = {"cross_entropy": mean(per_example), "prediction": mean(prediction),
                 "squared_error": mean(jnp.square(prediction - clipped))}
    if self.z_loss:
      per_example = per_example + self.z_loss * jnp.square(log_z)
    return LossOut(total=(w * per_example).sum(), weight=count, metrics=metrics)

  def abstract_params(self) -> dict[str, Any]:
    return {"model": gemma2.abstract_params(self.model),
            "head": heads.abstract_head_params(self.head, self.model.config.embed_dim)}

  def init_params(self, rng: jax.Array) -> dict[str, Any]:
    model_rng, head_rng = jax.random.split(rng)
    return {"model": gemma2.init_params(self.model, model_rng),
            "head": heads.init_head_params(self.head, self.model.config.embed_dim, head_rng)}

  def abstract_frozen(self) -> dict[str, Any]:
    return {}
