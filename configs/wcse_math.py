"""WC vs SE on MATH as in the paper: Gemma2-9B (WC) vs Gemma2-27B (SE), TPU pod.

  python -m wcse_jax.main --config=configs/wcse_math.py:high --workdir=RUN \
      --config.task.knobs.data_dir=/data/MATH --config.task.knobs.ids_path=/data/math500_ids.txt \
      --config.models.wc.checkpoint=/ckpt/gemma2-9b --config.models.se.checkpoint=/ckpt/gemma2-27b \
      --config.models.student.checkpoint=/ckpt/gemma2-2b \
      --config.models.wc.tokenizer=/ckpt/tokenizer.model ...   (same tokenizer for all three)

The data metrics cover both budgets (SE 1 vs WC 3 and 10 vs 30 samples per problem); the variant
picks the students' data: `low` (trained 600 steps) or `high` (6,000 steps). Budgets per
papers.md §1(c). The paper's distillation student is Gemma-7B (v1),
which this codebase does not implement; the default student here is Gemma2-2B — say so when
comparing numbers. Test split: MATH500 (supply its id list; it is not bundled).
"""
from configs import common


VARIANTS = ("low", "high")  # What get_config(arg) accepts.


def get_config(arg: str = "high"):
  c = common.gemma2_9b_vs_27b(common.wcse_config(), arg)
  c.task.name = "math500"
  c.task.knobs.data_dir = ""  # MATH's official folder (train/<subject>/<n>.json, test/...).
  c.task.knobs.ids_path = ""  # MATH500 id list (test/<subject>/<n>.json per line).
  c.sampling.num_shots = 4  # Minerva-style 4-shot prompt for sampling from base models.
  c.sampling.max_new_tokens = 1024
  c.sampling.cache_length = 4096
  c.finetune.length = 2048
  return c
