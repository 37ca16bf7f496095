"""Many-shot in-context learning (papers.md §10): greedy accuracy against the number of shots for
human, reinforced and unsupervised ICL, several exemplar subsets per point.

  python -m wcse_jax.main --config=configs/many_shot.py --workdir=runs/many_shot

`default`, the embedded default (CPU): a zoo model trained on the synthetic arith_chain task laid
out as k-shot prompts (rows of 1,024 tokens, unsegmented: each answer can read the examples before
it, which packed rows with segment ids would forbid; stages/zoo.py `zoo.k_shot_rows`); its own
correct samples on 256 held-out train problems are the reinforced rationales; then 0 to 32 shots
on 150 test problems, 3 seeds. 32 shots (about 2,600 tokens) exceed the 2,048-step cache on
purpose: the point is reported as not run, never cut. `micro` is the same at CI size.

`gemma` (TPU): Gemma 2 9B and 27B on GSM8K, 0 to 256 shots; rationales sampled 4-shot from the
first 2,000 train problems; Gemma 2's 8,192-token context holds about 50 GSM8K exemplars, so the
larger points show up as over the cache unless the cache and the model allow more:

  python -m wcse_jax.main --config=configs/many_shot.py:gemma --workdir=RUN \\
      --config.task.knobs.data_dir=/data/grade_school_math/data \\
      --config.models.gemma2_9b.checkpoint=/ckpt/gemma2-9b \\
      --config.models.gemma2_27b.checkpoint=/ckpt/gemma2-27b \\
      --config.models.gemma2_9b.tokenizer=/ckpt/tokenizer.model ...  (the same for both)
"""
import ml_collections

from configs import common
from wcse_jax import config_base

VARIANTS = ("default", "micro", "gemma")


def base_config() -> ml_collections.ConfigDict:
  c = config_base.base_config()
  c.stages = ("icl_rationales", "icl_eval", "icl_report")
  c.stage_modules = ("wcse_jax.stages.many_shot",)
  c.seed = 0  # Seeds the rationale sampling, the bootstrap and the zoo.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices.

  c.task = ml_collections.ConfigDict()
  c.task.name = "gsm8k"  # wcse_jax.data.tasks.known_tasks() (a question-answer task).
  c.task.knobs = ml_collections.ConfigDict()  # Task options (paths, sizes).

  c.models = ml_collections.ConfigDict()  # Every model here is evaluated; name -> model spec.

  # The exemplar pool, and the reinforced rationales drawn for it (papers.md §10(b)).
  c.sampling = ml_collections.ConfigDict()
  c.sampling.split = "train"  # Where the exemplars come from (never the evaluation split).
  c.sampling.num_problems = 2000  # The pool: the first N problems of the split (0 = all).
  c.sampling.samples_per_problem = 4  # Rationales drawn per pool problem.
  c.sampling.temperature = 1.0  # papers.md §10(b): T = 1.0.
  c.sampling.num_shots = 4  # Exemplars in the prompt the rationales are drawn with.
  c.sampling.max_new_tokens = 512
  c.sampling.cache_length = 4096
  c.sampling.batch_prompts = 64
  c.sampling.max_truncated = 0.05  # Cut-off rationales allowed before the stage fails (a share).

  c.icl = ml_collections.ConfigDict()
  c.icl.methods = ("human", "reinforced", "unsupervised")  # data/many_shot.METHODS.
  c.icl.shots = (0, 4, 16, 64, 256)  # Shot counts; each prompt holds the smaller ones' shots.
  c.icl.seeds = (0, 1, 2)  # One random exemplar subset per seed (papers.md §10(e)).
  c.icl.split = "test"  # The evaluation problems.
  c.icl.num_problems = 0  # First N of them; 0 = all.
  c.icl.max_new_tokens = 512  # Greedy solution budget.
  # KV-cache time steps; a prompt whose tokens plus max_new_tokens exceed it is not run (counted
  # and marked in the report).
  c.icl.cache_length = 8192
  c.icl.batch_prompts = 32  # Prompts per sampler call (they share their exemplars' prefill).
  # Solved exemplars (reference solutions) closing the unsupervised prompt to fix the output
  # format, the same for every seed and kept out of every method's subsets; 0: none.
  c.icl.format_shots = 4

  c.report = ml_collections.ConfigDict()
  c.report.title = "Many-shot in-context learning"
  c.report.num_resamples = 1000  # Bootstrap resamples of the test problems.
  c.report.confidence = 0.95  # Central probability of the intervals.
  return c


