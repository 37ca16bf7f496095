"""Hugging Face `transformers` Gemma 2 checkpoints <-> our scanned parameter tree, both ways.

    params = load_hf("gemma-2-9b/", config, shardings)       # config.json checked against config
    export_hf(params, config, "out/", max_shard_bytes=2**30)  # sharded safetensors + index
    python -m wcse_jax.hf_checkpoints to-ours|to-hf SRC DST [--preset NAME]

An HF folder holds config.json and either model.safetensors or model-0000k-of-0000n.safetensors
shards named by model.safetensors.index.json. `Gemma2ForCausalLM`'s tensors map onto ours as
below, for layer i = 2p + k (k = 0: local sliding-window layer, our layers/local[p]; k = 1:
global, layers/global[p]); HF linear weights are [out, in]:

  model.embed_tokens.weight [V, D]                 embedder/input_embedding [V', D]
  model.layers.i.self_attn.q_proj.weight [N*H, D]   attn/q_einsum/w [N, D, H]
  model.layers.i.self_attn.{k,v}_proj.weight [K*H, D]
                                                   attn/kv_einsum/w [2, K, D, H] (keys first)
  model.layers.i.self_attn.o_proj.weight [D, N*H]   attn/attn_vec_einsum/w [N, H, D]
  model.layers.i.mlp.{gate,up}_proj.weight [F, D]   mlp/gating_einsum [2, D, F] (gate first;
                                                   [2, F, D] for presets with transpose_gating)
  model.layers.i.mlp.down_proj.weight [D, F]        mlp/linear [F, D]
  model.layers.i.input_layernorm.weight             pre_attention_norm/scale
  model.layers.i.post_attention_layernorm.weight    post_attention_norm/scale
  model.layers.i.pre_feedforward_layernorm.weight   pre_ffw_norm/scale
  model.layers.i.post_feedforward_layernorm.weight  post_ffw_norm/scale
  model.norm.weight                                 final_norm/scale

HF's Gemma RMSNorm multiplies by (1 + weight) like ours, so norm weights copy unchanged, and HF
rotates the two halves of each head like ours, so q/k rows need no permutation (the logits-parity
test against `transformers` checks both). The output layer is tied to the embedding: a checkpoint
with an `lm_head.weight` is accepted only when it equals the embedding.

Vocabulary. HF's Gemma 2 checkpoints have 256,000 embedding rows (the tokenizer's size); the
published Flax checkpoints and our gemma2_* presets have 256,128, the last 128 rows padding no
token id reaches. Loading into a model with more rows than the checkpoint fills the extra rows
with zeros (their logits are then 0, soft-capped; only the normaliser of the softmax sees them);
a model with fewer rows than the checkpoint is refused. Exporting writes the first `vocab_size`
rows: by default all of them, except that a 256,128-row table is written as HF's 256,000 rows.
Logits of the kept tokens are identical either way. A model built from config.json
(`config_from_hf`, what the CLI does) has exactly the checkpoint's rows.

Memory. Reading never loads a file: each safetensors file is memory-mapped (its format is a JSON
header followed by the raw little-endian tensors) and every device's slice of every layer is
built by `jax.make_array_from_callback`, which reads only the pages that slice needs; the layers
of a parameter are then stacked on device. Peak host memory is one layer's tensor (this host's
device slices of it) plus the OS page cache, which it can drop; device memory peaks at the model
plus one stacked parameter. (`safetensors.safe_open(..., framework="numpy")` cannot read
bfloat16 tensors, which many HF checkpoints hold: numpy has no bfloat16, and safetensors 0.8
raises "data type 'bfloat16' not understood"; the memory map reads them as jnp.bfloat16.)
Writing holds one output file's tensors at a time, so `max_shard_bytes` bounds host memory.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import struct
import sys
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding
from safetensors.numpy import save_file

from wcse_jax import checkpoints, loading, parallel
from wcse_jax.models import gemma2, presets
from wcse_jax.tokenizer import BOS_ID, EOS_ID, PAD_ID

CONFIG = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX = "model.safetensors.index.json"
HF_GEMMA_VOCAB = 256_000  # rows of HF's Gemma 2 embeddings: the tokenizer's vocabulary
PADDED_GEMMA_VOCAB = 256_128  # rows of the published Flax checkpoints and our gemma2_* presets
DEFAULT_MAX_SHARD_BYTES = 5_000_000_000  # what `save_pretrained` uses ("5GB")
_PUBLISHED = ("gemma2_2b", "gemma2_9b", "gemma2_27b")
_KINDS = ("local", "global")
_DTYPES = {"F32": np.dtype(np.float32), "BF16": np.dtype(jnp.bfloat16),
           "F16": np.dtype(np.float16)}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}
_TORCH_DTYPE_NAMES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
# config.json key -> our Gemma2Config field. query_pre_attn_scalar is compared by its effective
# value (ours may be None, meaning head_dim).
_CONFIG_FIELDS = (
    ("hidden_size", "embed_dim"), ("num_hidden_layers", "num_layers"),
    ("num_attention_heads", "num_heads"), ("num_key_value_heads", "num_kv_heads"),
    ("head_dim", "head_dim"), ("intermediate_size", "hidden_dim"),
    ("sliding_window", "sliding_window"), ("query_pre_attn_scalar", "query_pre_attn_scalar"),
    ("attn_logit_softcapping", "attn_softcap"), ("final_logit_softcapping", "final_softcap"),
    ("rope_theta", "rope_base"))


# --- config.json ---------------------------------------------------------------------------------

def read_hf_config(folder: str | os.PathLike) -> dict:
  path = os.path.join(os.fspath(folder), CONFIG)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path} not found: a Hugging Face checkpoint folder needs the "
                            "config.json written beside its safetensors files")
  with open(path) as f:
    return json.load(f)


def _hf_value(hf: dict, key: str, where: str) -> Any:
  if key == "rope_theta" and key not in hf:
    # transformers >= 5 writes the RoPE base inside rope_parameters.
    rope = hf.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
      raise ValueError(f"{where}: rope_parameters.rope_type is {rope['rope_type']!r}; Gemma 2 "
                       "(and our model) use plain RoPE ('default')")
    if "rope_theta" in rope:
      return rope["rope_theta"]
  if key not in hf:
    raise ValueError(f"{where}: config.json has no {key!r}, which a Gemma 2 config needs")
  return hf[key]


def _check_supported(hf: dict, where: str) -> None:
  """Refuses config.json settings our model does not implement, naming the key."""
  expected = {"model_type": "gemma2", "rms_norm_eps": 1e-6, "attention_bias": False,
              "tie_word_embeddings": True}
  for key, want in expected.items():
    if hf.get(key, want) != want:
      raise ValueError(f"{where}: config.json has {key}={hf[key]!r}; our Gemma 2 supports only "
                       f"{want!r}")
  activation = hf.get("hidden_activation") or hf.get("hidden_act") or "gelu_pytorch_tanh"
  if activation != "gelu_pytorch_tanh":
    raise ValueError(f"{where}: config.json has hidden_activation={activation!r}; Gemma 2's MLP "
                     "(and ours) uses the tanh-approximate GELU, 'gelu_pytorch_tanh'")
  layers = hf.get("num_hidden_layers", 0)
  alternating = [("sliding_attention", "full_attention")[i % 2] for i in range(layers)]
  if hf.get("layer_types", alternating) != alternating:
    raise ValueError(f"{where}: config.json's layer_types {hf['layer_types']} do not alternate "
                     "sliding then full attention, as our (local, global) layer pairs do")
  if hf.get("use_bidirectional_attention"):
    raise ValueError(f"{where}: config.json asks for bidirectional attention; ours is causal")
  for key in ("attn_logit_softcapping", "final_logit_softcapping"):
    if key in hf and hf[key] is None:
      raise ValueError(f"{where}: config.json has {key}=null; our Gemma 2 always soft-caps, "
                       "set it to the checkpoint's value (50.0 and 30.0 for the published ones)")


def config_from_hf(hf: dict, name: str | None = None, where: str = CONFIG
                   ) -> presets.Gemma2Config:
  """Our config for an HF config.json (a dict); vocab_size is the checkpoint's own.

  When the architecture is that of a published size the result is that preset (named after it,
  with its transpose_gating, so the tree equals the one `checkpoints.load_gemma` gives) except
  for vocab_size and max_len; otherwise it is named `name` or "gemma2_hf".
  """
  _check_supported(hf, where)
  value = lambda key: _hf_value(hf, key, where)
  head_dim = int(value("head_dim"))
  scalar = int(value("query_pre_attn_scalar"))
  fields = dict(
      num_layers=int(value("num_hidden_layers")), embed_dim=int(value("hidden_size")),
      hidden_dim=int(value("intermediate_size")), num_heads=int(value("num_attention_heads")),
      num_kv_heads=int(value("num_key_value_heads")), head_dim=head_dim,
      vocab_size=int(value("vocab_size")), sliding_window=int(value("sliding_window")),
      query_pre_attn_scalar=None if scalar == head_dim else scalar,
      attn_softcap=float(value("attn_logit_softcapping")),
      final_softcap=float(value("final_logit_softcapping")), rope_base=float(value("rope_theta")),
      max_len=int(hf.get("max_position_embeddings", 8192)))
  for preset_name in _PUBLISHED:
    preset = presets.get_preset(preset_name)
    same = {k: v for k, v in fields.items() if k not in ("vocab_size", "max_len")}
    if all(getattr(preset, k) == v for k, v in same.items()):
      return dataclasses.replace(preset, vocab_size=fields["vocab_size"],
                                 max_len=fields["max_len"])
  return presets.Gemma2Config(name=name or "gemma2_hf", **fields)


def check_hf_config(config: presets.Gemma2Config, hf: dict, where: str = CONFIG) -> None:
  """Raises ValueError naming the first config.json field that disagrees with `config`.

  Our vocabulary may be larger than the checkpoint's (the extra rows are padding, see the
  module docstring), not smaller.
  """
  theirs = config_from_hf(hf, where=where)
  for key, field in _CONFIG_FIELDS:
    ours, other = getattr(config, field), getattr(theirs, field)
    if field == "query_pre_attn_scalar":
      ours, other = ours or config.head_dim, other or theirs.head_dim
    if ours != other:
      raise ValueError(f"{where}: config.json has {key}={_hf_value(hf, key, where)!r} but the "
                       f"model {config.name!r} has {field}={ours!r}; pass the preset this "
                       "checkpoint was made for, or build the config from config.json")
  if config.vocab_size < theirs.vocab_size:
    raise ValueError(f"{where}: config.json has vocab_size={theirs.vocab_size}, more than the "
                     f"model {config.name!r}'s {config.vocab_size} embedding rows; dropping "
                     "rows would drop tokens")


def hf_config(config: presets.Gemma2Config, vocab_size: int, dtype: str = "float32") -> dict:
  """config.json for `config` in the layout `transformers` writes for Gemma 2."""
  return {
      "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
      "vocab_size": vocab_size, "hidden_size": config.embed_dim,
      "intermediate_size": config.hidden_dim, "num_hidden_layers": config.num_layers,
      "num_attention_heads": config.num_heads, "num_key_value_heads": config.num_kv_heads,
      "head_dim": config.head_dim, "hidden_activation": "gelu_pytorch_tanh",
      "max_position_embeddings": config.max_len, "rms_norm_eps": 1e-6,
      "rope_theta": config.rope_base, "attention_bias": False, "attention_dropout": 0.0,
      "query_pre_attn_scalar": config.query_pre_attn_scalar or config.head_dim,
      "sliding_window": config.sliding_window,
      "attn_logit_softcapping": config.attn_softcap,
      "final_logit_softcapping": config.final_softcap,
      "tie_word_embeddings": True, "pad_token_id": PAD_ID, "eos_token_id": EOS_ID,
      "bos_token_id": BOS_ID, "torch_dtype": dtype, "cache_implementation": "hybrid"}


# --- the tensor mapping --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Rule:
  """How HF tensors become one of our (per-layer) leaves, and back.

  Each HF tensor (`hf_shape`) is viewed as `view` and transposed by `perm` into our axes; with
  two names the results are stacked on a leading axis of 2 (kv_einsum, gating_einsum).
  """
  names: tuple[str, ...]  # HF names; "{i}" stands for the layer index
  hf_shape: tuple[int, ...]
  view: tuple[int, ...]
  perm: tuple[int, ...]

  @property
  def stacked(self) -> bool:
    return len(self.names) > 1

  def read(self, tensor: np.ndarray, index: tuple[slice, ...]) -> np.ndarray:
    """Our slice `index` (over our per-layer, per-name axes) of a memory-mapped HF tensor."""
    # Indexing the reshaped memory map is still a view: only the pages the slice covers are read.
    where = [slice(None)] * len(self.view)
    for axis, part in zip(self.perm, index):
      where[axis] = part
    return np.ascontiguousarray(tensor.reshape(self.view)[tuple(where)].transpose(self.perm))

  def write(self, ours: np.ndarray) -> np.ndarray:
    """Our per-layer leaf (one name's part of a stacked one) -> the HF tensor."""
    return np.ascontiguousarray(ours.transpose(np.argsort(self.perm)).reshape(self.hf_shape))


def _layer_rules(cfg: presets.Gemma2Config) -> dict[tuple[str, ...], _Rule]:
  """Our block leaf path -> its rule (names relative to the layer)."""
  n, k, d, h, f = cfg.num_heads, cfg.num_kv_heads, cfg.embed_dim, cfg.head_dim, cfg.hidden_dim
  norm = lambda name: _Rule((name,), (d,), (d,), (0,))
  return {
      ("attn", "q_einsum", "w"): _Rule(("self_attn.q_proj.weight",), (n * h, d), (n, h, d),
                                       (0, 2, 1)),
      ("attn", "kv_einsum", "w"): _Rule(("self_attn.k_proj.weight", "self_attn.v_proj.weight"),
                                        (k * h, d), (k, h, d), (0, 2, 1)),
      ("attn", "attn_vec_einsum", "w"): _Rule(("self_attn.o_proj.weight",), (d, n * h),
                                              (d, n, h), (1, 2, 0)),
      ("mlp", "gating_einsum"): _Rule(("mlp.gate_proj.weight", "mlp.up_proj.weight"), (f, d),
                                      (f, d), (0, 1) if cfg.transpose_gating else (1, 0)),
      ("mlp", "linear"): _Rule(("mlp.down_proj.weight",), (d, f), (d, f), (1, 0)),
      ("pre_attention_norm", "scale"): norm("input_layernorm.weight"),
      ("post_attention_norm", "scale"): norm("post_attention_layernorm.weight"),
      ("pre_ffw_norm", "scale"): norm("pre_feedforward_layernorm.weight"),
      ("post_ffw_norm", "scale"): norm("post_feedforward_layernorm.weight"),
  }


def _layer_name(rule_name: str, layer: int) -> str:
  return f"model.layers.{layer}.{rule_name}"


def _expected_tensors(cfg: presets.Gemma2Config, vocab: int) -> dict[str, tuple[int, ...]]:
  """Every HF tensor name -> shape, in the order `transformers` lists them."""
  out = {"model.embed_tokens.weight": (vocab, cfg.embed_dim)}
  rules = _layer_rules(cfg).values()
  for layer in range(cfg.num_layers):
    for rule in rules:
      out.update({_layer_name(name, layer): rule.hf_shape for name in rule.names})
  out["model.norm.weight"] = (cfg.embed_dim,)
  return out


# --- reading -------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Entry:
  path: str
  dtype: np.dtype
  shape: tuple[int, ...]
  offset: int  # of the tensor's first byte in the file


class _Tensors:
  """The tensors of an HF folder, each opened as a read-only memory map on demand."""

  def __init__(self, folder: str):
    self.folder = folder
    index_path = os.path.join(folder, INDEX)
    if os.path.isfile(index_path):
      with open(index_path) as f:
        weight_map = json.load(f)["weight_map"]
      files = sorted(set(weight_map.values()))
    elif os.path.isfile(os.path.join(folder, SINGLE_FILE)):
      weight_map, files = None, [SINGLE_FILE]
    else:
      raise FileNotFoundError(f"{folder}: neither {SINGLE_FILE} nor {INDEX}; is this a Hugging "
                              "Face checkpoint folder (save_pretrained's safetensors output)?")
    self.entries: dict[str, _Entry] = {}
    for file in files:
      self.entries.update(_read_header(os.path.join(folder, file)))
    for name, file in (weight_map or {}).items():
      if name not in self.entries:
        raise ValueError(f"{index_path} places {name} in {file}, which does not hold it")

  def shape(self, name: str) -> tuple[int, ...]:
    return self.entries[name].shape

  def where(self, name: str) -> str:
    return self.entries[name].path

  def open(self, name: str) -> np.ndarray:
    e = self.entries[name]
    return np.memmap(e.path, dtype=e.dtype, mode="r", offset=e.offset, shape=e.shape)


def _read_header(path: str) -> dict[str, _Entry]:
  """The tensor table of one safetensors file: 8 bytes of header length, then a JSON header."""
  with open(path, "rb") as f:
    (size,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(size))
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{path}: tensor {name} has dtype {info['dtype']}; Gemma weights are one "
                       f"of {sorted(_DTYPES)}")
    start, _ = info["data_offsets"]
    out[name] = _Entry(path, _DTYPES[info["dtype"]], tuple(info["shape"]), 8 + size + start)
  return out


