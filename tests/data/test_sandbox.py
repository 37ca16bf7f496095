"""The code sandbox against hostile programs, and HumanEval grading through it.

Every hostile program runs in both modes: "auto" (namespaces: on this machine a private mount
namespace, pid and network namespaces, a fresh uid, Landlock) and "none" (the fallback: Landlock,
a fresh uid, Python guards).
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import socket
import time
import uuid

import pytest

from wcse_jax.data import grading, sandbox
from wcse_jax.data.sandbox import Checker, Limits, run_program, run_programs
from wcse_jax.data.tasks import get_task

FAST = Limits(timeout_s=1.5)
MODES = ["auto", "none"]
REPO = pathlib.Path(__file__).resolve().parents[2]
SQUARE = Checker("def check(candidate):\n  assert candidate(3) == 9, 'wrong square'\n", "f")


def _isolation(mode):
  return run_program("pass\n", Limits(timeout_s=5, isolation=mode)).isolation


def _leftovers(token, wait_s=3.0):
  """Pids of live (non-zombie) processes whose command line contains `token`."""
  deadline = time.monotonic() + wait_s
  while True:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
      try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
          if token.encode() in f.read():
            found.append(int(pid))
      except OSError:
        continue
    if not found or time.monotonic() > deadline:
      return found
    time.sleep(0.1)


def test_pass_fail_error_and_output_tail():
  ok = run_program("print('hello')\nassert 1 + 1 == 2\n", FAST)
  assert ok.outcome == "pass" and ok.output_tail == "hello\n", ok
  fail = run_program("print('x' * 5000)\nassert 1 == 2, 'boom'\n", FAST)
  assert fail.outcome == "fail" and "AssertionError: boom" in fail.output_tail
  assert len(fail.output_tail) == FAST.output_tail_chars
  err = run_program("def f(:\n", FAST)
  assert err.outcome == "error" and "SyntaxError" in err.detail
  exits = run_program("import sys\nsys.exit(0)\nassert False\n", FAST)
  assert exits.outcome == "error" and "SystemExit" in exits.detail
  hard_exit = run_program("import os\nos._exit(0)\n", FAST)
  assert hard_exit.outcome == "error"


@pytest.mark.parametrize("mode", MODES)
def test_infinite_loop_times_out(mode):
  start = time.monotonic()
  r = run_program("while True:\n  pass\n", Limits(timeout_s=1.5, isolation=mode))
  assert r.outcome == "timeout", r
  assert time.monotonic() - start < 1.5 + 4


def test_cpu_limit_is_a_timeout():
  r = run_program("while True:\n  pass\n", Limits(timeout_s=6, cpu_s=1))
  assert r.outcome == "timeout" and r.duration_s < 5, r


@pytest.mark.parametrize("mode", MODES)
def test_fork_bomb_is_contained_and_cleaned_up(mode):
  token = f"wcse-bomb-{uuid.uuid4().hex}"
  bomb = ("import os\nwhile True:\n  try:\n    os.fork()\n  except OSError:\n    pass\n")
  code = (f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {bomb!r}, "
          f"{token!r}])\n")
  r = run_program(code, Limits(timeout_s=1.5, max_processes=16, isolation=mode))
  assert r.outcome == "timeout", r
  assert _leftovers(token) == []


def test_memory_bomb():
  r = run_program("blocks = []\nwhile True:\n  blocks.append(bytearray(50 << 20))\n",
                  Limits(timeout_s=10, memory_mb=512))
  assert r.outcome == "error" and "MemoryError" in r.detail and r.duration_s < 8, r
  r = run_program("x = bytearray(8 << 30)\n", Limits(timeout_s=10, memory_mb=512))
  assert r.outcome == "error" and "MemoryError" in r.detail


def test_file_size_limit():
  r = run_program("open('big', 'wb').write(b'x' * (8 << 20))\n",
                  Limits(timeout_s=5, file_size_mb=1))
  assert r.outcome == "error" and "File too large" in r.detail, r


@pytest.mark.parametrize("mode", MODES)
def test_network_connect_is_refused(mode):
  server = socket.socket()
  server.bind(("127.0.0.1", 0))
  server.listen(5)
  server.setblocking(False)
  port = server.getsockname()[1]
  code = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
          f"s.sendall(b'leak')\nprint('CONNECTED')\n")
  try:
    r = run_program(code, Limits(timeout_s=5, isolation=mode))
    assert r.outcome == "error" and "CONNECTED" not in r.output_tail, r
    with pytest.raises(BlockingIOError):
      server.accept()
  finally:
    server.close()
  iso = _isolation(mode)
  assert ("netns" in iso) or ("python-socket-block" in iso), iso


@pytest.mark.parametrize("mode", MODES)
def test_writes_outside_the_private_directory_fail(mode, tmp_path):
  iso = _isolation(mode)
  if "landlock-fs" not in iso and " uid" not in iso.replace("+", " "):
    pytest.skip(f"write confinement needs Landlock or root here; isolation is {iso}")
  victim = tmp_path / "victim.txt"
  victim.write_text("keep")
  outside = tmp_path / "escape.txt"
  in_tmp = f"/tmp/wcse-escape-{uuid.uuid4().hex}"
  code = f"""
