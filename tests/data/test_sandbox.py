"""The code sandbox against hostile programs, and HumanEval grading through it."""
import os
import signal
import socket
import sys
import time
import uuid

import pytest

from wcse_jax.data import grading, sandbox
from wcse_jax.data.sandbox import Limits, run_program, run_programs
from wcse_jax.data.tasks import get_task

FAST = Limits(timeout_s=1.5)
MODES = ["auto", "none"]


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
  import json
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