def _check_tensors(tensors: _Tensors, cfg: presets.Gemma2Config, vocab: int) -> None:
  """Every tensor present with its shape, none left over, and any lm_head tied to the embedding."""
  expected = _expected_tensors(cfg, vocab)
  for name, shape in expected.items():
    if name not in tensors.entries:
      raise ValueError(f"{tensors.folder}: the checkpoint has no tensor {name} (config.json "
                       f"describes {cfg.num_layers} layers); is a shard file missing?")
    if tensors.shape(name) != shape:
      raise ValueError(f"{tensors.where(name)}: tensor {name} has shape {tensors.shape(name)}, "
                       f"the model expects {shape}; does config.json match the weights?")
  extra = sorted(set(tensors.entries) - set(expected) - {"lm_head.weight"})
  if extra:
    raise ValueError(f"{tensors.folder}: tensors our Gemma 2 has no place for: {extra[:5]}"
                     f"{' ...' if len(extra) > 5 else ''}")
  if "lm_head.weight" in tensors.entries:
    _check_tied(tensors)


def _check_tied(tensors: _Tensors, rows: int = 4096) -> None:
  head, embedding = tensors.open("lm_head.weight"), tensors.open("model.embed_tokens.weight")
  if head.shape != embedding.shape:
    raise ValueError(f"{tensors.where('lm_head.weight')}: lm_head.weight has shape {head.shape}, "
                     f"the embedding {embedding.shape}; Gemma 2 ties the two")
  for start in range(0, head.shape[0], rows):  # in chunks: never the whole table in memory
    if not np.array_equal(head[start:start + rows], embedding[start:start + rows]):
      raise ValueError(f"{tensors.where('lm_head.weight')}: lm_head.weight differs from "
                       "model.embed_tokens.weight (first at row block "
                       f"{start}); our Gemma 2 ties the output layer to the embedding, so an "
                       "untied checkpoint cannot be loaded")


