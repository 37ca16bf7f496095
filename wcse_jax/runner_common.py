"""What the stage runner's modules share: StageError, is_chief, config_hash and now.

experiment.py (the runner) re-exports all four, and imports workdir_lock.py and manifests.py;
those two need these names as well, so they live here, where neither has to import the runner
(that would be a cycle).
"""
from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any, Mapping

import jax


class StageError(RuntimeError):
  """A stage cannot run, or cannot be reused, as configured; the message says how to proceed."""


def is_chief() -> bool:
  return jax.process_index() == 0


def config_hash(scoped: Mapping[str, Any]) -> str:
  """sha256 of a canonical JSON rendering (sorted keys, tuples as lists)."""
  text = json.dumps(scoped, sort_keys=True, separators=(",", ":"), default=repr)
  return hashlib.sha256(text.encode()).hexdigest()


def now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
