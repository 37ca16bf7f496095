"""Each pipeline stage's hash covers the config it reads, so changing a later stage's knob
reruns that stage only, while a knob an earlier stage reads still invalidates it."""
import importlib

import pytest

from configs import quickstart
from wcse_jax import experiment
from wcse_jax.stages import wcse, zoo


@pytest.fixture(scope="module")
def specs():
  """The pipeline's stages as their modules declare them, whatever other tests registered."""
  saved = experiment._REGISTRY
  experiment._REGISTRY = {}
  try:
    for module in (zoo, wcse):
      importlib.reload(module)
    return {s.name: s for s in experiment.resolve_stages(quickstart.get_config("micro"))}
  finally:
    experiment._REGISTRY = saved


def _hash_changes(spec, key: str, value) -> bool:
  config = quickstart.get_config("micro")
  before = experiment.stage_config(config, spec)
  section, name = key.rsplit(".", 1)
  node = config
  for part in section.split("."):
    node = node[part]
  node[name] = value
  return experiment.stage_config(config, spec) != before


@pytest.mark.parametrize("stage,key,value,changes", [
    ("sample", "finetune.learning_rate", 3e-4, False),
    ("sample", "report.num_resamples", 7, False),
    ("sample", "grading.uniqueness", "exact_text", False),
    ("sample", "sampling.temperature", 1.0, True),
    ("sample", "task.knobs.max_steps", 2, True),
    ("grade", "finetune.steps", 9, False),
    ("grade", "grading.human_sample", 3, True),
    ("finetune", "report.num_resamples", 7, False),
    ("finetune", "finetune.learning_rate", 3e-4, True),
    ("finetune", "sampling.max_new_tokens", 16, True),
    ("report", "report.num_resamples", 7, True),
    ("report", "report.students", False, True),
    ("report", "finetune.steps", 9, False),  # read through the finetune stage's manifest
])
def test_stage_hash_covers_what_the_stage_reads(specs, stage, key, value, changes):
  assert _hash_changes(specs[stage], key, value) is changes