def _normalise(index: Sequence[slice], shape: Sequence[int]) -> tuple[slice, ...]:
  return tuple(slice(*s.indices(n)) for s, n in zip(index, shape))


def _embedding(tensors: _Tensors, shape: tuple[int, ...], sharding, dtype: np.dtype) -> jax.Array:
  table = tensors.open("model.embed_tokens.weight")

  def piece(index):
    rows, cols = _normalise(index, shape)
    out = np.zeros((len(range(rows.start, rows.stop, rows.step)),
                    len(range(cols.start, cols.stop, cols.step))), dtype)
    # Rows past the checkpoint's vocabulary stay zero (padding; see the module docstring).
    kept = range(rows.start, min(rows.stop, table.shape[0]), rows.step)
    out[:len(kept)] = table[kept.start:kept.stop:rows.step, cols]
    return out
  return jax.make_array_from_callback(shape, sharding, piece)


def _per_layer_sharding(sharding):
  """A stacked parameter's sharding without its leading layers axis."""
  if isinstance(sharding, NamedSharding):
    return NamedSharding(sharding.mesh, PartitionSpec(*tuple(sharding.spec)[1:]))
  return sharding


def _stacked(tensors: _Tensors, rule: _Rule, layers: Sequence[int], shape: tuple[int, ...],
             sharding, dtype: np.dtype) -> jax.Array:
  """One stacked leaf: each layer built slice by slice on its devices, then stacked on device."""
  layer_sharding = _per_layer_sharding(sharding)
  per_layer = []
  for layer in layers:
    mapped = [tensors.open(_layer_name(name, layer)) for name in rule.names]

    def piece(index, mapped=mapped):
      index = _normalise(index, shape[1:])
      if rule.stacked:
        parts = [rule.read(mapped[c], index[1:]) for c in range(len(mapped))[index[0]]]
        return np.stack(parts).astype(dtype)
      return rule.read(mapped[0], index).astype(dtype)
    per_layer.append(jax.make_array_from_callback(shape[1:], layer_sharding, piece))
  return _stack(sharding)(*per_layer)


