"""One place that turns a model description from a config into (model, sharded params, tokenizer).

A model spec (ConfigDict) has:
  name        label used in records and reports (e.g. "gemma2_9b", "zoo_wc")
  preset      presets.py name; ignored for our own checkpoints, which carry their config
  checkpoint  a published Gemma 2 Flax checkpoint folder, or a folder written by `save_model`
  tokenizer   path of a SentencePiece model (Gemma's tokenizer.model, or the zoo's)
  dtype       compute dtype, "float32" or "bfloat16"
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from wcse_jax import checkpoints, parallel
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
  """Writes our params (orbax) with the architecture beside them, so loading needs no preset."""
  os.makedirs(folder, exist_ok=True)
  checkpoints.save(params, os.path.join(folder, "params"))
  with open(os.path.join(folder, _OURS), "w") as f:
    json.dump(dataclasses.asdict(config), f, indent=1)


def read_config(folder: str) -> presets.Gemma2Config:
  with open(os.path.join(folder, _OURS)) as f:
    return presets.Gemma2Config(**json.load(f))


def load(spec: Any, mesh, rules=parallel.DEFAULT_RULES, remat_policy: str = "none") -> LoadedModel:
  """Loads the model a spec describes, sharded over `mesh`. `remat_policy` (gemma2.REMAT_POLICIES)
  matters only when the model is trained."""
  checkpoint = os.fspath(spec.checkpoint)
  if not os.path.isdir(checkpoint):
    raise FileNotFoundError(f"model {spec.name!r}: checkpoint folder not found: {checkpoint}")
  ours = os.path.exists(os.path.join(checkpoint, _OURS))
  config = read_config(checkpoint) if ours else presets.get_preset(spec.preset)
  dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
  if spec.dtype not in dtypes:
    raise ValueError(f"model {spec.name!r}: dtype {spec.dtype!r} is not one of {sorted(dtypes)}")
  model = gemma2.make_model(config, dtype=dtypes[spec.dtype], remat_policy=remat_policy)
  boxed = gemma2.abstract_params(model)
  shardings = parallel.logical_shardings(boxed, mesh, rules)
  abstract = nn.meta.unbox(boxed)
  if ours:
    params = checkpoints.restore(os.path.join(checkpoint, "params"), abstract, shardings)
  else:
    params = checkpoints.load_gemma(checkpoint, abstract, shardings)
  tokenizer = Tokenizer.load(os.fspath(spec.tokenizer))
  check_vocab(tokenizer, config.vocab_size, allow_padding=not ours)
  return LoadedModel(spec.name, config, model, params, tokenizer)
