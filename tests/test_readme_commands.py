"""Every `python -m wcse_jax.main` command quoted in README.md is real: it passes `--dry_run`
(the config builds, the overrides name real keys with values of the right type, every stage's
validation passes and the stage plan prints), so the README and the configs cannot drift apart."""
import os
import re
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands() -> list[str]:
  """The commands in README.md's fenced code blocks, continuation lines joined."""
  text = open(os.path.join(ROOT, "README.md")).read()
  commands = []
  for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.DOTALL):
    joined = re.sub(r"\\\n\s*", " ", block)
    for line in joined.splitlines():
      start = line.find("python -m wcse_jax.main")
      if start >= 0:
        command = line[start:].split("#")[0].strip().rstrip("\"'")
        commands.append(command)
  return commands


COMMANDS = readme_commands()


def test_the_readme_quotes_commands():
  assert len(COMMANDS) >= 3


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_passes_a_dry_run(command, tmp_path):
  assert "..." not in command, f"a documented command must be complete: {command}"
  argv = shlex.split(command)[3:]  # after "python -m wcse_jax.main"
  argv = [a for a in argv if not a.startswith("--workdir")] + [f"--workdir={tmp_path / 'w'}"]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  out = subprocess.run([sys.executable, "-m", "wcse_jax.main", *argv, "--dry_run"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
  assert "is valid" in out.stdout
  assert not (tmp_path / "w").exists(), "a dry run must write nothing"