import os
results = []
for action in (lambda: open({str(outside)!r}, 'w').write('x'),
               lambda: open({in_tmp!r}, 'w').write('x'),
               lambda: open({str(victim)!r}, 'a').write('x'),
               lambda: os.remove({str(victim)!r}),
               lambda: os.rename({str(victim)!r}, 'stolen.txt')):
  try:
    action()
    results.append('ok')
  except OSError:
    results.append('denied')
open('inside.txt', 'w').write('fine')
print(results, open('inside.txt').read())
"""
  r = run_program(code, Limits(timeout_s=5, isolation=mode))
  assert r.outcome == "pass", r
  assert "['denied', 'denied', 'denied', 'denied', 'denied'] fine" in r.output_tail, r
  assert not outside.exists() and not os.path.exists(in_tmp)
  assert victim.read_text() == "keep"


@pytest.mark.parametrize("mode", MODES)
def test_killing_its_parent_and_the_runner_fails(mode):
  iso = _isolation(mode)
  contained = any(k in iso for k in ("pidns", "landlock-scope", "uid"))
  extra = "os.kill(-1, signal.SIGKILL)\n" if contained else ""
  code = f"""
import os, signal
for pid in (os.getppid(), {os.getpid()}, {os.getppid()}):
  try:
    os.kill(pid, signal.SIGKILL)
  except OSError as e:
    print('denied', pid, e.errno)
try:
  os.killpg({os.getpgid(0)}, signal.SIGKILL)
except OSError as e:
  print('denied group', e.errno)
{extra}"""
  r = run_program(code, Limits(timeout_s=5, isolation=mode))
  # Still here: neither the test process nor its group was killed.
  assert r.outcome in ("pass", "error"), r
  assert r.output_tail.count("denied") >= 3, r
  assert run_program("print(1)\n", FAST).outcome == "pass"


@pytest.mark.parametrize("mode", MODES)
def test_daemonised_child_is_killed(mode):
  token = f"wcse-daemon-{uuid.uuid4().hex}"
  code = f"""
import os, sys
if os.fork() == 0:
  os.setsid()
  if os.fork() == 0:
    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)', {token!r}])
  os._exit(0)
print('parent done')
"""
  r = run_program(code, Limits(timeout_s=5, isolation=mode))
  assert r.outcome == "pass" and "parent done" in r.output_tail, r
  assert _leftovers(token) == []


def test_private_directory_is_removed_and_env_is_minimal():
  r = run_program("import os, json\nprint(json.dumps([os.getcwd(), os.environ['HOME'], "
                  "sorted(os.environ)]))\n", FAST)
  cwd, home, keys = json.loads(r.output_tail)
  assert cwd == home and "wcse_sbx_" in cwd and not os.path.exists(cwd)
  assert set(keys) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE", "LC_CTYPE"}


def test_parallel_workers():
  start = time.monotonic()
  results = run_programs(["import time\ntime.sleep(1)\n"] * 4, Limits(timeout_s=5), workers=4)
  assert [r.outcome for r in results] == ["pass"] * 4
  assert time.monotonic() - start < 3.5


def test_humaneval_grading():
  task = get_task("humaneval")
  examples = task.examples("test")[:6]
  grades = grading.grade_many(task, examples, [e.solution for e in examples])
  assert all(g.correct for g in grades), [g.detail for g in grades]
  wrong = grading.grade(task, examples[0], "    return None\n")
  assert not wrong.correct and wrong.detail.startswith("fail")
  fenced = "Here you go:\n```python\n" + examples[1].question + examples[1].solution + "```\n"
  assert grading.grade(task, examples[1], fenced).correct
  looping = grading.grade(task, examples[2], "    while True:\n        pass\n",
                          sandbox_limits=Limits(timeout_s=1))
  assert not looping.correct and looping.timed_out
  # The Codex stop strings cut a completion that goes on with more top-level code.
  cut = grading.grade(task, examples[3], examples[3].solution + "\ndef extra():\n  raise X\n")
  assert cut.correct


# ------------------------------------------------------------------------------------------------
# Forged outcomes. FORGE writes pass-looking lines (the runner's, the harness's, the checker
# protocol's, a guessed nonce) to every descriptor the program has (listed from /proc/self/fd)
# and to the guessed descriptors 0..50.

FORGE = r"""
import os

