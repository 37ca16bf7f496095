"""Nothing forged, nothing silently wrong: the workdir lock, corrupt and edited files named in one
line, a stage that failed before any work, user errors without tracebacks, and the zoo killed
mid-training resuming to the uninterrupted run's numbers."""
import glob
import gzip
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from cpu_devices import xla_flags

from wcse_jax import checkpoints, config_base, experiment, files, loading, parallel
from wcse_jax.data import records
from wcse_jax.training import checkpointing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Each test registers its own stages into a copy of the registry (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("private_stage_registry")


def make_config(stages, **knobs):
  config = config_base.base_config()
  config.stages = tuple(stages)
  config.size = 2
  config.update(knobs)
  return config


def register_shards():
  """'shards' writes two record shards and a JSON summary; 'total' reads them."""
  @experiment.stage("shards")
  def shards(ctx):
    with records.ShardWriter(ctx.out, records_per_shard=2) as writer:
      writer.write_many({"problem_id": f"p{i}", "sample_index": 0, "x": i * ctx.config.size}
                        for i in range(4))
    files.write_json(os.path.join(ctx.out, "summary.json"), {"n": 4})
    return {"records": 4}

  @experiment.stage("total")
  def total(ctx):
    return {"total": sum(r["x"] for r in records.read_records(ctx.input("shards")))}


def dead_pid() -> int:
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


# --- A. the workdir lock -------------------------------------------------------------------------

def test_a_stale_lock_of_a_dead_run_is_taken_over(tmp_path, caplog):
  register_shards()
  lock = tmp_path / experiment.LOCK
  lock.write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid(),
                              "started_at": "then"}))
  with caplog.at_level(logging.WARNING, logger="wcse_jax.experiment"):
    experiment.run(make_config(["shards"]), str(tmp_path))
  assert "taking over the stale lock of a run that ended without releasing it" in caplog.text
  assert not lock.exists()  # released at the end


