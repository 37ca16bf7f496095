"""One place that turns a model description from a config into (model, sharded params, tokenizer).

A model spec (ConfigDict) has:
  name        label used in records and reports (e.g. "gemma2_9b", "zoo_wc")
  preset      presets.py name; ignored for our own checkpoints, which carry their config
  checkpoint  a published Gemma 2 Flax checkpoint folder, or a folder written by `save_model`
  tokenizer   path of a SentencePiece model (Gemma's tokenizer.model, or the zoo's)
  dtype       compute dtype, "float32" or "bfloat16"

Every problem with the spec or the files it names (a missing folder or tokenizer, a folder that
is neither ours nor paired with a preset, a damaged or mismatched checkpoint) raises
files.DataError, one line naming the model and the file, and saying what to do.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from wcse_jax import checkpoints, files, parallel
from wcse_jax.models import gemma2, presets
from wcse_jax.tokenizer import Tokenizer, check_vocab

_OURS = "model_config.json"  # Marks a folder written by `save_model`.


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  name: str
  config: presets.Gemma2Config
  model: gemma2.Gemma2
  params: Any
  tokenizer: Tokenizer

  def replace_params(self, params: Any) -> "LoadedModel":
    return dataclasses.replace(self, params=params)


def save_model(folder: str, config: presets.Gemma2Config, params: Any) -> None:
  """Writes our params (orbax) with the architecture beside them, so loading needs no preset.
  The architecture comes last and atomically: its presence marks a complete folder."""
  os.makedirs(folder, exist_ok=True)
  checkpoints.save(params, os.path.join(folder, "params"))
  files.write_json(os.path.join(folder, _OURS), dataclasses.asdict(config))


def read_config(folder: str) -> presets.Gemma2Config:
  """The architecture `save_model` wrote beside the params: FileNotFoundError when the folder has
  none (it is then a published checkpoint), DataError when the file is damaged."""
  path = os.path.join(folder, _OURS)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file")
  fields = files.read_json(path)
  try:
    return presets.Gemma2Config(**fields)
  except TypeError as e:
    raise files.DataError(f"{path}: not a model config written by loading.save_model ({e}); "
                          f"restore it, or rerun the stage that wrote the model") from None


def load(spec: Any, mesh, rules=parallel.DEFAULT_RULES, remat_policy: str = "none") -> LoadedModel:
  """Loads the model a spec describes, sharded over `mesh`. `remat_policy` (gemma2.REMAT_POLICIES)
  matters only when the model is trained."""
  checkpoint = os.fspath(spec.checkpoint)
  if not os.path.isdir(checkpoint):
    raise files.DataError(f"model {spec.name!r}: checkpoint folder {checkpoint!r} not found; "
                          f"point the spec's checkpoint at an existing folder")
  ours = os.path.exists(os.path.join(checkpoint, _OURS))
  if ours:
    config = read_config(checkpoint)
  elif not spec.preset:
    raise files.DataError(
        f"model {spec.name!r}: {checkpoint} has no {_OURS} (it is not a folder written by "
        f"loading.save_model) and the spec names no preset; set the spec's preset to the "
        f"architecture of this published checkpoint ({', '.join(presets.preset_names())}), or "
        f"restore {_OURS}")
  elif spec.preset not in presets.preset_names():
    raise files.DataError(f"model {spec.name!r}: unknown preset {spec.preset!r}; known presets: "
                          f"{', '.join(presets.preset_names())}")
  else:
    config = presets.get_preset(spec.preset)
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if spec.dtype not in dtypes:
    raise files.DataError(f"model {spec.name!r}: dtype {spec.dtype!r} is not one of "
                          f"{sorted(dtypes)}")
  # The tokenizer before the params: a wrong path then fails in seconds, not after a 27B load.
  try:
    tokenizer = Tokenizer.load(os.fspath(spec.tokenizer))
    check_vocab(tokenizer, config.vocab_size, allow_padding=not ours)
  except (FileNotFoundError, ValueError) as e:
    raise files.DataError(f"model {spec.name!r}: {e}; point the spec's tokenizer at the "
                          f"model's own tokenizer.model") from None
  model = gemma2.make_model(config, dtype=dtypes[spec.dtype], remat_policy=remat_policy)
  boxed = gemma2.abstract_params(model)
  shardings = parallel.logical_shardings(boxed, mesh, rules)
  abstract = nn.meta.unbox(boxed)
  if ours:
    params_folder = os.path.join(checkpoint, "params")
    if not os.path.isdir(params_folder):
      raise files.DataError(f"model {spec.name!r}: {params_folder} not found beside {_OURS}; "
                            f"restore it, or rerun the stage that wrote the model")
    params = checkpoints.restore(params_folder, abstract, shardings)
  else:
    params = checkpoints.load_gemma(checkpoint, abstract, shardings)
  return LoadedModel(spec.name, config, model, params, tokenizer)
