"""`python -m wcse_jax.main` end to end, as subprocesses with a tiny config and stage module."""
import json
import os
import socket
import subprocess
import sys

import ml_collections
import pytest
from cpu_devices import NO_COMPILATION_CACHE, xla_flags

from wcse_jax import main

CONFIG = """
from wcse_jax import config_base


def get_config(arg=None):
  config = config_base.base_config()
  config.stages = ("echo",)
  config.stage_modules = ("echo_stages",)
  config.n = 3 if arg != "big" else 300  # Number the echo stage writes.
  config.sub = dict(x=1.5, name="a")  # A nested section.
  return config
"""

STAGES = """
import json
import os

import jax

from wcse_jax import experiment


@experiment.stage("echo")
def echo(ctx):
  with open(os.path.join(ctx.out, "echo.json"), "w") as f:
    json.dump({"n": ctx.config.n, "x": ctx.config.sub.x}, f)
  return {"n": ctx.config.n}


@experiment.stage("shard")
def shard(ctx):
  with open(os.path.join(ctx.out, f"shard{jax.process_index()}.json"), "w") as f:
    json.dump(jax.process_index(), f)
  return {"processes": jax.process_count()}


@experiment.stage("gather")
def gather(ctx):
  seen = sorted(os.listdir(ctx.input("shard")))
  return {"seen": seen, "chief": ctx.is_chief}
"""


@pytest.fixture
def project(tmp_path):
  (tmp_path / "cfg.py").write_text(CONFIG)
  (tmp_path / "echo_stages.py").write_text(STAGES)
  return tmp_path


def run_main(project, *args, config="cfg.py", devices=1, background=False):
  env = dict(os.environ, PYTHONPATH=str(project), JAX_PLATFORMS="cpu",
             XLA_FLAGS=xla_flags(devices),
             JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", **NO_COMPILATION_CACHE)
  command = [sys.executable, "-m", "wcse_jax.main", f"--config={project / config}", *args]
  if background:
    return subprocess.Popen(command, env=env, cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  return subprocess.run(command, env=env, cwd=project, capture_output=True, text=True, timeout=120)


def manifest(workdir, stage):
  with open(os.path.join(workdir, stage, "MANIFEST.json")) as f:
    return json.load(f)


def test_overrides_reach_the_config_and_the_stage(project):
  workdir = project / "w"
  done = run_main(project, f"--workdir={workdir}", "--config.n=7", "--config.sub.x=2.5")
  assert done.returncode == 0, done.stderr
  assert json.loads((workdir / "echo" / "echo.json").read_text()) == {"n": 7, "x": 2.5}
  assert manifest(workdir, "echo")["config"]["sub"] == {"name": "a", "x": 2.5}
  assert (workdir / "logs" / "main.0.log").read_text().count("stage echo: finished") == 1
  again = run_main(project, f"--workdir={workdir}", "--config.n=8", "--config.sub.x=2.5")
  assert again.returncode == 1
  assert "FATAL stage 'echo'" in again.stderr and "n: 7 -> 8" in again.stderr
  assert "--config.rerun=echo" in again.stderr and "Traceback" not in again.stderr


def test_config_argument_picks_the_variant(project):
  done = run_main(project, f"--workdir={project / 'w'}", config="cfg.py:big")
  assert done.returncode == 0, done.stderr
  assert manifest(project / "w", "echo")["counts"] == {"n": 300}


@pytest.mark.parametrize("override,expected", [
    ("--config.sub.y=1", "--config.sub.y: config.sub has no field 'y'. Its fields: name, x"),
    ("--config.nn=1", "--config.nn: config has no field 'nn'. Did you mean 'n'?"),
    ("--config.n.deep=1", "config.n holds a value of type int, not a ConfigDict"),
    ("--config.n=abc", "flag --config.n=abc: invalid literal for int() with base 10: 'abc' "
                       "(the config field config.n takes a value of type int)"),
])
def test_bad_overrides_are_one_line_errors_naming_the_key(project, override, expected):
  done = run_main(project, f"--workdir={project / 'w'}", override)
  assert done.returncode == 1
  assert expected in done.stderr
  assert "Traceback" not in done.stderr
  assert not (project / "w").exists()


def test_two_processes_share_the_work_and_only_process_0_writes(project):
  workdir = project / "w"
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  args = [f"--workdir={workdir}", "--config.distributed=true", "--config.stages=shard",
          "--config.stages=gather", f"--coordinator_address=127.0.0.1:{port}",
          "--num_processes=2"]
  procs = [run_main(project, *args, f"--process_id={i}", devices=2, background=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=120)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outputs
  assert manifest(workdir, "shard")["counts"] == {"processes": 2}
  assert sorted(os.listdir(workdir / "shard")) == [
      "MANIFEST.json", "START.json", "shard0.json", "shard1.json"]
  # gather ran after both processes' shards were in place and the folder was renamed.
  gather = manifest(workdir, "gather")
  assert gather["counts"] == {"seen": ["MANIFEST.json", "START.json", "shard0.json",
                                       "shard1.json"], "chief": True}
  assert gather["process_count"] == 2
  assert sorted(os.listdir(workdir)) == ["gather", "logs", "shard"]


def test_missing_field_describes_the_path():
  config = ml_collections.ConfigDict({"a": {"b": 1}, "c": "x"})
  assert main.missing_field(config, "a.b") is None
  assert main.missing_field(config, "a.bb") == (
      "config.a has no field 'bb'. Did you mean 'b'? Its fields: b")
  assert main.missing_field(config, "c.d").startswith("config.c holds a value of type str")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc tunables are Linux-only")
def test_malloc_hint_only_for_cpu_runs_without_huge_pages():
  hint = main.malloc_hint("cpu", "")
  assert "GLIBC_TUNABLES=glibc.malloc.hugetlb=1" in hint and "launch/_malloc.sh" in hint
  assert main.malloc_hint("cpu", "glibc.malloc.arena_max=2") == hint
  assert main.malloc_hint("cpu", "glibc.malloc.hugetlb=1") is None
  assert main.malloc_hint("cpu", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0") is None
  assert main.malloc_hint("gpu", "") is None
  assert main.malloc_hint("tpu", "") is None