HOLD = """
import fcntl, json, os, socket, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f, fcntl.LOCK_EX)
f.truncate(0)
pid = os.getpid() if sys.argv[2] == "self" else int(sys.argv[2])
f.write(json.dumps({"host": socket.gethostname(), "pid": pid, "started_at": "then"}))
f.flush()
print("locked", flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("holder", ["live", "dead"])
def test_a_held_lock_is_refused_unless_its_run_is_gone(tmp_path, caplog, holder):
  """'dead': the flock is held by a process the dead run started (its pid is in the file)."""
  register_shards()
  pid = "self" if holder == "live" else str(dead_pid())
  helper = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / experiment.LOCK), pid],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert helper.stdout.readline().strip() == "locked"
    if holder == "live":
      with pytest.raises(experiment.StageError) as error:
        experiment.run(make_config(["shards"]), str(tmp_path))
      message = str(error.value)
      assert f"is in use by another run (host {socket.gethostname()}, pid {helper.pid}" in message
      assert "Wait for it to finish or stop it, or use another --workdir" in message
      assert not (tmp_path / "shards.partial").exists()
    else:
      with caplog.at_level(logging.WARNING, logger="wcse_jax.experiment"):
        experiment.run(make_config(["shards"]), str(tmp_path))
      assert f"taking over the lock of run pid {pid} on this host, which is gone" in caplog.text
      assert (tmp_path / "shards" / experiment.MANIFEST).exists()
  finally:
    helper.kill()
    helper.wait()


# --- B. corrupt and edited files, named in one line ----------------------------------------------

def write_gz(path, lines: list[bytes]):
  with gzip.open(path, "wb") as f:
    f.write(b"".join(line + b"\n" for line in lines))


def one_line_error(error) -> str:
  message = str(error.value)
  assert "\n" not in message
  return message


def test_a_truncated_gzip_shard_is_named_with_the_last_line_read(tmp_path):
  path = str(tmp_path / "samples-p00000-000000.jsonl.gz")
  write_gz(path, [json.dumps({"i": i, "text": "x" * i}).encode() for i in range(2000)])
  os.truncate(path, os.path.getsize(path) // 2)
  with pytest.raises(files.DataError) as error:
    list(records.read_records(path))
  message = one_line_error(error)
  assert message.startswith(f"{path}: cannot be read after line ")
  assert "EOFError" in message and "truncated or corrupt" in message
  assert "delete it and rerun the stage that wrote it" in message


@pytest.mark.parametrize("damage", ["flipped byte", "not gzip"])
def test_a_corrupt_gzip_file_is_named(tmp_path, damage):
  path = str(tmp_path / "data.jsonl.gz")
  write_gz(path, [json.dumps({"i": i}).encode() for i in range(100)])
  data = bytearray(open(path, "rb").read())
  if damage == "flipped byte":
    data[len(data) // 2] ^= 0xFF
  else:
    data = bytearray(b'{"i": 0}\n')
  open(path, "wb").write(bytes(data))
  with pytest.raises(files.DataError) as error:
    files.read_jsonl(path)
  assert one_line_error(error).startswith(f"{path}: cannot be read")
  assert "the file is truncated or corrupt" in str(error.value)


def test_a_line_that_is_not_utf8_is_named_with_its_line_and_column(tmp_path):
  path = str(tmp_path / "test.jsonl")
  with open(path, "wb") as f:
    f.write(b'{"q": "fine"}\n{"q": "caf\xe9"}\n{"q": "also fine"}\n')
  with pytest.raises(files.DataError) as error:
    files.read_jsonl(path)
  assert one_line_error(error).startswith(
      f"{path}:2: not UTF-8 text (byte 0xe9 at column 11); fix or delete that line")
  skipped = []
  assert [r["q"] for _, r in files.json_lines(path, skipped)] == ["fine", "also fine"]
  assert skipped == [f"{path}:2: not UTF-8 text (byte 0xe9 at column 11)"]


def test_the_manifest_lists_the_record_files_but_no_checkpoint_internals(tmp_path):
  register_shards()

  @experiment.stage("model")
  def model(ctx):
    checkpoints.save({"w": jnp.ones((2, 3))}, os.path.join(ctx.out, "m", "params"))
    files.write_json(os.path.join(ctx.out, "m", "model_config.json"), {"layers": 1})
    return {}

  manifests = experiment.run(make_config(["shards", "model"]), str(tmp_path))
  listed = manifests["shards"]["files"]
  assert sorted(listed) == ["samples-p00000-000000.jsonl.gz", "samples-p00000-000001.jsonl.gz",
                            "summary.json"]
  shard = tmp_path / "shards" / "samples-p00000-000000.jsonl.gz"
  assert listed[shard.name] == {"bytes": shard.stat().st_size, "records": 2,
                                "sha256": files.sha256(str(shard))}
  assert list(manifests["model"]["files"]) == ["m/model_config.json"]
  assert len(manifests["model"]["checksum"]) == 64


def rewrite_first_shard(workdir):
  path = os.path.join(workdir, "shards", "samples-p00000-000000.jsonl.gz")
  write_gz(path, [json.dumps({"problem_id": "p0", "sample_index": 0, "x": 100}).encode(),
                  json.dumps({"problem_id": "p1", "sample_index": 0, "x": 100}).encode()])
  return path


def edit_manifest(workdir, change):
  path = os.path.join(workdir, "shards", experiment.MANIFEST)
  manifest = json.load(open(path))
  change(manifest)
  open(path, "w").write(json.dumps(manifest))


EDITS = {
    "shard rewritten": (rewrite_first_shard,
                        r"samples-p00000-000000.jsonl.gz: edited after stage 'shards' finished "
                        r"\(\d+ bytes, sha256 \w{12} in its MANIFEST.json; now \d+ bytes, sha256 "
                        r"\w{12}\); rerun with --config.rerun=shards to rebuild it, or pass "
                        r"--refresh_manifest=shards to accept a deliberate edit"),
    "shard truncated": (lambda w: os.truncate(
        os.path.join(w, "shards", "samples-p00000-000001.jsonl.gz"), 20),
                        r"samples-p00000-000001.jsonl.gz: edited after stage 'shards' finished"),
    "shard deleted": (lambda w: os.remove(
        os.path.join(w, "shards", "samples-p00000-000001.jsonl.gz")),
                      r"samples-p00000-000001.jsonl.gz: deleted after stage 'shards' finished "
                      r"\(1 listed file\(s\) missing\); rerun with --config.rerun=shards"),
    "file added": (lambda w: files.write_json(os.path.join(w, "shards", "notes.json"), {}),
                   r"notes.json: added to stage 'shards' after it finished \(its MANIFEST.json "
                   r"does not list it\); rerun with --config.rerun=shards"),
    "manifest edited": (lambda w: edit_manifest(w, lambda m: m["counts"].update(records=5)),
                        r"MANIFEST.json: edited after stage 'shards' finished \(its checksum no "
                        r"longer matches its content\); restore it, or rerun with "
                        r"--config.rerun=shards to rebuild the stage"),
    "manifest field removed": (lambda w: edit_manifest(w, lambda m: m.pop("config_hash")),
                               r"MANIFEST.json: not a stage manifest \(no 'config_hash' field\)"),
    "manifest truncated": (lambda w: os.truncate(
        os.path.join(w, "shards", experiment.MANIFEST), 100),
                           r"MANIFEST.json: not valid JSON \(.*\); the file is truncated or was "
                           r"edited"),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_records_changed_after_their_stage_finished_are_refused_by_name(tmp_path, edit):
  register_shards()
  experiment.run(make_config(["shards"]), str(tmp_path))
  damage, expected = EDITS[edit]
  damage(str(tmp_path))
  with pytest.raises(files.DataError, match=expected) as error:
    experiment.run(make_config(["shards", "total"]), str(tmp_path))
  assert str(error.value).startswith(str(tmp_path / "shards"))
  one_line_error(error)
  assert not (tmp_path / "total").exists()


def test_a_deliberate_edit_is_accepted_by_refreshing_the_manifest(tmp_path):
  register_shards()
  assert experiment.run(make_config(["shards", "total"]), str(tmp_path))["total"]["counts"] == {
      "total": 12}
  shard = rewrite_first_shard(str(tmp_path))
  diff = experiment.refresh_manifest(str(tmp_path / "shards"))
  assert diff == {"changed": [os.path.basename(shard)], "added": [], "removed": []}
  manifest = experiment.read_manifest(str(tmp_path / "shards"))
  assert [r["changed"] for r in manifest["refreshed"]] == [[os.path.basename(shard)]]
  # 'total' was built from the manifest before the edit: it must be rebuilt, and then sees it.
  with pytest.raises(experiment.StageError, match="built from 'shards'.*rebuilt since"):
    experiment.run(make_config(["shards", "total"]), str(tmp_path))
  manifests = experiment.run(make_config(["shards", "total"], rerun="total"), str(tmp_path))
  assert manifests["total"]["counts"] == {"total": 100 + 100 + 4 + 6}


def small_params_checkpoint(path, params=None):
  params = params or {"embedder": jnp.arange(4096.0).reshape(64, 64), "norm": jnp.ones(64)}
  checkpoints.save(params, path)
  return params


def truncate_largest_file(folder):
  paths = [p for p in glob.glob(os.path.join(folder, "**"), recursive=True) if os.path.isfile(p)]
  victim = max(paths, key=os.path.getsize)
  os.truncate(victim, os.path.getsize(victim) // 2)


@pytest.mark.parametrize("damaged", ["largest file", "_METADATA"])
def test_a_damaged_checkpoint_is_one_line_naming_it(tmp_path, damaged):
  folder = str(tmp_path / "params")
  params = small_params_checkpoint(folder)
  if damaged == "largest file":
    truncate_largest_file(folder)
  else:
    os.truncate(os.path.join(folder, "_METADATA"), 100)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  with pytest.raises(files.DataError) as error:
    checkpoints.restore(folder, abstract)
  message = one_line_error(error)
  assert message.startswith(f"{folder}: cannot be read as a checkpoint (")
  assert "it is damaged, or not a checkpoint folder: restore the folder from a copy" in message
  assert len(message) < 700


def test_a_damaged_training_checkpoint_names_its_step_and_how_to_resume(tmp_path):
  directory = str(tmp_path / "checkpoints")
  state = {"w": jnp.arange(4096.0).reshape(64, 64)}
  manager = checkpointing.checkpoint_manager(directory, save_every=3, async_save=False)
  checkpointing.save(manager, 3, state)
  manager.close()
  step = os.path.join(directory, "3")
  truncate_largest_file(os.path.join(step, "state"))
  manager = checkpointing.checkpoint_manager(directory, save_every=3)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
  with pytest.raises(files.DataError) as error:
    checkpointing.restore_latest(manager, abstract)
  message = one_line_error(error)
  assert message.startswith(f"{step}: cannot be read as a checkpoint (")
  assert message.endswith(f"delete {step} to resume from the checkpoint before it, or all of "
                          f"{directory} to start this training over")


def model_spec(checkpoint, preset=""):
  return ml_collections.ConfigDict(dict(name="student", preset=preset, checkpoint=checkpoint,
                                        tokenizer="/nowhere/tokenizer.model", dtype="float32"))


SPEC_PROBLEMS = {
    "no model config": "model 'student': {folder} has no model_config.json (it is not a folder "
                       "written by loading.save_model) and the spec names no preset; set the "
                       "spec's preset to the architecture of this published checkpoint (",
    "damaged model config": "{folder}/model_config.json: not valid JSON (",
    "no folder": "model 'student': checkpoint folder '{folder}/nowhere' not found; point the "
                 "spec's checkpoint at an existing folder",
    "no tokenizer": "model 'student': /nowhere/tokenizer.model: no tokenizer model file; point "
                    "the spec's tokenizer at the model's own tokenizer.model",
}


@pytest.mark.parametrize("case", sorted(SPEC_PROBLEMS))
def test_model_spec_problems_are_one_line_naming_the_model_and_file(tmp_path, case):
  folder = str(tmp_path / "student")
  small_params_checkpoint(os.path.join(folder, "params"))
  checkpoint, preset = folder, ""
  if case == "damaged model config":
    open(os.path.join(folder, "model_config.json"), "w").write('{"num_layers": 2, "embed_di')
  elif case == "no folder":
    checkpoint = os.path.join(folder, "nowhere")
  elif case == "no tokenizer":
    preset = "test"
  mesh = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  with pytest.raises(files.DataError) as error:
    loading.load(model_spec(checkpoint, preset), mesh)
  assert one_line_error(error).startswith(SPEC_PROBLEMS[case].format(folder=folder))


# --- E. a stage that failed before writing any work does not block the corrected run -------------

def test_a_stage_that_failed_before_any_work_is_started_afresh_under_another_config(
    tmp_path, caplog):
  @experiment.stage("early")
  def early(ctx):
    records.ShardWriter(ctx.out).close()  # leaves its empty lock file
    if ctx.config.size == 2:
      raise RuntimeError("a bad knob, found late")
    files.write_json(os.path.join(ctx.out, "out.json"), {"size": ctx.config.size})
    return {"size": ctx.config.size}

  with pytest.raises(RuntimeError, match="found late"):
    experiment.run(make_config(["early"]), str(tmp_path))
  assert sorted(os.listdir(tmp_path / "early.partial")) == [".samples-p00000.lock", "START.json"]
  plan = experiment.describe(make_config(["early"], size=3), str(tmp_path))
  assert plan[0]["state"] == "failed before any work: started afresh"
  with caplog.at_level(logging.INFO, logger="wcse_jax.experiment"):
    manifests = experiment.run(make_config(["early"], size=3), str(tmp_path))
  assert "holds no work from its earlier attempt" in caplog.text
  assert "with another config: size: 2 -> 3); starting it afresh" in caplog.text
  assert manifests["early"]["config"]["size"] == 3 and manifests["early"]["counts"] == {"size": 3}


def test_a_value_error_of_a_validate_hook_is_a_stage_error_naming_the_stage(tmp_path):
  def check(config):
    raise ValueError("unknown model preset 'gemma9'")

  experiment.stage("picky", validate=check)(lambda ctx: {})
  with pytest.raises(experiment.StageError, match="stage 'picky' rejects the config: unknown "
                                                  "model preset 'gemma9'"):
    experiment.run(make_config(["picky"]), str(tmp_path))
  assert not os.listdir(tmp_path)  # validated before anything was written


# --- D. user errors through `python -m wcse_jax.main`: one FATAL line, no traceback --------------

CONFIG = """
from wcse_jax import config_base


