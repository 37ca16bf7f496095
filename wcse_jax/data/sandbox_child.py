"""Child side of the code sandbox: sandbox.py starts it as `PYTHON -I -B -u sandbox_child.py
CONFIG`, where PYTHON is the base interpreter (a virtualenv's would need the repository, which the
program must not see) and -u keeps stdout and stderr in order in the captured output.

Standalone: stdlib and ctypes only, nothing of wcse_jax. Four kinds of process per run:

  B  this script's first process, started by the runner in a new session. It tries
     unshare(CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS), adding CLONE_NEWUSER when not root (then
     maps its own uid/gid 1:1). On success the run has no network (a fresh network namespace with
     no interfaces up) and B's next child is pid 1 of a fresh pid namespace.
  C  the supervisor: pid 1 of that namespace (or, without namespaces, a child subreaper). With a
     mount namespace it first builds the file view: a read-only tmpfs root holding read-only binds
     of the interpreter's files (its prefixes, its sys.path directories, the system library
     directories, /etc/ld.so.cache), the private directory (writable), /dev/null, zero, random and
     urandom, and a fresh /proc; it pivots into it and detaches the host's root, so nothing else
     of the host exists for the run. Then it forks E (runs with tests) and D, waits for the
     process whose report decides the outcome, enforces the wall-clock deadline, kills every
     process left (pid 1's kill(-1), and its exit makes the kernel kill the rest; a subreaper
     kills D's group and every orphan re-parented to it) and reports the result to the runner.
  D  the program: own session; rlimits (CPU seconds, address space, file size, process count,
     open files, no core dumps); as root, the runner-chosen unprivileged uid with no capabilities
     (CAP_DAC_READ_SEARCH is kept only in the no-mount-namespace fallback, and only when that uid
     cannot read the interpreter's files, e.g. a Python under /root); when not root, every
     capability dropped; Landlock when the kernel has it: reads only below the interpreter's
     paths, the private directory and its own /proc entry, writes only below the private
     directory (plus /dev/null), from ABI 6 no signals to processes outside its domain, from
     ABI 4, without a network namespace, no TCP connect/bind; without a network namespace, socket
     creation is blocked in Python too. Then it runs the program.
  E  the checker (only for runs with tests, i.e. HumanEval): its own uid (as root; otherwise the
     same uid, made non-dumpable so D cannot ptrace or read it), the same limits, Landlock with no
     writes at all. It executes the trusted test code (read from a memfd the runner filled, which
     C closes before D exists) and calls the program's function through a socket.

Who decides the outcome. The status socket to the runner is held only by B and C; D never holds
it, and cannot reopen it (a socket cannot be opened through /proc, and B, C and E are another uid
or not dumpable, so their descriptors are out of its reach). D starts with stdin (/dev/null),
stdout/stderr (a pipe the runner drains, so a flood of output costs nothing but CPU) and its own
sockets. Its first message to C, {"isolation": ...}, is written by the harness before the
program runs, so it is genuine.
  With tests: D loads the program (prompt + completion) and then only serves calls: it reads
     {"call", "args", "kwargs"} lines and answers with the return value, encoded as plain data
     (None, bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset; any other
     type is refused, so no object with a forged __eq__ reaches the tests), or with the
     exception the function raised. Its socket to C is closed before the program runs. E runs
     check(candidate) on decoded values and alone reports the outcome: "pass" when check
     returns, "fail" when the tests' own assert fails, "error" otherwise (the function raised, a
     value could not be passed, the program's process ended before answering). All the program
     can influence is the values its function returns.
  Without tests (a plain program, which is its own test): D runs it with runpy and reports how
     it ended on its socket to C, tagged with a per-run nonce and its pid. C accepts exactly one
     such report; any other line on that socket (a forged report, garbage, a flood) makes the
     run an error, and so does D ending without a report (os._exit, a kill). The classification
     uses the harness's own references to AssertionError, SystemExit and isinstance, taken
     before the program runs, so rebinding builtins.AssertionError or raising a class named
     AssertionError does not turn an error into "fail". The nonce lives in the program's own
     process: a program that digs it out of the harness's memory can report its own outcome,
     which is why graded code (HumanEval) always runs with tests.
"""
from __future__ import annotations