@functools.lru_cache(maxsize=None)
def _stack(sharding) -> Callable[..., jax.Array]:
  # One jitted stack per sharding, so the local and global layers' leaves share compilations.
  return jax.jit(lambda *xs: jnp.stack(xs), out_shardings=sharding)


def load_hf(folder: str | os.PathLike, config: presets.Gemma2Config, shardings: Any = None,
            dtype: Any = jnp.float32) -> dict:
  """Loads an HF Gemma 2 checkpoint into our scanned tree (see the module docstring).

  Args:
    folder: holds config.json and model.safetensors or its shards plus the index.
    config: our architecture; config.json must agree with it (`check_hf_config`).
    shardings: NamedShardings for our tree (`parallel.logical_shardings`); None puts every array
      on the first device.
    dtype: parameter dtype of the result, whatever the files hold.
  """
  folder = os.fspath(folder)
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"Hugging Face checkpoint folder not found: {folder}")
  hf = read_hf_config(folder)
  where = os.path.join(folder, CONFIG)
  check_hf_config(config, hf, where)
  tensors = _Tensors(folder)
  _check_tensors(tensors, config, int(hf["vocab_size"]))
  abstract = nn.meta.unbox(gemma2.abstract_params(gemma2.make_model(config)))
  if shardings is None:
    shardings = jax.tree.map(lambda _: SingleDeviceSharding(jax.devices()[0]), abstract)
  np_dtype = np.dtype(dtype)
  rules = _layer_rules(config)
  pairs = config.num_layers // 2
  out = {"embedder": {"input_embedding": _embedding(
             tensors, abstract["embedder"]["input_embedding"].shape,
             shardings["embedder"]["input_embedding"], np_dtype)},
         "final_norm": {"scale": jax.make_array_from_callback(
             (config.embed_dim,), shardings["final_norm"]["scale"],
             lambda index: np.asarray(tensors.open("model.norm.weight")[index], np_dtype))},
         "layers": {}}
  for offset, kind in enumerate(_KINDS):
    layers = [2 * p + offset for p in range(pairs)]
    block = {}
    for path, rule in rules.items():
      leaf_abstract = _get(abstract["layers"][kind], path)
      leaf_sharding = _get(shardings["layers"][kind], path)
      _set(block, path, _stacked(tensors, rule, layers, leaf_abstract.shape, leaf_sharding,
                                 np_dtype))
    out["layers"][kind] = block
  return out


