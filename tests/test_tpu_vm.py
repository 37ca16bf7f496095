"""launch/tpu_vm.sh: the gcloud commands each verb runs, printed exactly by --dry-run.

A fake `gcloud` first on PATH records its arguments, so the tests check both that a dry run calls
nothing and that what it prints is, word for word, what a real run passes to gcloud.
"""
from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SETTINGS = {"TPU_NAME": "t1", "ZONE": "europe-west4-a", "PROJECT": "proj",
            "ACCELERATOR": "v5litepod-16", "REPO_URL": "https://example.com/wcse_jax.git",
            "REPO_REF": "v1.2"}
FAKE_GCLOUD = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["GCLOUD_LOG"], "a") as f:
  f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


@pytest.fixture
def launch(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
  (bin_dir / "gcloud").chmod(0o755)
  log = tmp_path / "gcloud.log"

  def run(*args, dry_run=True, **settings):
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS and k != "DRY_RUN"}
    env.update({**SETTINGS, **settings}, PATH=f"{bin_dir}:{env['PATH']}", GCLOUD_LOG=str(log))
    env = {k: v for k, v in env.items() if v is not None}
    argv = ["bash", str(ROOT / "launch" / "tpu_vm.sh"), *args] + (["--dry-run"] if dry_run else [])
    out = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    log.unlink(missing_ok=True)
    return out, calls
  return run


def _printed(out) -> list[list[str]]:
  assert out.returncode == 0, out.stderr
  return [shlex.split(line) for line in out.stdout.splitlines()]


@pytest.mark.parametrize("verb", [["create"], ["status"], ["setup"], ["stop"],
                                  ["run", "configs/wcse_math.py:high", "--workdir=/mnt/runs/m",
                                   "--config.models.wc.checkpoint=/mnt/my ckpt"]])
def test_dry_run_prints_exactly_what_a_real_run_calls(launch, verb):
  out, calls = launch(*verb)
  assert calls == []  # nothing ran
  (printed,) = _printed(out)
  assert printed[0] == "gcloud"
  _, real_calls = launch(*verb, dry_run=False)
  assert real_calls == [printed[1:]]


def test_create_queues_the_slice(launch):
  (cmd,) = _printed(launch("create")[0])
  assert cmd == ["gcloud", "compute", "tpus", "queued-resources", "create", "t1-qr",
                 "--node-id=t1", "--zone=europe-west4-a", "--project=proj",
                 "--accelerator-type=v5litepod-16", "--runtime-version=tpu-ubuntu2204-base"]
  (spot,) = _printed(launch("create", PROVISIONING="spot")[0])
  assert spot[-1] == "--spot"
  out, _ = launch("create", PROVISIONING="cheap")
  assert out.returncode != 0 and "PROVISIONING=cheap" in out.stderr


def test_setup_installs_the_tpu_extra_on_every_worker(launch):
  (cmd,) = _printed(launch("setup")[0])
  assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "t1"]
  assert "--worker=all" in cmd
  remote = next(a for a in cmd if a.startswith("--command="))[len("--command="):]
  assert "git clone https://example.com/wcse_jax.git wcse_jax" in remote
  assert "git -C wcse_jax fetch origin v1.2; git -C wcse_jax checkout --detach FETCH_HEAD" in remote
  assert remote.endswith('cd wcse_jax && python3 -m pip install -e ".[tpu]"')


def test_run_starts_main_with_distributed_init_on_every_worker(launch):
  (cmd,) = _printed(launch("run", "configs/wcse_math.py:high", "--workdir=/mnt/runs/m",
                           "--config.models.wc.checkpoint=/mnt/my ckpt")[0])
  assert "--worker=all" in cmd
  remote = shlex.split(next(a for a in cmd if a.startswith("--command="))[len("--command="):])
  assert remote == ["cd", "wcse_jax", "&&", "python3", "-m", "wcse_jax.main",
                    "--config=configs/wcse_math.py:high", "--config.distributed=true",
                    "--workdir=/mnt/runs/m", "--config.models.wc.checkpoint=/mnt/my ckpt"]


def test_stop_deletes_the_queued_resource_and_its_vm(launch):
  (cmd,) = _printed(launch("stop", DRY_RUN="1")[0])
  assert cmd == ["gcloud", "compute", "tpus", "queued-resources", "delete", "t1-qr",
                 "--zone=europe-west4-a", "--project=proj", "--force", "--quiet"]


def test_defaults_apply_when_settings_are_unset(launch):
  unset = dict.fromkeys(["TPU_NAME", "ZONE", "PROJECT", "ACCELERATOR"])
  (cmd,) = _printed(launch("create", **unset)[0])
  assert cmd[5:] == ["wcse-qr", "--node-id=wcse", "--zone=us-central2-b",
                     "--accelerator-type=v4-32", "--runtime-version=tpu-ubuntu2204-base"]


@pytest.mark.parametrize("args,settings,message", [
    (["setup"], {"REPO_URL": None}, "setup needs REPO_URL"),
    (["run"], {}, "run needs a config"),
    (["run", "configs/quickstart.py"], {}, "run needs --workdir=DIR"),
])
def test_missing_settings_fail_with_a_clear_message(launch, args, settings, message):
  out, calls = launch(*args, dry_run=False, **settings)
  assert out.returncode == 2 and message in out.stderr and calls == []


def test_usage(launch):
  out, _ = launch("--help", dry_run=False)
  assert out.returncode == 0 and "launch/tpu_vm.sh create" in out.stdout
  assert "REPO_URL" in out.stdout and "--dry-run" in out.stdout
  out, calls = launch("deploy", dry_run=False)
  assert out.returncode == 2 and "launch/tpu_vm.sh run CONFIG" in out.stderr and calls == []
