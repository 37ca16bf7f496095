"""WC vs SE on GSM8K as in the paper: Gemma2-9B (WC) vs Gemma2-27B (SE), TPU pod.

  python -m wcse_jax.main --config=configs/wcse_gsm8k.py:high --workdir=RUN \
      --config.task.knobs.data_dir=/data/grade_school_math/data \
      --config.models.wc.checkpoint=/ckpt/gemma2-9b --config.models.se.checkpoint=/ckpt/gemma2-27b \
      --config.models.student.checkpoint=/ckpt/gemma2-2b \
      --config.models.wc.tokenizer=/ckpt/tokenizer.model ...   (same tokenizer for all three)

The data metrics cover both budgets (SE 1 vs WC 3 and 10 vs 30 samples per problem); the variant
picks the students' data: `low` (trained 600 steps) or `high` (6,000 steps). Budgets per
papers.md §1(c). The paper's distillation student is Gemma-7B (v1),
which this codebase does not implement; the default student here is Gemma2-2B — say so when
comparing numbers. Test split: the 1,319 GSM8K test problems.
"""
from configs import common


VARIANTS = ("low", "high")  # What get_config(arg) accepts.


def get_config(arg: str = "high"):
  c = common.gemma2_9b_vs_27b(common.wcse_config(), arg)
  c.task.name = "gsm8k"
  c.task.knobs.data_dir = ""  # GSM8K folder holding train.jsonl and test.jsonl.
  c.sampling.num_shots = 8  # 8-shot chain-of-thought prompt for sampling from base models.
  c.sampling.max_new_tokens = 512
  c.sampling.cache_length = 4096
  c.finetune.length = 2048
  return c
