r"""Runs an experiment: `python -m wcse_jax.main --config=configs/X.py[:arg] --workdir=DIR`.

Any config field can be overridden with `--config.a.b=value` (tuples: repeat the flag,
`--config.stages=sample --config.stages=grade`, or quote one Python literal,
`--config.stages="('sample', 'grade')"`). Multi-host launches set `--config.distributed=true`
and let jax.distributed.initialize() find the cluster, or pass --coordinator_address,
--num_processes and --process_id.

`--dry_run` builds the config, applies the overrides, runs every stage's validation and prints
the stage plan (what would be skipped, resumed or run) without running, locking or writing
anything. `--refresh_manifest=S` accepts a deliberate edit of finished stage S's record files (see
experiment.refresh_manifest) and exits; the stages built from S must then be rerun.

Errors. A user error prints one line, `FATAL <message>`, and exits with status 1; the message
names the culprit (key, file and line, stage, workdir holder) and what to do. User errors are
the problems a user fixes without touching the code:
  - a bad `--config.*` override (unknown key, wrong type), or an error the config file's
    get_config raises: flag parsing (parse_flags);
  - experiment.StageError: a config no stage accepts (validation, including a ValueError a
    stage's validate hook raises), a stage plan that cannot run (unknown stage, an input not
    finished, a finished stage made under another config, rebuilt inputs), a workdir in use;
  - files.DataError (also data.sources.DataError): input data, records, manifests, checkpoints
    or model specs that are missing, truncated, corrupt, edited since their stage finished, or do
    not fit the model.
Their traceback goes to the log file only, unless `--traceback` prints it too. Every other
exception is a bug, and keeps its traceback. The config in full is in the log file
(workdir/logs/main.<process>.log), not on stderr.
"""
from __future__ import annotations

