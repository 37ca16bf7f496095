"""The runner's own config knobs, in a module that imports no jax (building a config must not).

Experiment configs start from `base_config()` and add their sections; `experiment.py` runs them.
"""
from __future__ import annotations

import ml_collections

# The runner's own knobs: they decide what runs, not what a stage computes, so no stage hash
# covers them (adding a stage to `stages` must not invalidate the finished ones).
RUNNER_KEYS = ("stages", "stage_modules", "rerun", "distributed")


def base_config() -> ml_collections.ConfigDict:
  """The runner's knobs, with defaults."""
  config = ml_collections.ConfigDict()
  config.stages = ()  # Stage names to run, in order, e.g. ("sample", "grade", "report").
  # Modules whose import registers the stages, e.g. ("wcse_jax.stages.wcse",).
  config.stage_modules = ()
  config.rerun = ""  # Delete this stage and every later one in `stages`, then run them again.
  config.distributed = False  # Call jax.distributed.initialize() first (multi-host launches).
  return config


__all__ = ["RUNNER_KEYS", "base_config"]
