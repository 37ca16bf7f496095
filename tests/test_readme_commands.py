"""Every `python -m wcse_jax.main` command quoted in README.md is real: it passes a dry run (the
config builds, the overrides name real keys with values of the right type, every stage's
validation passes and the stage plan is made), so the README and the configs cannot drift apart."""
import os
import re
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

from wcse_jax import experiment
from wcse_jax import main as main_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shell_blocks(text: str) -> list[str]:
  """The bodies of the fenced blocks (``` or ~~~) tagged bash or sh, or untagged; a fence closes
  only on its own marker, so blocks of other languages never shift the pairing."""
  blocks, fence, shell, body = [], None, False, []
  for line in text.splitlines():
    stripped = line.strip()
    if fence is None and stripped.startswith(("```", "~~~")):
      fence, shell, body = stripped[:3], stripped[3:].strip() in ("", "bash", "sh"), []
    elif fence is not None and stripped == fence:
      if shell:
        blocks.append("\n".join(body) + "\n")
      fence = None
    elif fence is not None:
      body.append(line)
  return blocks


def readme_commands() -> list[str]:
  """The commands in README.md's fenced code blocks, continuation lines joined."""
  commands = []
  for block in shell_blocks(open(os.path.join(ROOT, "README.md")).read()):
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
def test_readme_command_passes_a_dry_run(command, tmp_path, monkeypatch):
  """What main's --dry_run does, in this process (a subprocess per command took ~15 s of imports
  each): the flags parsed as main parses them, every stage's validation, the stage plan; nothing
  written. main's own --dry_run path is tested in test_main.py."""
  assert "..." not in command, f"a documented command must be complete: {command}"
  argv = shlex.split(command)[3:]  # after "python -m wcse_jax.main"
  # main's own flags (--workdir, the multi-host ones, ...) must exist; only --config is parsed.
  names = {a[2:].split("=")[0] for a in argv if not a.startswith("--config")}
  known = {f.name for f in flags.FLAGS.get_flags_for_module(main_lib.__name__)}
  assert names <= known, f"{command}: flags main does not define: {sorted(names - known)}"
  monkeypatch.chdir(ROOT)  # the commands name configs relative to the repository
  argv = ["main"] + [a for a in argv if a.startswith("--config")]
  values = flags.FlagValues()
  # The override flags (--config.a.b) are found in the argv given here, as main's are in sys.argv.
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  workdir = str(tmp_path / "w")
  plan = experiment.describe(values.config, workdir)
  assert [row["stage"] for row in plan] == list(values.config.stages), command
  assert not os.path.exists(workdir), "a dry run must write nothing"