import builtins
import ctypes
import fcntl
import json
import linecache
import os
import resource
import runpy
import selectors
import signal
import socket
import sys
import time
import traceback

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
PR_SET_DUMPABLE, PR_SET_KEEPCAPS, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 8, 36, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, PR_CAP_AMBIENT_CLEAR_ALL = 47, 2, 4
CAP_DAC_READ_SEARCH = 2
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_NOATIME, MS_NODIRATIME, MS_BIND, MS_REC, MS_PRIVATE, MS_RELATIME = (
    1 << 10, 1 << 11, 1 << 12, 1 << 14, 1 << 18, 1 << 21)
MNT_DETACH = 2
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}  # pivot_root has no glibc wrapper.
# statvfs flags of a mount that a bind's remount must repeat (a user namespace locks them).
_KEPT_FLAGS = ((os.ST_RDONLY, MS_RDONLY), (os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
               (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME),
               (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME))
_SYSTEM_LIBS = ("/lib", "/lib64", "/lib32", "/libx32", "/usr/lib", "/usr/lib64", "/usr/lib32",
                "/usr/libx32", "/usr/local/lib", "/etc/ld.so.cache")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")
_MESSAGE_CAP = 16 << 20  # The longest line accepted on any socket (a return value, as JSON).
_DETAIL_CHARS = 500

# The harness's own references, taken before any program runs: rebinding builtins (or names in a
# program's globals) cannot change how the harness classifies what the program raised.
_ASSERTION_ERROR, _SYSTEM_EXIT, _BASE_EXCEPTION = AssertionError, SystemExit, BaseException
_isinstance, _type, _repr = isinstance, type, repr

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _send(fd, message):
  """Writes one JSON line; a closed channel is ignored (the reader then sees EOF, or no report)."""
  data = (json.dumps(message) + "\n").encode()
  try:
    while data:
      data = data[os.write(fd, data):]
  except OSError:
    pass


class _Lines:
  """JSON lines read from a descriptor, each at most _MESSAGE_CAP bytes."""

  def __init__(self, fd):
    self.fd, self.buffer, self.scanned, self.closed = fd, bytearray(), 0, False

  def read(self):
    """One read (blocking only if the descriptor blocks)."""
    try:
      chunk = os.read(self.fd, 1 << 16)
    except BlockingIOError:
      return
    except OSError:
      chunk = b""
    if not chunk:
      self.closed = True
    self.buffer += chunk

  def pop(self):
    """The next complete message (a dict), or None; ValueError for anything malformed."""
    end = self.buffer.find(b"\n", self.scanned)
    if end < 0:
      self.scanned = len(self.buffer)
      if self.scanned > _MESSAGE_CAP:
        raise ValueError("a message over the size limit")
      return None
    line = bytes(self.buffer[:end])
    del self.buffer[:end + 1]
    self.scanned = 0
    try:
      message = json.loads(line)
    except RecursionError as e:
      raise ValueError("a message nested too deeply") from e
    if _type(message) is not dict:
      raise ValueError("a message that is not an object")
    return message

  def drain(self):
    """Every message readable now, without blocking; stops at EOF."""
    os.set_blocking(self.fd, False)
    out = []
    while True:
      message = self.pop()
      if message is not None:
        out.append(message)
        continue
      if self.closed:
        return out
      before = len(self.buffer)
      self.read()
      if len(self.buffer) == before and not self.closed:
        return out


def _describe(e):
  """"Type: message" of an exception, capped; the program's __str__ may itself raise."""
  name = _type(e).__name__
  try:
    text = f"{name}: {e}"
  except _BASE_EXCEPTION:
    text = name
  return text[:_DETAIL_CHARS]


# ------------------------------------------------------------------------------------------------
# Values between the program and its tests: plain data only, with exact types.


def _encode(value):
  kind = _type(value)
  if value is None or kind is bool or kind is str:
    return value
  if kind is int:
    return {"i": hex(value)}  # Hex has no int-string digit limit and stays exact.
  if kind is float:
    return {"f": _repr(value)}
  if kind is complex:
    return {"c": [_repr(value.real), _repr(value.imag)]}
  if kind is bytes:
    return {"b": value.hex()}
  if kind is list:
    return [_encode(v) for v in value]
  if kind is dict:
    return {"d": [[_encode(k), _encode(v)] for k, v in value.items()]}
  for tag, container in (("t", tuple), ("s", set), ("fs", frozenset)):
    if kind is container:
      return {tag: [_encode(v) for v in value]}
  raise TypeError(f"a value of type {kind.__name__} cannot be passed to the tests")


def _decode(value):
  kind = _type(value)
  if value is None or kind is bool or kind is str:
    return value
  if kind is list:
    return [_decode(v) for v in value]
  if kind is dict and len(value) == 1:
    (tag, body), = value.items()
    if tag == "i" and _type(body) is str:
      return int(body, 16)
    if tag == "f" and _type(body) is str:
      return float(body)
    if tag == "c" and _type(body) is list and len(body) == 2:
      return complex(float(body[0]), float(body[1]))
    if tag == "b" and _type(body) is str:
      return bytes.fromhex(body)
    if tag == "d" and _type(body) is list:
      return {_decode(k): _decode(v) for k, v in body}
    if tag in ("t", "s", "fs") and _type(body) is list:
      items = [_decode(v) for v in body]
      return {"t": tuple, "s": set, "fs": frozenset}[tag](items)
  raise ValueError("a malformed value")


# ------------------------------------------------------------------------------------------------
# B: namespaces


def _unshare():
  """Enters new net+pid+mount namespaces (and a user namespace when not root); returns a
  description or None when the kernel refuses."""
  root = os.geteuid() == 0
  flags = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS | (0 if root else CLONE_NEWUSER)
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
# C: the file view


def _interpreter_paths():
  """Host paths the interpreter needs (prefixes, sys.path, its directory, system libraries),
  without those already below another one, and never the host's root itself."""
  paths = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
           os.path.dirname(sys.executable), *sys.path, *_SYSTEM_LIBS}
  out = []
  for p in sorted(os.path.abspath(p) for p in paths if p and os.path.lexists(p)):
    if p == "/":
      continue
    if not any(p.startswith(q + "/") for q in out if not os.path.islink(q)):
      out.append(p)
  return out


