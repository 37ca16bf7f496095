"""The `zoo` stage: a tokenizer and small Gemma-2-architecture base models, trained from scratch.

Stand-ins for the weak-cheap (WC) and strong-expensive (SE) models, and for a separate student,
when no official checkpoint can be downloaded. Each model is trained by SFT on the synthetic
task's reference solutions (prompt = the zero-shot question, completion = the solution + EOS),
so it knows the format and is right often but not always: drawing many solutions then matters.
Training checkpoints every `zoo.save_every` steps, so a kill resumes inside a model's training.

Output folder: tokenizer.model, one `loading.save_model` folder per model, accuracy.json with
each model's greedy accuracy on the test split, and held_out.json: the ids of the train problems
the zoo never saw (the sample stage refuses to draw solutions for any other). The section's knobs
are documented in configs/common.py (`zoo_section`), but for two that only some configs set (so
that every other config's zoo keeps its hash):
  zoo.parts        parts of a part-structured task trained on together (compositional_gsm's
                   ("q1", "q2", "pair"): single questions and composed pairs), the first
                   `held_out_problems` of each left out; absent or empty: the task as configured.
  zoo.k_shot_rows  True: train on k-shot rows (data/many_shot.py: examples laid out as a few-shot
                   prompt, as many as fit a row, unsegmented, loss on every token), so the model
                   learns to read earlier examples; packed rows with segment ids block attention
                   across examples. Absent or False: one segment per example.
"""
from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from wcse_jax import experiment, files, loading
from wcse_jax.data import many_shot, prompts, tasks
from wcse_jax.models import gemma2, presets
from wcse_jax.stages import common
from wcse_jax.tokenizer import Tokenizer, train_tokenizer
from wcse_jax.verifiers import formats
from wcse_jax.training import optim


HELD_OUT = "held_out.json"  # the train problem ids the zoo never trained on


def held_out_count(cfg: ml_collections.ConfigDict) -> int:
  """How many leading train problems the zoo leaves out: `zoo.held_out_problems`, where -1 means
  the problems the sample stage draws solutions for (`sampling.num_problems` of the train split),
  derived here at run time so an override of either knob moves both."""
  held = cfg.zoo.held_out_problems
  if held != -1:
    return held
  sampling = cfg.get("sampling")
  if sampling is None or sampling.split != "train":
    return 0
  if not sampling.num_problems:
    raise experiment.StageError(
        "config.zoo.held_out_problems=-1 holds out the sampled problems, but "
        "config.sampling.num_problems=0 samples all of train: the zoo would have nothing to "
        "train on. Set sampling.num_problems, or zoo.held_out_problems explicitly")
  return sampling.num_problems


def validate(cfg: ml_collections.ConfigDict) -> None:
  z = "zoo"
  common.positive(cfg, f"{z}.vocab_size", f"{z}.rows", f"{z}.microbatches", f"{z}.length",
                  f"{z}.eval_problems", f"{z}.max_new_tokens", f"{z}.save_every")
  common.non_negative(cfg, f"{z}.warmup_steps", "seed")
  common.check(cfg, f"{z}.held_out_problems", lambda v: isinstance(v, int) and v >= -1,
               "an integer >= 0, or -1 for the sampled problems")
  held_out_count(cfg)
  common.check_rows(cfg, f"{z}.rows", f"{z}.microbatches")
  for name in cfg.zoo.models:
    common.positive(cfg, f"{z}.models.{name}.steps")
    common.check(cfg, f"{z}.models.{name}.learning_rate", lambda v: v > 0, "> 0")
    common.check(cfg, f"{z}.models.{name}.remat", lambda v: v in gemma2.REMAT_POLICIES,
                 f"one of {sorted(gemma2.REMAT_POLICIES)}")



def trained_on(ctx, problems) -> list[str]:
  """The ids of `problems` the finished zoo stage trained on (not in its held_out.json)."""
  held_out = set(files.read_json(os.path.join(ctx.input("zoo"), HELD_OUT)))
  return [ex.id for ex in problems if ex.id not in held_out]

@experiment.stage("zoo", config_keys=("task", "zoo", "mesh", "seed", "sampling.split",
                                      "sampling.num_problems"), validate=validate)
