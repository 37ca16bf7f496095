"""The one JSON-lines reader, the one file hash and the one atomic JSON writer of the project.

Plain Python (no jax, no numpy), so every layer can use them: the data readers, the record
shards, the metric log, the stage runner and the reports.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from typing import Any, Iterator


class DataError(ValueError):
  """Bad or unavailable input data; the message names the file, line and field involved."""


def _open_text(path: str):
  if path.endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8")
  return open(path, "r", encoding="utf-8")


def json_lines(path: str, skipped: list[str] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, record) for each JSON object line of a (possibly gzipped) file.

  Blank lines are ignored. A malformed line raises DataError("path:line: ..."), or, when a
  `skipped` list is given, is appended to it (as "path:line: reason") and skipped, so the caller
  can report the count once. A file that is not valid gzip or UTF-8 raises DataError naming it.
  """
  try:
    with _open_text(path) as f:
      for lineno, line in enumerate(f, start=1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
          if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        except ValueError as e:
          reason = f"{path}:{lineno}: malformed JSON line ({e})"
          if skipped is None:
            raise DataError(reason) from None
          skipped.append(reason)
          continue
        yield lineno, record
  except (OSError, EOFError, UnicodeDecodeError, zlib.error) as e:
    if isinstance(e, FileNotFoundError):
      raise DataError(f"{path}: no such file") from None
    raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e}); the file is truncated "
                    f"or corrupt: restore it, or delete it and rerun the stage that wrote it") \
        from None


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """Every record of a JSON-lines file (see json_lines)."""
  return [record for _, record in json_lines(path)]


def sha256(path: str) -> str:
  """Hex sha256 of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def write_json(path: str, value: Any) -> None:
  """Writes via a temporary file and a rename, so a crash never leaves half a file."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  """A JSON file's value; DataError naming the file when it is missing or not valid JSON."""
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise DataError(f"{path}: no such file") from None
  except (ValueError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: not valid JSON ({e}); the file is truncated or was edited: "
                    f"restore it, or delete its folder and rerun the stage that wrote it") \
        from None


__all__ = ["DataError", "json_lines", "read_jsonl", "sha256", "write_json", "read_json"]