def _mount(source, target, fstype, flags, data=None):
  args = [None if s is None else s.encode() for s in (source, target, fstype)]
  if _libc.mount(*args, flags, None if data is None else data.encode()) != 0:
    errno = ctypes.get_errno()
    raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def _expose(root, path, flags):
  """Makes host `path` appear at the same path below `root`: a symlink is copied, anything else
  bind-mounted and remounted with `flags` (plus whatever flags its own mount has)."""
  target = root + path
  os.makedirs(os.path.dirname(target), exist_ok=True)
  if os.path.islink(path):
    os.symlink(os.readlink(path), target)
    return
  if os.path.isdir(path):
    os.makedirs(target, exist_ok=True)
  else:
    open(target, "a").close()
  _mount(path, target, None, MS_BIND | MS_REC)
  kept = os.statvfs(target).f_flag
  flags |= sum(ms for st, ms in _KEPT_FLAGS if kept & st)
  _mount(None, target, None, MS_BIND | MS_REMOUNT | flags)


def _build_view(cfg, paths):
  """Pivots into a fresh root that holds only `paths` (read-only), the private directory, a few
  devices and /proc (see the module doc). Returns False when the kernel refuses before anything
  changed (the run then relies on Landlock); a failure after the pivot raises."""
  syscall = _PIVOT_ROOT.get(os.uname().machine)
  if syscall is None:
    return False
  root = cfg["root"]
  os.umask(0o022)
  try:
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # Nothing below propagates to the host.
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=1m")
    for path in paths:
      _expose(root, path, MS_NOSUID | MS_NODEV | MS_RDONLY)
    _expose(root, cfg["workdir"], MS_NOSUID | MS_NODEV)
    for device in _DEVICES:
      _expose(root, device, MS_NOSUID | MS_NOEXEC)
    os.mkdir(root + "/proc")
    _mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.mkdir(root + "/.old")
    if _libc.syscall(syscall, root.encode(), (root + "/.old").encode()) != 0:
      return False
  except OSError:
    return False
  os.chdir("/")
  if _libc.umount2(b"/.old", MNT_DETACH) != 0:
    raise OSError(ctypes.get_errno(), "detaching the host's root")
  os.rmdir("/.old")
  _mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
  return True