def get_config(arg=None):
  if arg is not None:
    raise ValueError(f"cfg.py: unknown variant {arg!r}; this config has none")
  config = config_base.base_config()
  config.stages = ("echo",)
  config.stage_modules = ("reliability_stages",)
  config.n = 3  # Must be >= 0.
  config.data = ""  # A JSONL file the 'read' stage reads.
  config.model = dict(name="m", preset="", checkpoint="", tokenizer="", dtype="float32")
  config.release = ""  # The 'wait' stage holds the workdir until this file exists.
  return config
"""

STAGES = """
import os
import time

import jax

from wcse_jax import checkpoints, experiment, files, loading, parallel


def check_n(config):
  if config.n < 0:
    raise experiment.StageError(f"config.n={config.n}: must be >= 0")


@experiment.stage("echo", validate=check_n)
def echo(ctx):
  files.write_json(os.path.join(ctx.out, "echo.json"), {"n": ctx.config.n})
  return {"n": ctx.config.n}


@experiment.stage("double")
def double(ctx):
  return {"n": 2 * files.read_json(os.path.join(ctx.input("echo"), "echo.json"))["n"]}


@experiment.stage("read")
def read(ctx):
  return {"records": len(files.read_jsonl(ctx.config.data))}


@experiment.stage("load")
def load(ctx):
  loading.load(ctx.config.model, parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1]))
  return {}


