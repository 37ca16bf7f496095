"""Compositional GSM (papers.md §9): each model's reasoning gap Δ = S_comp − S1·S2.

  python -m wcse_jax.main --config=configs/compositional_gsm.py --workdir=runs/compositional_gsm

`default`, the embedded default (CPU): a zoo of two small models (zoo_wc, zoo_se) trained on the
synthetic `compositional_gsm` task's three parts together (Q1 alone, Q2 alone with X's value
written in, and the composed pairs "Let X be the answer to Q1 ..."), then greedy accuracy of each
on the three parts of held-out test pairs, the gap with bootstrap intervals over pairs, and the
figures. `micro` is the same at CI size.

`gemma` (TPU): Gemma 2 2B, 9B and 27B, 8-shot, on pairs built from the GSM8K test file
(data/gsm8k_pairs.py; the exemplars are pairs built from the train file):

  python -m wcse_jax.main --config=configs/compositional_gsm.py:gemma --workdir=RUN \\
      --config.task.knobs.data_dir=/data/grade_school_math/data \\
      --config.models.gemma2_2b.checkpoint=/ckpt/gemma2-2b \\
      --config.models.gemma2_9b.checkpoint=/ckpt/gemma2-9b \\
      --config.models.gemma2_27b.checkpoint=/ckpt/gemma2-27b \\
      --config.models.gemma2_2b.tokenizer=/ckpt/tokenizer.model ...  (the same for all three)
"""
import ml_collections

from configs import common
from wcse_jax import config_base

VARIANTS = ("default", "micro", "gemma")


def base_config() -> ml_collections.ConfigDict:
  c = config_base.base_config()
  c.stages = ("comp_eval", "comp_report")
  c.stage_modules = ("wcse_jax.stages.compositional",)
  c.seed = 0  # Seeds the few-shot exemplar order, the bootstrap and the zoo.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices.

  c.task = ml_collections.ConfigDict()
  # "compositional_gsm" (synthetic pairs) or "gsm8k_compositional" (pairs built from GSM8K).
  c.task.name = "compositional_gsm"
  # The task's knobs but `part` (the stages evaluate q1, q2 and pair).
  c.task.knobs = ml_collections.ConfigDict()

  c.models = ml_collections.ConfigDict()  # Every model here is evaluated; name -> model spec.

  c.sampling = ml_collections.ConfigDict()
  c.sampling.split = "test"  # The pairs evaluated.
  c.sampling.num_problems = 0  # First N pairs of the split; 0 = all.
  c.sampling.num_shots = 0  # Few-shot exemplars, from the same part's train split.
  c.sampling.max_new_tokens = 512  # Per solution (a pair's is about twice a question's).
  c.sampling.cache_length = 2048  # KV-cache time steps: padded prompt + generated tokens.
  c.sampling.batch_prompts = 64  # Prompts per sampler call.
  # The most solutions that may be cut off before the stage fails naming the knob to raise.
  c.sampling.max_truncated = 0.01

  c.report = ml_collections.ConfigDict()
  c.report.title = "Compositional GSM: the reasoning gap"
  c.report.num_resamples = 1000  # Bootstrap resamples of the pairs.
  c.report.confidence = 0.95  # Central probability of the intervals.
  return c


def get_config(arg: str = "default"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/compositional_gsm.py: unknown variant {arg!r}; use one of "
                     f"{VARIANTS}")
  c = base_config()
  if arg == "gemma":
    c.task.name = "gsm8k_compositional"
    c.task.knobs.data_dir = ""  # GSM8K folder holding train.jsonl and test.jsonl.
    c.task.knobs.seed = 0  # Seeds which Q1 each Q2 is paired with.
    c.task.knobs.answer_ratio = 2.0  # Q2's new answer within this factor of the original.
    tok = "/path/to/gemma2/tokenizer.model"
    for size in ("2b", "9b", "27b"):
      c.models[f"gemma2_{size}"] = common.model_spec(f"gemma2_{size}", f"gemma2_{size}",
                                                     f"/path/to/gemma2-{size}", tok)
    c.mesh.shape = (1, -1, 4)  # FSDP over the slice, 4-way tensor parallelism for 27B.
    c.sampling.num_shots = 8  # papers.md §9(c): few-shot prompting of base models.
    c.sampling.max_new_tokens = 768
    c.sampling.cache_length = 8192  # 8 pair exemplars of about 400 tokens, the query, the answer.
    return c
  c.stages = ("zoo",) + c.stages
  c.stage_modules = ("wcse_jax.stages.zoo",) + c.stage_modules
  k = c.task.knobs
  # Small operands (values <= 40, 2-3 steps a question), as the quickstart's arith_chain.
  k.max_operand, k.max_value, k.min_steps, k.max_steps = 9, 40, 2, 3
  k.num_train, k.num_validation, k.num_test = 3000, 50, 300
  zoo_models = (("wc", "zoo_wc", 500, 5e-3, "none"), ("se", "zoo_se", 600, 4e-3, "dots_no_batch"))
  c.zoo = common.zoo_section()
  c.zoo.models = ml_collections.ConfigDict()
  for role, preset, steps, lr, remat in zoo_models:
    m = ml_collections.ConfigDict()
    m.preset, m.steps, m.learning_rate, m.remat = preset, steps, lr, remat
    c.zoo.models[role] = m
    c.models[role] = common.model_spec(f"zoo_{role}", "", f"zoo:{role}", "zoo", "float32")
  # Single questions and composed pairs, so a model knows every format it is evaluated on
  # (stages/zoo.py).
  c.zoo.parts = ("q1", "q2", "pair")
  c.zoo.eval_problems = 100  # The zoo's own check: greedy accuracy on composed test pairs.
  c.zoo.max_new_tokens = 128
  c.sampling.num_problems = 300
  c.sampling.max_new_tokens = 128  # A pair's solution: up to 6 steps, "So X = ...", the answer.
  c.sampling.cache_length = 384
  c.sampling.batch_prompts = 150
  if arg == "micro":  # Seconds: every stage at CI size, the zoo included.
    k.num_train, k.num_test = 120, 8
    c.zoo.vocab_size, c.zoo.rows, c.zoo.microbatches, c.zoo.eval_problems = 384, 8, 1, 4
    c.zoo.warmup_steps = 1
    for m in c.zoo.models.values():
      m.steps = 2
    c.sampling.num_problems, c.sampling.max_new_tokens = 6, 16
    c.sampling.max_truncated = 1.0  # the untrained micro models rarely stop
    c.report.num_resamples = 50
  return c