def zoo(ctx) -> dict[str, Any]:
  cfg = ctx.config
  task = common.make_task(cfg)
  held = held_out_count(cfg)
  sources = [tasks.get_task(cfg.task.name, **{**cfg.task.knobs, "part": part})
             for part in cfg.zoo.get("parts", ())] or [task]
  everything = [t.examples("train") for t in sources]
  train = [ex for split in everything for ex in split[held:]]
  if not train:
    raise experiment.StageError(
        f"the zoo holds out {held} train problems (config.zoo.held_out_problems="
        f"{cfg.zoo.held_out_problems}), which leaves none of the {len(everything[0])} to train on")
  if ctx.is_chief:
    files.write_json(os.path.join(ctx.out, HELD_OUT),
                     [ex.id for split in everything for ex in split[:held]])
  mesh = common.make_mesh(cfg)
  tok_path = os.path.join(ctx.out, "tokenizer.model")
  if os.path.exists(tok_path):
    tokenizer = Tokenizer.load(tok_path)
  else:
    corpus = [prompts.build_prompt(task, ex, 0) + prompts.target(task, ex.solution) for ex in train]
    symbols = ()
    if cfg.zoo.verification_corpus:
      corpus += _verification_corpus(task, train)
      # One piece each, so the verdict is one token (SentencePiece writes a space as "▁").
      symbols = tuple("\u2581" + word.strip() for word in (formats.YES, formats.NO))
    tokenizer = train_tokenizer(corpus, cfg.zoo.vocab_size, tok_path,
                                user_defined_symbols=symbols)
  if cfg.zoo.get("k_shot_rows", False):  # a fresh row for each row the longest run trains on
    count = max(spec.steps for spec in cfg.zoo.models.values()) * cfg.zoo.rows
    examples = many_shot.k_shot_rows(task, train, tokenizer, cfg.zoo.length, count, cfg.seed)
  else:
    examples = common.sft_examples(task, train, tokenizer)
  test = task.examples("test")[:cfg.zoo.eval_problems]
  counts: dict[str, Any] = {"tokenizer_vocab": tokenizer.vocab_size, "train_examples": len(train),
                            "held_out_problems": held}
  accuracy = {}
  for i, (name, spec) in enumerate(sorted(cfg.zoo.models.items())):
    folder = os.path.join(ctx.out, name)
    config = presets.get_preset(spec.preset, vocab_size=tokenizer.vocab_size)
    if not os.path.exists(os.path.join(folder, "model_config.json")):
      ctx.log.info("zoo: training %s (%s, %d params) for %d steps", name, spec.preset,
                   config.param_count(), spec.steps)
      opt = optim.OptimizerConfig(learning_rate=spec.learning_rate,
                                  warmup_steps=cfg.zoo.warmup_steps, total_steps=spec.steps)
      result = common.train_sft(
          gemma2.make_model(config, remat_policy=spec.remat), None, examples, mesh=mesh,
          workdir=os.path.join(ctx.out, "train", name), steps=spec.steps, rows=cfg.zoo.rows,
          length=cfg.zoo.length, microbatches=cfg.zoo.microbatches, optimizer=opt,
          save_every=cfg.zoo.save_every, seed=cfg.seed + i, desc=f"zoo {name}")
      loading.save_model(folder, config, result.params["model"])
    loaded = loading.load(_spec(name, folder, tok_path), mesh)
    sampler = common.text_sampler(loaded, mesh, cache_length=config.max_len,
                                  batch_size=len(test))
    accuracy[name] = common.greedy_accuracy(loaded, sampler, task, test, cfg.zoo.max_new_tokens)
    counts[name] = {"preset": spec.preset, "params": config.param_count(), "steps": spec.steps,
                    "greedy_test_accuracy": accuracy[name]}
    ctx.log.info("zoo: %s greedy accuracy on %d test problems: %.1f%%", name, len(test),
                 100 * accuracy[name])
  if {"wc", "se"} <= set(accuracy) and accuracy["se"] <= accuracy["wc"]:
    ctx.log.warning("zoo: SE (%.1f%%) is not better than WC (%.1f%%): the comparison still runs, "
                    "but not in the paper's setting; more zoo.models.se.steps may fix it",
                    100 * accuracy["se"], 100 * accuracy["wc"])
  with open(os.path.join(ctx.out, "accuracy.json"), "w") as f:
    json.dump(accuracy, f, indent=1)
  print("zoo greedy test accuracy: " + ", ".join(f"{k} {v:.1%}" for k, v in accuracy.items()))
  return counts


def _verification_corpus(task, examples) -> list[str]:
  """GenRM-formatted texts, so the tokenizer learns the verification wording as pieces (a
  verifier fine-tuned from a zoo model then reads and writes it in few tokens)."""
  out = []
  for ex in examples[:500]:
    rationale = task.verification_rationale(ex, ex.solution)
    out.append(prompts.query(task, ex.question) + prompts.target(task, ex.solution)
               + formats.VERIFY_COT + rationale + formats.VERIFY + formats.YES)
    out.append(formats.VERIFY + formats.NO)
  return out


def _spec(name: str, folder: str, tokenizer: str) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(name=name, preset="", checkpoint=folder,
                                        tokenizer=tokenizer, dtype="float32"))


__all__ = ["zoo", "validate", "held_out_count", "HELD_OUT"]
