"""Child side of the code sandbox (sandbox.py starts it as
`python -I -B -u sandbox_child.py CONFIG`;
-u keeps stdout and stderr in order in the captured output).

Standalone: stdlib and ctypes only, nothing of wcse_jax. Three processes per program:

  B  this script's first process, started by the runner in a new session. It tries
     unshare(CLONE_NEWNET | CLONE_NEWPID), adding CLONE_NEWUSER when not root (then maps its own
     uid/gid 1:1). On success the sandbox has no network at all (a fresh network namespace with
     no interfaces up) and B's next child is pid 1 of a fresh pid namespace.
  C  the supervisor: pid 1 of that namespace (or, without namespaces, a child subreaper). It
     forks D, enforces the wall-clock deadline, and when D ends (or the deadline passes) kills
     every process left: pid 1 does kill(-1) over its namespace, and its exit makes the kernel
     kill whatever remains; a subreaper kills D's group and every orphan re-parented to it.
  D  the program: own session; rlimits (CPU seconds, address space, file size, process count,
     open files, no core dumps); as root, switches to the runner-chosen unprivileged uid
     (so RLIMIT_NPROC applies, and it cannot signal or write root's things); Landlock when the
     kernel has it (writes only below its private directory, plus /dev/null; from ABI 6 no
     signals to processes outside the sandbox; from ABI 4, without a network namespace, no TCP
     connect/bind); without a network namespace, socket creation is blocked in Python before
     the program runs. Then it runs the program with runpy and reports its outcome.

Status lines (JSON) go to the pipe `status_fd`: {"isolation": ...} from B, {"outcome": ...} from
D, {"supervisor": ...} from C.
"""
import ctypes
import json
import os
import resource
import runpy
import signal
import sys
import time
import traceback

CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_KEEPCAPS, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 8, 36, 38, 47
CAP_DAC_READ_SEARCH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _status(cfg, **fields):
  try:
    os.write(cfg["status_fd"], (json.dumps(fields) + "\n").encode())
  except OSError:
    pass


# ------------------------------------------------------------------------------------------------
# B: namespaces


def _unshare():
  """Enters new net+pid namespaces (and a user namespace when not root); returns a description or
  None when the kernel refuses."""
  root = os.geteuid() == 0
  flags = CLONE_NEWNET | CLONE_NEWPID | (0 if root else CLONE_NEWUSER)
  if _libc.unshare(flags) != 0:
    return None
  if not root:
    uid, gid = os.getuid(), os.getgid()
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"),
                       ("gid_map", f"{gid} {gid} 1")):
      with open(f"/proc/self/{name}", "w") as f:
        f.write(text)
  return "netns+pidns" + ("" if root else "+userns")


# ------------------------------------------------------------------------------------------------
# D: limits, uid, Landlock, Python-level guards


def _count_tasks(uid):
  """Processes+threads owned by `uid` (RLIMIT_NPROC counts them all, system-wide)."""
  total = 0
  for pid in os.listdir("/proc"):
    if not pid.isdigit():
      continue
    try:
      with open(f"/proc/{pid}/status") as f:
        fields = dict(l.split(":", 1) for l in f if ":" in l)
      if int(fields["Uid"].split()[0]) == uid:
        total += int(fields["Threads"])
    except (OSError, KeyError, ValueError):
      continue
  return total


def _set_limit(which, soft, hard):
  # An unprivileged process cannot raise a hard limit: keep the lower of the two.
  current = resource.getrlimit(which)[1]
  if current != resource.RLIM_INFINITY:
    soft, hard = min(soft, current), min(hard, current)
  resource.setrlimit(which, (soft, hard))


def _limits(cfg, shared_uid_count):
  cpu = int(cfg["cpu_s"])
  _set_limit(resource.RLIMIT_CORE, 0, 0)
  _set_limit(resource.RLIMIT_CPU, cpu, cpu + 1)
  _set_limit(resource.RLIMIT_AS, cfg["memory_bytes"], cfg["memory_bytes"])
  _set_limit(resource.RLIMIT_FSIZE, cfg["file_size_bytes"], cfg["file_size_bytes"])
  _set_limit(resource.RLIMIT_NOFILE, cfg["max_open_files"], cfg["max_open_files"])
  nproc = cfg["max_processes"] + shared_uid_count
  _set_limit(resource.RLIMIT_NPROC, nproc, nproc)


