"""Easy-to-hard transfer (papers.md §2(c)): verifiers trained on GSM8K only, Best-of-32 on MATH500.

  python -m wcse_jax.main --config=configs/genrm_math_transfer.py --workdir=runs/genrm_transfer \
      --config.task.knobs.data_dir=/data/grade_school_math/data \
      --config.eval_task.knobs.data_dir=/data/MATH \
      --config.eval_task.knobs.ids_path=/data/math500_ids.txt \
      --config.models.policy.checkpoint=/ckpt/gemma2-9b \
      --config.models.verifier.checkpoint=/ckpt/gemma2-9b \
      --config.models.judge.checkpoint=/ckpt/gemma2-27b \
      --config.models.teacher.checkpoint=/ckpt/gemma2-27b

The GSM8K pipeline of configs/genrm_gsm8k.py, but the Best-of-N pools are 32 solutions to each
MATH500 problem (4-shot Minerva-style prompt), so every verifier is judged on harder problems than
it was trained on.
"""
from configs import genrm_gsm8k

VARIANTS = ("default",)


def get_config(arg: str = "default"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/genrm_math_transfer.py: unknown variant {arg!r}")
  c = genrm_gsm8k.get_config("best_of_32")
  c.eval_task.name = "math500"
  c.eval_task.knobs.data_dir = ""  # MATH's official folder (train/<subject>/<n>.json, test/...).
  c.eval_task.knobs.ids_path = ""  # MATH500 id list (test/<subject>/<n>.json per line).
  c.sampling.eval_num_shots = 4  # the Minerva-style 4-shot prompt of MATH
  c.sampling.max_new_tokens = 1024
  c.sampling.cache_length = 4096
  c.bon.title = "GenRM trained on GSM8K, Best-of-32 on MATH500"
  return c