def _get(tree: dict, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


# --- writing -------------------------------------------------------------------------------------

def _export_vocab(config: presets.Gemma2Config, vocab_size: int | None) -> int:
  if vocab_size is None:
    return HF_GEMMA_VOCAB if config.vocab_size == PADDED_GEMMA_VOCAB else config.vocab_size
  if not 0 < vocab_size <= config.vocab_size:
    raise ValueError(f"vocab_size {vocab_size} must be in [1, {config.vocab_size}], the model's "
                     "embedding rows")
  return vocab_size


def _check_params(params: Any, config: presets.Gemma2Config) -> None:
  """Our tree must have exactly the config's leaves and shapes."""
  abstract = nn.meta.unbox(gemma2.abstract_params(gemma2.make_model(config)))
  shapes = lambda tree: {jax.tree_util.keystr(p): tuple(x.shape) for p, x in
                         jax.tree_util.tree_flatten_with_path(tree)[0]}
  want, have = shapes(abstract), shapes(params)
  for key, shape in want.items():
    if key not in have:
      raise ValueError(f"params have no leaf {key}; is this a Gemma 2 tree of {config.name!r}?")
    if have[key] != shape:
      raise ValueError(f"params{key} has shape {have[key]}, the config {config.name!r} "
                       f"expects {shape}")
  extra = sorted(set(have) - set(want))
  if extra:
    raise ValueError(f"params have leaves a Gemma 2 tree does not: {extra[:5]}")
  for leaf in jax.tree.leaves(params):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      raise ValueError("export_hf writes from one process, and these params are spread over "
                       f"{jax.process_count()} processes; export from a single-process run "
                       "(the CLI `python -m wcse_jax.hf_checkpoints to-hf` is one)")


def _hf_items(params: dict, config: presets.Gemma2Config, vocab: int, dtype: np.dtype
              ) -> list[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]]:
  """(name, shape, producer) of every HF tensor; a producer fetches one layer's slice to host."""
  host = lambda x: np.asarray(jax.device_get(x)).astype(dtype)
  items = [("model.embed_tokens.weight", (vocab, config.embed_dim),
            lambda: host(params["embedder"]["input_embedding"][:vocab]))]
  for layer in range(config.num_layers):
    pair, kind = layer // 2, _KINDS[layer % 2]
    for path, rule in _layer_rules(config).items():
      leaf = _get(params["layers"][kind], path)
      for c, name in enumerate(rule.names):
        part = (pair, c) if rule.stacked else (pair,)
        items.append((_layer_name(name, layer), rule.hf_shape,
                      lambda leaf=leaf, rule=rule, part=part: rule.write(host(leaf[part]))))
  items.append(("model.norm.weight", (config.embed_dim,),
                lambda: host(params["final_norm"]["scale"])))
  return items


