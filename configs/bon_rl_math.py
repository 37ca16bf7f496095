"""Best-of-N-aware fine-tuning of Gemma 2B on MATH as in the paper (papers.md §3(c)): N' = 32.

  python -m wcse_jax.main --config=configs/bon_rl_math.py --workdir=runs/bon_rl_math \
      --config.task.knobs.data_dir=/data/MATH --config.models.policy.checkpoint=/ckpt/gemma2-2b \
      --config.models.verifier.checkpoint=/ckpt/gemma2-2b

The verifier (rl.verifier, the discriminative RM by default) is trained first on the policy's
own MATH samples by the verifier stages; BoN-RL-V is then judged by Bo32 with it, BoN-RL-S and
BoN-RLB by pass@32 (papers.md: Bo32 26.8% -> 30.8%, pass@32 60.0% -> 67.0%). The `humaneval`
variant trains on the first 82 HumanEval problems (HumanEval has no training split; the paper's
code runs trained on other data) and evaluates pass@16 on the other 82, every program run in
the sandbox.
"""
from configs import bon_rl
from configs import common
from configs import verifiers

VARIANTS = ("math", "humaneval")


def get_config(arg: str = "math"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/bon_rl_math.py: unknown variant {arg!r}; use one of {VARIANTS}")
  c = verifiers.base_config()
  c.stages = ("solutions", "verify_data", "train_verifier", "bon_finetune", "policy_eval",
              "bon_rl_report")
  c.stage_modules = ("wcse_jax.stages.verifiers", "wcse_jax.stages.rl")
  tok = "/path/to/gemma2/tokenizer.model"
  c.models.policy = common.model_spec("gemma2_2b", "gemma2_2b", "/path/to/gemma2-2b", tok)
  c.models.verifier = common.model_spec("gemma2_2b_verifier", "gemma2_2b", "/path/to/gemma2-2b",
                                        tok)
  c.models.judge = common.model_spec("judge", "", "", "")
  c.mesh.shape = (1, -1, 1)
  c.sampling.samples_per_problem = 16
  c.sampling.eval_samples = 0
  c.bon.ns = ()
  c.score.verifiers = ("discriminative",)
  c.rl = bon_rl.rl_section()
  if arg == "math":
    c.task.name = "math"
    c.task.knobs.data_dir = ""  # MATH's official folder (train/<subject>/<n>.json, test/...).
    c.sampling.num_problems = 2000  # the verifier's training problems (and the RL prompts)
    c.sampling.num_shots = 4
  else:
    c.task.name = "humaneval"
    c.task.knobs.train_size = 82  # carved from the 164 test problems with a fixed seed
    c.sampling.num_problems = 0
    c.sampling.max_new_tokens = 512
    c.rl.n_bon, c.rl.samples = 16, 32
    c.rl.eval.samples, c.rl.eval.ns = 16, (1, 4, 16)
    c.rl.eval.problems = 82
  c.rl.num_problems = c.sampling.num_problems
  c.rl.title = f"Best-of-N-aware fine-tuning of Gemma2-2B on {c.task.name}"
  return c
