"""Reading raw records from local files (JSONL, JSONL.gz, JSON, Parquet, MATH's directory of JSON
files), TFDS and Hugging Face datasets, with errors that name the file, the line and the field.

A malformed JSONL line raises `DataError("path:line: ...")`; with `skip_malformed=True` it is
skipped, counted, and one warning at the end reports how many lines were skipped and the first
few reasons. A record missing a required field raises `DataError` naming the field, the record's
location and the fields it does have. TFDS and Hugging Face sources raise `DataError` naming the
local-path alternative when the library is missing or the machine is offline.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterable, Sequence

from wcse_jax.files import DataError, json_lines

log = logging.getLogger(__name__)

# Every reader stores the record's location ("path:line") under this key, for later messages.
WHERE = "__where__"


def read_jsonl(path: str, *, required: Sequence[str] = (),
               skip_malformed: bool = False) -> list[dict[str, Any]]:
  """Records of a JSON-lines file (optionally gzipped). Blank lines are ignored."""
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file")
  records, skipped = [], []
  for lineno, record in json_lines(path, skipped if skip_malformed else None):
    check_fields(record, required, f"{path}:{lineno}")
    record[WHERE] = f"{path}:{lineno}"
    records.append(record)
  if skipped:
    log.warning("skipped %d malformed line(s) in %s; first: %s", len(skipped), path,
                "; ".join(skipped[:3]))
  return records


def check_fields(record: dict[str, Any], required: Iterable[str], where: str) -> None:
  for field in required:
    if field not in record:
      raise DataError(f"{where}: missing field {field!r} (record has: {sorted(record)})")


def read_parquet(path: str, *, required: Sequence[str] = ()) -> list[dict[str, Any]]:
  import pyarrow.parquet as pq
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file")
  try:
    table = pq.read_table(path)
  except Exception as e:  # pyarrow raises several unrelated types for a corrupt file.
    raise DataError(f"{path}: cannot read as Parquet ({e})") from None
  missing = [f for f in required if f not in table.column_names]
  if missing:
    raise DataError(f"{path}: missing field {missing[0]!r} (columns: {table.column_names})")
  records = table.to_pylist()
  for i, record in enumerate(records):
    record[WHERE] = f"{path}: row {i}"
  return records


def read_json_dir(root: str, *, required: Sequence[str] = ()) -> list[dict[str, Any]]:
  """MATH's official layout: root/<subject>/<n>.json, one problem per file. Each record gets
  `unique_id` = its path relative to root's parent ("test/algebra/1.json"), the form the
  MATH500 id list uses."""
  records = []
  parent = os.path.dirname(os.path.abspath(root))
  for dirpath, _, files in sorted(os.walk(root)):
    for name in sorted(files, key=lambda n: (len(n), n)):
      if not name.endswith(".json"):
        continue
      path = os.path.join(dirpath, name)
      try:
        with open(path, encoding="utf-8") as f:
          record = json.load(f)
      except ValueError as e:
        raise DataError(f"{path}: malformed JSON ({e})") from None
      check_fields(record, required, path)
      record[WHERE] = path
      record.setdefault("unique_id", os.path.relpath(path, parent).replace(os.sep, "/"))
      records.append(record)
  if not records:
    raise DataError(f"{root}: no .json files found")
  return records


def read_local(path: str, *, required: Sequence[str] = (),
               skip_malformed: bool = False) -> list[dict[str, Any]]:
  """Dispatches on the path: a directory (MATH layout), .parquet, or JSONL (.jsonl/.json[.gz])."""
  if os.path.isdir(path):
    return read_json_dir(path, required=required)
  if path.endswith(".parquet"):
    return read_parquet(path, required=required)
  return read_jsonl(path, required=required, skip_malformed=skip_malformed)


def read_tfds(name: str, split: str, *, data_dir: str | None, local_hint: str) -> list[dict]:
  """Records of a TFDS dataset, as Python strings; needs the dataset prepared or the network."""
  try:
    import tensorflow_datasets as tfds
  except ImportError:
    raise DataError(f"tensorflow_datasets is not installed; {local_hint}") from None
  try:
    ds = tfds.load(name, split=split, data_dir=data_dir, download=True)
    out = []
    for i, ex in enumerate(tfds.as_numpy(ds)):
      record = {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in ex.items()}
      record[WHERE] = f"tfds:{name}[{split}] record {i}"
      out.append(record)
    return out
  except Exception as e:  # download/prepare failures come in many types.
    raise DataError(f"TFDS {name}[{split}] is not available here ({type(e).__name__}: "
                    f"{str(e)[:200]}); {local_hint}") from None


def read_hf(path: str, config: str | None, split: str, *, local_hint: str) -> list[dict]:
  """Records of a Hugging Face dataset; needs `datasets` and the network or its cache."""
  try:
    import datasets
  except ImportError:
    raise DataError(f"the Hugging Face `datasets` library is not installed; {local_hint}") \
        from None
  try:
    records = [dict(r) for r in datasets.load_dataset(path, config, split=split)]
  except Exception as e:  # offline and missing-config failures come in many types.
    raise DataError(f"Hugging Face dataset {path}"
                    f"{'/' + config if config else ''}[{split}] is not available here "
                    f"({type(e).__name__}: {str(e)[:200]}); {local_hint}") from None
  for i, record in enumerate(records):
    record[WHERE] = f"hf:{path}[{split}] record {i}"
  return records
