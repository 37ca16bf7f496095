"""The generative-verifier pipeline's stages (papers.md §2, §4; DESIGN §8):

solutions       the policy's samples: M per train problem (the verifiers' training data) and N_max
                per evaluation problem (the Best-of-N pools; none when eval_samples is 0), graded;
verify_data     per problem up to M correct and M incorrect train solutions, balanced; CoT
                rationales (the task's programmatic ones, or a teacher model's reference-guided
                ones kept when their verdict agrees with the label); DPO pairs;
train_verifier  GenRM direct and CoT (weighted NLL with lambda x generation SFT), the
                discriminative RM (scalar head, balanced BCE) and the DPO verifier, each through
                fit;
score           every configured verifier scores every evaluation sample (resumable, with FLOPs);
bon_eval        unbiased Best-of-N curves with bootstrap bands for every verifier, self-consistency,
                weighted self-consistency and pass@N; a table with paired differences against the
                discriminative RM; accuracy against total compute (solutions + verifications).

Text records between stages carry the question and the candidate solution, never a reference
solution: a verifier's input is built from those two alone (verifiers/base.py).
"""
from __future__ import annotations

import collections
import itertools
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from wcse_jax import checkpoints, experiment, files, loading
from wcse_jax.data import prompts, records
from wcse_jax.data import tasks as tasks_lib
from wcse_jax.models import gemma2
from wcse_jax.sampling.choosers import Temperature
from wcse_jax.sampling.score import Scorer
from wcse_jax.stages import common
from wcse_jax.training import batching, fit, loop, objectives, optim
from wcse_jax.verifiers import base, discriminative, dpo_verifier, genrm
from wcse_jax.verifiers import report as bon_report
from wcse_jax.verifiers.formats import VERIFY, VERIFY_COT, YES, NO, VerdictTokens, parse_verdict

TRAINED = ("genrm_direct", "genrm_cot", "discriminative", "dpo")
KNOWN = TRAINED + ("llm_judge",)


def eval_task(cfg: ml_collections.ConfigDict):
  """The task the Best-of-N pools come from: `eval_task` when set (easy-to-hard transfer, e.g.
  GSM8K-trained verifiers on MATH500), else the training task."""
  spec = cfg.eval_task if cfg.eval_task.name else cfg.task
  return tasks_lib.get_task(spec.name, **spec.knobs)


def _validate(cfg: ml_collections.ConfigDict) -> None:
  common.positive(cfg, "sampling.samples_per_problem",
                  "sampling.max_new_tokens", "sampling.cache_length", "sampling.batch_prompts",
                  "verify_data.per_problem", "score.votes",
                  "score.max_new_tokens", "score.chunk_problems", "bon.num_resamples")
  common.non_negative(cfg, "sampling.num_problems", "sampling.eval_problems",
                      "sampling.eval_samples", "sampling.decode_rows", "seed",
                      "verify_data.judge_shots")
  common.check(cfg, "sampling.split", lambda v: v != "test", "a training split")
  common.check(cfg, "sampling.temperature", lambda v: v > 0, "> 0")
  common.check(cfg, "verify_data.rationales", lambda v: v in ("task", "model"),
               "'task' (programmatic) or 'model' (a teacher's reference-guided rationales)")
  common.check(cfg, "score.verifiers", lambda v: v and all(n in KNOWN for n in v),
               f"a non-empty tuple of {KNOWN}")
  for name in cfg.score.verifiers:
    if name in TRAINED:
      t = f"verifiers.{name}"
      common.positive(cfg, f"{t}.steps", f"{t}.rows", f"{t}.length", f"{t}.microbatches")
      common.check(cfg, f"{t}.learning_rate", lambda v: v > 0, "> 0")
      common.check(cfg, f"{t}.remat", lambda v: v in gemma2.REMAT_POLICIES,
                   f"one of {sorted(gemma2.REMAT_POLICIES)}")
      common.check_rows(cfg, f"{t}.rows", f"{t}.microbatches")
  common.check(cfg, "bon.ns", lambda ns: all(1 <= n <= cfg.sampling.eval_samples for n in ns),
               f"a tuple of N in [1, sampling.eval_samples={cfg.sampling.eval_samples}]")


# --- solutions --------------------------------------------------------------------------------


@experiment.stage("solutions", config_keys=("task", "eval_task", "models.policy", "sampling",
                                            "mesh", "seed"), validate=_validate)
