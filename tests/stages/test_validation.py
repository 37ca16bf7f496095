"""Bad knobs are refused before any work, by the stages' own validate hooks, with a StageError
naming the key and the value (experiment.validate: what every run and dry run calls first)."""
import pytest

from configs import bon_rl, quickstart, verifiers
from wcse_jax import experiment

CASES = [
    (quickstart, "sampling.num_problems", -1, "config.sampling.num_problems=-1: must be an "
                                              "integer >= 0"),
    (quickstart, "sampling.decode_rows", -2, "config.sampling.decode_rows=-2"),
    (quickstart, "sampling.max_new_tokens", 0, "config.sampling.max_new_tokens=0: must be an "
                                               "integer >= 1"),
    (quickstart, "sampling.temperature", 0.0, "config.sampling.temperature=0.0: must be > 0"),
    (quickstart, "sampling.max_truncated", 1.5, "must be a share in [0, 1]"),
    (quickstart, "sampling.split", "test", "config.sampling.split='test': must be a training"),
    (quickstart, "finetune.rows", 12, "config.finetune.rows=12 with config.finetune.microbatches"),
    (quickstart, "finetune.learning_rate", -1e-4, "config.finetune.learning_rate=-0.0001"),
    (quickstart, "finetune.remat", "everything", "config.finetune.remat='everything'"),
    (quickstart, "report.maj_ks", (1, 64), "config.report.maj_ks=(1, 64)"),
    (verifiers, "score.verifiers", ("genrm_direct", "oracle"), "config.score.verifiers"),
    (verifiers, "verify_data.rationales", "human", "config.verify_data.rationales='human'"),
    (verifiers, "sampling.eval_samples", -4, "config.sampling.eval_samples=-4"),
    (bon_rl, "rl.methods", ("bon_rl_v", "ppo"), "config.rl.methods"),
    (bon_rl, "rl.kl_coef", -0.1, "config.rl.kl_coef=-0.1: must be >= 0"),
    (bon_rl, "rl.temperature", 0.0, "config.rl.temperature=0.0: must be > 0"),
]


def _set(config, key, value):
  *path, leaf = key.split(".")
  section = config
  for name in path:
    section = section[name]
  section[leaf] = value


@pytest.mark.parametrize("module,key,value,message", CASES,
                         ids=[f"{m.__name__.split('.')[-1]}:{k}" for m, k, _, _ in CASES])
def test_a_bad_knob_is_refused_naming_the_key(module, key, value, message):
  config = module.get_config()
  experiment.validate(config)  # the shipped value passes
  _set(config, key, value)
  with pytest.raises(experiment.StageError) as e:
    experiment.validate(config)
  assert message in str(e.value)
