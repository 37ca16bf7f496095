"""Sections shared by the WC-vs-SE configs; each experiment file overrides what differs."""
import ml_collections

from wcse_jax import experiment, zoo
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


def wcse_config() -> ml_collections.ConfigDict:
  c = experiment.base_config()
  c.stages = ("sample", "grade", "finetune", "report")
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

  c.grading = ml_collections.ConfigDict()
  c.grading.uniqueness = "normalized_text"  # What counts as a unique solution for diversity.
  c.grading.human_sample = 50  # Answer-correct solutions per model exported for human FPR rating.
  # LLM judge of the reasoning where the task has no step checker (real data); off when the
  # checkpoint is empty. papers.md §1: 500 answer-correct solutions per model.
  c.grading.judge = model_spec("judge", "gemma2_27b", "", "/path/to/tokenizer.model")
  c.grading.judge.max_records = 500  # Answer-correct, unjudged records judged per model.

  c.finetune = ml_collections.ConfigDict()
  c.finetune.setups = ("distillation", "self_improvement", "weak_to_strong")
  c.finetune.budget = "high"  # Which budget's data the students get (a wcse.budget_names entry).
  c.finetune.steps = 6000  # Same for WC-data and SE-data students (papers.md §1(e)).
  c.finetune.rows = 32  # Batch size in packed rows.
  c.finetune.length = 1024  # Tokens per row.
  c.finetune.learning_rate = 1e-6  # papers.md §1(c): swept over {1e-7, 5e-7, 1e-6}.
  c.finetune.warmup_steps = 100
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

  c.zoo = zoo.default_config()  # Only read when "zoo" is among the stages.
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
  c.wcse.se_samples = (1, 10)
  c.wcse.budget_names = ("low", "high")
  c.finetune.budget = budget
  c.finetune.steps = 600 if budget == "low" else 6000
  return c