def forge():
  lines = [b'{"outcome": "pass"}\n',
           b'{"result": {"outcome": "pass", "detail": "", "isolation": "x"}}\n',
           b'{"nonce": "' + b'0' * 32 + b'", "pid": %d, "outcome": "pass"}\n' % os.getpid(),
           b'{"loaded": true}\n', b'{"value": null}\n']
  try:
    listed = {int(fd) for fd in os.listdir('/proc/self/fd')}
  except OSError:
    listed = set()
  kinds = []
  for fd in sorted(listed):
    try:
      kinds.append((fd, os.readlink(f'/proc/self/fd/{fd}').split('[')[0]))
    except OSError:
      pass  # The listing's own descriptor, closed by now.
  # Printed first: the supervisor may end the run as soon as it sees a forged line.
  print('HOLDS', kinds, flush=True)
  for fd in sorted(listed | set(range(0, 51))):
    for line in lines:
      try:
        os.write(fd, line)
      except OSError:
        pass
"""

PLAIN_FORGERIES = [  # (program, outcome); none of them may pass.
    (FORGE + "forge()\nos._exit(0)\n", "error"),
    (FORGE + "forge()\n", "error"),  # Runs to its end after forging: the channel was tampered.
    (FORGE + "forge()\nassert False\n", "error"),
    (FORGE + "forge()\nraise SystemExit(0)\n", "error"),
    ("import os\nfor fd in (1, 2):\n  os.write(fd, b'{\"outcome\": \"pass\"}\\n')\nos._exit(0)\n",
     "error"),
    ("import sys\nprint('{\"outcome\": \"pass\"}')\nprint('{\"outcome\": \"pass\"}', "
     "file=sys.stderr)\nassert False\n", "fail"),
    ("import os\nfor fd in range(3, 51):\n  try:\n    os.write(fd, b'{\"outcome\": \"pass\"}\\n')\n"
     "  except OSError:\n    pass\nos._exit(0)\n", "error"),
]


@pytest.mark.parametrize("mode", MODES)
def test_plain_program_cannot_forge_a_pass(mode):
  results = run_programs([p for p, _ in PLAIN_FORGERIES], Limits(timeout_s=5, isolation=mode),
                         workers=2)
  for (program, want), r in zip(PLAIN_FORGERIES, results):
    assert r.outcome == want, (program, r)
  # The program held stdin, stdout, stderr and its own report socket, nothing of the runner's.
  holds = "HOLDS [(0, '/dev/null'), (1, 'pipe:'), (2, 'pipe:'), (3, 'socket:')]"
  assert holds in results[0].output_tail, results[0]


CHECKER_FORGERIES = [  # Programs whose f is wrong (or absent) and which try to pass anyway.
    FORGE + "forge()\nos._exit(0)\n",  # At load time.
    FORGE + "def f(x):\n  forge()\n  os._exit(0)\n",  # During the call.
    FORGE + "def f(x):\n  forge()\n  return 0\n",
    FORGE + "def f(x):\n  forge()\n  raise SystemExit(0)\n",
    "import os\ndef f(x):\n  for fd in range(0, 51):\n    try:\n"
    "      os.write(fd, b'{\"outcome\": \"pass\"}\\n')\n    except OSError:\n      pass\n"
    "  return 0\n",
    # Objects that compare equal to anything never reach the tests.
    "class Yes:\n  def __eq__(self, other):\n    return True\ndef f(x):\n  return Yes()\n",
    "class Yes(int):\n  def __eq__(self, other):\n    return True\ndef f(x):\n  return Yes(0)\n",
    # Rebinding what the tests use happens in the program's process only.
    "import builtins\nbuiltins.AssertionError = Exception\ndef check(candidate):\n  pass\n"
    "def f(x):\n  return 0\n",
    "def f(x):\n  import sys\n  sys.settrace(None)\n  raise AssertionError('not from the tests')\n",
    "import os, signal\ndef f(x):\n  os.kill(os.getppid(), signal.SIGKILL)\n  return 0\n",
]


@pytest.mark.parametrize("mode", MODES)
def test_program_with_tests_cannot_forge_a_pass(mode):
  limits = Limits(timeout_s=5, isolation=mode)
  results = run_programs(CHECKER_FORGERIES, limits, workers=2,
                         checkers=[SQUARE] * len(CHECKER_FORGERIES))
  for program, r in zip(CHECKER_FORGERIES, results):
    assert r.outcome in ("fail", "error"), (program, r)
  # Its only socket is the one to the checker; the one to the supervisor was closed before it ran.
  holds = "HOLDS [(0, '/dev/null'), (1, 'pipe:'), (2, 'pipe:'), (4, 'socket:')]"
  assert holds in results[0].output_tail, results[0]
  assert "cannot be passed" in results[5].detail or "cannot take" in results[5].detail
  # Output says nothing about the outcome either way: the checker alone decides.
  right = ("import sys\ndef f(x):\n  print('{\"outcome\": \"fail\"}')\n"
           "  print('{\"result\": {\"outcome\": \"error\"}}', file=sys.stderr)\n"
           "  return x * x\n")
  assert run_program(right, limits, SQUARE).outcome == "pass"


REACH = r"""
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
me = os.getpid()
# Only the run's own neighbourhood: a broken sandbox must not let this hurt the host.
pids = ({os.getppid(), 1} | set(range(max(2, me - 16), me + 16))) - {me}
reached = []
for pid in sorted(pids):
  try:
    os.kill(pid, 0)  # Permission to signal, without sending anything.
    reached.append(('signal', pid))
  except OSError:
    pass
  if libc.ptrace(0x4206, pid, None, None) == 0:  # PTRACE_SEIZE: attaches without stopping.
    reached.append(('ptrace', pid))
    libc.ptrace(17, pid, None, None)  # PTRACE_DETACH
  pidfd = libc.syscall(434, pid, 0)  # pidfd_open
  if pidfd >= 0:
    for fd in range(0, 32):
      got = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
      if got >= 0:
        reached.append(('fd', pid, fd))
        os.close(got)
    os.close(pidfd)
  for path in (f'/proc/{pid}/mem', f'/proc/{pid}/environ', f'/proc/{pid}/fd'):
    try:
      open(path, 'rb').read(1) if not path.endswith('fd') else os.listdir(path)
      reached.append(('proc', path))
    except OSError:
      pass