# ------------------------------------------------------------------------------------------------
# D and E: limits, identity, Landlock, Python-level guards


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


def _limits(cfg, processes):
  cpu = int(cfg["cpu_s"])
  _set_limit(resource.RLIMIT_CORE, 0, 0)
  _set_limit(resource.RLIMIT_CPU, cpu, cpu + 1)
  _set_limit(resource.RLIMIT_AS, cfg["memory_bytes"], cfg["memory_bytes"])
  _set_limit(resource.RLIMIT_FSIZE, cfg["file_size_bytes"], cfg["file_size_bytes"])
  _set_limit(resource.RLIMIT_NOFILE, cfg["max_open_files"], cfg["max_open_files"])
  _set_limit(resource.RLIMIT_NPROC, processes, processes)


class _CapHeader(ctypes.Structure):
  _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
  _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
              ("inheritable", ctypes.c_uint32)]


def _capset(mask):
  data = (_CapData * 2)()
  data[0].effective = data[0].permitted = data[0].inheritable = mask
  # 0x20080522: _LINUX_CAPABILITY_VERSION_3.
  if _libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data) != 0:
    raise OSError(ctypes.get_errno(), "capset")


def _readable(path):
  return os.access(path, os.R_OK | (os.X_OK if os.path.isdir(path) else 0))


def _become(uid, paths):
  """Drops privileges; returns isolation parts.

  Not root (`uid` None): the uid stays (a user namespace maps only it) and every capability goes.
  Root: switches to `uid` with no capabilities, unless that uid cannot read the interpreter's
  `paths` (a Python under /root, without a mount namespace to expose it); then only
  CAP_DAC_READ_SEARCH is kept, also across exec, and Landlock is what confines reads.
  """
  if uid is None:
    _capset(0)
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    return []
  if _libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_KEEPCAPS)")
  os.setgroups([])
  os.setgid(uid)
  os.setuid(uid)
  # access() checks with the real uid (now `uid`) and no capabilities: plain permissions.
  needs_cap = not all(_readable(p) for p in paths)
  _capset(1 << CAP_DAC_READ_SEARCH if needs_cap else 0)
  if needs_cap:
    _libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_DAC_READ_SEARCH, 0, 0)
  return [f"uid {uid}"] + (["cap_dac_read_search"] if needs_cap else [])


class _RulesetAttr(ctypes.Structure):
  _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
              ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
  _pack_ = 1
  _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock(write_dirs, read_paths, block_tcp):
  """Restricts reads to `read_paths` and `write_dirs`, writes to `write_dirs` and /dev/null;
  returns a description or None when the kernel has no Landlock."""
  abi = _libc.syscall(444, None, 0, 1)  # landlock_create_ruleset(NULL, 0, VERSION)
  if abi < 1:
    return None
  read_file, write_file, read_dir, truncate = 1 << 2, 1 << 1, 1 << 3, 1 << 14
  write = write_file
  for bit in (4, 5, 6, 7, 8, 9, 10, 11, 12):  # remove dir/file, make char/dir/reg/sock/fifo/...
    write |= 1 << bit
  if abi >= 2:
    write |= 1 << 13  # REFER (rename/link across directories)
  if abi >= 3:
    write |= truncate
  fs = write | read_file | read_dir
  file_rights = fs & (read_file | write_file | truncate)  # What a rule on a file may carry.
  net = 0b11 if abi >= 4 and block_tcp else 0  # BIND_TCP | CONNECT_TCP
  scoped = 0b11 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL
  attr = _RulesetAttr(fs, net, scoped)
  size = 8 if abi < 4 else 16 if abi < 6 else 24
  ruleset = _libc.syscall(444, ctypes.byref(attr), size, 0)
  if ruleset < 0:
    return None
  rules = ([(d, fs) for d in write_dirs] + [(p, read_file | read_dir) for p in read_paths]
           + [(d, read_file | (write_file | truncate if d == "/dev/null" else 0))
              for d in _DEVICES])
  try:
    for path, access in rules:
      try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
      except OSError:
        continue  # Absent here: nothing to allow.
      try:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
          access &= file_rights
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
  parts = (["landlock-fs", "landlock-read"] + (["landlock-tcp"] if net else [])
           + (["landlock-scope"] if scoped else []))
  return "+".join(parts) + f"(abi {abi})"


