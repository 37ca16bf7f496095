"""Sample-record shards (DESIGN section 7): gzipped JSON lines, one object per (problem, sample).

Record fields: `problem_id` and `sample_index` are required (together the record's key); the
sampler and the grader add the rest (model, prompt, text, tokens, logprobs, finish_reason, flops;
extracted, correct, steps_valid, ...). Values may be numpy scalars/arrays (written as lists).

Files: `{directory}/{prefix}-p{process:05d}-{shard:06d}.jsonl.gz`. Every process writes its own
shards (the process index is in the name, and a lock file stops two live writers from sharing
one). `ShardWriter` buffers records and writes each full buffer as a new shard: to a `.tmp` file,
fsync, then an atomic rename. A reader therefore sees whole shards or nothing; a process killed
at any moment loses only its unflushed buffer, and `done_keys` tells a restarted run exactly which
(problem_id, sample_index) pairs exist, so it redoes the lost ones and duplicates none.

Reading elsewhere (the shards are plain JSONL.gz):
  pandas:    pd.concat(pd.read_json(p, lines=True) for p in shard_paths(d))
  HF:        datasets.load_dataset("json", data_files=f"{d}/samples-*.jsonl.gz", split="train")
"""
from __future__ import annotations

import fcntl
import gzip
import io
import json
import logging
import os
import re
from typing import Any, Iterable, Iterator, Mapping

from wcse_jax.files import DataError, json_lines

log = logging.getLogger(__name__)

KEY_FIELDS = ("problem_id", "sample_index")
_NAME_RE = re.compile(r"^(?P<prefix>.+)-p(?P<proc>\d{5})-(?P<shard>\d{6})\.jsonl\.gz$")


def _jsonable(obj: Any) -> Any:
  if hasattr(obj, "tolist"):  # numpy arrays and scalars, without importing numpy.
    return obj.tolist()
  raise TypeError(f"record value of type {type(obj).__name__} is not JSON-serialisable")


def shard_paths(directory: str, prefix: str = "samples") -> list[str]:
  """Complete shards in `directory`, ordered by process index, then shard number."""
  if not os.path.isdir(directory):
    return []
  found = []
  for name in os.listdir(directory):
    m = _NAME_RE.match(name)
    if m and m["prefix"] == prefix:
      found.append((int(m["proc"]), int(m["shard"]), os.path.join(directory, name)))
  return [p for *_, p in sorted(found)]


class ShardWriter:
  """Appends records to rotating shards of one process. Use as a context manager, or call
  `close()`; both flush the buffer (also when leaving the `with` block by an exception)."""

  def __init__(self, directory: str, *, process_index: int = 0, records_per_shard: int = 1000,
               prefix: str = "samples"):
    if records_per_shard < 1:
      raise ValueError(f"records_per_shard must be >= 1, got {records_per_shard}")
    self.directory, self.prefix = directory, prefix
    self.process_index, self.records_per_shard = process_index, records_per_shard
    os.makedirs(directory, exist_ok=True)
    stem = f"{prefix}-p{process_index:05d}"
    self._lock = open(os.path.join(directory, f".{stem}.lock"), "w")
    try:
      fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._lock.close()
      raise RuntimeError(f"{directory}: another live writer uses process index {process_index}; "
                         f"give each process its own index") from None
    for name in os.listdir(directory):
      if name.startswith(stem + "-") and name.endswith(".tmp"):
        os.remove(os.path.join(directory, name))  # Left by a writer killed mid-shard.
    mine = [int(_NAME_RE.match(os.path.basename(p))["shard"])
            for p in shard_paths(directory, prefix)
            if int(_NAME_RE.match(os.path.basename(p))["proc"]) == process_index]
    self._next_shard = max(mine, default=-1) + 1
    self._buffer: list[str] = []
    self.written = 0

  def write(self, record: Mapping[str, Any]) -> None:
    for field in KEY_FIELDS:
      if field not in record:
        raise DataError(f"sample record is missing field {field!r} (has: {sorted(record)})")
    self._buffer.append(json.dumps(dict(record), default=_jsonable, ensure_ascii=False))
    if len(self._buffer) >= self.records_per_shard:
      self.flush()

  def write_many(self, records: Iterable[Mapping[str, Any]]) -> None:
    for r in records:
      self.write(r)

  def flush(self) -> None:
    """Writes the buffered records as one new shard (atomically)."""
    if not self._buffer:
      return
    name = f"{self.prefix}-p{self.process_index:05d}-{self._next_shard:06d}.jsonl.gz"
    final = os.path.join(self.directory, name)
    tmp = final + ".tmp"
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
      gz.write(("\n".join(self._buffer) + "\n").encode("utf-8"))
    with open(tmp, "wb") as f:
      f.write(raw.getvalue())
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, final)
    dir_fd = os.open(self.directory, os.O_RDONLY)
    try:
      os.fsync(dir_fd)  # Makes the rename itself durable.
    finally:
      os.close(dir_fd)
    self.written += len(self._buffer)
    self._buffer = []
    self._next_shard += 1

  def close(self) -> None:
    if self._lock.closed:
      return
    self.flush()
    self._lock.close()

  def __enter__(self) -> "ShardWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_records(source: str | Iterable[str], *, prefix: str = "samples",
                 skip_malformed: bool = False) -> Iterator[dict[str, Any]]:
  """Records of a shard directory (all processes) or of the given shard files, in order.
  A malformed line raises DataError("file:line: ..."), or with skip_malformed=True is skipped,
  counted, and reported in one warning at the end."""
  if isinstance(source, str):
    if os.path.isdir(source):
      paths = shard_paths(source, prefix)
    elif os.path.exists(source):
      paths = [source]
    else:
      raise DataError(f"{source}: no such shard file or directory")
  else:
    paths = list(source)
  skipped: list[str] = []
  for path in paths:
    for _, record in json_lines(path, skipped if skip_malformed else None):
      yield record
  if skipped:
    log.warning("skipped %d malformed record line(s); first: %s", len(skipped),
                "; ".join(skipped[:3]))


def done_keys(directory: str, prefix: str = "samples") -> set[tuple[str, int]]:
  """The (problem_id, sample_index) pairs already written in `directory` (by any process)."""
  out = set()
  if not os.path.isdir(directory):
    return out
  for record in read_records(directory, prefix=prefix):
    out.add((str(record["problem_id"]), int(record["sample_index"])))
  return out
