"""The stage toolkit: what every experiment's stages need, public and in one place.

  make_task(cfg), make_mesh(cfg)  the configured Task and device mesh
  resolve(spec, ctx)              a model spec whose checkpoint/tokenizer say "zoo:<name>" / "zoo",
                                  made concrete from the zoo stage's folder
  load_model(spec, ctx, mesh)     resolve + loading.load (model, sharded params, tokenizer)
  text_sampler(loaded, mesh, ..)  the text API (sampling/text.py) bound to a loaded model
  generate(...)                   sample solutions of a split's problems into record shards,
                                  resumable (one shard per sampler call)
  grade_folder(...)               grade every record of a folder into fresh graded shards
  greedy_accuracy(...)            THE greedy evaluator (final-answer accuracy of one greedy
                                  solution per problem)
  sft_examples / record_examples  (prompt, completion) training examples
  train_sft(...)                  weighted NLL over shuffled epochs, through training/fit.py
  check(...)                      config validation helpers naming the key

Stage modules (zoo.py, wcse.py, ...) compose these; none of them keeps a private copy.
"""
from __future__ import annotations

import collections
import itertools
import os
import shutil
from typing import Any, Callable, Iterable, Mapping, Sequence

import jax
import ml_collections
import numpy as np

from wcse_jax import experiment, loading, parallel
from wcse_jax.data import answers, grading, records
from wcse_jax.data import prompts as prompts_lib
from wcse_jax.data import tasks
from wcse_jax.data.example import Example, Task
from wcse_jax.sampling.choosers import Chooser, Greedy
from wcse_jax.sampling.text import TextSampler
from wcse_jax.training import batching, fit, loop, objectives, optim


def make_task(cfg: ml_collections.ConfigDict) -> Task:
  """The task `cfg.task` names, with its knobs."""
  return tasks.get_task(cfg.task.name, **cfg.task.knobs)


def make_mesh(cfg: ml_collections.ConfigDict):
  """The device mesh of `cfg.mesh.shape` = (data, fsdp, tensor)."""
  return parallel.make_mesh(tuple(cfg.mesh.shape))


def examples_by_id(task: Task, split: str) -> dict[str, Example]:
  return {ex.id: ex for ex in task.examples(split)}


def resolve(spec: ml_collections.ConfigDict, ctx: experiment.Context) -> ml_collections.ConfigDict:
  """A copy of a model spec whose checkpoint "zoo:<name>" and tokenizer "zoo" point into the
  finished zoo stage's folder (recorded as an input of the calling stage)."""
  spec = ml_collections.ConfigDict(spec.to_dict())
  if str(spec.checkpoint).startswith("zoo:"):
    spec.checkpoint = os.path.join(ctx.input("zoo"), spec.checkpoint[len("zoo:"):])
  if spec.tokenizer == "zoo":
    spec.tokenizer = os.path.join(ctx.input("zoo"), "tokenizer.model")
  return spec


def load_model(spec: ml_collections.ConfigDict, ctx: experiment.Context,
               mesh) -> loading.LoadedModel:
  """The model a config spec describes, sharded over `mesh`."""
  return loading.load(resolve(spec, ctx), mesh)


def text_sampler(loaded: loading.LoadedModel, mesh, *, cache_length: int, batch_size: int,
                 rows: int = 0) -> TextSampler:
  """The text API for a loaded model: its tokenizer's EOS ends rows, `batch_size` prompts per
  sampler call, at most `cache_length` time steps (padded prompt + generated) per row, `rows`
  decode rows per process (0: one per (prompt, sample) item; TextSampler)."""
  return TextSampler(loaded.model, loaded.tokenizer, mesh=mesh, cache_length=cache_length,
                     batch_size=batch_size, rows=rows or None)


