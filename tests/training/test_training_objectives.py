"""Every objective against a hand-computed case: loss AND gradient."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training_helpers import directional_fd, nll_batch, random_direction
from wcse_jax.models import gemma2
from wcse_jax.training import objectives
from wcse_jax.training.objectives import dpo, scalar_head, weighted_nll

RNG = jax.random.key(0)


def np_log_softmax(x):
  x = np.asarray(x, np.float64)
  return (x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
          - x.max(-1, keepdims=True))


# ---------------------------------------------------------------- weighted NLL

def test_shift_targets_packed_segments():
  tokens = np.array([[5, 6, 7, 8, 9, 0]])
  positions = np.array([[0, 1, 2, 0, 1, -1]])
  segments = np.array([[1, 1, 1, 2, 2, 0]])
  weight = np.array([[9., 1., 2., 7., 3., 4.]])  # 9: first token, 7: segment start, 4: pad
  targets, w = weighted_nll.shift_targets(tokens, positions, weight, segments)
  np.testing.assert_array_equal(targets, [[6, 7, 8, 9, 0, 0]])
  # Position t predicts token t+1: segment starts and padding get nothing.
  np.testing.assert_array_equal(w, [[1., 2., 0., 3., 0., 0.]])


def test_weighted_nll_hand_example_loss_and_grad():
  logits = jnp.array([[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0], [2.0, 2.0, 2.0]]])
  targets = jnp.array([[1, 0, 2]])
  weights = jnp.array([[2.0, -1.0, 0.0]])  # a negative weight, and one token not counted
  out = weighted_nll.weighted_nll_from_logits(logits, targets, weights)
  lp = np_log_softmax(logits[0])
  expected = -(2.0 * lp[0, 1] - 1.0 * lp[1, 0])
  np.testing.assert_allclose(out.total, expected, rtol=1e-6)
  assert float(out.weight) == 2.0  # the count of weighted tokens, not the signed sum 1.0
  np.testing.assert_allclose(out.metrics["nll"][0], -(lp[0, 1] + lp[1, 0]), rtol=1e-6)
  np.testing.assert_allclose(out.metrics["accuracy"][0], 1.0)  # token 0 is its row's argmax
  grad = jax.grad(
      lambda l: weighted_nll.weighted_nll_from_logits(l, targets, weights).total)(logits)
  softmax, onehot = np.exp(lp), np.eye(3)[[1, 0, 2]]
  np.testing.assert_allclose(grad[0], np.asarray(weights[0])[:, None] * (softmax - onehot),
                             rtol=1e-5, atol=1e-7)


def test_weighted_nll_on_model_matches_numpy_and_finite_differences(model, model_params):
  obj = objectives.make_objective("weighted_nll", model)
  batch = jax.tree.map(jnp.asarray, nll_batch(3, 12))
  params = {"model": model_params}
  total_of = jax.jit(lambda p: obj.loss(p, batch, RNG).total)
  out = jax.jit(obj.loss)(params, batch, RNG)
  logits = np.asarray(jax.jit(lambda p: gemma2.forward(
      model, p, batch["tokens"], batch["positions"]).logits)(model_params))
  lp = np_log_softmax(logits)
  total, count = 0.0, 0
  for b in range(3):
    for t in range(11):
      w = float(batch["loss_weight"][b, t + 1])
      if w and batch["positions"][b, t + 1] >= 0:
        total -= w * lp[b, t, int(batch["tokens"][b, t + 1])]
        count += 1
  np.testing.assert_allclose(out.total, total, rtol=1e-5)
  assert float(out.weight) == count
  grads = jax.jit(jax.grad(total_of))(params)
  direction = random_direction(params)
  analytic = sum(float((g * d).sum())
                 for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
  numeric = directional_fd(total_of, params, direction)
  np.testing.assert_allclose(analytic, numeric, rtol=2e-2)


# ---------------------------------------------------------------- scalar head

def test_balanced_weights_hand_example():
  w = scalar_head.balanced_weights(np.array([1, 1, 1, 0, 1]), valid=np.array([1, 1, 1, 1, 0]))
  # 4 valid: 3 positives share 2, the negative gets 2, the invalid row 0.
  np.testing.assert_allclose(w, [2 / 3, 2 / 3, 2 / 3, 2.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(scalar_head.balanced_weights(np.array([1, 1])), [1.0, 1.0])


def test_last_token_index():
  positions = np.array([[0, 1, 2, -1], [-1, -1, 0, 1], [0, 1, 2, 3]])
  np.testing.assert_array_equal(scalar_head.last_token_index(positions), [2, 3, 3])


def hidden_of(model, params, batch):
  """Final-norm hidden state at each row's score_index, straight from the model."""
  return jax.jit(lambda p, b: gemma2.forward(model, p, b["tokens"], b["positions"],
                                             return_hidden=True).hidden[
      jnp.arange(b["tokens"].shape[0]), b["score_index"]])(params, batch)