print('REACHED', reached)
"""


@pytest.mark.parametrize("mode", MODES)
def test_checker_and_supervisor_are_out_of_reach(mode):
  """The program can neither signal, ptrace, take descriptors from nor read the memory of any
  other process of its run, so with a right answer the checker still decides "pass"."""
  r = run_program(REACH + "def f(x):\n  return x * x\n", Limits(timeout_s=8, isolation=mode),
                  SQUARE)
  assert r.outcome == "pass" and "REACHED []" in r.output_tail, r


@pytest.mark.parametrize("mode", MODES)
def test_tests_never_enter_the_programs_memory(mode):
  """The checker's code reaches the checker through a memfd closed before the program's process
  exists: scanning all of its own memory, the program cannot find it."""
  secret = uuid.uuid4().hex[:16]
  prefix, rest = secret[:8], secret[8:]
  checker = Checker(f"# {secret}\n" + SQUARE.code, "f")
  scan = f"""
import hashlib, re
def found():
  prefix, digest = {prefix!r}.encode(), {hashlib.sha256(rest.encode()).hexdigest()!r}
  mem = open('/proc/self/mem', 'rb', 0)
  hits = 0
  for line in open('/proc/self/maps'):
    start, end = (int(x, 16) for x in line.split()[0].split('-'))
    if 'r' not in line.split()[1]:
      continue
    try:
      mem.seek(start)
      data = mem.read(end - start)
    except (OSError, OverflowError, ValueError):
      continue
    for m in re.finditer(re.escape(prefix), data):
      if hashlib.sha256(data[m.end():m.end() + 8]).hexdigest() == digest:
        hits += 1
  return hits