class _CapHeader(ctypes.Structure):
  _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
  _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
              ("inheritable", ctypes.c_uint32)]


def _become(uid):
  """Root -> `uid`, keeping only CAP_DAC_READ_SEARCH (also across exec, as an ambient cap).

  The Python installation may sit under a directory only root can read (/root/.pyenv); without
  this capability the program could not even import the standard library. It grants reading and
  directory search only: writes stay confined (DAC as `uid`, plus Landlock), and as a non-root
  uid, RLIMIT_NPROC applies and root's processes cannot be signalled.
  """
  if _libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
  os.setgroups([])
  os.setgid(uid)
  os.setuid(uid)
  data = (_CapData * 2)()
  data[0].effective = data[0].permitted = data[0].inheritable = 1 << CAP_DAC_READ_SEARCH
  # 0x20080522: _LINUX_CAPABILITY_VERSION_3.
  if _libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data) != 0:
    raise OSError(ctypes.get_errno(), "capset")
  _libc.prctl(PR_CAP_AMBIENT, 2, CAP_DAC_READ_SEARCH, 0, 0)  # PR_CAP_AMBIENT_RAISE


class _RulesetAttr(ctypes.Structure):
  _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
              ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
  _pack_ = 1
  _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock(workdir, block_tcp):
  """Restricts writes to `workdir` (and /dev/null); returns a description or None."""
  abi = _libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
  if abi < 1:
    return None
  write_file, truncate = 1 << 1, 1 << 14
  fs = write_file
  for bit in (4, 5, 6, 7, 8, 9, 10, 11, 12):  # remove dir/file, make char/dir/reg/sock/fifo/...
    fs |= 1 << bit
  if abi >= 2:
    fs |= 1 << 13  # REFER (rename/link across directories)
  if abi >= 3:
    fs |= truncate
  net = 0b11 if abi >= 4 and block_tcp else 0  # BIND_TCP | CONNECT_TCP
  scoped = 0b11 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL
  attr = _RulesetAttr(fs, net, scoped)
  size = 8 if abi < 4 else 16 if abi < 6 else 24
  ruleset = _libc.syscall(444, ctypes.byref(attr), size, 0)
  if ruleset < 0:
    return None
  try:
    for path, access in ((workdir, fs), ("/dev/null", fs & (write_file | truncate))):
      fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
      try:
        rule = _PathBeneath(access, fd)
        if _libc.syscall(445, ruleset, 1, ctypes.byref(rule), 0) != 0:
          return None
      finally:
        os.close(fd)
    if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
      return None
    if _libc.syscall(446, ruleset, 0) != 0:
      return None
  finally:
    os.close(ruleset)
  parts = ["landlock-fs"] + (["landlock-tcp"] if net else []) + (["landlock-scope"] if scoped
                                                                  else [])
  return "+".join(parts) + f"(abi {abi})"


def _block_sockets():
  """Without a network namespace: no socket objects can be made from Python any more."""
  import _socket
  import socket

  def refuse(*args, **kwargs):
    raise PermissionError("network access is disabled in the sandbox")

  class Refused(socket.socket):
    def __init__(self, *args, **kwargs):
      refuse()

  socket.socket = _socket.socket = Refused
  socket.socketpair = socket.create_connection = socket.create_server = refuse
  socket.fromfd = _socket.socketpair = refuse


