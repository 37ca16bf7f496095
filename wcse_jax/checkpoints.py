"""Official Gemma 2 checkpoints <-> our scanned parameter tree, and orbax save/restore of our own.

Layouts:
- ours: {"embedder", "final_norm", "layers": {"local"|"global": block}}, every block leaf stacked
  over layer pairs (layer 2p is local[p], layer 2p+1 is global[p]);
- "nested": what `gm.nn.Transformer.init` produces: {"embedder", "final_norm", "layer_<i>": block};
- "flat": the published Flax checkpoints (Kaggle / `gm.ckpts.load_params`): one entry per module,
  {"transformer/layer_<i>/attn/q_einsum": {"w": ...},
  "transformer/layer_<i>/mlp/linear": {"w": ...},
  "transformer/embedder": {"input_embedding": ...}, ...}.

Loading restores every array straight into the sharding its slice of our tree will have, then
stacks on device, so no host ever holds a whole 27B model.

A checkpoint that cannot be read (a truncated or corrupt orbax file; orbax and tensorstore then
raise errors hundreds of lines long) or does not fit the model raises files.DataError, one line
naming the folder, the innermost cause and what to do.
"""
from __future__ import annotations

import gc
import os
import sys
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import traverse_util
from jax.sharding import NamedSharding, PartitionSpec

from wcse_jax.files import DataError

_KINDS = ("local", "global")


def _pairs(tree: dict) -> int:
  return jax.tree.leaves(tree["layers"]["local"])[0].shape[0]


def to_nested(params: dict) -> dict:
  """Our scanned tree -> the reference's per-layer tree (arrays are sliced, not copied to host)."""
  out = {"embedder": params["embedder"], "final_norm": params["final_norm"]}
  for p in range(_pairs(params)):
    for offset, kind in enumerate(_KINDS):
      out[f"layer_{2 * p + offset}"] = jax.tree.map(lambda x: x[p], params["layers"][kind])
  return out


def from_nested(nested: dict) -> dict:
  """The reference's per-layer tree -> our scanned tree (stacks layer 2p as local, 2p+1 global)."""
  num_layers = sum(k.startswith("layer_") for k in nested)
  if num_layers % 2:
    raise DataError(f"checkpoint has {num_layers} layers; Gemma 2 needs an even number")
  layers = {kind: jax.tree.map(lambda *xs: jnp.stack(xs),
                               *[nested[f"layer_{i}"] for i in range(offset, num_layers, 2)])
            for offset, kind in enumerate(_KINDS)}
  return {"embedder": nested["embedder"], "final_norm": nested["final_norm"], "layers": layers}


def nested_to_flat(nested: dict) -> dict:
  """Reference nested tree -> the published flat layout ("transformer/<module path>": {leaf})."""
  flat = traverse_util.flatten_dict(nested, sep="/")
  out: dict[str, dict] = {}
  for key, value in flat.items():
    # The MLP weights are leaves of the "mlp" scope in the nested tree but modules holding "w"
    # in the published files.
    if key.endswith(("/mlp/gating_einsum", "/mlp/linear")):
      module, leaf = key, "w"
    else:
      module, leaf = key.rsplit("/", 1)
    out.setdefault(f"transformer/{module}", {})[leaf] = value
  return out


def flat_to_nested(flat: dict) -> dict:
  entries = {}
  for module, leaves in flat.items():
    if not module.startswith("transformer/"):
      raise DataError(f"checkpoint entry {module!r} is not a Gemma 2 text-model parameter")
    module = module[len("transformer/"):]
    for leaf, value in leaves.items():
      key = module if module.endswith(("/mlp/gating_einsum", "/mlp/linear")) else f"{module}/{leaf}"
      entries[key] = value
  return traverse_util.unflatten_dict(entries, sep="/")


def _expected_flat(abstract: dict) -> dict:
  """Published-layout shapes implied by our (unboxed, abstract) tree."""
  per_layer = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), abstract["layers"])
  nested = {"embedder": abstract["embedder"], "final_norm": abstract["final_norm"]}
  for p in range(_pairs(abstract)):
    for offset, kind in enumerate(_KINDS):
      nested[f"layer_{2 * p + offset}"] = per_layer[kind]
  return nested_to_flat(nested)


def _layer_sharding(sharding: NamedSharding | None) -> NamedSharding | None:
  """The sharding of one layer's slice of a stacked parameter (drops the leading layers axis)."""
  if sharding is None:
    return None
  return NamedSharding(sharding.mesh, PartitionSpec(*tuple(sharding.spec)[1:]))


def _check_shapes(expected: dict, found: dict, path: str) -> None:
  exp_keys = [(m, l) for m in expected for l in expected[m]]
  for module, leaf in exp_keys:
    if module not in found or leaf not in found[module]:
      raise DataError(f"{path}: checkpoint has no parameter {module}/{leaf}")
    want, got = tuple(expected[module][leaf].shape), tuple(found[module][leaf].shape)
    if want != got:
      raise DataError(
          f"{path}: parameter {module}/{leaf} has shape {got}, the model expects {want}; "
          "is the checkpoint for another model size (preset) or vocabulary?")
  extra = sorted(f"{m}/{l}" for m in found for l in found[m] if (m, l) not in set(exp_keys))
  if extra:
    raise DataError(f"{path}: checkpoint has parameters the model does not: {extra[:5]}")