def _block_sockets():
  """Without a network namespace: no socket objects can be made from Python any more."""
  import _socket

  def refuse(*args, **kwargs):
    raise PermissionError("network access is disabled in the sandbox")

  class Refused(socket.socket):
    def __init__(self, *args, **kwargs):
      refuse()

  socket.socket = _socket.socket = Refused
  socket.socketpair = socket.create_connection = socket.create_server = refuse
  socket.fromfd = _socket.socketpair = refuse


def _keep_only(fds):
  """In a freshly forked child: renumbers `fds` to 3, 4, ... (not inherited across exec) and
  closes every other descriptor above 2."""
  high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 512) for fd in fds]
  for i, fd in enumerate(high):
    os.dup2(fd, 3 + i, inheritable=False)
  os.closerange(3 + len(fds), 2 ** 31 - 1)
  return list(range(3, 3 + len(fds)))


def _confine(cfg, view, uid, write_dirs, read_paths, processes):
  """Limits, identity and Landlock for D or E; returns isolation parts."""
  os.setsid()
  _limits(cfg, processes)
  parts = _become(uid, view["paths"])
  landlock = _landlock(write_dirs, read_paths, block_tcp=not view["netns"])
  parts.append(landlock or "no-landlock")
  if not view["netns"]:
    _block_sockets()
    parts.append("python-socket-block")
  return parts


def _processes(uid, view, allowed):
  """The RLIMIT_NPROC that lets `allowed` more tasks start."""
  if uid is not None or view["userns"]:
    return allowed
  # No uid or user namespace of our own: RLIMIT_NPROC counts every task of this uid.
  return allowed + _count_tasks(os.getuid())


# ------------------------------------------------------------------------------------------------
# D: the program


def _start_program(cfg, view, report_fd):
  parts = _confine(cfg, view, cfg["uid"], [cfg["workdir"]],
                   view["paths"] + [f"/proc/{os.getpid()}"],
                   _processes(cfg["uid"], view, cfg["max_processes"]))
  # Its own /proc entry stays its own (a uid switch makes a process non-dumpable).
  _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
  os.chdir(cfg["workdir"])
  sys.argv = [cfg["program"]]
  _send(report_fd, {"isolation": parts})


def _flush():
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except _BASE_EXCEPTION:  # A closed or broken stdout must not hide the outcome.
      pass


def _run_plain(program, report_fd, nonce):
  """Runs a program without tests to its end and reports how it ended (see the module doc)."""
  try:
    runpy.run_path(program, run_name="__main__")
    outcome = {"outcome": "pass"}
  except _BASE_EXCEPTION as e:
    if _isinstance(e, _SYSTEM_EXIT):
      # A program that exits early never reached its end; that is not a pass.
      try:
        code = _repr(e.code)[:100]
      except _BASE_EXCEPTION:
        code = "?"
      outcome = {"outcome": "error", "exception": f"SystemExit({code}) before the end"}
    else:
      traceback.print_exc()
      failed = _isinstance(e, _ASSERTION_ERROR)
      outcome = {"outcome": "fail" if failed else "error", "exception": _describe(e)}
  _flush()
  _send(report_fd, {"nonce": nonce, "pid": os.getpid(), **outcome})
  os._exit(0)