def _head_batch(rows, length, seed=0):
  b = nll_batch(rows, length, seed)
  labels = np.arange(rows) % 3 == 0
  return {"tokens": b["tokens"], "positions": b["positions"],
          "score_index": scalar_head.last_token_index(b["positions"]),
          "target": labels.astype(np.float32),
          "example_weight": scalar_head.balanced_weights(labels)}


def test_balanced_bce_on_model_matches_numpy_and_gradient(model, model_params):
  obj = objectives.make_objective("scalar_head", model, loss_type="bce")
  batch = jax.tree.map(jnp.asarray, _head_batch(6, 10))
  params = {"model": model_params,
            "head": {"dense": {"kernel": jax.random.normal(jax.random.key(3), (32, 1)) * 0.3,
                               "bias": jnp.array([0.1])}}}
  out = jax.jit(obj.loss)(params, batch, RNG)
  h = np.asarray(hidden_of(model, model_params, batch))
  x = h @ np.asarray(params["head"]["dense"]["kernel"])[:, 0] + 0.1
  y = np.asarray(batch["target"])
  r = 1 / (1 + np.exp(-x))
  # Balanced: half the mean BCE of the positives plus half that of the negatives.
  expected = 0.5 * -np.log(r[y == 1]).mean() + 0.5 * -np.log(1 - r[y == 0]).mean()
  np.testing.assert_allclose(out.total / out.weight, expected, rtol=1e-5)
  grad = jax.jit(jax.grad(lambda p: obj.loss(p, batch, RNG).total))(params)
  w = np.asarray(batch["example_weight"])
  # d total / d kernel = sum_i w_i (σ(x_i) - y_i) h_i ; d / d bias = sum_i w_i (σ(x_i) - y_i)
  np.testing.assert_allclose(grad["head"]["dense"]["kernel"][:, 0], (w * (r - y)) @ h,
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(grad["head"]["dense"]["bias"][0], (w * (r - y)).sum(), rtol=1e-5)
  direction = random_direction(params["model"])
  f = jax.jit(lambda m: obj.loss({"model": m, "head": params["head"]}, batch, RNG).total)
  analytic = sum(float((g * d).sum()) for g, d in
                 zip(jax.tree.leaves(grad["model"]), jax.tree.leaves(direction)))
  np.testing.assert_allclose(analytic, directional_fd(f, params["model"], direction), rtol=2e-2)


def test_hl_gauss_target_hand_computed():
  num_bins, lo, hi, ratio = 4, 0.0, 1.0, 0.75
  y = 0.3
  sigma = ratio * (hi - lo) / num_bins
  edges = np.linspace(lo, hi, num_bins + 1)
  cdf = np.array([0.5 * (1 + math.erf((e - y) / (math.sqrt(2) * sigma))) for e in edges])
  expected = np.diff(cdf) / (cdf[-1] - cdf[0])
  got = scalar_head.hl_gauss_target(jnp.array([y, 7.0]), num_bins, lo, hi, ratio)
  np.testing.assert_allclose(got[0], expected, rtol=1e-5)
  np.testing.assert_allclose(got.sum(-1), [1.0, 1.0], rtol=1e-6)
  assert int(jnp.argmax(got[1])) == num_bins - 1  # 7.0 is clipped to v_max


def test_hl_gauss_loss_and_gradient(model, model_params):
  obj = objectives.make_objective("scalar_head", model, loss_type="hl_gauss", num_bins=8,
                                  v_min=-1.0, v_max=1.0, z_loss=1e-3)
  batch = jax.tree.map(jnp.asarray, _head_batch(4, 8, seed=2))
  batch["target"] = jnp.array([-0.9, 0.2, 0.55, 3.0])
  batch["example_weight"] = jnp.array([1.0, 2.0, 0.0, 1.0])
  head = {"dense": {"kernel": jax.random.normal(jax.random.key(4), (32, 8)) * 0.3,
                    "bias": jnp.zeros(8)}}
  params = {"model": model_params, "head": head}
  out = jax.jit(obj.loss)(params, batch, RNG)
  h = np.asarray(hidden_of(model, model_params, batch))
  logits = h @ np.asarray(head["dense"]["kernel"])
  lp = np_log_softmax(logits)
  p = np.asarray(scalar_head.hl_gauss_target(batch["target"], 8, -1.0, 1.0, 0.75))
  log_z = np.log(np.exp(logits).sum(-1))
  w = np.asarray(batch["example_weight"])
  per = -(p * lp).sum(-1) + 1e-3 * log_z ** 2
  np.testing.assert_allclose(out.total, (w * per).sum(), rtol=1e-5)
  assert float(out.weight) == 3.0
  grad = jax.jit(jax.grad(
      lambda p_: obj.loss(p_, batch, RNG).total))(params)["head"]["dense"]["bias"]
  softmax = np.exp(lp)
  # d/dlogits of CE is softmax - p; of z * logZ^2 it is 2 z logZ softmax.
  expected = (w[:, None] * (softmax - p + 2e-3 * log_z[:, None] * softmax)).sum(0)
  np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)
  centres = np.linspace(-1, 1, 9)[:-1] + 1 / 8
  pred = (softmax * centres).sum(-1)
  counted = w != 0
  np.testing.assert_allclose(out.metrics["prediction"][0], pred[counted].sum(), rtol=1e-5)


