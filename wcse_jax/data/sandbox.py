"""Running untrusted Python programs (HumanEval-style) in a sandbox, one process tree per program.

`run_program(code, limits)` -> ExecResult(outcome in {"pass", "fail", "timeout", "error"},
output_tail, ...); `run_programs` runs many in parallel threads (each thread only waits on its
own child processes). The child side is sandbox_child.py, whose docstring details the layers:

  network     a fresh network namespace (unshare(CLONE_NEWNET), with a user namespace when not
              root) when the kernel permits; otherwise socket creation is blocked in Python
              before the program runs, plus Landlock TCP connect/bind denial where available.
              `ExecResult.isolation` says which was used ("netns..." or "python-socket-block").
  processes   a fresh pid namespace whose pid 1 is our supervisor: when it exits, the kernel
              kills every process left in it, daemonised (setsid, double-fork) ones included;
              RLIMIT_NPROC caps a fork bomb. Without namespaces: a subreaper supervisor that
              kills re-parented orphans, and (as root) a final kill(-1) as the sandbox's own uid.
  limits      RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE, no core.
  files       a private temporary directory as cwd/HOME/TMPDIR, deleted afterwards; Landlock
              (Linux >= 5.13) denies writes anywhere else; as root the program also runs under
              a fresh unprivileged uid that keeps only CAP_DAC_READ_SEARCH (reads everywhere,
              so that a Python installed under /root still imports; reads are not confined).
  timeout     the supervisor kills everything at `timeout_s` of wall time; the runner kills the
              whole process group as a backstop a few seconds later.

Outcomes: "pass" (the program ran to its end), "fail" (an AssertionError escaped, i.e. a test
failed), "timeout" (wall-clock or CPU limit), "error" (any other exception, an early sys.exit,
a kill by a limit such as file size). Not a defence against kernel exploits; without user
namespaces and Landlock it is only as strong as the Python-level guards.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from wcse_jax.data.example import Example

_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")
_GRACE_S = 5.0


@dataclasses.dataclass(frozen=True)
class Limits:
  """Per-program limits. `isolation`: "auto" (namespaces when the kernel permits), "namespaces"
  (fail rather than run without them) or "none" (rlimits, Landlock and Python guards only)."""
  timeout_s: float = 10.0
  cpu_s: int | None = None  # Defaults to ceil(timeout_s).
  memory_mb: int = 1024
  file_size_mb: int = 16
  max_processes: int = 32
  max_open_files: int = 64
  output_tail_chars: int = 2000
  isolation: str = "auto"


@dataclasses.dataclass(frozen=True)
class ExecResult:
  outcome: str  # "pass" | "fail" | "timeout" | "error"
  output_tail: str
  detail: str
  duration_s: float
  isolation: str


def humaneval_program(example: Example, completion: str, fenced: bool = False) -> str:
  """Prompt + completion + the problem's tests + check(entry_point). A completion taken from a
  fenced code block is a whole function, so it goes on a new line after the prompt."""
  body = example.question + ("\n" + completion if fenced else completion)
  return (f"{body}\n\n{example.meta['test']}\n\n"
          f"check({example.meta['entry_point']})\n")


def _read_status(fd: int) -> list[dict]:
  os.set_blocking(fd, False)
  data = b""
  while True:
    try:
      chunk = os.read(fd, 65536)
    except BlockingIOError:
      break
    if not chunk:
      break
    data += chunk
  out = []
  for line in data.splitlines():
    try:
      out.append(json.loads(line))
    except ValueError:
      continue
  return out


def _tail(path: str, chars: int) -> str:
  with open(path, "rb") as f:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - 4 * chars))
    return f.read().decode("utf-8", "replace")[-chars:]


def _kill_uid(uid: int) -> None:
  """As root: kills every process of `uid` at once. kill(-1) sent by a process of that uid
  reaches exactly that uid's processes, atomically, so a fork bomb cannot outrun it. The forked
  child makes only thin syscalls, which is safe even though the runner has threads."""
  pid = os.fork()
  if pid == 0:
    try:
      os.setgid(uid)
      os.setuid(uid)
      os.kill(-1, signal.SIGKILL)
    finally:
      os._exit(0)
  os.waitpid(pid, 0)


def _classify(status: list[dict], hard_timeout: bool, returncode: int) -> tuple[str, str]:
  outcome = next((s for s in reversed(status) if "outcome" in s), None)
  supervisor = next((s["supervisor"] for s in status if "supervisor" in s), None)
  setup = next((s["setup_error"] for s in status if "setup_error" in s), None)
  if setup:
    return "error", f"sandbox setup failed: {setup}"
  if hard_timeout or (supervisor and supervisor.get("timeout")):
    return "timeout", "wall-clock limit"
  if outcome is not None:
    return outcome["outcome"], outcome.get("exception", "")
  if supervisor and "signal" in supervisor:
    sig = supervisor["signal"]
    if sig == signal.SIGXCPU:
      return "timeout", "CPU-time limit (SIGXCPU)"
    if sig == signal.SIGXFSZ:
      return "error", "file-size limit (SIGXFSZ)"
    return "error", f"killed by signal {signal.Signals(sig).name}"
  if supervisor and "exit" in supervisor:
    return "error", f"program process exited with status {supervisor['exit']} before the end"
  return "error", f"sandbox exited with status {returncode} without a report"


def run_program(code: str, limits: Limits = Limits()) -> ExecResult:
  """Runs `code` as a Python program in the sandbox and returns its outcome."""
  root = os.geteuid() == 0
  base = tempfile.mkdtemp(prefix="wcse_sbx_")
  work = os.path.join(base, "work")
  os.mkdir(work)
  program = os.path.join(work, "program.py")
  with open(program, "w", encoding="utf-8") as f:
    f.write(code)
  # As root the program runs as a fresh uid nobody else uses, so RLIMIT_NPROC counts only its
  # processes and a final kill(-1) as that uid cannot hit anything else.
  uid = random.SystemRandom().randrange(1_000_000_000, 2_000_000_000) if root else None
  if uid is not None:
    os.chmod(base, 0o711)
    for path in (work, program):
      os.chown(path, uid, uid)
  out_path = os.path.join(base, "output")
  read_fd, write_fd = os.pipe()
  cfg = {
      "program": program, "workdir": work, "status_fd": write_fd, "uid": uid,
      "wall_s": limits.timeout_s, "cpu_s": limits.cpu_s or math.ceil(limits.timeout_s),
      "memory_bytes": limits.memory_mb << 20, "file_size_bytes": limits.file_size_mb << 20,
      "max_processes": limits.max_processes, "max_open_files": limits.max_open_files,
      "isolation": limits.isolation,
  }
  env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work,
         "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
  start = time.monotonic()
  hard_timeout = False
  try:
    try:
      with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-B", "-u", _CHILD, json.dumps(cfg)], cwd=work, env=env,
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            pass_fds=(write_fd,), start_new_session=True)
    finally:
      os.close(write_fd)  # Only the child keeps the write end, so reads see EOF once it is gone.
    try:
      proc.wait(timeout=limits.timeout_s + _GRACE_S)
    except subprocess.TimeoutExpired:
      hard_timeout = True
    try:
      os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    proc.wait()
    status = _read_status(read_fd)
    isolation = next((s["isolation"] for s in reversed(status) if "isolation" in s), "unknown")
    if uid is not None and "pidns" not in isolation:
      _kill_uid(uid)
    outcome, detail = _classify(status, hard_timeout, proc.returncode)
    return ExecResult(outcome=outcome, output_tail=_tail(out_path, limits.output_tail_chars),
                      detail=detail, duration_s=time.monotonic() - start, isolation=isolation)
  finally:
    os.close(read_fd)
    shutil.rmtree(base, ignore_errors=True)


def run_programs(codes: Sequence[str], limits: Limits = Limits(),
                 workers: int | None = None) -> list[ExecResult]:
  """Runs many programs, `workers` at a time (default: the number of CPUs)."""
  workers = workers or os.cpu_count() or 1
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    return list(pool.map(lambda c: run_program(c, limits), codes))
