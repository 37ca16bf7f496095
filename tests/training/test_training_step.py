"""The train step: compile once, microbatch and device-count invariance, exact normalisation."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training_helpers import nll_batch
from wcse_jax import parallel
from wcse_jax.models import gemma2, presets
from wcse_jax.training import objectives, optim
from wcse_jax.training import state as train_state
from wcse_jax.training import step as train_step

OPT = optim.OptimizerConfig(learning_rate=1e-3, warmup_steps=1, total_steps=50)


@dataclasses.dataclass(frozen=True)
class CountingObjective:
  """Wraps an objective and counts how often its loss is traced."""
  inner: objectives.Objective
  traces: list

  def __getattr__(self, name):
    return getattr(self.inner, name)

  def loss(self, params, batch, rng):
    self.traces.append(1)
    return self.inner.loss(params, batch, rng)


def setup(model, mesh, objective="weighted_nll", microbatches=1, params=None, frozen=None,
          **options):
  obj = objectives.make_objective(objective, model, **options)
  opt = optim.make_optimizer(OPT)
  shardings = train_state.state_shardings(obj, opt, mesh)
  state = train_state.create_train_state(obj, opt, shardings, params=params, frozen=frozen,
                                         rng=jax.random.key(0))
  step = train_step.make_train_step(obj, opt, microbatches, shardings,
                                    schedule=optim.make_schedule(OPT))
  return state, step


def one_device_mesh():
  return parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])


def test_step_compiles_once_over_many_steps_and_donates_a_sharded_state(model):
  mesh = parallel.make_mesh((2, 2, 2))
  obj = CountingObjective(objectives.make_objective("weighted_nll", model), [])
  opt = optim.make_optimizer(OPT)
  shardings = train_state.state_shardings(obj, opt, mesh)
  state = train_state.create_train_state(obj, opt, shardings, rng=jax.random.key(0))
  step = train_step.make_train_step(obj, opt, 2, shardings)
  old = state.params["model"]["embedder"]["input_embedding"]
  losses = []
  for i in range(12):
    # As in the loop: host batches become global arrays first.
    state, metrics = step(state, parallel.global_batch(nll_batch(8, 16, seed=i), mesh))
    losses.append(float(metrics["loss"]))
  # One trace for the step's eval_shape of the microbatch and one inside the scan body.
  assert len(obj.traces) == 2
  assert step.jitted._cache_size() == 1
  assert int(state.step) == 12 and len(set(losses)) == 12
  # No hidden host<->device copies inside the step (the guard is part of jit's cache key, so
  # this one call traces again).
  batch = parallel.global_batch(nll_batch(8, 16, seed=12), mesh)
  with jax.transfer_guard("disallow"):
    state, _ = step(state, batch)
  assert old.is_deleted()  # donated: the update happens in place
  emb = state.params["model"]["embedder"]["input_embedding"]
  assert emb.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  mu = state.opt_state[1][0].mu["model"]["embedder"]["input_embedding"]
  assert mu.sharding == emb.sharding


def ragged_batch(rows, seed):
  """Ragged rows, negative weights on some, one microbatch much lighter than another."""
  batch = nll_batch(rows, 16, seed=seed)
  batch["loss_weight"][0, 1:] = 0.0
  batch["loss_weight"][2, :] *= 3.0
  return batch


def test_one_by_eight_and_eight_by_one_microbatching_give_the_same_update(model, model_params):
  mesh = one_device_mesh()
  batch = ragged_batch(8, seed=3)
  results = []
  for m in (1, 8):
    state, step = setup(model, mesh, microbatches=m, params={"model": model_params})
    state, metrics = step(state, batch)
    results.append((jax.device_get(state.params), jax.device_get(metrics)))
  (p1, m1), (p8, m8) = results
  for k in ("loss", "weight", "grad_norm", "nll", "accuracy"):
    np.testing.assert_allclose(m1[k], m8[k], rtol=1e-5, err_msg=k)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p8)
  # Divided once by the total weight: the full-batch ratio, not a mean of microbatch means.
  obj = objectives.make_objective("weighted_nll", model)
  full = jax.jit(obj.loss)({"model": model_params}, batch, jax.random.key(0))
  np.testing.assert_allclose(m8["loss"], full.total / full.weight, rtol=1e-5)
  assert float(m8["weight"]) == float(full.weight)


def test_one_and_eight_devices_agree(model):
  """1 device without microbatches vs a (2, 2, 2) mesh with 2 microbatches: same steps."""
  batch = ragged_batch(16, seed=5)
  out = []
  for mesh, m in ((one_device_mesh(), 1), (parallel.make_mesh((2, 2, 2)), 2)):
    state, step = setup(model, mesh, microbatches=m)
    state, m1 = step(state, batch)
    state, m2 = step(state, batch)
    out.append([jax.device_get(m) for m in (m1, m2)] + [jax.device_get(state.params)])
  for a, b in zip(out[0][:2], out[1][:2]):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5)
    np.testing.assert_allclose(a["grad_norm"], b["grad_norm"], rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               out[0][2], out[1][2])


def test_microbatch_rows_must_divide_the_data_devices(model):
  state, step = setup(model, parallel.make_mesh((2, 2, 2)), microbatches=4)
  with pytest.raises(ValueError, match=r"has 8 rows: it must split into 4 microbatches"):
    step(state, nll_batch(8, 16))


def test_bfloat16_compute_keeps_float32_master_weights(model, model_params):
  bf16 = gemma2.make_model(presets.get_preset("test"), dtype=jnp.bfloat16)
  batch = nll_batch(8, 16, seed=6)
  state, step = setup(bf16, one_device_mesh(), params={"model": model_params})
  state, metrics = step(state, batch)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.params))
  obj = objectives.make_objective("weighted_nll", model)
  full = jax.jit(obj.loss)({"model": model_params}, batch, jax.random.key(0))
  f32_loss = float(full.total / full.weight)
  np.testing.assert_allclose(metrics["loss"], f32_loss, rtol=2e-2)
  assert float(metrics["loss"]) != f32_loss  # really computed in bfloat16


def test_dpo_step_keeps_the_reference_frozen(model, model_params):
  rows, length = 8, 12
  b = nll_batch(2 * rows, length, seed=7)
  batch = {"tokens": b["tokens"].reshape(rows, 2, length),
           "positions": b["positions"].reshape(rows, 2, length),
           "loss_mask": (b["loss_weight"] != 0).astype(np.float32).reshape(rows, 2, length)}
  state, step = setup(model, parallel.make_mesh((2, 2, 2)), "dpo", microbatches=2,
                      params={"model": model_params}, frozen={"reference": model_params})
  losses = []
  for _ in range(3):  # the first step has learning rate 0 (warmup from 0)
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  np.testing.assert_allclose(losses[0], np.log(2), rtol=1e-5)  # policy == reference at step 0
  assert losses[2] < losses[0]
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.frozen["reference"]),
               jax.device_get(model_params))


def test_scalar_head_step_initialises_and_trains_the_head(model, model_params):
  from wcse_jax.training.objectives import scalar_head
  b = nll_batch(8, 12, seed=8)
  labels = (np.arange(8) % 4 == 0).astype(np.float32)
  batch = {"tokens": b["tokens"], "positions": b["positions"],
           "score_index": scalar_head.last_token_index(b["positions"]), "target": labels,
           "example_weight": scalar_head.balanced_weights(labels)}
  state, step = setup(model, parallel.make_mesh((2, 2, 2)), "scalar_head", microbatches=2,
                      params={"model": model_params})
  head0 = jax.device_get(state.params["head"])
  losses = []
  for _ in range(5):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  assert losses[-1] < losses[0]
  assert not np.allclose(head0["dense"]["kernel"],
                         jax.device_get(state.params["head"])["dense"]["kernel"])


def test_create_train_state_errors_name_the_trees(model):
  obj = objectives.make_objective("dpo", model)
  opt = optim.make_optimizer(OPT)
  shardings = train_state.state_shardings(obj, opt, one_device_mesh())
  with pytest.raises(ValueError, match=r"unknown parameter trees \['head'\]"):
    train_state.create_train_state(obj, opt, shardings, params={"head": {}})
  with pytest.raises(ValueError, match=r"frozen trees must be \['reference'\]"):
    train_state.create_train_state(obj, opt, shardings, rng=jax.random.key(0))


def test_weight_decay_mask_and_schedule(model_params):
  mask = optim.decay_mask({"model": model_params, "head": {"dense": {"kernel": 0, "bias": 0}}})
  flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
  assert not flat["['model']['embedder']['input_embedding']"]
  assert not flat["['model']['final_norm']['scale']"]
  assert not flat["['head']['dense']['bias']"]
  assert flat["['head']['dense']['kernel']"]
  assert flat["['model']['layers']['local']['mlp']['linear']"]
  assert not flat["['model']['layers']['global']['pre_ffw_norm']['scale']"]
  schedule = optim.make_schedule(optim.OptimizerConfig(learning_rate=1.0, warmup_steps=10,
                                                       total_steps=110, end_lr_fraction=0.1))
  np.testing.assert_allclose([schedule(0), schedule(5), schedule(10), schedule(60), schedule(110)],
                             [0.0, 0.5, 1.0, 0.55, 0.1], rtol=1e-5, atol=1e-7)
