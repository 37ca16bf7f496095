"""Hugging Face Gemma 2 checkpoints load into our sharded tree and export back, exactly.

The checkpoints here are written by hand in `transformers`' layout (names, [out, in] shapes,
separate q/k/v projections, four norms per layer, optional tied lm_head) with the safetensors
package's numpy API, independently of the mapping under test. The logits-parity test against
`transformers` itself runs where torch and transformers are installed.
"""
from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from safetensors.numpy import load_file, save_file

from wcse_jax import hf_checkpoints, loading, parallel
from wcse_jax.models import gemma2, presets

# Every number differs from the defaults, so a field read from the wrong key shows up.
CONFIG = presets.get_preset("test", query_pre_attn_scalar=24, attn_softcap=20.0,
                            final_softcap=15.0, rope_base=5000.0)


def _hf_config(cfg: presets.Gemma2Config, vocab: int) -> dict:
  """config.json as transformers 4.4x writes it for Gemma 2."""
  return {"architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2",
          "vocab_size": vocab, "hidden_size": cfg.embed_dim,
          "intermediate_size": cfg.hidden_dim, "num_hidden_layers": cfg.num_layers,
          "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads,
          "head_dim": cfg.head_dim, "hidden_act": "gelu_pytorch_tanh",
          "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": cfg.max_len,
          "rms_norm_eps": 1e-6, "rope_theta": cfg.rope_base, "attention_bias": False,
          "query_pre_attn_scalar": cfg.query_pre_attn_scalar or cfg.head_dim,
          "sliding_window": cfg.sliding_window, "attn_logit_softcapping": cfg.attn_softcap,
          "final_logit_softcapping": cfg.final_softcap, "tie_word_embeddings": True,
          "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "torch_dtype": "float32"}


def _hf_tensors(cfg: presets.Gemma2Config, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  normal = lambda *shape, std=0.2: (std * rng.standard_normal(shape)).astype(np.float32)
  d, n, k, h, f = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.hidden_dim
  out = {"model.embed_tokens.weight": normal(vocab, d, std=1.0)}
  for i in range(cfg.num_layers):
    pre = f"model.layers.{i}."
    out.update({
        pre + "self_attn.q_proj.weight": normal(n * h, d),
        pre + "self_attn.k_proj.weight": normal(k * h, d),
        pre + "self_attn.v_proj.weight": normal(k * h, d),
        pre + "self_attn.o_proj.weight": normal(d, n * h),
        pre + "mlp.gate_proj.weight": normal(f, d),
        pre + "mlp.up_proj.weight": normal(f, d),
        pre + "mlp.down_proj.weight": normal(d, f),
        **{pre + f"{norm}.weight": normal(d) for norm in (
            "input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
            "post_feedforward_layernorm")}})
  out["model.norm.weight"] = normal(d)
  return out


def _write_hf(folder, tensors: dict, config: dict, files: int = 1) -> None:
  """save_pretrained's layout: one model.safetensors, or `files` shards plus the index."""
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config, f)
  names = list(tensors)
  if files == 1:
    save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    return
  weight_map = {}
  for k, chunk in enumerate(np.array_split(np.array(names), files)):
    file = f"model-{k + 1:05d}-of-{files:05d}.safetensors"
    save_file({n: tensors[n] for n in chunk}, os.path.join(folder, file),
              metadata={"format": "pt"})
    weight_map.update({n: file for n in chunk})
  with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)


@pytest.fixture
def hf_folder(tmp_path):
  tensors = _hf_tensors(CONFIG, CONFIG.vocab_size)
  _write_hf(tmp_path / "hf", tensors, _hf_config(CONFIG, CONFIG.vocab_size), files=3)
  return tmp_path / "hf", tensors


