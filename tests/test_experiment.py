"""Stage runner: manifests, skip, resume, config and input checks, rerun, errors."""
import json
import logging
import os

import ml_collections
import numpy as np
import pytest

from wcse_jax import config_base, experiment, files


# Each test registers its own stages into a copy of the registry (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("private_stage_registry")


def make_config(stages, **knobs):
  config = config_base.base_config()
  config.stages = tuple(stages)
  config.model = dict(size=2)
  config.unrelated = 1
  config.update(knobs)
  return config


def read_manifest(workdir, name):
  with open(os.path.join(workdir, name, experiment.MANIFEST)) as f:
    return json.load(f)


def register_pair(calls):
  @experiment.stage("first")
  def first(ctx):
    calls.append("first")
    with open(os.path.join(ctx.out, "data.txt"), "w") as f:
      f.write(str(ctx.config.model.size))
    return {"items": np.int64(3), "size": ctx.config.model.size}

  @experiment.stage("second")
  def second(ctx):
    calls.append("second")
    with open(os.path.join(ctx.input("first"), "data.txt")) as f:
      data = f.read()
    with open(os.path.join(ctx.out, "copy.txt"), "w") as f:
      f.write(data)
    return {"copied": len(data)}


def test_runs_stages_in_order_and_writes_manifests(tmp_path):
  calls = []
  register_pair(calls)
  workdir = str(tmp_path / "w")
  manifests = experiment.run(make_config(["first", "second"]), workdir)
  assert calls == ["first", "second"]
  assert sorted(os.listdir(workdir)) == ["first", "second"]  # no .partial left
  first = read_manifest(workdir, "first")
  assert manifests["first"] == first
  assert first["stage"] == "first"
  assert first["counts"] == {"items": 3, "size": 2}
  assert first["config"] == {"model": {"size": 2}, "unrelated": 1}  # runner knobs left out
  assert first["config_hash"] == experiment.config_hash(first["config"])
  assert first["inputs"] == {}
  assert {"jax", "flax", "optax", "orbax-checkpoint", "python"} <= set(first["versions"])
  assert first["wall_time_s"] >= 0 and first["finished_at"] and first["started_at"]
  assert len(first["build_id"]) == 32
  second = read_manifest(workdir, "second")
  assert second["inputs"] == {"first": {"manifest_sha256": files.sha256(
      os.path.join(workdir, "first", experiment.MANIFEST))}}
  assert sorted(os.listdir(os.path.join(workdir, "second"))) == [
      "MANIFEST.json", "START.json", "copy.txt"]


def test_rerun_skips_finished_stages_and_says_so(tmp_path, caplog):
  calls = []
  register_pair(calls)
  workdir = str(tmp_path)
  config = make_config(["first", "second"])
  experiment.run(config, workdir)
  before = read_manifest(workdir, "second")
  with caplog.at_level(logging.INFO, logger="wcse_jax.experiment"):
    manifests = experiment.run(config, workdir)
  assert calls == ["first", "second"]
  assert manifests["second"] == before
  assert "stage first: finished earlier" in caplog.text
  assert "stage second: finished earlier" in caplog.text


def test_a_crashed_stage_resumes_from_its_own_shards(tmp_path):
  written = []
  crash = {"after": 2}

  @experiment.stage("shards")
  def shards(ctx):
    for i in range(5):
      path = os.path.join(ctx.out, f"shard{i}.txt")
      if os.path.exists(path):
        continue
      if crash["after"] is not None and i == crash["after"]:
        raise RuntimeError("preempted")
      with open(path, "w") as f:
        f.write(str(i))
      written.append(i)
    return {"shards": 5}

  config = make_config(["shards"])
  with pytest.raises(RuntimeError, match="preempted"):
    experiment.run(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "shards.partial")) == [
      "START.json", "shard0.txt", "shard1.txt"]
  assert not (tmp_path / "shards").exists()
  crash["after"] = None
  experiment.run(config, str(tmp_path))
  assert written == [0, 1, 2, 3, 4]  # 0 and 1 were not written twice
  assert not (tmp_path / "shards.partial").exists()
  assert read_manifest(tmp_path, "shards")["counts"] == {"shards": 5}