import difflib
import logging as std_logging
import os
import re
import sys
import traceback

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from wcse_jax import experiment, files

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file, path/to/config.py[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder for every stage's output.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0 (default: detected by JAX).")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, "Number of processes (default: detected by JAX).")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, "This process's index (default: detected by JAX).")
_DRY_RUN = flags.DEFINE_bool(
    "dry_run", False, "Validate the config and print the stage plan; run and write nothing.")
_TRACEBACK = flags.DEFINE_bool(
    "traceback", False, "On a FATAL config, data or stage error, print its traceback too (it is "
    "always in the log file).")
_REFRESH = flags.DEFINE_string(
    "refresh_manifest", None, "Finished stage whose record files were edited on purpose: list "
    "them anew in its manifest, then exit.")
flags.mark_flags_as_required(["config", "workdir"])

# The problems a user fixes without touching the code (see the module docstring).
USER_ERRORS = (experiment.StageError, files.DataError)

# Writes to the log file only (the handler is added by _log_to_file): the config dump and the
# traceback behind a FATAL line.
_FILE_LOG = std_logging.getLogger("wcse_jax.main.log_file")
_FILE_LOG.propagate = False
_FILE_LOG.setLevel(std_logging.INFO)
_FILE_LOG.addHandler(std_logging.NullHandler())


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    _run(_CONFIG.value, _WORKDIR.value)
  except USER_ERRORS as e:
    _fatal(e, print_traceback=_TRACEBACK.value)


def _run(config: ml_collections.ConfigDict, workdir: str) -> None:
  if _DRY_RUN.value:
    print(dry_run_report(config, workdir))
    return
  if config.get("distributed", False):
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  # Locked before the log file opens, so a run refused for a busy workdir writes nothing there.
  with experiment.workdir_lock(workdir):
    log_file = _log_to_file(workdir)
    name = config_flags.get_config_filename(flags.FLAGS["config"])
    logging.info("process %d of %d; config %s (in full in %s)", jax.process_index(),
                 jax.process_count(), name, log_file)
    _FILE_LOG.info("config %s:\n%s", name, config)
    hint = malloc_hint(jax.default_backend(), os.environ.get("GLIBC_TUNABLES", ""))
    if hint:
      logging.warning(hint)
    if _REFRESH.value:
      if jax.process_index() == 0:
        diff = experiment.refresh_manifest(os.path.join(workdir, _REFRESH.value))
        print(f"refreshed the manifest of {_REFRESH.value}: "
              + ", ".join(f"{len(v)} {k}" for k, v in diff.items())
              + "; rerun the stages built from it (--config.rerun=<the first of them>)")
      return
    experiment.run(config, workdir)


def _fatal(error: Exception, print_traceback: bool = False) -> None:
  """Exits with the one-line `FATAL <message>` of a user error; its traceback goes to the log
  file (when open) and, with `print_traceback`, to stderr before that line."""
  message = " ".join(str(error).splitlines())
  _FILE_LOG.error("FATAL %s", message, exc_info=error)
  if print_traceback:
    traceback.print_exception(error)
  sys.exit(f"FATAL {message}")


def dry_run_report(config: ml_collections.ConfigDict, workdir: str) -> str:
  """The validated stage plan of `config` in `workdir`, as text (see experiment.describe)."""
  plan = experiment.describe(config, workdir)
  lines = [f"config {config_flags.get_config_filename(flags.FLAGS['config'])} is valid; "
           f"workdir {workdir}", f"{'stage':<16}{'hash':<14}state  (config keys it reads)"]
  lines += [f"{row['stage']:<16}{row['config_hash']:<14}{row['state']}  "
            f"({', '.join(row['reads'])})" for row in plan]
  return "\n".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with errors that name the bad `--config.*` override.

  ml_collections reports an unknown override key as a bare `KeyError: "'nm_samples'"` traceback,
  a value of the wrong type as e.g. "invalid literal for int()", and an error raised by the config
  file's get_config with its traceback inside the message; all exit here with one line naming
  the key (and, for a wrong type, the type the field expects) or the config file's error. With
  --traceback the config file's traceback is printed too.
  """
  try:
    return flags.FLAGS(argv)
  except (KeyError, AttributeError):
    message = unknown_override_message(argv)
    if message is None:
      raise
  except flags.Error as e:
    message = _with_expected_type(str(e))
    lines = [line for line in message.splitlines() if line.strip()]
    if len(lines) > 1 and "--traceback" not in argv:
      message = f"{lines[0]} {lines[-1]}"  # The last line of the embedded traceback: the error.
  sys.stderr.write(f"FATAL Flags parsing error: {message}\n")
  sys.exit(1)


def unknown_override_message(argv: list[str]) -> str | None:
  """Describes the first `--config.*` override naming no field of the config (None if all do)."""
  argv = flags.FLAGS.read_flags_from_files(argv, force_gnu=False)
  config = flags.FLAGS["config"].parser.parse(_config_spec(argv))
  for arg in argv:
    match = re.match(r"--?(?:no)?config\.([^=]+)", arg)
    if match and "[" not in match.group(1):  # Indexed paths (a.b[0]) are left to ml_collections.
      problem = missing_field(config, match.group(1))
      if problem:
        return f"--config.{match.group(1)}: {problem}"
  return None


def missing_field(config: ml_collections.ConfigDict, path: str) -> str | None:
  """Why the dotted `path` names no field of `config`, or None if it does."""
  node, walked = config, "config"
  for part in path.split("."):
    if not isinstance(node, ml_collections.ConfigDict):
      return (f"{walked} holds a value of type {type(node).__name__}, not a ConfigDict, so it "
              f"has no field {part!r}")
    if part not in node:
      known = sorted(node.keys())
      close = difflib.get_close_matches(part, known, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      return (f"{walked} has no field {part!r}.{hint} Its fields: "
              f"{', '.join(known) or '(none)'}")
    node, walked = node[part], f"{walked}.{part}"
  return None


def malloc_hint(backend: str, glibc_tunables: str) -> str | None:
  """A warning for Linux CPU runs whose malloc is not on huge pages (launch/_malloc.sh says why)."""
  if (backend != "cpu" or not sys.platform.startswith("linux")
      or "glibc.malloc.hugetlb=" in glibc_tunables):
    return None
  return ("running on CPU without GLIBC_TUNABLES=glibc.malloc.hugetlb=1, which the launch/ "
          "scripts set: XLA:CPU allocates every step's temporary buffers afresh, and on 4 KiB "
          "pages the tiny preset's training step runs ~10% slower (launch/_malloc.sh). Export it "
          "before starting Python to use huge pages.")


def _config_spec(argv: list[str]) -> str:
  for i, arg in enumerate(argv):
    match = re.fullmatch(r"--?config(?:=(.*))?", arg)
    if match:
      return match.group(1) if match.group(1) is not None else argv[i + 1]
  raise app.UsageError("--config is required")


def _with_expected_type(message: str) -> str:
  match = re.match(r"flag --(config\.[^=]+)=", message)
  if not match or match.group(1) not in flags.FLAGS:
    return message
  expected = flags.FLAGS[match.group(1)].flag_type()
  return f"{message} (the config field {match.group(1)} takes a value of type {expected})"


def _quiet_libraries(record: std_logging.LogRecord) -> bool:
  """Keeps the libraries' INFO chatter (orbax logs every checkpoint step) out of the output."""
  library = any(part in record.pathname for part in ("/orbax/", "/jax/", "/jaxlib/"))
  return not library or record.levelno >= std_logging.WARNING


def _log_to_file(workdir: str) -> str:
  """Adds a per-process log file in workdir/logs beside absl's stderr output; returns its path."""
  std_logging.getLogger("absl").addFilter(_quiet_libraries)
  folder = os.path.join(workdir, "logs")
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f"main.{jax.process_index()}.log")
  handler = std_logging.FileHandler(path)
  handler.setFormatter(logging.PythonFormatter())
  std_logging.getLogger().addHandler(handler)
  _FILE_LOG.addHandler(handler)
  return path


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
