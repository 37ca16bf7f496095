"""Each pipeline stage's hash covers the config it reads, so changing a later stage's knob
reruns that stage only, while a knob an earlier stage reads still invalidates it."""
import pytest

from configs import quickstart
from wcse_jax import experiment


def _hash_changes(stage: str, key: str, value) -> bool:
  config = quickstart.get_config("micro")
  spec = {s.name: s for s in experiment.resolve_stages(config)}[stage]
  before = experiment.stage_config(config, spec)
  section, name = key.rsplit(".", 1)
  node = config
  for part in section.split("."):
    node = node[part]
  node[name] = value
  return experiment.stage_config(config, spec) != before


@pytest.mark.parametrize("stage,key,value,changes", [
    ("sample", "finetune.learning_rate", 1e-4, False),
    ("sample", "report.num_resamples", 7, False),
    ("sample", "grading.uniqueness", "exact_text", False),
    ("sample", "sampling.temperature", 1.0, True),
    ("sample", "task.knobs.max_steps", 2, True),
    ("grade", "finetune.steps", 9, False),
    ("grade", "grading.human_sample", 3, True),
    ("finetune", "report.num_resamples", 7, False),
    ("finetune", "finetune.learning_rate", 1e-4, True),
    ("finetune", "sampling.max_new_tokens", 16, True),
    ("report", "report.num_resamples", 7, True),
])
def test_stage_hash_covers_what_the_stage_reads(stage, key, value, changes):
  assert _hash_changes(stage, key, value) is changes