def solutions(ctx) -> dict[str, Any]:
  cfg, s = ctx.config, ctx.config.sampling
  task, evaluation, mesh = common.make_task(cfg), eval_task(cfg), common.make_mesh(cfg)
  policy = common.load_model(cfg.models.policy, ctx, mesh)
  sampler = common.text_sampler(policy, mesh, cache_length=s.cache_length,
                                batch_size=s.batch_prompts, rows=s.decode_rows)
  counts = {}
  eval_shots = s.num_shots if s.eval_num_shots < 0 else s.eval_num_shots
  for part, task_, split, n, samples, shots in (
      ("train", task, s.split, s.num_problems, s.samples_per_problem, s.num_shots),
      ("eval", evaluation, "test", s.eval_problems, s.eval_samples, eval_shots)):
    if not samples:  # no Best-of-N pool wanted (the BoN-aware fine-tuning configs)
      continue
    problems = task_.examples(split)[:n or None]
    raw, graded = os.path.join(ctx.out, part, "raw"), os.path.join(ctx.out, part, "graded")
    counts[part] = common.generate(
        policy, sampler, task_, problems, raw, num_samples=samples,
        max_new_tokens=s.max_new_tokens, chooser=Temperature(s.temperature), seed=cfg.seed,
        num_shots=shots, prompt_seed=cfg.seed, desc=f"solutions {part}",
        max_truncated=s.max_truncated)
    recs = common.grade_folder(task_, raw, graded, {ex.id: ex for ex in problems})
    counts[part].update(problems=len(problems), records=len(recs),
                        accuracy=float(np.mean([r["correct"] for r in recs])))
    ctx.log.info("solutions: %s pass@1 on %d %s problems: %.1f%%", policy.name, len(problems),
                 part, 100 * counts[part]["accuracy"])
  return counts


# --- verify_data -------------------------------------------------------------------------------

TEACHER_PROMPT = (
    "You are a math teacher. Grade the Solution, verifying correctness step by step. Use the "
    "Expected Answer to find any erroneous step in the Solution. At the end of the verification, "
    "write \"Verification: Is the answer correct (Yes/No)? X\", where X is either Yes or No.\n\n"
    "Question: {question}\n\nSolution: {solution}\n\nExpected Answer: {reference}\n\n"
    "Verification: Let's verify step by step.\n")


@experiment.stage("verify_data", config_keys=("task", "sampling", "verify_data", "models", "mesh",
                                              "seed"), validate=_validate)
def verify_data(ctx) -> dict[str, Any]:
  cfg, v = ctx.config, ctx.config.verify_data
  task = common.make_task(cfg)
  by_id = common.examples_by_id(task, cfg.sampling.split)
  graded = list(records.read_records(os.path.join(ctx.input("solutions"), "train", "graded"),
                                     prefix="graded"))
  chosen = genrm.select_balanced(graded, v.per_problem, cfg.seed, balance=v.balance)
  rows = [{"problem_id": r["problem_id"], "sample_index": r["sample_index"],
           "question": by_id[r["problem_id"]].question, "solution": r["text"],
           "label": bool(r["correct"])} for r in chosen]
  rationales = _rationales(ctx, cfg, task, by_id, rows)
  pairs = [{"problem_id": a["problem_id"], "question": by_id[a["problem_id"]].question,
            "chosen": a["text"], "rejected": b["text"]}
           for a, b in dpo_verifier.pairs(graded, v.per_problem, cfg.seed)]
  correct = [row for row in rows if row["label"]]
  if ctx.is_chief:
    for name, data in (("examples", rows), ("rationales", rationales), ("pairs", pairs)):
      with records.ShardWriter(ctx.out, prefix=name, records_per_shard=100_000) as writer:
        writer.write_many({**r, "sample_index": r.get("sample_index", i), "problem_id":
                           r["problem_id"]} for i, r in enumerate(data))
  labels = collections.Counter(r["label"] for r in rows)
  return {"examples": len(rows), "correct": labels[True], "incorrect": labels[False],
          "rationales": len(rationales), "pairs": len(pairs), "generation": len(correct)}


