"""The one JSON-lines reader, the one file hash and the one atomic JSON writer of the project.

Plain Python (no jax, no numpy), so every layer can use them: the data readers, the record
shards, the metric log, the stage runner and the reports. Every read error is a DataError whose
one-line message names the file (and line) and says what to do, so a bad file on disk is reported
as such rather than as a traceback from deep inside gzip, json or the codec.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from typing import Any, Iterator

_RESTORE = "restore it, or delete it and rerun the stage that wrote it"


class DataError(ValueError):
  """Bad or unavailable input data; the message names the file, line and field involved."""


def _open_binary(path: str):
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def json_lines(path: str | os.PathLike,
               skipped: list[str] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
  """(line number, record) for each JSON object line of a (possibly gzipped) file.

  Blank lines are ignored. A malformed line (not UTF-8, not JSON, not an object) raises
  DataError("path:line: ..."), or, when a `skipped` list is given, is appended to it (as
  "path:line: reason") and skipped, so the caller can report the count once. A file that is
  missing, or not valid gzip (truncated, corrupt), raises DataError naming it and the last line
  read. Lines are decoded one by one, so a bad byte is reported at its own line.
  """
  path = os.fspath(path)
  lineno = 0
  try:
    with _open_binary(path) as f:
      for lineno, raw in enumerate(f, start=1):
        if not raw.strip():
          continue
        try:
          record = json.loads(raw.decode("utf-8"))
          if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        except UnicodeDecodeError as e:
          reason = (f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column "
                    f"{e.start + 1})")
        except ValueError as e:
          reason = f"{path}:{lineno}: malformed JSON line ({e})"
        else:
          yield lineno, record
          continue
        if skipped is None:
          raise DataError(f"{reason}; fix or delete that line, or {_RESTORE}") from None
        skipped.append(reason)
  except (OSError, EOFError, zlib.error) as e:
    if isinstance(e, FileNotFoundError):
      raise DataError(f"{path}: no such file") from None
    where = f" after line {lineno}" if lineno else ""
    raise DataError(f"{path}: cannot be read{where} ({type(e).__name__}: {e}); the file is "
                    f"truncated or corrupt: {_RESTORE}") from None


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
  """Every record of a JSON-lines file (see json_lines)."""
  return [record for _, record in json_lines(path)]


def count_lines(path: str | os.PathLike) -> int:
  """Non-blank lines of a (possibly gzipped) file, without parsing them: a JSONL file's record
  count. DataError naming the file when it cannot be read."""
  path = os.fspath(path)
  try:
    with _open_binary(path) as f:
      return sum(1 for raw in f if raw.strip())
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e}); the file is truncated or "
                    f"corrupt: {_RESTORE}") from None


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


def write_text(path: str, text: str) -> None:
  """Writes `text` via a temporary file and a rename (reports: a reader never sees half)."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
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


__all__ = ["DataError", "json_lines", "read_jsonl", "count_lines", "sha256", "write_json",
           "write_text", "read_json"]
