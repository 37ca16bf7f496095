"""A finished stage's MANIFEST.json: listing its record files, checking them, accepting edits.

Its own module because it is what a finished stage folder promises (experiment.py's docstring,
"Records are verified"), read by the runner and by main's --refresh_manifest alike, and it needs
nothing of how stages run; experiment.py re-exports its public names.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from wcse_jax import files
from wcse_jax.runner_common import StageError, config_hash, now

# The runner's own files in a stage folder: never listed as records.
MANIFEST = "MANIFEST.json"
START = "START.json"
RECORD_SUFFIXES = (".jsonl.gz", ".jsonl", ".json")
# Files that mark an orbax checkpoint folder: its internals are not records and may be huge.
_CHECKPOINT_MARKERS = ("_CHECKPOINT_METADATA", "_METADATA")
_MANIFEST_FIELDS = ("stage", "config_hash", "config", "inputs", "counts")

# The runner's logger: these messages are about its stages (one name to filter).
_log = logging.getLogger("wcse_jax.experiment")


def list_files(folder: str) -> dict[str, dict[str, Any]]:
  """The record files of a stage folder (RECORD_SUFFIXES, but not START/MANIFEST, hidden files or
  anything inside an orbax checkpoint folder), by relative path: bytes, sha256 and, for
  .jsonl.gz shards, the number of records."""
  listing = {}
  for rel in _record_paths(folder):
    path = os.path.join(folder, rel)
    entry: dict[str, Any] = {"bytes": os.path.getsize(path), "sha256": files.sha256(path)}
    if rel.endswith(".jsonl.gz"):
      entry["records"] = files.count_lines(path)
    listing[rel] = entry
  return listing


def _record_paths(folder: str) -> list[str]:
  found = []
  for root, dirs, names in os.walk(folder):
    if any(marker in names for marker in _CHECKPOINT_MARKERS):
      dirs[:] = []
      continue
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), folder)
      if name.endswith(RECORD_SUFFIXES) and not name.startswith(".") and rel not in (START,
                                                                                    MANIFEST):
        found.append(rel)
  return sorted(found)


def read_manifest(folder: str, *, check_sum: bool = True) -> dict[str, Any]:
  """The MANIFEST.json of the finished stage in `folder`, checked: valid JSON, the runner's
  fields, and (`check_sum`) the checksum of its own content, so a hand edit is caught. DataError
  naming the file otherwise."""
  path = os.path.join(folder, MANIFEST)
  stage = os.path.basename(os.path.normpath(folder))
  manifest = files.read_json(path)
  redo = f"rerun with --config.rerun={stage} to rebuild the stage"
  for field in _MANIFEST_FIELDS:
    if not isinstance(manifest, dict) or field not in manifest:
      raise files.DataError(f"{path}: not a stage manifest (no {field!r} field): it was edited "
                            f"or written by another program; restore it, or {redo}")
  # Manifests written before the checksum existed have none; they are read as they are.
  if check_sum and "checksum" in manifest and manifest["checksum"] != _checksum(manifest):
    raise files.DataError(f"{path}: edited after stage {stage!r} finished (its checksum no longer "
                          f"matches its content); restore it, or {redo}")
  return manifest


def verify_files(folder: str, manifest: Mapping[str, Any] | None = None) -> None:
  """Checks the record files of the finished stage in `folder` against its manifest: DataError
  naming the first file that was deleted, added or changed (size or sha256) since."""
  manifest = read_manifest(folder) if manifest is None else manifest
  stage = manifest["stage"]
  listed = manifest.get("files")
  if listed is None:
    _log.warning("stage %s: %s lists no record files (it predates their verification), so they "
                 "are read unverified; --refresh_manifest=%s lists them", stage,
                 os.path.join(folder, MANIFEST), stage)
    return
  fix = (f"rerun with --config.rerun={stage} to rebuild it, or pass --refresh_manifest={stage} "
         f"to accept a deliberate edit")
  found = _record_paths(folder)
  missing = sorted(set(listed) - set(found))
  if missing:
    raise files.DataError(f"{os.path.join(folder, missing[0])}: deleted after stage {stage!r} "
                          f"finished ({len(missing)} listed file(s) missing); {fix}")
  added = sorted(set(found) - set(listed))
  if added:
    raise files.DataError(f"{os.path.join(folder, added[0])}: added to stage {stage!r} after it "
                          f"finished (its {MANIFEST} does not list it); {fix}")
  for rel in found:
    path, entry = os.path.join(folder, rel), listed[rel]
    size, digest = os.path.getsize(path), files.sha256(path)
    if size != entry["bytes"] or digest != entry["sha256"]:
      raise files.DataError(
          f"{path}: edited after stage {stage!r} finished ({entry['bytes']} bytes, sha256 "
          f"{entry['sha256'][:12]} in its {MANIFEST}; now {size} bytes, sha256 {digest[:12]}); "
          f"{fix}")


def refresh_manifest(folder: str) -> dict[str, list[str]]:
  """Accepts deliberate edits to a finished stage's files: re-lists them in its MANIFEST.json and
  appends what changed (with the time) to its "refreshed" list. Also accepts a hand-edited
  manifest. Its sha256 changes, so every stage built from the old one is refused as built from a
  rebuilt input until rerun. Process 0 only. Returns the relative paths changed, added, removed.
  """
  if not os.path.isfile(os.path.join(folder, MANIFEST)):
    raise StageError(f"{folder} holds no finished stage ({MANIFEST} not found); name a finished "
                     f"stage of the workdir")
  manifest = read_manifest(folder, check_sum=False)
  old, new = manifest.get("files", {}), list_files(folder)
  diff = {"changed": sorted(k for k in set(old) & set(new) if old[k] != new[k]),
          "added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new))}
  manifest["files"] = new
  manifest.setdefault("refreshed", []).append({"at": now(), **diff})
  write_manifest(os.path.join(folder, MANIFEST), manifest)
  _log.info("%s: refreshed (changed %d, added %d, removed %d record files); stages built from it "
            "must now be rerun", os.path.join(folder, MANIFEST), len(diff["changed"]),
            len(diff["added"]), len(diff["removed"]))
  return diff


def _checksum(manifest: Mapping[str, Any]) -> str:
  return config_hash({k: v for k, v in manifest.items() if k != "checksum"})


def write_manifest(path: str, manifest: dict[str, Any]) -> None:
  """Writes `manifest` to `path` with the checksum of its content, which read_manifest checks."""
  manifest["checksum"] = _checksum(manifest)
  files.write_json(path, manifest)