def _rationales(ctx, cfg, task, by_id, rows) -> list[dict]:
  """CoT rationales for the chosen solutions: the task's programmatic verification, or a
  teacher's reference-guided ones whose verdict agrees with the label (the reference appears in
  the teacher's prompt only; the verifier is never shown it)."""
  v = cfg.verify_data
  if v.rationales == "task":
    try:
      return [{"problem_id": r["problem_id"], "sample_index": r["sample_index"], "vote": 0,
               "rationale": task.verification_rationale(by_id[r["problem_id"]], r["solution"])}
              for r in rows]
    except NotImplementedError as e:
      if "genrm_cot" in cfg.score.verifiers:
        raise experiment.StageError(
            f"config.verify_data.rationales='task': {e}; GenRM-CoT needs rationales: set "
            f"verify_data.rationales='model' (a teacher's reference-guided ones)") from None
      ctx.log.info("verify_data: %s; no verifier in score.verifiers needs one", e)
      return []
  mesh = common.make_mesh(cfg)
  teacher = common.load_model(cfg.models.teacher, ctx, mesh)
  sampler = common.text_sampler(teacher, mesh, cache_length=cfg.sampling.cache_length,
                                batch_size=cfg.sampling.batch_prompts)
  prompts = [TEACHER_PROMPT.format(question=r["question"], solution=r["solution"],
                                   reference=by_id[r["problem_id"]].solution) for r in rows]
  out = sampler(teacher.params, prompts, v.teacher_votes, v.teacher_max_new_tokens,
                Temperature(cfg.sampling.temperature), seed=cfg.seed,
                prompt_ids=[genrm.candidate_key(base.Candidate(r["problem_id"], r["sample_index"],
                                                               "", "")) for r in rows],
                desc=f"rationales {teacher.name}")
  kept = []
  for r, texts in zip(rows, out.texts):
    for vote, text in enumerate(texts):
      if parse_verdict(text) is r["label"]:
        body = text[:text.rfind("Verification: Is the answer correct")].rstrip("\n")
        kept.append({"problem_id": r["problem_id"], "sample_index": r["sample_index"],
                     "vote": vote, "rationale": body})
  return kept


# --- train_verifier ----------------------------------------------------------------------------


def _read(ctx, name: str) -> list[dict]:
  return list(records.read_records(ctx.input("verify_data"), prefix=name))


@experiment.stage("train_verifier", config_keys=("task", "models", "verify_data", "verifiers",
                                                 "score.verifiers", "mesh", "seed"),
                  validate=_validate)
def train_verifier(ctx) -> dict[str, Any]:
  cfg = ctx.config
  task, mesh = common.make_task(cfg), common.make_mesh(cfg)
  rows, rationales, pairs = _read(ctx, "examples"), _read(ctx, "rationales"), _read(ctx, "pairs")
  counts = {}
  for name in [n for n in cfg.score.verifiers if n in TRAINED]:
    t = cfg.verifiers[name]
    folder = os.path.join(ctx.out, name)
    if os.path.exists(os.path.join(folder, "model_config.json")):
      counts[name] = files.read_json(os.path.join(folder, "summary.json"))
      continue
    os.makedirs(folder, exist_ok=True)
    base_model = loading.load(common.resolve(cfg.models.verifier, ctx), mesh,
                              remat_policy=t.remat)
    tok = base_model.tokenizer
    opt = optim.OptimizerConfig(learning_rate=t.learning_rate, warmup_steps=t.warmup_steps,
                                total_steps=t.steps)
    if name in ("genrm_direct", "genrm_cot"):
      examples = _genrm_examples(name, tok, task, rows, rationales, t.lambda_sft)
      objective = objectives.make_objective("weighted_nll", base_model.model)
      stream = lambda start, ex=examples, t=t: _from(
          batching.epochs(ex, t.rows, t.length, cfg.seed), start)
      frozen = None
    elif name == "discriminative":
      examples = [discriminative.example(tok, task, r["question"], r["solution"], r["label"])
                  for r in rows]
      objective = objectives.make_objective("scalar_head", base_model.model,
                                            loss_type=t.loss_type, z_loss=t.z_loss)
      stream = lambda start, ex=examples, t=t: _from(
          discriminative.batches(ex, t.rows, t.length, cfg.seed), start)
      frozen = None
    else:
      examples = [dpo_verifier.example(tok, task, p["question"], p["chosen"], p["rejected"])
                  for p in pairs]
      objective = objectives.make_objective("dpo", base_model.model, beta=t.beta)
      stream = lambda start, ex=examples, t=t: _from(
          dpo_verifier.batches(ex, t.rows, t.length, cfg.seed), start)
      frozen = {"reference": base_model.params}
    if not examples:
      # Nothing to learn from (e.g. no problem with both a correct and an incorrect solution):
      # say so in the manifest and the report rather than stopping the pipeline.
      why = f"no training examples for {name} in the verify_data stage"
      ctx.log.warning("train_verifier: %s; skipped", why)
      counts[name] = {"examples": 0, "skipped": why}
      continue
    result = fit.fit(objective, loop.from_stream(stream), mesh=mesh, optimizer=opt,
                     steps=t.steps, workdir=os.path.join(folder, "train"),
                     params={"model": base_model.params}, frozen=frozen,
                     microbatches=t.microbatches, save_every=t.save_every, seed=cfg.seed,
                     desc=f"train {name}")
    if "head" in result.params:
      checkpoints.save(result.params["head"], os.path.join(folder, "head"))
    summary = {"examples": len(examples), "steps": result.steps}
    files.write_json(os.path.join(folder, "summary.json"), summary)
    loading.save_model(folder, base_model.config, result.params["model"])
    counts[name] = summary
  return counts