def load_gemma(path: str | os.PathLike, abstract: dict, shardings: dict | None = None,
               dtype: Any = jnp.float32) -> dict:
  """Loads a published Gemma 2 Flax checkpoint into our scanned tree.

  Args:
    path: the orbax checkpoint folder (e.g. `gemma2-2b/` from Kaggle).
    abstract: our unboxed abstract params (`nn.meta.unbox(gemma2.abstract_params(model))`).
    shardings: NamedShardings for our tree (`parallel.logical_shardings`); None keeps arrays on
      the default device.
    dtype: parameter dtype of the result (published weights are bfloat16).
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"Gemma checkpoint folder not found: {path}")
  checkpointer = ocp.StandardCheckpointer()
  found = _metadata(checkpointer, path)
  expected = _expected_flat(abstract)
  if "transformer/embedder" not in found:
    raise DataError(f"{path}: not a Gemma checkpoint in the published flat layout "
                    f"(top-level keys: {sorted(found)[:5]})")
  _check_shapes(expected, found, path)

  layer_shardings = None
  if shardings is not None:
    per_layer = jax.tree.map(_layer_sharding, shardings["layers"])
    nested = {"embedder": shardings["embedder"], "final_norm": shardings["final_norm"]}
    for p in range(_pairs(abstract)):
      for offset, kind in enumerate(_KINDS):
        nested[f"layer_{2 * p + offset}"] = per_layer[kind]
    layer_shardings = nested_to_flat(nested)
  target = {
      module: {leaf: jax.ShapeDtypeStruct(
          found[module][leaf].shape, found[module][leaf].dtype,
          sharding=None if layer_shardings is None else layer_shardings[module][leaf])
          for leaf in leaves}
      for module, leaves in expected.items()}
  restored = read(path, lambda: checkpointer.restore(path, target))
  stack = lambda nested: jax.tree.map(lambda x: x.astype(dtype), from_nested(nested))
  if shardings is not None:
    stack = jax.jit(stack, out_shardings=shardings)
  return stack(flat_to_nested(restored))


def export_gemma(params: dict, path: str | os.PathLike) -> None:
  """Writes our tree in the published flat layout (readable by `gm.ckpts.load_params`)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(os.fspath(path)), nested_to_flat(to_nested(params)))
  checkpointer.wait_until_finished()


def save(params: Any, path: str | os.PathLike) -> None:
  """Orbax save of our own tree (any pytree of arrays)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(os.fspath(path)), params)
  checkpointer.wait_until_finished()


def restore(path: str | os.PathLike, abstract: Any, shardings: Any = None) -> Any:
  """Orbax restore of our own tree, straight into `shardings` when given."""
  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint folder not found: {path}")
  if shardings is None:
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), abstract)
  else:
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, shardings)
  found = _metadata(ocp.StandardCheckpointer(), path)
  want = traverse_util.flatten_dict(jax.tree.map(lambda x: x.shape, abstract,
                                                 is_leaf=lambda x: hasattr(x, "shape")), sep="/")
  have = traverse_util.flatten_dict(jax.tree.map(lambda x: tuple(x.shape), found,
                                                 is_leaf=lambda x: hasattr(x, "shape")), sep="/")
  for key, shape in want.items():
    if key not in have:
      raise DataError(f"{path}: checkpoint has no parameter {key}")
    if tuple(shape) != tuple(have[key]):
      raise DataError(f"{path}: parameter {key} has shape {tuple(have[key])}, "
                      f"the model expects {tuple(shape)}")
  return read(path, lambda: ocp.StandardCheckpointer().restore(path, target))


_REMEDY = "restore the folder from a copy, or delete it and rerun the stage that wrote it"


def read(path: str, fn: Callable[[], Any], remedy: str = _REMEDY) -> Any:
  """`fn()`, an orbax read of the checkpoint at `path`. A failure becomes one line: DataError
  naming `path`, the innermost cause (tensorstore's own message, e.g. "OUT_OF_RANGE: Error
  reading ... byte range") and `remedy`. Running out of memory is no damage, and passes as is."""
  try:
    return fn()
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except; orbax raises any type for a bad file
    cause = e
    while cause.__cause__ is not None:
      cause = cause.__cause__
    if isinstance(cause, (MemoryError, jax.errors.JaxRuntimeError)):
      raise
    text = (str(cause).strip().splitlines() or [""])[0]
    text = text if len(text) <= 300 else text[:300] + " ..."
    error = DataError(f"{path}: cannot be read as a checkpoint ({type(cause).__name__}: {text}); "
                      f"it is damaged, or not a checkpoint folder: {remedy}")
  # Outside the except block the orbax error is garbage. Its pending read coroutines would each
  # print a tensorstore spec (~60 lines) as an "Exception ignored" when collected: collect them
  # now, with that report silenced.
  hook = sys.unraisablehook
  sys.unraisablehook = lambda _: None
  try:
    gc.collect()
  finally:
    sys.unraisablehook = hook
  raise error


def _metadata(checkpointer: ocp.StandardCheckpointer, path: str) -> Any:
  """The tree of shapes and dtypes a checkpoint holds (DataError when it cannot be read)."""
  found = read(path, lambda: checkpointer.metadata(path))
  found = getattr(found, "item_metadata", found)
  found = getattr(found, "tree", found)
  if not isinstance(found, Mapping):  # orbax logs a warning and returns None for a bad _METADATA
    raise DataError(f"{path}: cannot be read as a checkpoint (no readable tree metadata, "
                    f"{os.path.join(path, '_METADATA')}); it is damaged, or not a checkpoint "
                    f"folder: {_REMEDY}")
  return found


__all__ = ["to_nested", "from_nested", "nested_to_flat", "flat_to_nested", "load_gemma",
           "export_gemma", "save", "restore", "read"]