def get_config(arg: str = "default"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/many_shot.py: unknown variant {arg!r}; use one of {VARIANTS}")
  c = base_config()
  if arg == "gemma":
    c.task.knobs.data_dir = ""  # GSM8K folder holding train.jsonl and test.jsonl.
    tok = "/path/to/gemma2/tokenizer.model"
    for size in ("9b", "27b"):
      c.models[f"gemma2_{size}"] = common.model_spec(f"gemma2_{size}", f"gemma2_{size}",
                                                     f"/path/to/gemma2-{size}", tok)
    c.mesh.shape = (1, -1, 4)  # FSDP over the slice, 4-way tensor parallelism for 27B.
    return c
  c.stages = ("zoo",) + c.stages
  c.stage_modules = ("wcse_jax.stages.zoo",) + c.stage_modules
  c.task.name = "arith_chain"
  k = c.task.knobs
  k.max_operand, k.max_value, k.max_steps = 9, 40, 3  # the quickstart's task
  k.num_train, k.num_validation, k.num_test = 8000, 50, 200
  c.models.icl = common.model_spec("zoo_icl", "", "zoo:icl", "zoo", "float32")
  c.zoo = common.zoo_section()
  c.zoo.models = ml_collections.ConfigDict()
  m = ml_collections.ConfigDict()
  m.preset, m.steps, m.learning_rate, m.remat = "zoo_wc", 400, 5e-3, "none"
  c.zoo.models.icl = m
  c.zoo.k_shot_rows = True  # Unsegmented k-shot rows (stages/zoo.py).
  c.zoo.length = 1024  # About 12 examples a row: the context the model learns to read.
  c.zoo.rows, c.zoo.microbatches = 8, 1  # 8k tokens a step (rows: a multiple of the devices)
  c.zoo.warmup_steps = 20
  c.zoo.eval_problems = 200
  c.sampling.num_problems = 256  # held out from the zoo (zoo.held_out_problems = -1)
  c.sampling.temperature = 0.7
  c.sampling.num_shots = 0  # the zoo model answers zero-shot
  c.sampling.max_new_tokens = 96
  c.sampling.cache_length = 256
  c.sampling.batch_prompts = 128
  c.sampling.max_truncated = 0.2
  # 16 shots (about 1,300 tokens) go past the 1,024 the zoo trained on; 32 (about 2,600) past
  # the cache: that point is reported as not run, never cut.
  c.icl.shots = (0, 2, 4, 8, 16, 32)
  c.icl.num_problems = 150
  c.icl.max_new_tokens = 80
  c.icl.cache_length = 2048
  c.icl.batch_prompts = 150
  c.icl.format_shots = 0  # the zoo model knows the format
  if arg == "micro":  # Seconds: every stage at CI size, the zoo included.
    k.num_train, k.num_test = 300, 8
    c.zoo.vocab_size, c.zoo.eval_problems, c.zoo.warmup_steps = 384, 4, 1
    c.zoo.length = 512
    m.steps = 2
    c.sampling.num_problems, c.sampling.samples_per_problem = 12, 2
    c.sampling.max_new_tokens, c.sampling.max_truncated = 16, 1.0  # the micro model rarely stops
    c.icl.shots, c.icl.seeds = (0, 2, 4), (0, 1)
    c.icl.num_problems, c.icl.max_new_tokens, c.icl.cache_length = 6, 16, 512
    c.report.num_resamples = 50
  return c
