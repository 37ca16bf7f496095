"""Sections shared by the configs; each experiment file overrides what differs.

Building a config imports no jax (a test checks it): only ml_collections and the plain-Python
modules config_base, presets and wcse.plans.
"""
import ml_collections

from wcse_jax import config_base
from wcse_jax.wcse import plans


def model_spec(name: str, preset: str, checkpoint: str, tokenizer: str,
               dtype: str = "bfloat16") -> ml_collections.ConfigDict:
  spec = ml_collections.ConfigDict()
  spec.name = name  # Label in records and reports; wcse.se.name / wcse.wc.name must match.
  spec.preset = preset  # Architecture of a published checkpoint (models/presets.py).
  spec.checkpoint = checkpoint  # Published Gemma 2 Flax checkpoint folder, or "zoo:<name>".
  spec.tokenizer = tokenizer  # SentencePiece tokenizer.model path, or "zoo".
  spec.dtype = dtype  # Compute dtype: "float32" or "bfloat16".
  return spec


def zoo_section() -> ml_collections.ConfigDict:
  """The `zoo` section: the embedded default's tokenizer and tiny models (stages/zoo.py)."""
  c = ml_collections.ConfigDict()
  c.vocab_size = 512  # SentencePiece vocabulary trained on the task's train split.
  c.rows = 16  # Packed rows per batch.
  # Gradient-accumulation steps per batch: the same update with a smaller working set, faster on
  # a CPU. rows / microbatches must divide over the mesh's data axes.
  c.microbatches = 2
  c.length = 256  # Tokens per row.
  c.warmup_steps = 30
  c.save_every = 100  # Checkpoint interval in steps: a killed run resumes from the last one.
  # Leading train problems the zoo never trains on; -1: the problems the sample stage draws
  # solutions for (sampling.num_problems), so WC and SE solve problems they have not memorised.
  c.held_out_problems = -1
  c.eval_problems = 200  # Test problems for the greedy accuracy printed at the end.
  c.max_new_tokens = 96  # Decode budget when evaluating.
  # Add GenRM-formatted verification texts to the tokenizer's corpus (the verifier configs).
  c.verification_corpus = False
  c.models = ml_collections.ConfigDict()
  # The quickstart's zoo (configs/quickstart.py): WC trained longer than SE (the comparison is
  # about sampling cost, not training cost), the distillation student stopped early so that it
  # has something to learn, but past the loss plateau these models sit on for their first few
  # hundred steps (stopped on it, at 150 steps, no fine-tuning of 100 steps moved it).
  for name, preset, steps, lr, remat in (("wc", "zoo_wc_2x64", 1300, 5e-3, "none"),
                                         ("se", "zoo_se_4x80", 900, 4e-3, "none"),
                                         ("student", "zoo_wc_2x64", 400, 5e-3, "none")):
    m = ml_collections.ConfigDict()
    m.preset = preset  # Architecture (vocab_size is set from the tokenizer).
    m.steps = steps  # Training steps from scratch.
    m.learning_rate = lr  # Peak AdamW learning rate (warmup then cosine); wider models want less.
    # Rematerialisation while training (speed only; measured on 2 CPU cores x 8 simulated
    # devices: 1.4x for the 4-layer d160 zoo_se, 0.8x for the 2-layer d128 zoo_wc).
    m.remat = remat
    c.models[name] = m
  return c