def test_changed_config_is_refused_with_what_changed_and_how_to_proceed(tmp_path):
  register_pair([])
  experiment.run(make_config(["first"]), str(tmp_path))
  config = make_config(["first"])
  config.model.size = 3
  with pytest.raises(experiment.StageError) as error:
    experiment.run(config, str(tmp_path))
  message = str(error.value)
  assert "stage 'first'" in message and "model.size: 2 -> 3" in message
  assert "--config.rerun=first" in message and "new --workdir" in message


def test_runner_knobs_do_not_change_stage_hashes(tmp_path):
  calls = []
  register_pair(calls)
  experiment.run(make_config(["first"]), str(tmp_path))
  experiment.run(make_config(["first", "second"], distributed=False), str(tmp_path))
  assert calls == ["first", "second"]


def test_config_keys_scope_the_hash(tmp_path):
  calls = []

  @experiment.stage("scoped", config_keys=("model.size",))
  def scoped(ctx):
    calls.append(ctx.config.model.size)
    return {}

  experiment.run(make_config(["scoped"]), str(tmp_path))
  experiment.run(make_config(["scoped"], unrelated=5), str(tmp_path))  # outside its scope
  assert calls == [2]
  assert read_manifest(tmp_path, "scoped")["config"] == {"model.size": 2}
  config = make_config(["scoped"])
  config.model.size = 4
  with pytest.raises(experiment.StageError, match="model.size: 2 -> 4"):
    experiment.run(config, str(tmp_path))


def test_an_input_made_under_another_config_is_refused_even_when_not_listed(tmp_path):
  register_pair([])
  experiment.run(make_config(["first"]), str(tmp_path))
  config = make_config(["second"])
  config.model.size = 5
  with pytest.raises(experiment.StageError, match="stage 'first' .* with a different config "
                                                  "\\(changed: model.size: 2 -> 5\\)"):
    experiment.run(config, str(tmp_path))


def test_rerun_knob_deletes_that_stage_and_later_ones(tmp_path):
  calls = []
  register_pair(calls)
  experiment.run(make_config(["first", "second"]), str(tmp_path))
  config = make_config(["first", "second"], rerun="first")
  config.model.size = 7
  experiment.run(config, str(tmp_path))
  assert calls == ["first", "second", "first", "second"]
  assert (tmp_path / "second" / "copy.txt").read_text() == "7"


def test_rerun_of_a_stage_not_listed_is_an_error(tmp_path):
  register_pair([])
  with pytest.raises(experiment.StageError, match="config.rerun='third' is not in config.stages"):
    experiment.run(make_config(["first"], rerun="third"), str(tmp_path))


def test_a_stage_built_from_an_input_that_was_rebuilt_is_refused(tmp_path):
  register_pair([])
  experiment.run(make_config(["first", "second"]), str(tmp_path))
  experiment.run(make_config(["first"], rerun="first"), str(tmp_path))  # rebuilds first only
  with pytest.raises(experiment.StageError, match="built from 'first'.*rebuilt since.*"
                                                  "--config.rerun=second"):
    experiment.run(make_config(["first", "second"]), str(tmp_path))


def test_a_partial_stage_is_not_resumed_under_another_config(tmp_path):
  @experiment.stage("flaky")
  def flaky(ctx):
    with open(os.path.join(ctx.out, "shard0.txt"), "w") as f:
      f.write("work")  # some work, which the other config must not be mixed with
    raise RuntimeError("crash")

  with pytest.raises(RuntimeError):
    experiment.run(make_config(["flaky"]), str(tmp_path))
  with pytest.raises(experiment.StageError, match="flaky.partial was started with a different "
                                                  "config \\(changed: unrelated: 1 -> 2\\)"):
    experiment.run(make_config(["flaky"], unrelated=2), str(tmp_path))