def generate(loaded: loading.LoadedModel, sampler: TextSampler, task: Task,
             examples: Sequence[Example], out_dir: str, *, num_samples: int,
             max_new_tokens: int, chooser: Chooser, seed: int, num_shots: int = 0,
             prompt_seed: int = 0, desc: str = "sample",
             max_truncated: float = 1.0) -> dict[str, Any]:
  """Samples `num_samples` solutions per example into record shards in `out_dir` (resumable).

  One record per (problem, sample): problem_id, problem_index, sample_index, model, prompt, text,
  tokens, logprobs, finish_reason, flops (sampling/text.py). A problem whose samples are all on
  disk is skipped; one that is partly there is sampled again and only its missing indices are
  written. That is exact, not approximate: sample j of problem p uses randomness derived from
  (seed, p's index, j) only, so a rerun draws the same text. Each sampler call's records are one
  shard, so a kill loses at most the call in flight. Multi-host: process i takes problems
  i, i + P, ... and writes its own shards; the call returns once every process has written its.

  Truncation is surfaced, never silent: the returned counts give the finish reasons of every
  record in `out_dir` and the share that ended at `max_new_tokens` or at the end of the cache;
  above `max_truncated` (a share) the call raises StageError naming the knob to raise.

  Returns counts: records written now and already there, FLOPs spent now, finish reasons and
  truncation rates of all the folder's records.
  """
  done = records.done_keys(out_dir)
  process, processes = jax.process_index(), jax.process_count()
  todo = [(i, ex) for i, ex in enumerate(examples)
          if i % processes == process and any((ex.id, j) not in done for j in range(num_samples))]
  texts = [prompts_lib.build_prompt(task, ex, num_shots, prompt_seed) for _, ex in todo]
  written, flops, reasons = 0, 0.0, collections.Counter()
  with records.ShardWriter(out_dir, process_index=process) as writer:
    for chunk in sampler.stream(loaded.params, texts, num_samples, max_new_tokens, chooser, seed,
                                stop=prompts_lib.stop_strings(task),
                                prompt_ids=[i for i, _ in todo], desc=f"{desc} {loaded.name}"):
      flops += chunk.flops
      for k, row in zip(chunk.indices, chunk.completions):
        index, ex = todo[k]
        for j, c in enumerate(row):
          if (ex.id, j) in done:
            continue
          reason = c.finish_reason.name.lower()
          reasons[reason] += 1
          writer.write({
              "problem_id": ex.id, "problem_index": index, "sample_index": j,
              "model": loaded.name, "prompt": texts[k], "text": c.text, "tokens": c.tokens,
              "logprobs": np.round(c.logprobs, 5), "finish_reason": reason,
              "prompt_tokens": c.prompt_tokens, "flops": c.flops})
          written += 1
      writer.flush()
  # The counts below, and every caller that reads the folder next, need all processes' shards.
  parallel.sync(f"wcse_jax:generate:{out_dir}")
  everything = collections.Counter(r["finish_reason"] for r in records.read_records(out_dir))
  total = max(sum(everything.values()), 1)
  rates = {"max_tokens_rate": everything["max_tokens"] / total,
           "out_of_cache_rate": everything["out_of_cache"] / total}
  truncated = rates["max_tokens_rate"] + rates["out_of_cache_rate"]
  if truncated > max_truncated:
    fix = ("raise the cache length (a sampling `cache_length` knob)"
           if rates["out_of_cache_rate"] >= rates["max_tokens_rate"] else
           "raise `max_new_tokens`")
    raise experiment.StageError(
        f"{loaded.name}: {truncated:.1%} of the samples in {out_dir} were cut off "
        f"({rates['max_tokens_rate']:.1%} at max_new_tokens={max_new_tokens}, "
        f"{rates['out_of_cache_rate']:.1%} at the end of the cache), above the allowed "
        f"{max_truncated:.1%}: {fix}, or raise the allowed share (`max_truncated`)")
  return {"written": written, "already_done": len(done), "flops": flops,
          "finish_reasons": dict(sorted(everything.items())), **rates}


def grade_folder(task: Task, src: str, dst: str, by_id: Mapping[str, Example],
                 judge: Callable[[list[dict]], Any] | None = None) -> list[dict]:
  """Grades every record of `src` (all processes' shards) into fresh shards in `dst`.

  Adds answer, answer_key (answers.vote_key: the canonical form majority votes use), correct,
  steps_valid, step_marks and grade_detail to each record. `judge(recs)`,
  when given, fills in `steps_valid` where the task has no step checker. Grading is cheap, so it
  is redone rather than resumed; every process grades (each needs the numbers) and process 0
  alone writes. Returns the graded records.
  """
  recs = list(records.read_records(src))
  grades = grading.grade_many(task, [by_id[r["problem_id"]] for r in recs],
                              [r["text"] for r in recs])
  for r, g in zip(recs, grades):
    r.update(answer=g.extracted, answer_key=answers.vote_key(task.answer_format, g.extracted),
             correct=g.correct, steps_valid=g.steps_valid, step_marks=list(g.step_marks),
             grade_detail=g.detail)
  if judge is not None:
    judge(recs)
  if jax.process_index() != 0:
    return recs
  shutil.rmtree(dst, ignore_errors=True)
  with records.ShardWriter(dst, prefix="graded", records_per_shard=10_000) as writer:
    writer.write_many(recs)
  return recs


def greedy_accuracy(loaded: loading.LoadedModel, sampler: TextSampler, task: Task,
                    examples: Sequence[Example], max_new_tokens: int, num_shots: int = 0,
                    desc: str = "greedy eval") -> float:
  """Share of `examples` whose greedy solution (k-shot prompt) has the right final answer."""
  prompts = [prompts_lib.build_prompt(task, ex, num_shots) for ex in examples]
  out = sampler(loaded.params, prompts, 1, max_new_tokens, Greedy(),
                stop=prompts_lib.stop_strings(task), desc=f"{desc} {loaded.name}")
  grades = grading.grade_many(task, examples, [row[0] for row in out.texts])
  return float(np.mean([g.correct for g in grades]))


