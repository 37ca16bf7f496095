"""Best-of-N-aware fine-tuning (papers.md §3): the embedded default, on CPU.

  python -m wcse_jax.main --config=configs/bon_rl.py --workdir=runs/bon_rl

A zoo policy on arith_chain; a discriminative verifier trained on its samples (the verifier
stages); then every method of rl.methods fine-tunes the policy with N' = 16 on fresh rollouts of
32 samples per prompt, and the base and each fine-tuned policy are evaluated by pass@N and
verifier Best-of-N over N in {1, 4, 16} and T in {0.1, 0.7, 1.0, 1.5}. `micro` is the CI-sized run.
"""
import ml_collections

from configs import common
from configs import verifiers

VARIANTS = ("default", "micro")


def rl_section() -> ml_collections.ConfigDict:
  """The `rl` section (stages/rl.py); bon_rl_math.py starts from it too."""
  r = ml_collections.ConfigDict()
  r.title = "Best-of-N-aware fine-tuning"
  # rl/loop.METHODS: sft, rl, bon_rl_v, bon_rl_v_selected, bon_rl_s, bon_rlb_p, bon_rlb_two_sided,
  # bon_sft, bon_sft_variational, pkpo, pass_at_k, best_sample_only.
  r.methods = ("sft", "rl", "bon_rl_v", "bon_rl_s", "bon_rlb_p", "pkpo", "pass_at_k",
               "best_sample_only", "bon_sft")
  r.verifier = "discriminative"  # The trained verifier BoN-RL-V selects with and Bo-N reports.
  r.n_bon = 32  # N' of the BoN objective the policy is trained for (papers.md §3(c)).
  r.samples = 64  # n rollouts per prompt (>= 2 N' for the exact BoN-RL-V/-S estimators).
  r.prompts_per_step = 8  # Prompts per update; rows = prompts x samples (+ experts for BoN-SFT).
  r.num_problems = 0  # Prompts are drawn from the first N problems of sampling.split (0 = all).
  r.steps = 500
  r.learning_rate = 1e-6
  r.warmup_steps = 20
  r.temperature = 1.0  # Rollout temperature.
  r.max_new_tokens = 512
  r.length = 1536  # Row length: prompt + completion must fit.
  r.microbatches = 8
  r.remat = "dots"
  r.save_every = 50  # Checkpoint interval: a kill resumes from the last one, same rollouts.
  r.kl_coef = 0.0  # Weight of KL(pi || pi_start) (score-function form; the k3 estimate is logged).
  r.clip = 0.0  # Bound on |advantage| (papers.md: the community BoN-RLB clips at 3); 0 = none.
  r.eval = ml_collections.ConfigDict()
  r.eval.problems = 500  # Test problems.
  r.eval.samples = 32  # N_max per problem and temperature.
  r.eval.ns = (1, 4, 16, 32)
  r.eval.temperatures = (0.1, 0.7, 1.0, 1.5)
  r.eval.num_resamples = 1000
  # The most evaluation samples that may be cut off at rl.max_new_tokens before policy_eval fails
  # (a share); at T = 1.5 a policy rambles past any budget (28.7% of the embedded default's base
  # policy's samples at 64 tokens), and a cut-off sample is graded wrong, which is what it is.
  r.eval.max_truncated = 0.5
  return r


def get_config(arg: str = "default"):
  if arg not in VARIANTS:
    raise ValueError(f"configs/bon_rl.py: unknown variant {arg!r}; use one of {VARIANTS}")
  c = verifiers.base_config()
  c.stages = ("zoo", "solutions", "verify_data", "train_verifier", "bon_finetune",
              "policy_eval", "bon_rl_report")
  c.stage_modules = ("wcse_jax.stages.zoo", "wcse_jax.stages.verifiers", "wcse_jax.stages.rl")
  c.task.name = "arith_chain"
  c.task.knobs.max_operand, c.task.knobs.max_value, c.task.knobs.max_steps = 9, 40, 3
  c.task.knobs.num_train, c.task.knobs.num_validation, c.task.knobs.num_test = 6000, 64, 64
  c.zoo.models = ml_collections.ConfigDict()
  m = ml_collections.ConfigDict()
  m.preset, m.steps, m.learning_rate, m.remat = "zoo_wc", 500, 5e-3, "none"
  c.zoo.models.policy = m
  for role in ("policy", "verifier", "judge"):
    c.models[role] = common.model_spec(f"zoo_{role}", "", "zoo:policy", "zoo", "float32")
  c.sampling.num_problems = 256  # held out from the zoo; the verifier's data and the RL prompts
  c.sampling.samples_per_problem = 4
  c.sampling.eval_samples = 0  # no Best-of-N pool here: policy_eval makes the policies' pools
  c.sampling.max_new_tokens = 96
  c.sampling.cache_length = 256
  c.sampling.batch_prompts = 64
  c.bon.ns = ()
  c.verify_data.per_problem = 4
  c.score.verifiers = ("discriminative",)
  c.score.cache_length = 256
  c.score.chunk_problems = 32
  d = c.verifiers.discriminative
  d.steps, d.rows, d.length, d.microbatches, d.remat = 150, 32, 256, 2, "none"
  d.learning_rate, d.warmup_steps, d.save_every = 1e-3, 10, 50
  c.rl = rl_section()
  r = c.rl
  r.methods = ("sft", "rl", "bon_rl_v", "bon_rl_s", "bon_rlb_p", "pkpo", "bon_sft")
  r.n_bon, r.samples, r.prompts_per_step = 16, 32, 4
  r.num_problems = c.sampling.num_problems
  r.steps, r.learning_rate, r.warmup_steps = 30, 3e-4, 3
  r.max_new_tokens, r.length, r.microbatches, r.remat, r.save_every = 64, 160, 2, "none", 10
  r.eval.problems, r.eval.samples, r.eval.ns = 32, 16, (1, 4, 16)
  r.eval.num_resamples = 500
  if arg == "micro":
    c.task.knobs.num_train, c.task.knobs.num_test = 300, 8
    c.zoo.vocab_size, c.zoo.rows, c.zoo.microbatches, c.zoo.eval_problems = 384, 8, 1, 4
    c.zoo.models.policy.steps, c.zoo.warmup_steps = 4, 1
    c.sampling.num_problems, c.sampling.max_new_tokens = 16, 24
    c.verify_data.balance = False  # the untrained micro policy is never right
    c.sampling.max_truncated = 1.0  # ... and rarely stops
    d.steps, d.rows, d.save_every, d.warmup_steps, d.microbatches = 2, 8, 2, 0, 1
    r.methods = ("rl", "bon_rl_s", "bon_rl_v", "bon_sft")
    r.n_bon, r.samples, r.prompts_per_step, r.num_problems = 2, 4, 2, 16
    r.steps, r.warmup_steps, r.save_every, r.max_new_tokens = 2, 0, 1, 16
    r.microbatches = 1
    r.eval.problems, r.eval.samples, r.eval.ns = 4, 4, (1, 2, 4)
    r.eval.temperatures, r.eval.num_resamples = (0.7, 1.0), 20
    r.eval.max_truncated = 1.0  # the untrained micro policy rarely stops
  return c