def test_a_partial_stage_is_not_resumed_after_its_input_was_rebuilt(tmp_path):
  register_pair([])
  fail = {"on": True}

  @experiment.stage("third")
  def third(ctx):
    ctx.input("first")
    if fail["on"]:
      with open(os.path.join(ctx.out, "shard0.txt"), "w") as f:
        f.write("work")  # made from the old 'first'
      raise RuntimeError("crash")
    return {}

  with pytest.raises(RuntimeError):
    experiment.run(make_config(["first", "third"]), str(tmp_path))
  experiment.run(make_config(["first"], rerun="first"), str(tmp_path))
  fail["on"] = False
  with pytest.raises(experiment.StageError, match="started from 'first'.*rebuilt since"):
    experiment.run(make_config(["first", "third"]), str(tmp_path))


def test_unknown_stage_lists_the_known_ones(tmp_path):
  register_pair([])
  with pytest.raises(experiment.StageError) as error:
    experiment.run(make_config(["frist"]), str(tmp_path))
  message = str(error.value)
  assert "unknown stage 'frist'" in message and "Did you mean 'first'?" in message
  known = message.split("Known stages: ")[1].split(" (")[0].split(", ")
  assert {"first", "second"} <= set(known)  # with whatever other modules registered


def test_reading_an_unfinished_stage_is_an_error(tmp_path):
  register_pair([])
  with pytest.raises(experiment.StageError, match="reads the output of stage 'first', which is "
                                                  "not finished"):
    experiment.run(make_config(["second"]), str(tmp_path))


def test_missing_stage_module_is_an_error_naming_it(tmp_path):
  with pytest.raises(experiment.StageError, match="stage module 'no_such_stages' cannot be "
                                                  "imported"):
    experiment.run(make_config([], stage_modules=("no_such_stages",)), str(tmp_path))


def test_stage_modules_register_stages_on_import(tmp_path, monkeypatch):
  (tmp_path / "extra_stages.py").write_text(
      "from wcse_jax import experiment\n"
      "@experiment.stage('extra')\n"
      "def extra(ctx):\n"
      "  return {'ok': True}\n")
  monkeypatch.syspath_prepend(str(tmp_path))
  manifests = experiment.run(make_config(["extra"], stage_modules=("extra_stages",)),
                             str(tmp_path / "w"))
  assert manifests["extra"]["counts"] == {"ok": True}


@pytest.mark.parametrize("result,match", [(None, "returned NoneType"),
                                          ({"a": object()}, "JSON cannot hold")])
def test_stage_results_must_be_json_dicts(tmp_path, result, match):
  @experiment.stage("odd")
  def odd(ctx):
    return result

  with pytest.raises(experiment.StageError, match=match):
    experiment.run(make_config(["odd"]), str(tmp_path))
  assert (tmp_path / "odd.partial").exists() and not (tmp_path / "odd").exists()


def test_foreign_folder_without_manifest_is_refused(tmp_path):
  register_pair([])
  (tmp_path / "first").mkdir()
  with pytest.raises(experiment.StageError, match="holds no MANIFEST.json"):
    experiment.run(make_config(["first"]), str(tmp_path))


def test_registration_errors():
  with pytest.raises(ValueError, match="lower_snake_case"):
    experiment.stage("Bad-Name")

  def one(ctx):
    return {}

  def two(ctx):
    return {}

  experiment.stage("twice")(one)
  experiment.stage("twice")(one)  # re-import of the same function is fine
  with pytest.raises(ValueError, match="registered twice"):
    experiment.stage("twice")(two)


@pytest.mark.parametrize("config,match", [
    ({"stages": "first"}, "tuple of stage names"),
    ({"stages": ("first", "first")}, "lists a stage twice"),
    ({"stage": ("first",)}, "no `stages` list"),
])
def test_stage_list_validation(tmp_path, config, match):
  register_pair([])
  with pytest.raises(experiment.StageError, match=match):
    experiment.run(ml_collections.ConfigDict(config), str(tmp_path))