def export_hf(params: dict, config: presets.Gemma2Config, folder: str | os.PathLike, *,
              max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, dtype: Any = None,
              vocab_size: int | None = None) -> list[str]:
  """Writes our tree as an HF Gemma 2 checkpoint (`Gemma2ForCausalLM.from_pretrained` reads it).

  Args:
    params: our (unboxed) tree for `config`, on one process.
    config: its architecture; config.json is written from it.
    folder: created; must be new or empty.
    max_shard_bytes: most bytes per safetensors file (a larger single tensor gets its own file);
      one file is model.safetensors, several are model-0000k-of-0000n.safetensors plus
      model.safetensors.index.json. Host memory holds one file's tensors at a time.
    dtype: of the written tensors (e.g. jnp.bfloat16); None keeps the params' dtype.
    vocab_size: embedding rows to write; None: all, or HF's 256,000 for a 256,128-row table.
  Returns the safetensors file names written.
  """
  folder = os.fspath(folder)
  if os.path.isdir(folder) and os.listdir(folder):
    raise ValueError(f"export folder {folder} is not empty; choose a new folder (stale shards "
                     "beside a new index would be read as part of the checkpoint)")
  _check_params(params, config)
  vocab = _export_vocab(config, vocab_size)
  np_dtype = np.dtype(dtype or params["embedder"]["input_embedding"].dtype)
  if np_dtype not in _DTYPE_NAMES:
    raise ValueError(f"export dtype {np_dtype} is not one of float32, bfloat16, float16")
  items = _hf_items(params, config, vocab, np_dtype)
  shards: list[list] = [[]]
  size = 0
  for item in items:
    nbytes = int(np.prod(item[1])) * np_dtype.itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(item)
    size += nbytes
  names = ([SINGLE_FILE] if len(shards) == 1 else
           [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))])
  os.makedirs(folder, exist_ok=True)
  weight_map, total = {}, 0
  for file, shard in zip(names, shards):
    tensors = {name: produce() for name, _, produce in shard}
    # transformers refuses safetensors files whose metadata does not name a framework.
    save_file(tensors, os.path.join(folder, file), metadata={"format": "pt"})
    total += sum(t.nbytes for t in tensors.values())
    weight_map.update({name: file for name in tensors})
    del tensors
  if len(names) > 1:
    with open(os.path.join(folder, INDEX), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  with open(os.path.join(folder, CONFIG), "w") as f:
    json.dump(hf_config(config, vocab, _TORCH_DTYPE_NAMES[_DTYPE_NAMES[np_dtype]]), f, indent=2)
  return names


# --- command line --------------------------------------------------------------------------------

def _to_ours(src: str, dst: str, preset: str | None) -> None:
  hf = read_hf_config(src)
  config = config_from_hf(hf, where=os.path.join(src, CONFIG))
  if preset:
    named = presets.get_preset(preset)
    check_hf_config(named, hf, os.path.join(src, CONFIG))
    # The file's own vocabulary, so the folder loads with its tokenizer (loading.load requires
    # our folders' vocab to equal the tokenizer's).
    config = dataclasses.replace(named, vocab_size=config.vocab_size)
  mesh = parallel.make_mesh({"fsdp": -1})
  shardings = parallel.logical_shardings(gemma2.abstract_params(gemma2.make_model(config)), mesh)
  loading.save_model(dst, config, load_hf(src, config, shardings))
  print(f"wrote {dst} ({config.name}, vocab {config.vocab_size}) from {src}")


def _to_hf(src: str, dst: str, preset: str | None, dtype: str, max_shard_bytes: int,
           vocab_size: int | None) -> None:
  try:
    config, ours = loading.read_config(src), True
  except FileNotFoundError:
    ours = False
    if not preset:
      raise SystemExit(f"{src} has no model_config.json (not written by loading.save_model), so "
                       "it is read as a published Flax checkpoint: pass its --preset")
    config = presets.get_preset(preset)
  if ours and preset:
    raise SystemExit(f"{src} carries its architecture in model_config.json; --preset is only for "
                     "published Flax checkpoints")
  mesh = parallel.make_mesh({"fsdp": -1})
  boxed = gemma2.abstract_params(gemma2.make_model(config))
  shardings = parallel.logical_shardings(boxed, mesh)
  if ours:
    params = checkpoints.restore(os.path.join(src, "params"), nn.meta.unbox(boxed), shardings)
  else:
    params = checkpoints.load_gemma(src, nn.meta.unbox(boxed), shardings)
  files = export_hf(params, config, dst, max_shard_bytes=max_shard_bytes,
                    dtype=jnp.dtype(dtype), vocab_size=vocab_size)
  print(f"wrote {dst} ({len(files)} safetensors file(s), {config.name}) from {src}")


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(
      prog="python -m wcse_jax.hf_checkpoints",
      description="Convert Gemma 2 checkpoints between a Hugging Face folder (config.json + "
                  "safetensors) and our folder layout (loading.save_model: model_config.json + "
                  "orbax params). Arrays are sharded over every local device while converting.")
  sub = parser.add_subparsers(dest="command", required=True)
  ours = sub.add_parser(
      "to-ours", help="HF folder -> our folder",
      description="Reads an HF Gemma 2 folder and writes our layout. Without --preset the "
                  "architecture comes from config.json (named after the published size it "
                  "matches); with it, config.json must match the preset, field by field.")
  ours.add_argument("src", help="HF folder: config.json, model.safetensors or shards + index")
  ours.add_argument("dst", help="our folder to write")
  ours.add_argument("--preset", help=f"check config.json against this preset "
                                     f"({', '.join(presets.preset_names())})")
  to_hf = sub.add_parser(
      "to-hf", help="our folder (or a published Flax checkpoint) -> HF folder",
      description="Writes an HF Gemma 2 folder that Gemma2ForCausalLM.from_pretrained reads. SRC "
                  "is a folder written by loading.save_model, or a published Flax checkpoint "
                  "(then --preset names its size). A 256,128-row embedding is written as HF's "
                  "256,000 rows unless --vocab-size says otherwise.")
  to_hf.add_argument("src", help="our folder, or a published Flax (orbax) checkpoint folder")
  to_hf.add_argument("dst", help="HF folder to write (new or empty)")
  to_hf.add_argument("--preset", help="the preset of a published Flax checkpoint SRC")
  to_hf.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                     help="dtype of the written tensors (default: float32)")
  to_hf.add_argument("--max-shard-bytes", type=int, default=DEFAULT_MAX_SHARD_BYTES,
                     help=f"most bytes per safetensors file (default: {DEFAULT_MAX_SHARD_BYTES})")
  to_hf.add_argument("--vocab-size", type=int, help="embedding rows to write (default: all, "
                                                    "or 256000 for a 256128-row table)")
  args = parser.parse_args(argv)
  if args.command == "to-ours":
    _to_ours(args.src, args.dst, args.preset)
  else:
    _to_hf(args.src, args.dst, args.preset, args.dtype, args.max_shard_bytes, args.vocab_size)


__all__ = ["read_hf_config", "config_from_hf", "check_hf_config", "hf_config", "load_hf",
           "export_hf", "main", "HF_GEMMA_VOCAB", "PADDED_GEMMA_VOCAB", "DEFAULT_MAX_SHARD_BYTES"]


if __name__ == "__main__":
  main(sys.argv[1:])
