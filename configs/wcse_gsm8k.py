"""WC vs SE on GSM8K as in the paper: Gemma2-9B (WC) vs Gemma2-27B (SE), TPU pod.

  python -m wcse_jax.main --config=configs/wcse_gsm8k.py:high --workdir=RUN \
      --config.task.knobs.data_dir=/data/grade_school_math/data \
      --config.models.wc.checkpoint=/ckpt/gemma2-9b --config.models.se.checkpoint=/ckpt/gemma2-27b \
      --config.models.student.checkpoint=/ckpt/gemma2-2b \
      --config.models.wc.tokenizer=/ckpt/tokenizer.model ...   (same tokenizer for all three)

The data metrics cover both budgets (SE 1 vs WC 3 and 10 vs 30 samples per problem); the variant
picks the students' data: `low` (trained 600 steps) or `high` (6,000 steps). Budgets per papers.md §1(c). The paper's distillation student is Gemma-7B (v1),
which this codebase does not implement; the default student here is Gemma2-2B — say so when
comparing numbers. Test split: the 1,319 GSM8K test problems.
"""
from configs import common


def get_config(arg: str = "high"):
  if arg not in ("low", "high"):
    raise ValueError(f"configs/wcse_gsm8k.py: unknown variant {arg!r}; use 'low' or 'high'")
  c = common.wcse_config()
  c.task.name = "gsm8k"
  c.task.knobs.data_dir = ""  # GSM8K folder holding train.jsonl and test.jsonl.
  tok = "/path/to/gemma2/tokenizer.model"
  c.models.se = common.model_spec("gemma2_27b", "gemma2_27b", "/path/to/gemma2-27b", tok)
  c.models.wc = common.model_spec("gemma2_9b", "gemma2_9b", "/path/to/gemma2-9b", tok)
  c.models.student = common.model_spec("gemma2_2b", "gemma2_2b", "/path/to/gemma2-2b", tok)
  c.mesh.shape = (1, -1, 4)  # FSDP over the pod, 4-way tensor parallelism for 27B.
  c.wcse.se_samples = (1, 10)  # Both budgets come from one pool (the high one's 10 vs 30).
  c.wcse.budget_names = ("low", "high")
  c.finetune.budget = arg  # Which budget's data the students are trained on.
  c.finetune.steps = 600 if arg == "low" else 6000
  c.sampling.num_shots = 8  # 8-shot chain-of-thought prompt for sampling from base models.
  c.sampling.max_new_tokens = 512
  c.sampling.cache_length = 4096
  c.finetune.length = 2048
  return c