def sft_examples(task: Task, examples: Iterable[Example], tokenizer) -> list[dict]:
  """(zero-shot prompt, reference solution + EOS) training examples, loss on the solution."""
  return [batching.completion_example(
      tokenizer.encode(prompts_lib.build_prompt(task, ex, 0), add_bos=True),
      tokenizer.encode(prompts_lib.target(task, ex.solution), add_eos=True))
          for ex in examples]


def record_examples(task: Task, recs: Iterable[Mapping[str, Any]], by_id: Mapping[str, Example],
                    tokenizer) -> list[dict]:
  """(zero-shot prompt, sampled text + EOS) training examples from sample records.

  Students learn zero-shot (question -> solution) whatever prompt the data was sampled with, so
  every student is trained and evaluated in the same format (papers.md §1(e)).
  """
  return [batching.completion_example(
      tokenizer.encode(prompts_lib.build_prompt(task, by_id[r["problem_id"]], 0), add_bos=True),
      tokenizer.encode(r["text"], add_eos=True))
          for r in recs]


def train_sft(model, params: Any | None, examples: Sequence[Mapping], *, mesh, workdir: str,
              steps: int, rows: int, length: int, optimizer: optim.OptimizerConfig,
              microbatches: int = 1, save_every: int | None = None,
              select: Callable[[Any], float] | None = None, seed: int = 0,
              desc: str = "train") -> fit.FitResult:
  """Weighted NLL (1 on completion tokens) over shuffled packed epochs of `examples`, via fit.

  params: the model's starting weights, or None to train from scratch (initialised from seed).
  select: scores model weights (e.g. validation accuracy) to keep the best checkpoint.
  """
  objective = objectives.make_objective("weighted_nll", model)
  source = loop.from_stream(
      lambda start: itertools.islice(batching.epochs(examples, rows, length, seed), start, None))
  return fit.fit(objective, source, mesh=mesh, optimizer=optimizer, steps=steps,
                 workdir=workdir, params=None if params is None else {"model": params},
                 microbatches=microbatches, save_every=save_every,
                 select=(lambda trees: select(trees["model"])) if select else None, seed=seed,
                 desc=desc)


def data_parallel(cfg: ml_collections.ConfigDict) -> int:
  """How many ways the configured mesh splits batch rows (the axes the "batch" rule maps to)."""
  mesh = make_mesh(cfg)
  spec = parallel.batch_sharding(mesh, 1).spec[0]
  axes = (spec,) if isinstance(spec, str) else tuple(spec or ())
  return int(np.prod([mesh.shape[a] for a in axes]))


def check_rows(cfg: ml_collections.ConfigDict, rows_key: str, microbatches_key: str) -> None:
  """rows / microbatches must be a whole multiple of the data-parallel devices."""
  rows, micro = value(cfg, rows_key), value(cfg, microbatches_key)
  try:
    devices = data_parallel(cfg)
  except ValueError:  # the mesh is for another machine (a TPU config checked on a laptop)
    return
  if rows % micro or (rows // micro) % devices:
    raise experiment.StageError(
        f"config.{rows_key}={rows} with config.{microbatches_key}={micro}: each microbatch's "
        f"rows must be a multiple of the {devices} data-parallel devices of config.mesh.shape="
        f"{tuple(cfg.mesh.shape)}; use a multiple of {micro * devices}")


def value(cfg: ml_collections.ConfigDict, key: str) -> Any:
  """The config value at dotted `key` (StageError naming it when missing)."""
  node = cfg
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise experiment.StageError(f"config key {key!r} is missing")
    node = node[part]
  return node


def check(cfg: ml_collections.ConfigDict, key: str, ok: Callable[[Any], bool],
          what: str) -> None:
  """Raises StageError `config.<key>=<value>: must be <what>` unless ok(value)."""
  v = value(cfg, key)
  try:
    good = bool(ok(v))
  except TypeError:
    good = False
  if not good:
    raise experiment.StageError(f"config.{key}={v!r}: must be {what}")


def positive(cfg: ml_collections.ConfigDict, *keys: str) -> None:
  """Each key holds an integer >= 1."""
  for key in keys:
    check(cfg, key, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
          "an integer >= 1")


def non_negative(cfg: ml_collections.ConfigDict, *keys: str) -> None:
  """Each key holds an integer >= 0."""
  for key in keys:
    check(cfg, key, lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
          "an integer >= 0")


__all__ = ["data_parallel", "check_rows", "make_task", "make_mesh", "examples_by_id", "resolve",
           "load_model", "text_sampler", "generate",
           "grade_folder", "greedy_accuracy", "sft_examples", "record_examples", "train_sft",
           "value", "check", "positive", "non_negative"]