print('HITS', found())
def f(x):
  return x * x
"""
  limits = Limits(timeout_s=20, isolation=mode)
  r = run_program(scan, limits, checker)
  assert r.outcome == "pass" and "HITS 0" in r.output_tail, r
  # Control: the same scan finds the secret when the program's own memory holds it.
  control = run_program(f"KEEP = {secret!r}\n" + scan, limits, checker)
  assert control.outcome == "pass" and "HITS 0" not in control.output_tail, control


# ------------------------------------------------------------------------------------------------
# Labels


PATCHED_ASSERTIONS = [  # (program, outcome)
    ("assert False, 'plain'\n", "fail"),
    ("AssertionError = Exception\nraise AssertionError('shadowed')\n", "error"),
    ("import builtins\nbuiltins.AssertionError = Exception\nraise ValueError('x')\n", "error"),
    ("import builtins\nbuiltins.AssertionError = Exception\nassert False\n", "fail"),
    ("import builtins\nbuiltins.AssertionError = ValueError\nraise ValueError('x')\n", "error"),
    ("class AssertionError(Exception):\n  pass\nraise AssertionError('impostor')\n", "error"),
    ("import builtins\nbuiltins.isinstance = lambda *a: True\nraise ValueError('x')\n", "error"),
    ("import builtins\nbuiltins.SystemExit = ValueError\nraise ValueError('x')\n", "error"),
    ("class Failed(AssertionError):\n  pass\nraise Failed('a real subclass')\n", "fail"),
]


@pytest.mark.parametrize("mode", MODES)
def test_patched_assertion_error_does_not_change_labels(mode):
  limits = Limits(timeout_s=5, isolation=mode)
  results = run_programs([p for p, _ in PATCHED_ASSERTIONS], limits, workers=2)
  for (program, want), r in zip(PATCHED_ASSERTIONS, results):
    assert r.outcome == want, (program, r)
  # With tests, only the tests' own assert is a "fail"; the function raising is an "error".
  patched = "import builtins\nbuiltins.AssertionError = Exception\n"
  with_tests = [(patched + "def f(x):\n  return 0\n", "fail"),
                (patched + "def f(x):\n  raise ValueError('x')\n", "error"),
                ("class AssertionError(Exception):\n  pass\ndef f(x):\n  raise AssertionError()\n",
                 "error"),
                ("def f(x):\n  assert x < 0, 'its own assert'\n", "error")]
  results = run_programs([p for p, _ in with_tests], limits, workers=2,
                         checkers=[SQUARE] * len(with_tests))
  for (program, want), r in zip(with_tests, results):
    assert r.outcome == want, (program, r)


@pytest.mark.parametrize("mode", MODES)
def test_output_floods_do_not_change_outcomes(mode):
  """stdout/stderr are a pipe the runner drains, so output past the file-size limit neither
  kills the program nor blocks it; floods of the report channel are forgeries."""
  limits = Limits(timeout_s=10, file_size_mb=1, isolation=mode)
  floods = [
      ("import sys\nsys.stdout.write('x' * (8 << 20))\nassert False, 'boom'\n", "fail"),
      ("import sys\nfor _ in range(100000):\n  print('y' * 80, file=sys.stderr)\n", "pass"),
      ("import os\nwhile True:\n  os.write(3, b'junk\\n')\n", "error"),
      ("import os\nos.write(3, b'x' * (4 << 20))\n", "error"),
  ]
  results = run_programs([p for p, _ in floods], limits, workers=2)
  for (program, want), r in zip(floods, results):
    assert r.outcome == want, (program, r.outcome, r.detail)
  assert results[0].output_tail.endswith("AssertionError: boom\n")
  assert len(results[0].output_tail) == limits.output_tail_chars
  assert results[2].duration_s < 5, results[2]
  flooding_right = "import sys\ndef f(x):\n  sys.stdout.write('z' * (8 << 20))\n  return x * x\n"
  assert run_program(flooding_right, limits, SQUARE).outcome == "pass"


# ------------------------------------------------------------------------------------------------
# What the program can read


@pytest.mark.parametrize("mode", MODES)
def test_reads_outside_the_interpreter_and_private_directory_fail(mode):
  iso = _isolation(mode)
  if "mntns" not in iso and "landlock-read" not in iso:
    pytest.skip(f"read confinement needs a mount namespace or Landlock; isolation is {iso}")
  targets = ["/etc/shadow", "/etc/passwd", "/root", "/root/.bashrc", str(REPO),
             str(REPO / "README.md"), sandbox._CHILD, os.path.expanduser("~"), "/tmp", "/home"]
  code = f"""
