"""GenRM on GSM8K as in the paper (papers.md §2(c)): Gemma verifiers on a policy's GSM8K solutions.

  python -m wcse_jax.main --config=configs/genrm_gsm8k.py --workdir=runs/genrm_gsm8k \
      --config.task.knobs.data_dir=/data/grade_school_math/data \
      --config.models.policy.checkpoint=/ckpt/gemma2-9b \
      --config.models.verifier.checkpoint=/ckpt/gemma2-9b \
      --config.models.judge.checkpoint=/ckpt/gemma2-27b \
      --config.models.teacher.checkpoint=/ckpt/gemma2-27b

About 50 solutions per training problem (the paper's came from Gemini 1.0 Pro; here from
`models.policy`), up to 16 correct + 16 incorrect each for training; CoT rationales written by
`models.teacher` with reference-guided grading and kept when their verdict agrees with the label;
lr 2e-6 (GenRM), batch 64; Best-of-16 on the 1,319 test problems. The variant `best_of_32` pools
32 solutions per test problem (the ICLR version's figure). All four models share Gemma's
tokenizer (set every `tokenizer` to the same tokenizer.model).
"""
from configs import common
from configs import verifiers

VARIANTS = ("best_of_16", "best_of_32")


def get_config(arg: str = "best_of_16"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/genrm_gsm8k.py: unknown variant {arg!r}; use one of {VARIANTS}")
  c = verifiers.base_config()
  c.task.name = "gsm8k"
  c.task.knobs.data_dir = ""  # GSM8K folder holding train.jsonl and test.jsonl.
  c.task.knobs.validation_size = 128  # GenRM held out 128 train problems.
  tok = "/path/to/gemma2/tokenizer.model"
  c.models.policy = common.model_spec("gemma2_9b", "gemma2_9b", "/path/to/gemma2-9b", tok)
  c.models.verifier = common.model_spec("gemma2_9b_verifier", "gemma2_9b", "/path/to/gemma2-9b",
                                        tok)
  c.models.judge = common.model_spec("gemma2_27b_judge", "gemma2_27b", "/path/to/gemma2-27b", tok)
  c.models.teacher = common.model_spec("gemma2_27b_teacher", "gemma2_27b", "/path/to/gemma2-27b",
                                       tok)
  c.mesh.shape = (1, -1, 4)
  c.sampling.num_problems = 0  # every training problem
  c.sampling.samples_per_problem = 50
  c.sampling.num_shots = 8  # base models need the 8-shot chain-of-thought prompt
  c.sampling.eval_samples = 16 if arg == "best_of_16" else 32
  c.bon.ns = tuple(n for n in (1, 2, 4, 8, 16, 32) if n <= c.sampling.eval_samples)
  c.verify_data.rationales = "model"
  c.verifiers.genrm_direct.lambda_sft = 1 / 4  # papers.md §2(b): GSM8K
  c.verifiers.genrm_cot.lambda_sft = 1 / 4
  c.bon.title = f"GenRM on GSM8K, Best-of-{c.sampling.eval_samples}"
  return c