def _leaves(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_load_places_every_hf_tensor(hf_folder):
  folder, t = hf_folder
  params = hf_checkpoints.load_hf(folder, CONFIG)
  n, k, h, d = CONFIG.num_heads, CONFIG.num_kv_heads, CONFIG.head_dim, CONFIG.embed_dim
  layer = lambda i, name: t[f"model.layers.{i}.{name}"]
  local, glob = params["layers"]["local"], params["layers"]["global"]
  # Layer 3 is the second pair's global layer, layer 2 its local one.
  np.testing.assert_array_equal(glob["attn"]["q_einsum"]["w"][1],
                                layer(3, "self_attn.q_proj.weight").reshape(n, h, d)
                                .transpose(0, 2, 1))
  kv = local["attn"]["kv_einsum"]["w"][1]
  np.testing.assert_array_equal(kv[0], layer(2, "self_attn.k_proj.weight").reshape(k, h, d)
                                .transpose(0, 2, 1))
  np.testing.assert_array_equal(kv[1], layer(2, "self_attn.v_proj.weight").reshape(k, h, d)
                                .transpose(0, 2, 1))
  np.testing.assert_array_equal(glob["attn"]["attn_vec_einsum"]["w"][0],
                                layer(1, "self_attn.o_proj.weight").T.reshape(n, h, d))
  gating = local["mlp"]["gating_einsum"][0]
  np.testing.assert_array_equal(gating[0], layer(0, "mlp.gate_proj.weight").T)
  np.testing.assert_array_equal(gating[1], layer(0, "mlp.up_proj.weight").T)
  np.testing.assert_array_equal(glob["mlp"]["linear"][1], layer(3, "mlp.down_proj.weight").T)
  for ours, theirs in [("pre_attention_norm", "input_layernorm"),
                       ("post_attention_norm", "post_attention_layernorm"),
                       ("pre_ffw_norm", "pre_feedforward_layernorm"),
                       ("post_ffw_norm", "post_feedforward_layernorm")]:
    np.testing.assert_array_equal(local[ours]["scale"][1], layer(2, theirs + ".weight"))
  np.testing.assert_array_equal(params["final_norm"]["scale"], t["model.norm.weight"])
  np.testing.assert_array_equal(params["embedder"]["input_embedding"],
                                t["model.embed_tokens.weight"])


def test_transposed_gating_and_bfloat16_files(tmp_path):
  config = presets.get_preset("test", transpose_gating=True)
  tensors = _hf_tensors(config, config.vocab_size)
  bf16 = {k: v.astype(jnp.bfloat16) for k, v in tensors.items()}
  _write_hf(tmp_path / "hf", bf16, _hf_config(config, config.vocab_size))
  params = hf_checkpoints.load_hf(tmp_path / "hf", config)
  gating = params["layers"]["global"]["mlp"]["gating_einsum"]
  assert gating.dtype == jnp.float32
  np.testing.assert_array_equal(
      gating[0, 1], bf16["model.layers.1.mlp.up_proj.weight"].astype(np.float32))


def test_round_trip_is_exact_and_files_are_standard_safetensors(hf_folder, tmp_path):
  folder, tensors = hf_folder
  params = hf_checkpoints.load_hf(folder, CONFIG)
  files = hf_checkpoints.export_hf(params, CONFIG, tmp_path / "out", max_shard_bytes=20_000)
  assert len(files) > 1
  with open(tmp_path / "out" / "model.safetensors.index.json") as f:
    weight_map = json.load(f)["weight_map"]
  assert set(weight_map) == set(tensors) and set(weight_map.values()) == set(files)
  written = {}
  for file in files:
    written.update(load_file(str(tmp_path / "out" / file)))
  assert set(written) == set(tensors)
  for name, value in tensors.items():
    np.testing.assert_array_equal(written[name], value, err_msg=name)
  with open(tmp_path / "out" / "config.json") as f:
    assert hf_checkpoints.config_from_hf(json.load(f), name=CONFIG.name) == CONFIG
  again = hf_checkpoints.load_hf(tmp_path / "out", CONFIG)
  for key, value in _leaves(params).items():
    np.testing.assert_array_equal(_leaves(again)[key], value, err_msg=key)


def test_sharded_restore_equals_single_device(hf_folder):
  folder, _ = hf_folder
  boxed = gemma2.abstract_params(gemma2.make_model(CONFIG))
  shardings = parallel.logical_shardings(boxed, parallel.make_mesh((2, 2, 2)))
  sharded = hf_checkpoints.load_hf(folder, CONFIG, shardings)
  single = _leaves(hf_checkpoints.load_hf(folder, CONFIG))
  for (path, x), sharding in zip(jax.tree_util.tree_flatten_with_path(sharded)[0],
                                 jax.tree.leaves(shardings)):
    assert x.sharding == sharding, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(x), single[jax.tree_util.keystr(path)])
  q = sharded["layers"]["local"]["attn"]["q_einsum"]["w"]
  assert len({str(s.index) for s in q.addressable_shards}) > 1  # really split, not replicated