def _from(iterator, start: int):
  """The batches of `iterator` from index `start` on (a resumed fit asks for them)."""
  return itertools.islice(iterator, start, None)


def _genrm_examples(name, tok, task, rows, rationales, lambda_sft: float) -> list[dict]:
  """Verification examples (direct or CoT) plus lambda-weighted generation SFT on the correct
  solutions (papers.md §2(b): L = L_SFT(D_verify) + lambda L_SFT(D_correct))."""
  verdict = VerdictTokens.of(tok)
  by_key = {(r["problem_id"], r["sample_index"]): r for r in rows}
  if name == "genrm_direct":
    out = [genrm.direct_example(tok, task, verdict, r["question"], r["solution"], r["label"])
           for r in rows]
  else:
    out = []
    for x in rationales:
      r = by_key[(x["problem_id"], x["sample_index"])]
      out.append(genrm.cot_example(tok, task, verdict, r["question"], r["solution"],
                                   x["rationale"], r["label"]))
  if lambda_sft > 0:
    out += [genrm.generation_example(tok, task, r["question"], r["solution"], lambda_sft)
            for r in rows if r["label"]]
  return out


# --- score ---------------------------------------------------------------------------------------


def make_verifier(name: str, ctx, cfg, task, mesh) -> base.Verifier:
  """The verifier `name` as the train_verifier stage left it (or, for the judge, as prompted)."""
  s = cfg.score
  if name == "llm_judge":
    loaded = common.load_model(cfg.models.judge, ctx, mesh)
  else:
    folder = os.path.join(ctx.input("train_verifier"), name)
    spec = ml_collections.ConfigDict(dict(name=name, preset="", checkpoint=folder,
                                          tokenizer=common.resolve(cfg.models.verifier,
                                                                   ctx).tokenizer,
                                          dtype=cfg.models.verifier.dtype))
    loaded = loading.load(spec, mesh)
  scorer = Scorer(loaded.model, mesh=mesh, pad_id=loaded.tokenizer.pad_id,
                  cache_length=s.cache_length, batch_rows=s.batch_rows)
  if name == "genrm_direct":
    return genrm.GenRMDirect(name, loaded, scorer, task, renormalise=s.renormalise)
  if name in ("genrm_cot", "llm_judge"):
    sampler = common.text_sampler(loaded, mesh, cache_length=s.cache_length,
                                  batch_size=cfg.sampling.batch_prompts)
    preamble = _judge_preamble(ctx, cfg, task) if name == "llm_judge" else ""
    return genrm.GenRMCoT(name, loaded, sampler, scorer, task, votes=s.votes,
                          max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                          renormalise=s.renormalise, seed=cfg.seed, preamble=preamble)
  if name == "discriminative":
    t = cfg.verifiers.discriminative
    objective = objectives.make_objective("scalar_head", loaded.model, loss_type=t.loss_type,
                                          z_loss=t.z_loss)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                            objective.init_params(jax.random.key(0))["head"])
    head = checkpoints.restore(os.path.join(ctx.input("train_verifier"), name, "head"), abstract)
    return discriminative.Discriminative(name, loaded, head, objective, scorer, task)
  return dpo_verifier.DPOVerifier(name, loaded, scorer, task)