# ---------------------------------------------------------------- DPO

def test_dpo_hand_example_loss_and_grad():
  policy = jnp.array([[-3.0, -5.0], [-2.0, -1.0], [-4.0, -4.0]])
  reference = jnp.array([[-4.0, -4.0], [-2.5, -1.5], [-1.0, -1.0]])
  valid = jnp.array([True, True, False])
  beta = 0.5
  out = dpo.dpo_from_logprobs(policy, reference, beta, valid)
  m = beta * np.array([(-3 + 4) - (-5 + 4), (-2 + 2.5) - (-1 + 1.5)])  # [1.0, 0.0]
  np.testing.assert_allclose(out.total, np.log1p(np.exp(-m)).sum(), rtol=1e-6)
  assert float(out.weight) == 2.0
  np.testing.assert_allclose(out.metrics["accuracy"][0], 1.0)  # margin 0 is not a win
  gp, gr = jax.grad(lambda p, r: dpo.dpo_from_logprobs(p, r, beta, valid).total,
                    (0, 1))(policy, reference)
  s = 1 / (1 + np.exp(m))  # σ(-m)
  np.testing.assert_allclose(gp[:2], np.stack([-beta * s, beta * s], -1), rtol=1e-6)
  np.testing.assert_allclose(gp[2], [0, 0])
  np.testing.assert_allclose(gr, 0)  # the reference is frozen


def _pair_batch(rows, length):
  b = nll_batch(2 * rows, length, seed=5)
  mask = (b["loss_weight"] != 0).astype(np.float32)
  shape = lambda x: x.reshape(rows, 2, length)
  return {"tokens": shape(b["tokens"]), "positions": shape(b["positions"]),
          "loss_mask": shape(mask)}


def test_dpo_on_model(model, model_params):
  obj = objectives.make_objective("dpo", model, beta=0.2)
  batch = jax.tree.map(jnp.asarray, _pair_batch(3, 10))
  loss = jax.jit(obj.loss)
  params = {"model": model_params, "reference": model_params}
  out = loss(params, batch, RNG)
  # Policy == reference: every margin is 0, the loss log 2 per pair.
  np.testing.assert_allclose(out.total / out.weight, math.log(2), rtol=1e-6)
  direction = random_direction(model_params)
  moved = jax.tree.map(lambda p, d: p + d, model_params, direction)
  out = loss({"model": moved, "reference": model_params}, batch, RNG)
  flat = lambda x: x.reshape(6, 10)
  seq_logprob = jax.jit(lambda p: dpo.sequence_logprob(
      model, p, flat(batch["tokens"]), flat(batch["positions"]), flat(batch["loss_mask"])))
  lp = lambda p: np.asarray(seq_logprob(p)).reshape(3, 2)
  logits = np.asarray(jax.jit(lambda p: gemma2.forward(
      model, p, flat(batch["tokens"]), flat(batch["positions"])).logits)(moved))
  by_hand = np.zeros(6)
  for r in range(6):
    for t in range(9):
      if flat(batch["loss_mask"])[r, t + 1]:
        by_hand[r] += np_log_softmax(logits[r, t])[int(flat(batch["tokens"])[r, t + 1])]
  np.testing.assert_allclose(lp(moved).reshape(-1), by_hand, rtol=1e-5)
  margin = 0.2 * ((lp(moved) - lp(model_params)) @ np.array([1.0, -1.0]))
  np.testing.assert_allclose(out.total, np.log1p(np.exp(-margin)).sum(), rtol=1e-5)
  f = jax.jit(lambda m: obj.loss({"model": m, "reference": model_params}, batch, RNG).total)
  grads = jax.jit(jax.grad(f))(moved)
  d2 = random_direction(model_params, seed=7)
  analytic = sum(float((g * d).sum()) for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(d2)))
  np.testing.assert_allclose(analytic, directional_fd(f, moved, d2), rtol=2e-2)


# ---------------------------------------------------------------- registry

def test_registry_names_and_errors(model):
  assert objectives.objective_names() == ["dpo", "scalar_head", "weighted_nll"]
  with pytest.raises(ValueError, match="unknown objective 'sft'"):
    objectives.make_objective("sft", model)
  with pytest.raises(ValueError, match="loss_type 'mse'"):
    objectives.make_objective("scalar_head", model, loss_type="mse")
  obj = objectives.make_objective("weighted_nll", model)
  with pytest.raises(ValueError, match=r"lacks fields \['loss_weight'\]"):
    objectives.check_batch(obj, {"tokens": 0, "positions": 0})
