"""The workdir lock, W/.lock: one live run per workdir (protocol: experiment.py's docstring).

Its own module because it is self-contained (flock, the holder written in the file, taking over
the lock of a dead run) and the stage logic never looks inside it; experiment.py re-exports
`workdir_lock` and LOCK.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from typing import IO, Any, Iterator

import jax
from jax.experimental import multihost_utils
import numpy as np

from wcse_jax.runner_common import StageError, is_chief, now

LOCK = ".lock"

# The runner's logger: a run's lock messages belong with its stage messages (one name to filter).
_log = logging.getLogger("wcse_jax.experiment")

_HELD: dict[str, int] = {}  # realpath(workdir) -> how deeply this process holds its lock


@contextlib.contextmanager
def workdir_lock(workdir: str) -> Iterator[None]:
  """Holds `workdir` for this run (W/.lock, see experiment.py's docstring); reentrant per process.

  Process 0 takes the lock (creating `workdir`); a second live run is refused with a StageError
  naming the holder. Multi-host, every process learns process 0's outcome, so none runs on alone.
  """
  key = os.path.realpath(workdir)
  if key in _HELD:
    _HELD[key] += 1
    try:
      yield
    finally:
      _HELD[key] -= 1
    return
  handle, refusal = None, None
  if is_chief():
    try:
      handle = _acquire(workdir)
    except StageError as e:
      refusal = e
  locked = refusal is None
  if jax.process_count() > 1:
    locked = bool(multihost_utils.broadcast_one_to_all(np.int32(locked)))
  if refusal is not None:
    raise refusal
  if not locked:
    raise StageError(f"process 0 could not lock {workdir}: another run uses it (process 0's "
                     f"error names it); wait for that run, or use another --workdir")
  _HELD[key] = 1
  try:
    yield
  finally:
    del _HELD[key]
    if handle is not None:
      # Removed while still locked, so no other run can have locked this file meanwhile.
      os.remove(os.path.join(workdir, LOCK))
      handle.close()


def _acquire(workdir: str) -> IO[str]:
  """The open, flocked W/.lock with this process's host, pid and start time written in it."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK)
  host = socket.gethostname()
  for _ in range(3):  # Retried when the file was replaced while we locked it.
    handle = open(path, "a+")
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _lock_holder(handle)
      handle.close()
      if holder.get("host") == host and not _alive(holder.get("pid")):
        # The flock lives on in a process the dead run started (a forked worker, say).
        _log.warning("%s: taking over the lock of run pid %s on this host, which is gone (a "
                     "process it started still holds the file)", path, holder.get("pid"))
        with contextlib.suppress(FileNotFoundError):  # Another run may have removed it first.
          os.remove(path)
        continue
      raise StageError(
          f"{workdir} is in use by another run (host {holder.get('host', '?')}, pid "
          f"{holder.get('pid', '?')}, since {holder.get('started_at', '?')}; lock file {path}). "
          f"Wait for it to finish or stop it, or use another --workdir.")
    if not (os.path.exists(path) and os.path.samestat(os.fstat(handle.fileno()),
                                                      os.stat(path))):
      handle.close()
      continue
    holder = _lock_holder(handle)
    if holder:
      _log.warning("%s: taking over the stale lock of a run that ended without releasing it "
                   "(host %s, pid %s, since %s)", path, holder.get("host", "?"),
                   holder.get("pid", "?"), holder.get("started_at", "?"))
    handle.seek(0)
    handle.truncate()
    json.dump({"host": host, "pid": os.getpid(), "started_at": now()}, handle)
    handle.flush()
    return handle
  raise StageError(f"{path} was replaced three times while this run locked it; another run is "
                   f"starting in {workdir}: wait for it, or use another --workdir")


def _lock_holder(handle: IO[str]) -> dict[str, Any]:
  """What a lock file says of its holder ({} when empty or unreadable)."""
  handle.seek(0)
  try:
    holder = json.loads(handle.read() or "{}")
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


def _alive(pid: Any) -> bool:
  """Whether process `pid` exists on this host (True when unsure)."""
  if not isinstance(pid, int) or pid <= 0:
    return True
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # Another user's process.
    return True
  return True