@experiment.stage("restore")
def restore(ctx):
  abstract = {"w": jax.ShapeDtypeStruct((64, 64), jax.numpy.float32)}
  checkpoints.restore(ctx.config.data, abstract)
  return {}


@experiment.stage("wait")
def wait(ctx):
  while not os.path.exists(ctx.config.release):
    time.sleep(0.05)
  return {}
"""


@pytest.fixture
def project(tmp_path):
  (tmp_path / "cfg.py").write_text(CONFIG)
  (tmp_path / "reliability_stages.py").write_text(STAGES)
  return tmp_path


def run_main(project, *args, config="cfg.py", background=False):
  env = dict(os.environ, PYTHONPATH=str(project), JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(1),
             TF_CPP_MIN_LOG_LEVEL="3")
  command = [sys.executable, "-m", "wcse_jax.main", f"--config={project / config}",
             f"--workdir={project / 'w'}", *args]
  if background:
    return subprocess.Popen(command, env=env, cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
  return subprocess.run(command, env=env, cwd=project, capture_output=True, text=True, timeout=120)


def fatal_lines(done):
  assert done.returncode == 1, done.stderr[-3000:]
  lines = [line for line in done.stderr.splitlines() if line.startswith("FATAL")]
  assert len(lines) == 1, done.stderr[-3000:]
  return lines[0]


@pytest.mark.parametrize("case", ["bad knob", "corrupt shard", "missing checkpoint",
                                  "damaged checkpoint"])
def test_user_errors_are_one_fatal_line_without_a_traceback(project, case):
  data = project / "test.jsonl.gz"
  write_gz(str(data), [json.dumps({"i": i, "pad": "x" * 50}).encode() for i in range(3000)])
  os.truncate(data, os.path.getsize(data) // 2)
  damaged = str(project / "params")
  if case == "damaged checkpoint":
    small_params_checkpoint(damaged, {"w": jnp.arange(4096.0).reshape(64, 64)})
    truncate_largest_file(damaged)
  args, expected = {
      "bad knob": (["--config.n=-1"], "FATAL config.n=-1: must be >= 0"),
      "corrupt shard": ([f"--config.data={data}", "--config.stages=read"],
                        f"FATAL {data}: cannot be read after line "),
      "missing checkpoint": ([f"--config.model.checkpoint={project}/gone", "--config.stages=load"],
                             f"FATAL model 'm': checkpoint folder '{project}/gone' not found; "
                             f"point the spec's checkpoint at an existing folder"),
      "damaged checkpoint": ([f"--config.data={damaged}", "--config.stages=restore"],
                             f"FATAL {damaged}: cannot be read as a checkpoint (ValueError: "
                             f"OUT_OF_RANGE: Error reading "),
  }[case]
  done = run_main(project, *args)
  assert fatal_lines(done).startswith(expected)
  assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
  assert "stage_modules:" not in done.stderr  # the config dump is in the log file
  log = (project / "w" / "logs" / "main.0.log").read_text()
  assert "stage_modules:" in log and "Traceback" in log and expected[len("FATAL "):] in log
  if case == "corrupt shard":
    again = run_main(project, *args, "--traceback")
    assert fatal_lines(again).startswith(expected)
    assert "Traceback (most recent call last)" in again.stderr
    assert again.stderr.rstrip().splitlines()[-1].startswith("FATAL")


def test_an_error_of_the_config_file_is_one_fatal_line(project):
  done = run_main(project, "--dry_run", config="cfg.py:big")
  assert fatal_lines(done) == (
      f"FATAL Flags parsing error: flag --config={project / 'cfg.py'}:big: Error whilst parsing "
      f"config file: ValueError: cfg.py: unknown variant 'big'; this config has none")
  assert "Traceback" not in done.stderr
  assert "Traceback" in run_main(project, "--traceback", config="cfg.py:big").stderr


def test_a_second_live_run_is_refused_and_a_dry_run_still_plans(project):
  release = project / "release"
  holder = run_main(project, "--config.stages=wait", f"--config.release={release}",
                    background=True)
  lock = project / "w" / experiment.LOCK
  try:
    deadline = time.time() + 120
    started = project / "w" / "wait.partial" / experiment.START
    while not (started.exists() and f'"pid": {holder.pid}' in lock.read_text()):
      assert holder.poll() is None, holder.communicate()[1][-3000:]
      assert time.time() < deadline, "the first run never started its stage"
      time.sleep(0.05)
    before = sorted(glob.glob(str(project / "w" / "**"), recursive=True))
    refused = run_main(project)
    assert fatal_lines(refused) == (
        f"FATAL {project / 'w'} is in use by another run (host {socket.gethostname()}, pid "
        f"{holder.pid}, since {json.loads(lock.read_text())['started_at']}; lock file {lock}). "
        f"Wait for it to finish or stop it, or use another --workdir.")
    planned = run_main(project, "--dry_run")
    assert planned.returncode == 0, planned.stderr[-3000:]
    assert "echo" in planned.stdout and "to run" in planned.stdout
    assert sorted(glob.glob(str(project / "w" / "**"), recursive=True)) == before
    release.touch()
    assert holder.wait(timeout=120) == 0, holder.communicate()[1][-3000:]
  finally:
    holder.kill()
    holder.communicate()
  assert not lock.exists()


def test_an_edited_record_file_stops_the_reader_until_the_manifest_is_refreshed(project):
  assert run_main(project, "--config.stages=echo", "--config.stages=double").returncode == 0
  echo = project / "w" / "echo" / "echo.json"
  echo.write_text('{"n": 5}\n')
  args = ["--config.stages=echo", "--config.stages=double", "--config.rerun=double"]
  refused = run_main(project, *args)
  assert fatal_lines(refused).startswith(f"FATAL {echo}: edited after stage 'echo' finished (")
  assert fatal_lines(refused).endswith("rerun with --config.rerun=echo to rebuild it, or pass "
                                       "--refresh_manifest=echo to accept a deliberate edit")
  refreshed = run_main(project, "--refresh_manifest=echo")
  assert refreshed.returncode == 0, refreshed.stderr[-3000:]
  assert "refreshed the manifest of echo: 1 changed, 0 added, 0 removed" in refreshed.stdout
  assert run_main(project, *args).returncode == 0
  manifest = json.load(open(project / "w" / "double" / experiment.MANIFEST))
  assert manifest["counts"] == {"n": 10}


# --- C. the zoo killed mid-training resumes to the uninterrupted run's numbers -------------------

ZOO_CONFIG = """
from configs import quickstart