def wcse_config() -> ml_collections.ConfigDict:
  c = config_base.base_config()
  c.stages = ("sample", "grade", "finetune", "report")
  c.stage_modules = ("wcse_jax.stages.zoo", "wcse_jax.stages.wcse")
  c.seed = 0  # Seeds sampling, data order and initialisation.

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1, 1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices.

  c.task = ml_collections.ConfigDict()
  c.task.name = "arith_chain"  # wcse_jax.data.tasks.known_tasks().
  # Task options (paths for real data, sizes for synthetic).
  c.task.knobs = ml_collections.ConfigDict()

  c.models = ml_collections.ConfigDict()  # se, wc and the distillation student.

  c.wcse = plans.default_config()  # The compute-matched plan (papers.md §1(b)1-2).

  c.sampling = ml_collections.ConfigDict()
  c.sampling.split = "train"  # Problems the synthetic data is drawn for.
  c.sampling.num_problems = 0  # First N problems of the split; 0 = all.
  c.sampling.num_shots = 0  # Few-shot exemplars from the train split (4 for MATH, 8 for GSM8K).
  c.sampling.temperature = 0.7  # > 0: greedy decoding would destroy diversity.
  c.sampling.max_new_tokens = 512  # Per solution.
  c.sampling.cache_length = 2048  # KV-cache time steps: padded prompt + generated tokens.
  c.sampling.batch_prompts = 32  # Distinct prompts per sampler call (each drawn N times).
  # Decode rows per process and call; 0 = one per (prompt, sample) item. Fewer rows than items
  # let a row whose sample ended take the next item (sampling/refill.py): less memory, and no
  # steps spent on rows waiting for the call's longest sample.
  c.sampling.decode_rows = 0
  # The most samples that may be cut off (at max_new_tokens or the cache end) before the stage
  # fails naming the knob to raise; every stage that samples counts them.
  c.sampling.max_truncated = 0.01

  c.grading = ml_collections.ConfigDict()
  c.grading.uniqueness = "normalized_text"  # What counts as a unique solution for diversity.
  c.grading.human_sample = 50  # Answer-correct solutions per model exported for human FPR rating.
  # LLM judge of the reasoning where the task has no step checker (real data): a third model,
  # named explicitly (the SE model works but is then judging its own data: a warning is
  # logged); off while the checkpoint is empty, and the FPR of real data is then "unjudged".
  # papers.md §1: Gemini 1.5 Pro judged 500 answer-correct solutions per model.
  c.grading.judge = model_spec("judge", "", "", "")
  c.grading.judge.max_records = 500  # Answer-correct, unjudged records judged per model.

  c.finetune = ml_collections.ConfigDict()
  c.finetune.setups = ("distillation", "self_improvement", "weak_to_strong")
  c.finetune.budget = "high"  # Which budget's data the students get (a wcse.budget_names entry).
  c.finetune.steps = 6000  # Same for WC-data and SE-data students (papers.md §1(e)).
  c.finetune.rows = 32  # Batch size in packed rows.
  c.finetune.length = 1024  # Tokens per row.
  c.finetune.learning_rate = 1e-6  # Peak learning rate when learning_rates is empty.
  # A sweep: one student per rate, the best on validation kept (papers.md §1(c) swept
  # {1e-7, 5e-7, 1e-6}); empty: learning_rate alone.
  c.finetune.learning_rates = ()
  c.finetune.warmup_steps = 100
  # Gradient-accumulation steps per batch (rows / microbatches must divide over the data axes)
  # and the rematerialisation policy (models/gemma2.REMAT_POLICIES): what a 9B/27B student needs
  # to fit; neither changes the update beyond float summation order.
  c.finetune.microbatches = 1
  c.finetune.remat = "none"
  c.finetune.num_checkpoints = 10  # Evenly spaced; the best on validation is evaluated.
  c.finetune.validation_problems = 500  # Greedy accuracy used to pick the checkpoint.
  c.finetune.eval = ml_collections.ConfigDict()
  c.finetune.eval.num_problems = 0  # Test problems (0 = the whole test split).
  c.finetune.eval.num_samples = 16  # Samples per test problem for maj@k.
  c.finetune.eval.temperature = 0.7  # papers.md §1(c).

  c.report = ml_collections.ConfigDict()
  c.report.title = "WC vs SE: compute-matched sampling"
  c.report.maj_ks = (1, 4, 8, 16)
  c.report.num_resamples = 1000  # Bootstrap resamples for the 95% intervals.
  c.report.students = True  # Report the fine-tuned students (reads the finetune stage).

  c.zoo = zoo_section()  # Only read when "zoo" is among the stages.
  return c


def gemma2_9b_vs_27b(c: ml_collections.ConfigDict, budget: str) -> ml_collections.ConfigDict:
  """The paper's Gemma 2 pair (papers.md §1(c)): WC 9B vs SE 27B, budgets 1 vs 3 and 10 vs 30.

  The data metrics cover both budgets (one pool); `budget` picks the students' data and step
  count: "low" (600 steps) or "high" (6,000). The paper's distillation student is Gemma-7B (v1),
  which this Gemma 2 codebase does not implement: the default student here is Gemma2-2B.
  """
  if budget not in ("low", "high"):
    raise ValueError(f"unknown variant {budget!r}; use 'low' or 'high'")
  tok = "/path/to/gemma2/tokenizer.model"
  c.models.se = model_spec("gemma2_27b", "gemma2_27b", "/path/to/gemma2-27b", tok)
  c.models.wc = model_spec("gemma2_9b", "gemma2_9b", "/path/to/gemma2-9b", tok)
  c.models.student = model_spec("gemma2_2b", "gemma2_2b", "/path/to/gemma2-2b", tok)
  c.mesh.shape = (1, -1, 4)  # FSDP over the pod, 4-way tensor parallelism for 27B.
  c.finetune.microbatches = 4  # 32 rows of 2048 tokens per step, 8 rows at a time.
  c.finetune.remat = "dots"
  c.wcse.se_samples = (1, 10)
  c.wcse.budget_names = ("low", "high")
  c.finetune.budget = budget
  c.finetune.steps = 600 if budget == "low" else 6000
  # Carved from train with a fixed seed before anything is sampled, for checkpoint selection.
  c.task.knobs.validation_size = 500
  return c
