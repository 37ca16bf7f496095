"""The peer side of benchmarks/sampling.py: Tunix's sampler and Hugging Face `generate`.

Run by sampling.py under the peer venv's python (torch, transformers, google-tunix; see
sampling.py's docstring), one process per peer:

    python benchmarks/sampling_peers.py --peer tunix|hf --weights W.npz --presets ... \\
        --workloads ...

It builds the peer's samplers on the shared weights (and, for the ragged workload, the rows'
lengths sampling.py computed), prints the list of runs, then answers
"warmup"/"time" requests (one JSON line each on stdin, one tagged JSON line back) until stdin
closes, so that sampling.py can time every sampler of a workload in turns.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable

import numpy as np

from sampling import (BOS, RAGGED, TAG, WORKLOADS, Call, Local, batch_call, make_prompts,
                      peer_batches, presets)

# One peer call: (prompts, samples per prompt, new tokens per row, the ragged workload's
# [prompts, samples] lengths or None); a ragged batch runs to its longest row.
Batch = tuple[list[list[int]], int, int, "np.ndarray | None"]


def tunix_peer(config, tree, calls: list[Batch]) -> dict[str, Callable[[], Call]]:
  import flax
  from flax import nnx
  from tunix.generate import sampler as tunix_sampler
  from tunix.models.gemma import model as tunix_gemma

  kinds = tunix_gemma.AttentionType
  model_config = tunix_gemma.ModelConfig(
      num_layers=config.num_layers, num_embed=config.vocab_size, embed_dim=config.embed_dim,
      hidden_dim=config.hidden_dim, num_heads=config.num_heads, head_dim=config.head_dim,
      num_kv_heads=config.num_kv_heads, final_logit_softcap=config.final_softcap,
      use_post_attn_norm=True, use_post_ffw_norm=True,
      attention_types=(kinds.LOCAL_SLIDING, kinds.GLOBAL) * (config.num_layers // 2),
      attn_logits_soft_cap=config.attn_softcap, sliding_window_size=config.sliding_window)
  variables = flax.traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in tree.items()})
  # Tunix keeps its linen-to-nnx key and value maps private.
  # pylint: disable=protected-access
  model = tunix_gemma.module_from_linen_variables(
      module_factory=lambda: tunix_gemma.Gemma(model_config, rngs=nnx.Rngs(params=0)),
      variables=variables, map_key_fn=tunix_gemma._map_linen_var_names,
      assign_val_fn=tunix_gemma._assign_linen_params_to_nnx_state)
  # pylint: enable=protected-access

  class IdTokenizer:  # "text" = ids separated by spaces; Tunix adds BOS itself
    def encode(self, text, **_):
      return [int(t) for t in text.split()]

    def decode(self, ids, **_):
      return " ".join(map(str, ids))

    def bos_id(self):
      return BOS

    def eos_id(self):
      return config.vocab_size

    def pad_id(self):
      return 0

  length = max(len(p) for prompts, *_ in calls for p in prompts)
  sampler = tunix_sampler.Sampler(
      model, IdTokenizer(), tunix_sampler.CacheConfig(
          cache_size=length + max(steps for _, _, steps, _ in calls), num_layers=config.num_layers,
          num_kv_heads=config.num_kv_heads, head_dim=config.head_dim))
  texts = [([" ".join(map(str, p[1:])) for p in prompts for _ in range(samples)], steps)
           for prompts, samples, steps, _ in calls]

  def run() -> Call:
    for rows, steps in texts:
      out = sampler(rows, max_generation_steps=steps, max_prompt_length=length, temperature=1.0,
                    top_p=1.0, seed=0, eos_tokens=[config.vocab_size])
      if any(len(t) != steps for t in out.tokens):
        raise RuntimeError(f"Tunix generated {[len(t) for t in out.tokens]}, not {steps} each")
    return steps_call(calls)
  return {"Tunix sampler": run}


def hf_peer(config, tree, calls: list[Batch]) -> dict[str, Callable[[], Call]]:
  import torch
  import transformers
  hf_config = transformers.Gemma2Config(
      vocab_size=config.vocab_size, hidden_size=config.embed_dim,
      intermediate_size=config.hidden_dim, num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
      head_dim=config.head_dim,
      query_pre_attn_scalar=config.query_pre_attn_scalar or config.head_dim,
      sliding_window=config.sliding_window, final_logit_softcapping=config.final_softcap,
      attn_logit_softcapping=config.attn_softcap, rope_theta=config.rope_base,
      hidden_activation="gelu_pytorch_tanh", max_position_embeddings=config.max_len,
      pad_token_id=0, bos_token_id=BOS, eos_token_id=None, attn_implementation="eager",
      torch_dtype="float32")
  model = transformers.Gemma2ForCausalLM(hf_config).eval()
  t = lambda x: torch.from_numpy(np.ascontiguousarray(x))
  d, n, k, h = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim
  state = {"model.embed_tokens.weight": t(tree["embedder/input_embedding"]),
           "model.norm.weight": t(tree["final_norm/scale"])}
  for i in range(config.num_layers):
    get = lambda name: tree[f"layer_{i}/{name}"]
    p = f"model.layers.{i}."
    kv = get("attn/kv_einsum/w")  # [2, K, D, H]
    gate = get("mlp/gating_einsum")  # [2, D, F], or [2, F, D] where the preset transposes it
    if config.transpose_gating:
      gate = gate.transpose(0, 2, 1)
    state.update({
        p + "self_attn.q_proj.weight":
            t(get("attn/q_einsum/w").transpose(0, 2, 1).reshape(n * h, d)),
        p + "self_attn.k_proj.weight": t(kv[0].transpose(0, 2, 1).reshape(k * h, d)),
        p + "self_attn.v_proj.weight": t(kv[1].transpose(0, 2, 1).reshape(k * h, d)),
        p + "self_attn.o_proj.weight": t(get("attn/attn_vec_einsum/w").reshape(n * h, d).T),
        p + "mlp.gate_proj.weight": t(gate[0].T), p + "mlp.up_proj.weight": t(gate[1].T),
        p + "mlp.down_proj.weight": t(get("mlp/linear").T),
        p + "input_layernorm.weight": t(get("pre_attention_norm/scale")),
        p + "post_attention_layernorm.weight": t(get("post_attention_norm/scale")),
        p + "pre_feedforward_layernorm.weight": t(get("pre_ffw_norm/scale")),
        p + "post_feedforward_layernorm.weight": t(get("post_ffw_norm/scale")),
    })
  missing, unexpected = model.load_state_dict(state, strict=False)
  if unexpected or set(missing) - {"lm_head.weight"}:
    raise RuntimeError(f"HF weight mapping: missing {missing}, unexpected {unexpected}")
  model.tie_weights()
  def left_padded(prompts):  # ids and attention mask, padding on the left
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask
  inputs = [(*left_padded(prompts), samples, steps) for prompts, samples, steps, _ in calls]

  def generate(ids, mask, samples, steps) -> None:
    with torch.inference_mode():
      out = model.generate(ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                           top_p=1.0, max_new_tokens=steps, min_new_tokens=steps,
                           num_return_sequences=samples, pad_token_id=0)
    if out.shape[1] - ids.shape[1] != steps:
      raise RuntimeError(f"HF generated {out.shape[1] - ids.shape[1]} steps, not {steps}")

  def run() -> Call:
    for args in inputs:
      generate(*args)
    return steps_call(calls)

  # PyTorch's thread pool spin-waits: on a shared, loaded CPU one thread can be several times
  # faster than one per core. Pick the faster on a short probe (1 prompt of 32 tokens, 4 new).
  def probe(threads: int) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    ids, mask, _, _ = inputs[0]
    generate(ids[:1, :32], mask[:1, :32], 1, 4)
    return time.perf_counter() - start
  threads = min(sorted({os.cpu_count() or 1, 1}), key=lambda n: min(probe(n), probe(n)))
  torch.set_num_threads(threads)
  return {f"HF generate, PyTorch CPU ({threads} thread{'s' * (threads > 1)})": run}


PEERS = {"tunix": tunix_peer, "hf": hf_peer}


def steps_call(calls: list[Batch]) -> Call:
  """(tokens, idle share) of calls that each decode every row for `steps` tokens."""
  if all(lengths is None for *_, lengths in calls):
    return sum(len(prompts) * samples * steps for prompts, samples, steps, _ in calls), None
  return batch_call([lengths for *_, lengths in calls])


def peer_main(args) -> None:
  """Runs in the peer venv: builds its samplers on the shared weights, then answers
  "warmup"/"time" requests (one JSON line each on stdin) until stdin closes."""
  tree = dict(np.load(args.weights))
  cases = [(p, w) for p in args.presets for w in args.workloads]
  cases += [(p, "ragged") for p in args.ragged_presets]
  runs = {}
  for preset, workload in cases:
    config = presets.get_preset(preset)
    layers = {k.split("/", 1)[1]: v for k, v in tree.items() if k.startswith(preset + "/")}
    if workload == "ragged":
      calls = [(prompts, lengths.shape[1], int(lengths.max()), lengths) for prompts, lengths in
               peer_batches(RAGGED, config.vocab_size, tree["ragged_lengths"], args.peer_batches)]
      if not calls:
        continue  # --peer-batches 0
    else:
      count, length, samples, new = WORKLOADS[workload]
      calls = [(make_prompts(config.vocab_size, count, length), samples, new, None)]
    for name, fn in PEERS[args.peer](config, layers, calls).items():
      runs[f"{preset}/{workload}"] = Local(name, fn, compiles=args.peer != "hf")
  print(TAG + json.dumps({k: [r.name, r.compiles] for k, r in runs.items()}), flush=True)
  for line in sys.stdin:
    request = json.loads(line)
    run = runs[request["key"]]
    if request["op"] == "warmup":
      reply = {"elapsed": run.warmup()}
    else:
      elapsed, tokens, peak_mb, idle = run.timed()
      reply = {"elapsed": elapsed, "tokens": tokens, "peak_mb": peak_mb, "idle": idle}
    print(TAG + json.dumps(reply), flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--peer", required=True, choices=list(PEERS))
  parser.add_argument("--weights", required=True, help=".npz of the shared weights")
  parser.add_argument("--presets", nargs="*", required=True)
  parser.add_argument("--workloads", nargs="+", required=True, choices=list(WORKLOADS))
  parser.add_argument("--ragged-presets", nargs="*", default=[])
  parser.add_argument("--peer-batches", type=int, required=True)
  peer_main(parser.parse_args())


if __name__ == "__main__":
  main()
