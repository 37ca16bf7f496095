"""The sample stage's guards: the loaded model must be the one the cost plan prices (roles
swapped or a wrong checkpoint are refused), and no solution is drawn for a problem the zoo
models trained on."""
import os
import types

import pytest

from configs import quickstart
from wcse_jax import experiment, files
from wcse_jax.stages import wcse, zoo


def _loaded(name, params):
  return types.SimpleNamespace(name=name, config=types.SimpleNamespace(param_count=lambda: params))


def test_a_model_in_the_wrong_role_is_refused():
  cfg = quickstart.get_config()
  se, wc = cfg.wcse.se.params, cfg.wcse.wc.params
  wcse._check_role(cfg, "se", _loaded("zoo_se", int(se)))
  wcse._check_role(cfg, "se", _loaded("zoo_se", int(se * 1.09)))  # nominal counts pass
  with pytest.raises(experiment.StageError, match=r"config.models.se loads zoo_wc .* "
                                                   r"config.wcse.se.params="):
    wcse._check_role(cfg, "se", _loaded("zoo_wc", int(wc)))
  with pytest.raises(experiment.StageError, match="config.models.wc loads zoo_se"):
    wcse._check_role(cfg, "wc", _loaded("zoo_se", int(se)))


def test_problems_the_zoo_trained_on_are_not_sampled(tmp_path):
  cfg = quickstart.get_config()
  problems = [types.SimpleNamespace(id=f"train/{i}") for i in range(4)]
  os.makedirs(tmp_path / "zoo")
  files.write_json(str(tmp_path / "zoo" / zoo.HELD_OUT), ["train/0", "train/1"])
  ctx = types.SimpleNamespace(input=lambda name: str(tmp_path / name))
  wcse._check_not_trained_on(cfg, ctx, problems[:2])
  with pytest.raises(experiment.StageError, match=r"2 problems the zoo models were trained on "
                                                   r"\(first: 'train/2'\)"):
    wcse._check_not_trained_on(cfg, ctx, problems)