def get_config():
  config = quickstart.get_config("micro")
  config.stages = ("zoo",)
  for name in [n for n in config.zoo.models if n != "wc"]:  # One model keeps the test short.
    del config.zoo.models[name]
  config.zoo.eval_problems, config.zoo.max_new_tokens = 8, 16
  return config
"""


def run_zoo(config, workdir, background=False):
  # One device: resuming is the point here, and the zoo's data-parallel mesh compiles faster on
  # one device than on the 8 the test session forces.
  env = dict(os.environ, XLA_FLAGS=xla_flags(1),
             TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
  command = [sys.executable, "-m", "wcse_jax.main", f"--config={config}", f"--workdir={workdir}",
             "--config.zoo.models.wc.steps=24", "--config.zoo.save_every=3"]
  if background:
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
  done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stderr


def losses(metrics):
  return {r["step"]: r["train/loss"] for r in files.read_jsonl(metrics) if "train/loss" in r}


def test_the_zoo_killed_mid_training_resumes_to_the_uninterrupted_run(tmp_path):
  """Killed after wc's checkpoint at step >= 6, resumed; the reference trains wc uninterrupted
  from the same tokenizer (a copy of the killed workdir without wc's training folder)."""
  config = tmp_path / "zoo_only.py"
  config.write_text(ZOO_CONFIG)
  killed, straight = tmp_path / "killed", tmp_path / "straight"
  train = killed / "zoo.partial" / "train" / "wc"
  victim = run_zoo(config, killed, background=True)
  deadline = time.time() + 600
  while not [s for s in glob.glob(str(train / "checkpoints" / "*"))
             if os.path.basename(s).isdigit() and int(os.path.basename(s)) >= 6]:
    assert victim.poll() is None, victim.communicate()[1][-3000:]
    assert time.time() < deadline, "no wc checkpoint at step >= 6 in time"
    time.sleep(0.02)
  victim.send_signal(signal.SIGKILL)
  victim.communicate()
  assert victim.returncode == -signal.SIGKILL
  assert max(losses(train / "metrics.jsonl")) < 24, "wc finished training before the kill"
  assert not (killed / "zoo.partial" / "wc").exists()
  shutil.copytree(killed, straight)
  shutil.rmtree(straight / "zoo.partial" / "train" / "wc")

  resumed_log = run_zoo(config, killed)
  assert "taking over the stale lock of a run that ended without releasing it" in resumed_log
  run_zoo(config, straight)
  got = [r["step"] for r in files.read_jsonl(killed / "zoo" / "train" / "wc" / "metrics.jsonl")
         if "train/loss" in r]
  assert got == sorted(set(got)), "a resumed run logged a step twice"
  expected = losses(straight / "zoo" / "train" / "wc" / "metrics.jsonl")
  resumed = losses(killed / "zoo" / "train" / "wc" / "metrics.jsonl")
  assert 24 in expected and set(expected) <= set(resumed)
  assert {step: resumed[step] for step in expected} == expected  # exact: same batches and state
  assert (json.load(open(killed / "zoo" / "accuracy.json"))
          == json.load(open(straight / "zoo" / "accuracy.json")))
  params = []
  for workdir in (killed, straight):
    folder = str(workdir / "zoo" / "wc")
    model = loading.gemma2.make_model(loading.read_config(folder))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.value.shape, x.value.dtype),
                            loading.gemma2.abstract_params(model),
                            is_leaf=lambda x: hasattr(x, "value"))
    params.append(checkpoints.restore(os.path.join(folder, "params"), abstract))
  for a, b in zip(jax.tree.leaves(params[0]), jax.tree.leaves(params[1])):
    np.testing.assert_array_equal(a, b)
