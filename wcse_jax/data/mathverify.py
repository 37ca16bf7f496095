"""math-verify in worker processes, each comparison under a hard deadline.

math-verify can take unbounded time on adversarial strings (10^{10^{10^{10}}}!, deep nesting),
and its own SIGALRM timeouts neither interrupt C-level work nor run outside the main thread. So
each comparison is sent to a worker process (mathverify_worker.py, beside this file); a worker
still busy at the deadline is SIGKILLed and replaced, and the item counts as not equivalent
with a timeout. Results are cached per (gold, answer) pair, since sampled answers repeat a lot.
"""
from __future__ import annotations

import atexit
import collections
import json
import os
import select
import selectors
import subprocess
import sys
import threading
import time
from typing import Sequence

_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mathverify_worker.py")


class _Worker:
  def __init__(self):
    self.proc = subprocess.Popen(
        [sys.executable, "-I", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, bufsize=0)
    self.buffer = b""
    os.set_blocking(self.proc.stdout.fileno(), False)

  def read_lines(self) -> list[bytes] | None:
    """Complete lines read so far; None when the worker has exited."""
    try:
      chunk = os.read(self.proc.stdout.fileno(), 65536)
    except BlockingIOError:
      return []
    if not chunk:
      return None
    self.buffer += chunk
    *lines, self.buffer = self.buffer.split(b"\n")
    return lines

  def send(self, gold: str, pred: str):
    self.proc.stdin.write((json.dumps({"gold": gold, "pred": pred}) + "\n").encode())

  def kill(self):
    self.proc.kill()
    self.proc.wait()


class MathVerifyPool:
  """A few math-verify worker processes, each item under a hard deadline (see module doc)."""

  def __init__(self, workers: int = 2, startup_timeout_s: float = 120.0):
    self.size = max(1, workers)
    self.startup_timeout_s = startup_timeout_s
    self._idle: list[_Worker] = []
    self._lock = threading.Lock()
    self._cache: dict[tuple[str, str], bool] = {}

  def _start(self, n: int) -> list[_Worker]:
    new = [_Worker() for _ in range(n)]
    deadline = time.monotonic() + self.startup_timeout_s
    for w in new:
      lines = []
      while not lines:
        if time.monotonic() > deadline:
          for x in new:
            x.kill()
          raise RuntimeError(f"math-verify worker did not start in {self.startup_timeout_s}s")
        select.select([w.proc.stdout], [], [], 0.5)
        lines = w.read_lines()
        if lines is None:
          raise RuntimeError("math-verify worker exited at start (is math-verify installed?)")
    return new

  def compare(self, pairs: Sequence[tuple[str, str]], timeout_s: float = 5.0
              ) -> list[bool | None]:
    """For each (gold, pred): True/False, or None when math-verify ran past `timeout_s`."""
    with self._lock:
      results: list[bool | None] = [None] * len(pairs)
      todo = collections.deque()
      for i, key in enumerate(pairs):
        if key in self._cache:
          results[i] = self._cache[key]
        else:
          todo.append(i)
      busy: dict[_Worker, tuple[int, float]] = {}
      sel = selectors.DefaultSelector()
      try:
        while todo or busy:
          want = min(len(todo), self.size - len(busy)) - len(self._idle)
          if want > 0:
            self._idle += self._start(want)
          while todo and self._idle:
            w, i = self._idle.pop(), todo.popleft()
            try:
              w.send(*pairs[i])
            except BrokenPipeError:
              w.kill()
              todo.appendleft(i)
              continue
            busy[w] = (i, time.monotonic() + timeout_s)
            sel.register(w.proc.stdout, selectors.EVENT_READ, w)
          if not busy:
            continue
          next_deadline = min(d for _, d in busy.values())
          for key, _ in sel.select(timeout=max(0.0, next_deadline - time.monotonic())):
            w = key.data
            lines = w.read_lines()
            i = busy[w][0]
            if lines is None:  # The worker died on this item: count it as not equivalent.
              sel.unregister(w.proc.stdout)
              del busy[w]
              w.kill()
              results[i] = False
            elif lines:
              sel.unregister(w.proc.stdout)
              del busy[w]
              results[i] = bool(json.loads(lines[-1])["equal"])
              self._cache[pairs[i]] = results[i]
              self._idle.append(w)
          now = time.monotonic()
          for w, (i, deadline) in list(busy.items()):
            if now >= deadline:
              sel.unregister(w.proc.stdout)
              del busy[w]
              w.kill()
              results[i] = None
      finally:
        sel.close()
        for w in busy:
          w.kill()
      if len(self._cache) > 200_000:
        self._cache.clear()
      return results

  def close(self):
    with self._lock:
      for w in self._idle:
        w.kill()
      self._idle = []


_POOL: MathVerifyPool | None = None
_POOL_LOCK = threading.Lock()


def math_verify_pool() -> MathVerifyPool:
  """The process-wide pool (started on first use, stopped at exit)."""
  global _POOL
  with _POOL_LOCK:
    if _POOL is None:
      _POOL = MathVerifyPool(workers=min(2, os.cpu_count() or 1))
      atexit.register(_POOL.close)
    return _POOL


__all__ = ["MathVerifyPool", "math_verify_pool"]