def test_vocab_padding_on_load_and_truncation_on_export(tmp_path):
  tensors = _hf_tensors(CONFIG, 48)
  _write_hf(tmp_path / "hf", tensors, _hf_config(CONFIG, 48))
  params = hf_checkpoints.load_hf(tmp_path / "hf", CONFIG)  # 64 rows: 16 of padding
  table = np.asarray(params["embedder"]["input_embedding"])
  np.testing.assert_array_equal(table[:48], tensors["model.embed_tokens.weight"])
  assert not table[48:].any()
  hf_checkpoints.export_hf(params, CONFIG, tmp_path / "out", vocab_size=48)
  written = load_file(str(tmp_path / "out" / "model.safetensors"))
  np.testing.assert_array_equal(written["model.embed_tokens.weight"], table[:48])
  with pytest.raises(ValueError, match="vocab_size=48, more than the model 'test'"):
    hf_checkpoints.load_hf(tmp_path / "hf", dataclasses.replace(CONFIG, vocab_size=32))


def test_published_vocab_exports_as_hf_rows(tmp_path):
  config = presets.get_preset("test", vocab_size=hf_checkpoints.PADDED_GEMMA_VOCAB,
                              embed_dim=8, num_heads=2, num_kv_heads=1, head_dim=4,
                              hidden_dim=8)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda a: rng.standard_normal(a.shape, np.float32),
                        nn.meta.unbox(gemma2.abstract_params(gemma2.make_model(config))))
  hf_checkpoints.export_hf(params, config, tmp_path / "out")
  with open(tmp_path / "out" / "config.json") as f:
    assert json.load(f)["vocab_size"] == hf_checkpoints.HF_GEMMA_VOCAB
  back = hf_checkpoints.load_hf(tmp_path / "out", config)
  table = np.asarray(params["embedder"]["input_embedding"])
  np.testing.assert_array_equal(back["embedder"]["input_embedding"][:256_000], table[:256_000])
  assert not np.asarray(back["embedder"]["input_embedding"][256_000:]).any()


def test_wrong_shape_names_the_tensor_and_both_shapes(tmp_path):
  tensors = _hf_tensors(CONFIG, CONFIG.vocab_size)
  tensors["model.layers.2.self_attn.k_proj.weight"] = np.zeros((48, 32), np.float32)
  _write_hf(tmp_path / "hf", tensors, _hf_config(CONFIG, CONFIG.vocab_size))
  with pytest.raises(ValueError, match=r"tensor model\.layers\.2\.self_attn\.k_proj\.weight has "
                                       r"shape \(48, 32\), the model expects \(32, 32\)"):
    hf_checkpoints.load_hf(tmp_path / "hf", CONFIG)


def test_missing_and_extra_tensors_are_named(tmp_path):
  tensors = _hf_tensors(CONFIG, CONFIG.vocab_size)
  del tensors["model.layers.3.mlp.down_proj.weight"]
  _write_hf(tmp_path / "missing", tensors, _hf_config(CONFIG, CONFIG.vocab_size), files=2)
  with pytest.raises(ValueError, match=r"no tensor model\.layers\.3\.mlp\.down_proj\.weight"):
    hf_checkpoints.load_hf(tmp_path / "missing", CONFIG)
  tensors = _hf_tensors(CONFIG, CONFIG.vocab_size)
  tensors["model.layers.4.mlp.down_proj.weight"] = tensors["model.layers.3.mlp.down_proj.weight"]
  _write_hf(tmp_path / "extra", tensors, _hf_config(CONFIG, CONFIG.vocab_size))
  with pytest.raises(ValueError, match=r"no place for: \['model\.layers\.4\.mlp"):
    hf_checkpoints.load_hf(tmp_path / "extra", CONFIG)


def test_tied_lm_head_accepted_untied_refused(tmp_path):
  tensors = _hf_tensors(CONFIG, CONFIG.vocab_size)
  tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
  _write_hf(tmp_path / "tied", tensors, _hf_config(CONFIG, CONFIG.vocab_size))
  hf_checkpoints.load_hf(tmp_path / "tied", CONFIG)
  tensors["lm_head.weight"][5, 3] += 1
  _write_hf(tmp_path / "untied", tensors, _hf_config(CONFIG, CONFIG.vocab_size))
  with pytest.raises(ValueError, match="lm_head.weight differs from model.embed_tokens.weight"):
    hf_checkpoints.load_hf(tmp_path / "untied", CONFIG)