def _run_program(cfg, isolation):
  os.setsid()
  drop_uid = os.geteuid() == 0 and cfg["uid"] is not None
  shared = 0
  if not drop_uid and "userns" not in isolation[0]:
    # No namespace of our own: RLIMIT_NPROC counts every task of this uid on the machine.
    shared = _count_tasks(os.getuid())
  _limits(cfg, shared)
  if drop_uid:
    _become(cfg["uid"])
    isolation.append(f"uid {cfg['uid']}")
  netns = "netns" in isolation[0]
  ll = _landlock(cfg["workdir"], block_tcp=not netns)
  isolation.append(ll or "no-landlock")
  if not netns:
    _block_sockets()
    isolation.append("python-socket-block")
  os.chdir(cfg["workdir"])
  sys.argv = [cfg["program"]]
  _status(cfg, isolation="+".join(isolation))
  try:
    runpy.run_path(cfg["program"], run_name="__main__")
    outcome = {"outcome": "pass"}
  except AssertionError as e:
    traceback.print_exc()
    outcome = {"outcome": "fail", "exception": f"AssertionError: {e}"[:500]}
  except SystemExit as e:
    # A program that exits early never reached its tests' end; that is not a pass.
    outcome = {"outcome": "error", "exception": f"SystemExit({e.code!r}) before the end"}
  except BaseException as e:  # Whatever the program raised is its result, not our crash.
    traceback.print_exc()
    outcome = {"outcome": "error", "exception": f"{type(e).__name__}: {e}"[:500]}
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except Exception:  # A closed or broken stdout must not hide the outcome.
      pass
  _status(cfg, **outcome)
  os._exit(0)


# ------------------------------------------------------------------------------------------------
# C: supervisor


class _Deadline(Exception):
  pass


def _children():
  out = set()
  for tid in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{tid}/children") as f:
        out.update(int(p) for p in f.read().split())
    except OSError:
      continue
  return out


def _kill_everything(program_pid, pid1):
  """Kills and reaps every process this supervisor can reach."""
  if pid1:
    try:
      os.kill(-1, signal.SIGKILL)  # From pid 1: every other process of the namespace.
    except OSError:
      pass
  try:
    os.killpg(program_pid, signal.SIGKILL)
  except OSError:
    pass
  end = time.monotonic() + 5
  while time.monotonic() < end:
    kids = _children()
    for pid in kids:
      try:
        os.kill(pid, signal.SIGKILL)
      except OSError:
        pass
    try:
      while os.waitpid(-1, os.WNOHANG)[0] > 0:
        pass
    except ChildProcessError:
      return
    if not kids:
      time.sleep(0.01)


def _supervise(cfg, isolation):
  pid1 = os.getpid() == 1
  _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
  program = os.fork()
  if program == 0:
    try:
      _run_program(cfg, isolation)
    except BaseException as e:  # Setting up the sandbox failed: report it and stop.
      _status(cfg, setup_error=f"{type(e).__name__}: {e}"[:500])
    os._exit(70)

  def on_deadline(signum, frame):
    raise _Deadline()

  signal.signal(signal.SIGALRM, on_deadline)
  signal.setitimer(signal.ITIMER_REAL, float(cfg["wall_s"]))
  report = {"timeout": False}
  try:
    while True:
      pid, status = os.waitpid(-1, 0)
      if pid == program:
        break
    signal.setitimer(signal.ITIMER_REAL, 0)
    if os.WIFSIGNALED(status):
      report["signal"] = os.WTERMSIG(status)
    else:
      report["exit"] = os.WEXITSTATUS(status)
  except _Deadline:
    report["timeout"] = True
  _kill_everything(program, pid1)
  _status(cfg, supervisor=report)
  os._exit(0)


def main():
  cfg = json.loads(sys.argv[1])
  isolation = None
  if cfg["isolation"] != "none":
    try:
      isolation = _unshare()
    except OSError as e:  # Namespaces entered but the uid map refused: no way back, so stop.
      _status(cfg, setup_error=f"user namespace set-up failed ({e}); use isolation='none'")
      os._exit(70)
    if isolation is None and cfg["isolation"] == "namespaces":
      _status(cfg, setup_error=f"namespaces unavailable: {os.strerror(ctypes.get_errno())}")
      os._exit(70)
  parts = [isolation or "no-namespaces"]
  _status(cfg, isolation="+".join(parts))
  supervisor = os.fork()
  if supervisor == 0:
    _supervise(cfg, parts)
  _, status = os.waitpid(supervisor, 0)
  os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 71)


if __name__ == "__main__":
  main()