def _serve(program, proto_fd):
  """Loads a program with tests, then answers the checker's calls until it hangs up."""
  try:
    namespace = runpy.run_path(program, run_name="__main__")
  except _BASE_EXCEPTION as e:
    traceback.print_exc()
    _flush()
    _send(proto_fd, {"load_error": _describe(e)})
    os._exit(0)
  _send(proto_fd, {"loaded": True})
  requests = _Lines(proto_fd)
  while True:
    try:
      request = requests.pop()
    except ValueError:
      os._exit(0)
    if request is None:
      if requests.closed:
        os._exit(0)
      requests.read()
      continue
    try:
      function = namespace.get(request["call"])
      if not callable(function):
        raise NameError(f"name {request['call']!r} is not defined")
      value = function(*_decode(request["args"]),
                       **{k: _decode(v) for k, v in request["kwargs"].items()})
    except _BASE_EXCEPTION as e:
      traceback.print_exc()
      reply = {"raised": _describe(e)}
    else:
      try:
        reply = {"value": _encode(value)}
      except (TypeError, ValueError, RecursionError) as e:
        reply = {"unsupported": _describe(e)}
    _flush()
    _send(proto_fd, reply)


# ------------------------------------------------------------------------------------------------
# E: the checker


class _ProgramError(Exception):
  """The program's function raised, answered something unreadable, or its process is gone."""

  def __init__(self, text, gone=False):
    super().__init__(text)
    self.gone = gone


def _checker(cfg, view, code_fd, proto_fd, report_fd):
  """Runs the trusted tests against the program's function and reports the outcome."""
  os.lseek(code_fd, 0, os.SEEK_SET)
  with os.fdopen(code_fd, "rb") as f:
    code = f.read().decode()
  parts = _confine(cfg, view, cfg["checker_uid"], [], view["paths"],
                   _processes(cfg["checker_uid"], view, 1))
  _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # Not ptraceable or readable by a same-uid program.
  os.chdir("/")
  _send(report_fd, {"isolation": parts})
  replies = _Lines(proto_fd)

  def receive():
    while True:
      try:
        message = replies.pop()
      except ValueError as e:
        raise _ProgramError(f"broke the call protocol ({e})") from None
      if message is not None:
        return message
      if replies.closed:
        raise _ProgramError("process ended before answering", gone=True)
      replies.read()

  def candidate(*args, **kwargs):
    _send(proto_fd, {"call": cfg["entry_point"], "args": _encode(list(args)),
                     "kwargs": {k: _encode(v) for k, v in kwargs.items()}})
    reply = receive()
    if "value" in reply:
      try:
        return _decode(reply["value"])
      except (ValueError, TypeError, RecursionError) as e:
        raise _ProgramError(f"answered an unreadable value ({e})") from None
    if "raised" in reply:
      raise _ProgramError(f"raised: {str(reply['raised'])[:_DETAIL_CHARS]}")
    if "unsupported" in reply:
      raise _ProgramError("returned a value the tests cannot take: "
                          f"{str(reply['unsupported'])[:_DETAIL_CHARS]}")
    raise _ProgramError("broke the call protocol")

  linecache.cache["<tests>"] = (len(code), None, code.splitlines(True), "<tests>")
  try:
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    exec(compile(code, "<tests>", "exec"), namespace)
    # Tests may name the function instead of using `candidate` (HumanEval/33 does).
    namespace[cfg["entry_point"]] = candidate
    loaded = receive()
    if "loaded" not in loaded:
      raise _ProgramError(f"failed to load: {str(loaded.get('load_error'))[:_DETAIL_CHARS]}")
    namespace["check"](candidate)
    outcome = {"outcome": "pass"}
  except _ProgramError as e:
    outcome = {"outcome": "error", "exception": f"the program {e}"[:_DETAIL_CHARS],
               "program_gone": e.gone}
  except AssertionError as e:
    traceback.print_exc()
    outcome = {"outcome": "fail", "exception": _describe(e)}
  except BaseException as e:  # The tests crashed on what the program returned.
    traceback.print_exc()
    outcome = {"outcome": "error", "exception": _describe(e)}
  _flush()
  _send(report_fd, outcome)
  os._exit(0)


# ------------------------------------------------------------------------------------------------
# C: supervisor


def _children():
  out = set()
  for tid in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{tid}/children") as f:
        out.update(int(p) for p in f.read().split())
    except OSError:
      continue
  return out


