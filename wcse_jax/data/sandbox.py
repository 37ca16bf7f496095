"""Running untrusted Python programs (HumanEval-style) in a sandbox, one process tree per program.

`run_program(code, limits, checker)` -> ExecResult(outcome in {"pass", "fail", "timeout",
"error"}, output_tail, ...); `run_programs` runs many in parallel threads (each thread only waits
on its own child processes). The child side is sandbox_child.py, whose docstring details the
processes and layers:

  outcome     decided by a process the program cannot reach. With a `Checker` (HumanEval), the
              trusted tests run in a separate checker process (another uid as root) that calls
              the program's function over a socket and receives plain values only; the checker
              alone reports "pass"/"fail"/"error". Without one, the program is its own test and
              reports how it ended, tagged with a per-run nonce: anything else written on that
              channel, or an end without the report, is an error. The channel to this runner is
              never open in the program's process, and stdout/stderr are a pipe that this runner
              drains (keeping the tail), so output volume cannot change an outcome.
  network     a fresh network namespace (unshare(CLONE_NEWNET), with a user namespace when not
              root) when the kernel permits; otherwise socket creation is blocked in Python
              before the program runs, plus Landlock TCP connect/bind denial where available.
  processes   a fresh pid namespace whose pid 1 is the supervisor: when it exits, the kernel
              kills every process left in it, daemonised (setsid, double-fork) ones included;
              RLIMIT_NPROC caps a fork bomb. Without namespaces: a subreaper supervisor that
              kills re-parented orphans, and (as root) a final kill(-1) as the run's own uids.
  limits      RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE, RLIMIT_NPROC, RLIMIT_NOFILE, no core.
  files       the program sees only the interpreter's files (read-only) and a private temporary
              directory (its cwd/HOME/TMPDIR, deleted afterwards), and writes only there. In
              order of preference: (1) a mount namespace whose root is a fresh tmpfs holding only
              those, plus Landlock (Linux >= 5.13) confining reads and writes to them as a second
              layer; (2) without namespaces, Landlock alone confines reads and writes; (3)
              without either, reads are not confined and writes only by file permissions (as a
              fresh uid when root). As root the program runs under a fresh unprivileged uid with
              no capabilities; only in (2)/(3), and only if that uid cannot read the interpreter
              (a Python under /root), it keeps CAP_DAC_READ_SEARCH, which Landlock still confines
              in (2).
  timeout     the supervisor kills everything at `timeout_s` of wall time; the runner kills the
              whole process group as a backstop a few seconds later.

`ExecResult.isolation` names every layer that was in place, e.g. "netns+pidns+mntns+uid N+
landlock-fs+landlock-read+landlock-scope(abi 7)"; a weaker fallback shows as "no-namespaces",
"no-landlock", "python-socket-block" or "cap_dac_read_search" in it.

Outcomes: "pass" (the program ran to its end / the tests passed), "fail" (an assertion failed: the
tests' own, or for a plain program an AssertionError that escaped), "timeout" (wall-clock or CPU
limit), "error" (any other exception, an early exit, a kill by a limit such as file size, a
forged report). Not a defence against kernel exploits; without namespaces and Landlock it is only
as strong as file permissions and the Python-level guards.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import os
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from wcse_jax.data.example import Example

_CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")
# The base interpreter, not a virtualenv's: a venv's files (and pyvenv.cfg) may live inside the
# repository, which the program must not see; the child needs only the standard library.
_PYTHON = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
if not os.path.exists(_PYTHON):
  _PYTHON = sys.executable
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
class Checker:
  """Trusted tests for a program, run in their own process (see the module doc). `code` defines
  check(candidate); `candidate` calls the program's function `entry_point` and returns its value
  as plain data (None, bool, int, float, complex, str, bytes, list, tuple, dict, set)."""
  code: str
  entry_point: str


@dataclasses.dataclass(frozen=True)
class ExecResult:
  outcome: str  # "pass" | "fail" | "timeout" | "error"
  output_tail: str
  detail: str
  duration_s: float
  isolation: str


def humaneval_program(example: Example, completion: str, fenced: bool = False
                      ) -> tuple[str, Checker]:
  """The program (prompt + completion) and its checker (the prompt again, for helpers such as
  `poly` that the tests call, + the problem's tests). A completion taken from a fenced code block
  is a whole function, so it goes on a new line after the prompt. The tests never run in the
  program's process, so a completion cannot redefine what they use or stop them early."""
  program = example.question + ("\n" + completion if fenced else completion) + "\n"
  checker = Checker(code=f"{example.question}\n\n{example.meta['test']}\n",
                    entry_point=example.meta["entry_point"])
  return program, checker


class _Tail:
  """The last `keep` bytes of a stream, without holding more than twice that."""

  def __init__(self, keep: int):
    self.keep, self.data = keep, bytearray()

  def add(self, chunk: bytes) -> None:
    self.data += chunk
    if len(self.data) > 2 * self.keep:
      del self.data[:-self.keep]

  def text(self, chars: int) -> str:
    return self.data[-self.keep:].decode("utf-8", "replace")[-chars:]


def _drain(fd: int, tail: _Tail, max_chunks: int = 1 << 30) -> bool:
  """Reads what `fd` has now into `tail` (at most `max_chunks` reads); False once at EOF."""
  for _ in range(max_chunks):
    try:
      chunk = os.read(fd, 1 << 16)
    except BlockingIOError:
      return True
    if not chunk:
      return False
    tail.add(chunk)
  return True


def _read_status(sock: socket.socket) -> list[dict]:
  sock.setblocking(False)
  data = b""
  while True:
    try:
      chunk = sock.recv(1 << 16)
    except (BlockingIOError, ConnectionResetError):
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
  result = next((s["result"] for s in status if "result" in s), None)
  setup = next((s["setup_error"] for s in status if "setup_error" in s), None)
  if result is not None:
    return result["outcome"], result["detail"]
  if setup:
    return "error", f"sandbox setup failed: {setup}"
  if hard_timeout:
    return "timeout", "wall-clock limit"
  return "error", f"sandbox exited with status {returncode} without a report"


def _supervise_output(proc: subprocess.Popen, out_fd: int, tail: _Tail, limit_s: float) -> bool:
  """Drains the run's output until its process tree is gone or `limit_s` passes; returns whether
  the limit was hit. Normally the pipe's EOF (every writer dead) ends the wait; the poll also
  catches a sandbox whose leftovers keep the pipe open."""
  deadline = time.monotonic() + limit_s
  open_ = True
  while True:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      return True
    if open_:
      ready, _, _ = select.select([out_fd], [], [], min(remaining, 0.05))
      if ready:
        open_ = _drain(out_fd, tail)
    if proc.poll() is not None:
      return False
    if not open_:
      time.sleep(min(remaining, 0.01))


def run_program(code: str, limits: Limits = Limits(), checker: Checker | None = None
                ) -> ExecResult:
  """Runs `code` as a Python program in the sandbox and returns its outcome; with a `checker`,
  the outcome is that of checker.code's check(candidate) against the program's function."""
  root = os.geteuid() == 0
  base = tempfile.mkdtemp(prefix="wcse_sbx_")
  work = os.path.join(base, "work")
  os.mkdir(work)
  os.mkdir(os.path.join(base, "root"))
  program = os.path.join(work, "program.py")
  with open(program, "w", encoding="utf-8") as f:
    f.write(code)
  # As root the program (and the checker) run as fresh uids nobody else uses, so RLIMIT_NPROC
  # counts only their processes and a final kill(-1) as those uids cannot hit anything else.
  uid = random.SystemRandom().randrange(1_000_000_000, 2_000_000_000) if root else None
  if uid is not None:
    os.chmod(base, 0o711)
    for path in (work, program):
      os.chown(path, uid, uid)
  status, child_status = socket.socketpair()
  out_r, out_w = os.pipe()
  code_fd = None
  if checker is not None:
    code_fd = os.memfd_create("wcse-checker")
    os.write(code_fd, checker.code.encode())
  cfg = {
      "program": program, "workdir": work, "root": os.path.join(base, "root"),
      "status_fd": child_status.fileno(), "checker_fd": code_fd,
      "entry_point": checker.entry_point if checker else None,
      "uid": uid, "checker_uid": None if uid is None else uid + 1,
      "wall_s": limits.timeout_s, "cpu_s": limits.cpu_s or math.ceil(limits.timeout_s),
      "memory_bytes": limits.memory_mb << 20, "file_size_bytes": limits.file_size_mb << 20,
      "max_processes": limits.max_processes, "max_open_files": limits.max_open_files,
      "isolation": limits.isolation,
  }
  env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work,
         "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
  start = time.monotonic()
  tail = _Tail(4 * limits.output_tail_chars)
  try:
    try:
      passed = (child_status.fileno(),) + (() if code_fd is None else (code_fd,))
      proc = subprocess.Popen(
          [_PYTHON, "-I", "-B", "-u", _CHILD, json.dumps(cfg)], cwd=work, env=env,
          stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, pass_fds=passed,
          start_new_session=True)
    finally:
      # Only the child keeps these, so the output pipe ends when the run's processes are gone.
      for fd in (out_w, code_fd):
        if fd is not None:
          os.close(fd)
      child_status.close()
    os.set_blocking(out_r, False)
    hard_timeout = _supervise_output(proc, out_r, tail, limits.timeout_s + _GRACE_S)
    try:
      os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
    proc.wait()
    messages = _read_status(status)
    result = next((s["result"] for s in messages if "result" in s), {})
    isolation = result.get("isolation") or next(
        (s["isolation"] for s in reversed(messages) if "isolation" in s), "unknown")
    if uid is not None and "pidns" not in isolation:
      _kill_uid(uid)
      if checker is not None:
        _kill_uid(uid + 1)
    _drain(out_r, tail, max_chunks=64)  # Bounded: a leftover of a fallback run may still write.
    outcome, detail = _classify(messages, hard_timeout, proc.returncode)
    return ExecResult(outcome=outcome, output_tail=tail.text(limits.output_tail_chars),
                      detail=detail, duration_s=time.monotonic() - start, isolation=isolation)
  finally:
    os.close(out_r)
    status.close()
    shutil.rmtree(base, ignore_errors=True)


def run_programs(codes: Sequence[str], limits: Limits = Limits(), workers: int | None = None,
                 checkers: Sequence[Checker | None] | None = None) -> list[ExecResult]:
  """Runs many programs, `workers` at a time (default: the number of CPUs); checkers[i], when
  given, is the checker of codes[i]."""
  if checkers is None:
    checkers = [None] * len(codes)
  if len(checkers) != len(codes):
    raise ValueError(f"run_programs: {len(codes)} programs but {len(checkers)} checkers")
  workers = workers or os.cpu_count() or 1
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    return list(pool.map(lambda job: run_program(job[0], limits, job[1]), zip(codes, checkers)))
