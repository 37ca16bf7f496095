"""Device mesh, logical-axis sharding rules, and multi-host initialisation.

Modules name *logical* axes ("embed", "heads", ...) on every parameter and on the main
activations; one short table maps them to the mesh axes ("data", "fsdp", "tensor"). The table and
the mesh come from the config, so the same model code runs on 1 CPU, 8 simulated CPU devices or a
TPU pod. Constraints are real on every platform: on CPU tests they exercise the same collectives.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axis (or axes, or None for replicated). Order does not matter; every
# logical name used by a module must appear here (see `check_rules`).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("cache_length", None),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
    ("norm", None),
)


def make_mesh(shape: Sequence[int] | Mapping[str, int],
              devices: Sequence[Any] | None = None) -> Mesh:
  """A mesh with axes ("data", "fsdp", "tensor"); one entry may be -1 to take the remainder."""
  if isinstance(shape, Mapping):
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
      raise ValueError(f"mesh: unknown axis names {sorted(unknown)}; the axes are {MESH_AXES}")
    shape = [int(shape.get(a, 1)) for a in MESH_AXES]
  shape = [int(s) for s in shape]
  if len(shape) != len(MESH_AXES):
    raise ValueError(f"mesh shape {tuple(shape)} must have {len(MESH_AXES)} entries {MESH_AXES}")
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if shape.count(-1) > 1:
    raise ValueError(f"mesh shape {tuple(shape)}: at most one axis may be -1")
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    if known <= 0 or n % known:
      raise ValueError(f"mesh shape {tuple(shape)} does not divide the {n} available devices")
    shape[shape.index(-1)] = n // known
  if any(s < 1 for s in shape) or math.prod(shape) != n:
    raise ValueError(
        f"mesh shape {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, but "
        f"{n} are available; the product of the mesh shape must equal the device count")
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def rules_from_config(rules: Sequence[Sequence[Any]] | None) -> tuple[tuple[str, Any], ...]:
  """Normalises a rules table from a config (lists become tuples); None gives the default."""
  if rules is None:
    return DEFAULT_RULES
  out = []
  for entry in rules:
    name, target = entry
    if isinstance(target, list):
      target = tuple(target)
    out.append((str(name), target))
  return tuple(out)


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Iterator[None]:
  """Makes `mesh` and `rules` current, so `nn.with_logical_constraint` inside modules is live."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def _divisible_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Mesh) -> PartitionSpec:
  """Replicates any dimension the mesh axes do not divide evenly (e.g. 4 kv heads on 8 devices)."""
  parts = []
  for dim, part in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = (part,) if isinstance(part, str) else tuple(part or ())
    size = math.prod(mesh.shape[a] for a in axes)
    parts.append(part if size and dim % size == 0 else None)
  return PartitionSpec(*parts)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
  """Sharding constraint by logical axes under the current mesh and rules (`activate`).

  Unlike a bare `with_sharding_constraint`, a dimension the mesh axes do not divide (a batch of
  1 on 8 data-parallel devices) is left unconstrained instead of failing; outside `activate` it
  is a no-op.
  """
  mesh = jax.sharding.get_abstract_mesh()
  rules = nn.get_logical_axis_rules()
  if mesh.empty or not rules:
    return x
  spec = nn.logical_to_mesh_axes(tuple(logical_axes), rules)
  return jax.lax.with_sharding_constraint(x, _divisible_spec(spec, x.shape, mesh))


def constrain_rows(x: jax.Array) -> jax.Array:
  """Constrains a [rows, ...] array to the batch sharding (rows over the data axes)."""
  return constrain(x, ("batch",) + (None,) * (x.ndim - 1))


def agree_max(*values: int) -> list[int]:
  """Element-wise max over processes, so every process pads to the same shapes."""
  local = np.asarray(values, np.int64)
  if jax.process_count() == 1:
    return [int(v) for v in local]
  return [int(v) for v in multihost_utils.process_allgather(local).max(axis=0)]


def sync(tag: str) -> None:
  """Every process waits here until all have arrived (nothing to wait for on one process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(tag)


def logical_shardings(boxed_tree: Any, mesh: Mesh,
                      rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
  """NamedShardings for a tree of `nn.LogicallyPartitioned` leaves (e.g. from
  `jax.eval_shape(init)`)."""
  logical_specs = nn.get_partition_spec(boxed_tree)
  mesh_specs = nn.logical_to_mesh(logical_specs, rules)
  shapes = jax.tree.map(lambda x: x.shape, nn.meta.unbox(boxed_tree))
  return jax.tree.map(
      lambda spec, shape: NamedSharding(mesh, _divisible_spec(spec, shape, mesh)),
      mesh_specs, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))


def check_rules(boxed_tree: Any, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
                mesh: Mesh | None = None) -> dict[str, float]:
  """Checks that every parameter's logical axes have a rule; reports how much is replicated.

  Returns {"params": total elements, "replicated": elements stored whole on every device,
  "replicated_fraction": their share}. Raises ValueError naming the first unruled parameter.
  """
  known = {name for name, _ in rules}
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed_tree, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
  total = replicated = 0
  shardings = logical_shardings(boxed_tree, mesh, rules) if mesh is not None else None
  flat_shardings = jax.tree.leaves(shardings) if shardings is not None else [None] * len(leaves)
  for (path, leaf), sharding in zip(leaves, flat_shardings):
    key = jax.tree_util.keystr(path)
    if not isinstance(leaf, nn.LogicallyPartitioned):
      raise ValueError(f"parameter {key} has no logical axis names")
    missing = [n for n in leaf.names if n is not None and n not in known]
    if missing:
      raise ValueError(f"parameter {key}: logical axes {missing} have no sharding rule; "
                       f"known axes: {sorted(known)}")
    size = math.prod(leaf.value.shape)
    total += size
    if sharding is not None and all(p is None for p in sharding.spec):
      replicated += size
    elif sharding is None and all(n is None or dict(rules).get(n) is None for n in leaf.names):
      replicated += size
  return {"params": total, "replicated": replicated,
          "replicated_fraction": replicated / max(total, 1)}


def batch_sharding(mesh: Mesh, ndim: int,
                   rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> NamedSharding:
  """Sharding of a [batch, ...] array: batch over the data axes, the rest replicated."""
  spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (ndim - 1), rules)
  return NamedSharding(mesh, spec)


def global_batch(local: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
  """Turns host-local numpy batches into global arrays sharded over the batch axes.

  On one process this is a sharded device_put; on several, each process contributes its rows.
  """
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim, rules), x)
  return jax.tree.map(put, local)


def initialize_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None,
                           cpu_collectives: str | None = None) -> None:
  """`jax.distributed.initialize`, with gloo collectives on CPU (needed for cross-process CPU
  runs)."""
  if cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
  jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                             process_id=process_id)