def _judge_preamble(ctx, cfg, task) -> str:
  """Few-shot verification exemplars for the prompted judge: train solutions with their label
  and (where the task has them) programmatic rationales, written in the GenRM format."""
  rows = _read(ctx, "examples")
  rationales = {(x["problem_id"], x["sample_index"]): x["rationale"]
                for x in _read(ctx, "rationales")}
  shots = []
  rng = np.random.default_rng(cfg.seed)
  for i in sorted(rng.permutation(len(rows))[:cfg.verify_data.judge_shots]):
    r = rows[i]
    rationale = rationales.get((r["problem_id"], r["sample_index"]), "")
    shots.append(prompts.query(task, r["question"]) + prompts.target(task, r["solution"])
                 + VERIFY_COT + rationale + VERIFY + (YES if r["label"] else NO))
  return "".join(shot + "\n\n" for shot in shots)


@experiment.stage("score", config_keys=("task", "eval_task", "models", "score", "verifiers",
                                        "mesh", "seed"), validate=_validate)
def score(ctx) -> dict[str, Any]:
  cfg = ctx.config
  evaluation, mesh = eval_task(cfg), common.make_mesh(cfg)
  questions = {ex.id: ex.question for ex in evaluation.examples("test")}
  pool = list(records.read_records(os.path.join(ctx.input("solutions"), "eval", "graded"),
                                   prefix="graded"))
  trained = files.read_json(os.path.join(ctx.input("train_verifier"), experiment.MANIFEST))
  counts = {}
  for name in cfg.score.verifiers:
    skipped = trained["counts"].get(name, {}).get("skipped")
    if skipped:
      counts[name] = {"skipped": skipped}
      continue
    counts[name] = score_pool(lambda: make_verifier(name, ctx, cfg, evaluation, mesh), pool,
                              questions, os.path.join(ctx.out, name), cfg.score.chunk_problems,
                              write=ctx.is_chief)
  return counts


def score_pool(make, pool, questions, out_dir: str, chunk_problems: int,
               write: bool = True) -> dict[str, int]:
  """Scores every pool record not yet scored in `out_dir`, `chunk_problems` problems per call,
  each call's scores one shard (a kill loses at most the chunk in flight; a rerun scores exactly
  the missing records). `make()` builds the verifier, only if there is work left."""
  done = records.done_keys(out_dir, prefix="scores")
  todo = sorted({r["problem_id"] for r in pool
                 if (r["problem_id"], r["sample_index"]) not in done})
  verifier = make() if todo else None
  written = 0
  with records.ShardWriter(out_dir, process_index=jax.process_index(), prefix="scores") as w:
    for start in range(0, len(todo), chunk_problems):
      chunk = set(todo[start:start + chunk_problems])
      recs = [r for r in pool if r["problem_id"] in chunk
              and (r["problem_id"], r["sample_index"]) not in done]
      candidates = [base.Candidate(r["problem_id"], r["sample_index"], questions[r["problem_id"]],
                                   r["text"]) for r in recs]
      result = verifier.score(candidates)
      if write:
        for r, value, cost in zip(recs, result.scores, result.flops):
          w.write({"problem_id": r["problem_id"], "sample_index": r["sample_index"],
                   "verifier": verifier.name, "score": float(value), "flops": float(cost)})
        w.flush()
      written += len(recs)
  return {"written": written, "already_done": len(done)}


# --- bon_eval ------------------------------------------------------------------------------------


@experiment.stage("bon_eval", config_keys=("score.verifiers", "bon", "seed"), validate=_validate)
def bon_eval(ctx) -> dict[str, Any]:
  cfg = ctx.config
  pool = list(records.read_records(os.path.join(ctx.input("solutions"), "eval", "graded"),
                                   prefix="graded"))
  manifest = files.read_json(os.path.join(ctx.input("score"), experiment.MANIFEST))
  skipped = {name: c["skipped"] for name, c in manifest["counts"].items() if "skipped" in c}
  scored = {name: list(records.read_records(os.path.join(ctx.input("score"), name),
                                            prefix="scores"))
            for name in cfg.score.verifiers if name not in skipped}
  results = bon_report.write_report(
      ctx.out, pool=pool, scores=scored, ns=tuple(cfg.bon.ns), baseline=cfg.bon.baseline,
      weighted_top=cfg.bon.weighted_top, num_resamples=cfg.bon.num_resamples, seed=cfg.seed,
      title=cfg.bon.title, skipped=skipped)
  print(f"Best-of-N report: {os.path.join(ctx.out, 'report.md')}", flush=True)
  return {"figures": results["figures"], "verifiers": sorted(scored)}


__all__ = ["solutions", "verify_data", "train_verifier", "score", "bon_eval", "make_verifier",
           "eval_task"]