def _kill_everything(groups, pid1):
  """Kills and reaps every process this supervisor can reach."""
  if pid1:
    try:
      os.kill(-1, signal.SIGKILL)  # From pid 1: every other process of the namespace.
    except OSError:
      pass
  for group in groups:
    try:
      os.killpg(group, signal.SIGKILL)
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


def _fork(keep, body):
  """Forks a child that keeps only `keep` (renumbered from 3) and runs body(*fds); a failure
  before body hands over is reported as a setup error on the child's first descriptor."""
  pid = os.fork()
  if pid:
    return pid
  try:
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    fds = _keep_only(keep)
    body(*fds)
  except BaseException as e:
    _send(3, {"setup_error": _describe(e)})
  os._exit(70)


def _status_text(status, early):
  """(outcome, text) for a process that ended with wait status `status`; `early` says what it
  ended before, for an exit."""
  if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    if sig == signal.SIGXCPU:
      return "timeout", "CPU-time limit (SIGXCPU)"
    if sig == signal.SIGXFSZ:
      return "error", "file-size limit (SIGXFSZ)"
    try:
      name = signal.Signals(sig).name
    except ValueError:
      name = str(sig)
    return "error", f"killed by signal {name}"
  return "error", f"exited with status {os.WEXITSTATUS(status)} {early}"


def _verdict(with_tests, timed_out, forged, statuses, reports, pids):
  """(outcome, detail) from what C saw; see the module doc for who decides."""
  setup = [r["setup_error"] for r in reports.values() if r.get("setup_error")]
  if setup:
    return "error", f"sandbox setup failed: {setup[0]}"
  if timed_out:
    return "timeout", "wall-clock limit"
  if forged:
    return "error", f"the program wrote to the outcome channel: {forged}"
  report = reports[pids["checker" if with_tests else "program"]].get("outcome")
  if report and report["outcome"] == "pass":
    return "pass", ""
  for name in ("program", "checker"):
    status = statuses.get(pids.get(name))
    if status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU:
      return _status_text(status, "")
  program_status = statuses.get(pids["program"])
  if report and not (report.get("program_gone") and program_status is not None):
    return report["outcome"], str(report.get("exception", ""))[:_DETAIL_CHARS]
  if program_status is not None:
    outcome, text = _status_text(
        program_status, "before answering" if with_tests else "before reporting")
    return outcome, f"the program's process {text}"
  checker_status = statuses.get(pids.get("checker"))
  if checker_status is not None:
    outcome, text = _status_text(checker_status, "before reporting")
    return outcome, f"the checker's process {text}"
  return "error", "no report"