@pytest.mark.parametrize("key,value,field", [
    ("num_key_value_heads", 4, "num_kv_heads"), ("sliding_window", 8, "sliding_window"),
    ("query_pre_attn_scalar", 16, "query_pre_attn_scalar"), ("rope_theta", 1e4, "rope_base")])
def test_config_mismatch_names_the_field(hf_folder, key, value, field):
  folder, _ = hf_folder
  with open(folder / "config.json") as f:
    config = json.load(f)
  config[key] = value
  with open(folder / "config.json", "w") as f:
    json.dump(config, f)
  with pytest.raises(ValueError, match=rf"config.json has {key}={value!r} but the model 'test' "
                                       rf"has {field}="):
    hf_checkpoints.load_hf(folder, CONFIG)


def test_config_from_hf_recognises_published_sizes_and_transformers_5_keys():
  hf = _hf_config(presets.get_preset("gemma2_27b"), 256_000)
  hf["rope_parameters"] = {"rope_type": "default", "rope_theta": hf.pop("rope_theta")}
  config = hf_checkpoints.config_from_hf(hf)
  assert config == presets.get_preset("gemma2_27b", vocab_size=256_000)
  hf_checkpoints.check_hf_config(presets.get_preset("gemma2_27b"), hf)  # padded vocab is fine
  hf["hidden_activation"] = "gelu"
  with pytest.raises(ValueError, match="hidden_activation='gelu'"):
    hf_checkpoints.config_from_hf(hf)


def test_cli_converts_both_ways(hf_folder, tmp_path, capsys):
  folder, _ = hf_folder
  with pytest.raises(ValueError, match="query_pre_attn_scalar=24"):  # preset "test" scales by 16
    hf_checkpoints.main(["to-ours", str(folder), str(tmp_path / "wrong"), "--preset", "test"])
  config = presets.get_preset("test")
  tensors = _hf_tensors(config, config.vocab_size)
  _write_hf(tmp_path / "hf", tensors, _hf_config(config, config.vocab_size), files=2)
  hf_checkpoints.main(["to-ours", str(tmp_path / "hf"), str(tmp_path / "ours"), "--preset", "test"])
  assert loading.read_config(str(tmp_path / "ours")) == config
  hf_checkpoints.main(["to-hf", str(tmp_path / "ours"), str(tmp_path / "back"),
                       "--max-shard-bytes", "50000"])
  assert "wrote" in capsys.readouterr().out
  written = {}
  for file in os.listdir(tmp_path / "back"):
    if file.endswith(".safetensors"):
      written.update(load_file(str(tmp_path / "back" / file)))
  for name, value in tensors.items():
    np.testing.assert_array_equal(written[name], value, err_msg=name)


def test_cli_help_lists_both_directions(capsys):
  with pytest.raises(SystemExit):
    hf_checkpoints.main(["--help"])
  out = capsys.readouterr().out
  assert "to-ours" in out and "to-hf" in out


def test_logits_match_transformers(hf_folder, tmp_path):
  torch = pytest.importorskip("torch", reason="the parity test needs torch (the bench extra)")
  transformers = pytest.importorskip("transformers",
                                     reason="the parity test needs transformers (bench extra)")
  folder, _ = hf_folder
  tokens = np.random.default_rng(1).integers(3, CONFIG.vocab_size, (2, 11))  # > sliding window
  params = hf_checkpoints.load_hf(folder, CONFIG)
  ours = gemma2.forward(gemma2.make_model(CONFIG), params, jnp.asarray(tokens),
                        jnp.broadcast_to(jnp.arange(11), (2, 11))).logits
  for source in (folder, tmp_path / "exported"):
    if source != folder:
      hf_checkpoints.export_hf(params, CONFIG, source, max_shard_bytes=30_000)
    # The files are float32, which from_pretrained keeps by default.
    model = transformers.Gemma2ForCausalLM.from_pretrained(source, attn_implementation="eager")
    assert model.dtype == torch.float32
    with torch.no_grad():
      theirs = model(torch.as_tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=2e-4, rtol=1e-4,
                               err_msg=str(source))
    assert np.abs(theirs).max() > 5  # the soft-caps are exercised, not idle