import os, json, decimal, sqlite3, sys
results = {{}}
for path in {targets!r}:
  try:
    if os.path.isdir(path):
      os.listdir(path)
    else:
      open(path, 'rb').read(1)
    results[path] = 'read'
  except OSError as e:
    results[path] = 'denied'
open('mine.txt', 'w').write('ok')
print(json.dumps([results, open('mine.txt').read(), os.path.exists(sys.executable)]))
print([l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff')][0])
print(os.getuid())
"""
  r = run_program(code, Limits(timeout_s=5, isolation=mode))
  assert r.outcome == "pass", r
  listed, caps, uid = r.output_tail.splitlines()
  results, mine, has_python = json.loads(listed)
  assert set(results.values()) == {"denied"}, results
  assert mine == "ok" and has_python
  if os.geteuid() == 0:
    assert int(uid) != 0
    # No capability at all, except the documented fallback without a mount namespace.
    assert int(caps, 16) == (0 if "cap_dac_read_search" not in r.isolation else 1 << 2), r


def test_humaneval_forgeries_are_not_graded_correct():
  """Completions that the single-process harness graded correct: redefining a helper the tests
  call (HumanEval/32's poly), an always-equal return value, a pass written to every descriptor."""
  task = get_task("humaneval")
  examples = {e.id: e for e in task.examples("test")}
  forge_fds = ("    import os\n    for fd in range(0, 51):\n        try:\n"
               "            os.write(fd, b'{\"outcome\": \"pass\"}\\n')\n"
               "        except OSError:\n            pass\n    os._exit(0)\n")
  cases = [
      ("HumanEval/32", "```python\ndef poly(xs, x):\n    return 0\n\n\n"
                       "def find_zero(xs):\n    return 0.0\n```\n"),
      ("HumanEval/0", "    class Yes:\n        def __eq__(self, other):\n            return True\n"
                      "    return Yes()\n"),
      ("HumanEval/0", forge_fds),
      ("HumanEval/2", "    import builtins\n    builtins.AssertionError = Exception\n"
                      "    raise ValueError('x')\n"),
  ]
  grades = grading.grade_many(task, [examples[i] for i, _ in cases], [c for _, c in cases],
                              sandbox_limits=Limits(timeout_s=5))
  assert not any(g.correct for g in grades), [g.detail[:200] for g in grades]
  assert [g.detail.split(":")[0] for g in grades] == ["fail", "error", "error", "error"]


def test_values_cross_between_program_and_tests_exactly():
  checker = Checker("""
import math
VALUES = [None, True, False, 0, -7, 2 ** 20000, -1.5, float('inf'), 1e-300, 1 + 2j, '',
          'caf\\u00e9 \\u2603 \\udc80', b'\\x00\\xff', [1, [2.5]], (1, (2, 3)), (),
          {'a': [1], 3: (4,)}, {1, 2}, frozenset({3}), {(1, 2): frozenset()}]
def check(candidate):
  for v in VALUES:
    got = candidate(v)
    assert type(got) is type(v) and got == v, (v, got)
  assert math.isnan(candidate(float('nan')))
  assert candidate(5, k=[1]) == (5, [1])
""", "f")
  limits = Limits(timeout_s=10)
  echo = "def f(x, k=None):\n  return x if k is None else (x, k)\n"
  assert run_program(echo, limits, checker).outcome == "pass"
  raises = run_program("def f(x, k=None):\n  raise KeyError('nope')\n", limits, checker)
  assert raises.outcome == "error" and "raised: KeyError" in raises.detail, raises
  generator = run_program("def f(x, k=None):\n  return (y for y in [x])\n", limits, checker)
  assert generator.outcome == "error" and "generator" in generator.detail, generator
  missing = run_program("def g(x):\n  return x\n", limits, checker)
  assert missing.outcome == "error" and "NameError" in missing.detail, missing
  broken = run_program("def f(x:\n", limits, checker)
  assert broken.outcome == "error" and "failed to load: SyntaxError" in broken.detail, broken
  slow = run_program("def f(x, k=None):\n  while True:\n    pass\n", Limits(timeout_s=1.5), checker)
  assert slow.outcome == "timeout", slow