def _supervise(cfg, namespaces, status_fd):
  pid1 = os.getpid() == 1
  _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
  paths = _interpreter_paths()
  parts = [namespaces or "no-namespaces"]
  mounted = namespaces is not None and _build_view(cfg, paths)
  if mounted:
    parts.append("mntns")
  view = {"paths": paths, "netns": namespaces is not None,
          "userns": namespaces is not None and "userns" in namespaces}
  with_tests = cfg["checker_fd"] is not None
  nonce = os.urandom(16).hex()
  wake_r, wake_w = os.pipe()
  for fd in (wake_r, wake_w):
    os.set_blocking(fd, False)
  signal.set_wakeup_fd(wake_w)
  signal.signal(signal.SIGCHLD, lambda signum, frame: None)
  pids, sockets = {}, {}
  if with_tests:
    proto_d, proto_e = socket.socketpair()
    report_c, report_e = socket.socketpair()
    pids["checker"] = _fork(
        [report_e.fileno(), proto_e.fileno(), cfg["checker_fd"]],
        lambda report, proto, code: _checker(cfg, view, code, proto, report))
    sockets["checker"] = report_c
    # The tests' code never exists in the program's process: closed before D is forked.
    os.close(cfg["checker_fd"])
    for s in (proto_e, report_e):
      s.close()
  report_c, report_d = socket.socketpair()
  program_fds = [report_d.fileno()] + ([proto_d.fileno()] if with_tests else [])

  def program(report, proto=None):
    _start_program(cfg, view, report)
    if proto is None:
      _run_plain(cfg["program"], report, nonce)
    os.close(report)  # The program never holds a channel to the supervisor.
    _serve(cfg["program"], proto)

  pids["program"] = _fork(program_fds, program)
  sockets["program"] = report_c
  report_d.close()
  if with_tests:
    proto_d.close()

  sel = selectors.DefaultSelector()
  sel.register(wake_r, selectors.EVENT_READ)
  lines = {}
  for name, sock in sockets.items():
    sock.setblocking(False)
    lines[pids[name]] = _Lines(sock.fileno())
    sel.register(sock.fileno(), selectors.EVENT_READ, pids[name])
  reports = {pid: {} for pid in lines}
  statuses = {}
  forged = ""
  decider = pids["checker" if with_tests else "program"]
  deadline = time.monotonic() + float(cfg["wall_s"])

  def take(pid, messages):
    """Files the messages of `pid`; returns a reason when one cannot have come from a harness."""
    for message in messages:
      seen = reports[pid]
      if "isolation" not in seen and "setup_error" not in seen:
        if "isolation" in message or "setup_error" in message:
          seen.update(message)
          continue
        return "a message before the harness's own"
      if (pid == decider and "outcome" not in seen
          and message.get("outcome") in ("pass", "fail", "error")
          and (with_tests or (message.get("nonce") == nonce and message.get("pid") == pid))):
        seen["outcome"] = message
        continue
      if message.get("nonce") == nonce and message.get("pid") != pid:
        continue  # The harness of a forked copy of the program, reporting too: not D's word.
      return "an unexpected message"
    return ""

  def collect(pid, drain=False):
    """Reads what `pid` sent (all of it when draining); returns a forgery reason or ""."""
    source = lines[pid]
    try:
      if drain:
        messages = source.drain()
      else:
        source.read()
        messages = []
        while (message := source.pop()) is not None:
          messages.append(message)
    except ValueError as e:
      return f"a malformed message ({e})"
    if source.closed and not drain:
      sel.unregister(source.fd)
    return take(pid, messages)

  timed_out = False
  while decider not in statuses and not forged:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
      timed_out = True
      break
    for key, _ in sel.select(remaining):
      if key.data is None:
        try:
          while os.read(wake_r, 512):
            pass
        except BlockingIOError:
          pass
        try:
          while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
              break
            if pid in reports:
              statuses[pid] = status
        except ChildProcessError:
          pass
      else:
        forged = forged or collect(key.data)
  if not timed_out:
    for pid in lines:  # What came in before the decider's exit was noticed.
      forged = forged or collect(pid, drain=True)
  _kill_everything(list(pids.values()), pid1)
  outcome, detail = _verdict(with_tests, timed_out, forged, statuses, reports, pids)
  program_parts = reports[pids["program"]].get("isolation") or ["program setup unreported"]
  _send(status_fd, {"result": {"outcome": outcome, "detail": detail,
                               "isolation": "+".join(parts + program_parts)}})
  os._exit(0)


def main():
  cfg = json.loads(sys.argv[1])
  status_fd = cfg["status_fd"]
  namespaces = None
  if cfg["isolation"] != "none":
    try:
      namespaces = _unshare()
    except OSError as e:  # Namespaces entered but the uid map refused: no way back, so stop.
      _send(status_fd, {"setup_error": f"user namespace set-up failed ({e}); "
                                       f"use isolation='none'"})
      os._exit(70)
    if namespaces is None and cfg["isolation"] == "namespaces":
      _send(status_fd, {"setup_error": f"namespaces unavailable: "
                                       f"{os.strerror(ctypes.get_errno())}"})
      os._exit(70)
  # Nobody of the run may read this process's descriptors (after the uid map: a non-dumpable
  # process cannot write its own /proc files).
  _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
  _send(status_fd, {"isolation": namespaces or "no-namespaces"})
  supervisor = os.fork()
  if supervisor == 0:
    try:
      _supervise(cfg, namespaces, status_fd)
    except BaseException as e:
      _send(status_fd, {"setup_error": _describe(e)})
    os._exit(70)
  for fd in (status_fd, cfg["checker_fd"]):
    if fd is not None:
      os.close(fd)
  _, status = os.waitpid(supervisor, 0)
  os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 71)


if __name__ == "__main__":
  main()
