"""Sample-record shards: atomic rotation, reading, resume after SIGKILL, pandas, bad input."""
import gzip
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from wcse_jax.data.records import ShardWriter, done_keys, read_records, shard_paths
from wcse_jax.data.sources import DataError

WRITER = textwrap.dedent("""
    import sys, time
    from wcse_jax.data.records import ShardWriter, done_keys
    directory, problems = sys.argv[1], int(sys.argv[2])
    process, processes = int(sys.argv[3]), int(sys.argv[4])
    done = done_keys(directory)
    with ShardWriter(directory, process_index=process, records_per_shard=7) as w:
      for p in range(process, problems, processes):
        for s in range(3):
          if (f"q{p}", s) in done:
            continue
          w.write({"problem_id": f"q{p}", "sample_index": s, "text": "y" * 200,
                   "logprobs": [-0.5] * 10})
          time.sleep(0.003)
""")


def _run_writer(directory, problems, process=0, processes=1):
  return subprocess.Popen([sys.executable, "-c", WRITER, str(directory), str(problems),
                           str(process), str(processes)], cwd=os.getcwd())


def _keys(directory):
  return [(r["problem_id"], r["sample_index"]) for r in read_records(str(directory))]


def test_write_read_rotation_and_numpy(tmp_path):
  with ShardWriter(str(tmp_path), records_per_shard=4) as w:
    for i in range(10):
      w.write({"problem_id": f"q{i}", "sample_index": np.int32(i % 2),
               "tokens": np.arange(3, dtype=np.int32), "flops": np.float64(1.5)})
  paths = shard_paths(str(tmp_path))
  assert [os.path.basename(p) for p in paths] == [
      "samples-p00000-000000.jsonl.gz", "samples-p00000-000001.jsonl.gz",
      "samples-p00000-000002.jsonl.gz"]
  records = list(read_records(str(tmp_path)))
  assert len(records) == 10 and records[3] == {"problem_id": "q3", "sample_index": 1,
                                               "tokens": [0, 1, 2], "flops": 1.5}
  assert w.written == 10
  # A new writer of the same process continues the numbering.
  with ShardWriter(str(tmp_path), records_per_shard=4) as w:
    w.write({"problem_id": "q10", "sample_index": 0})
  assert os.path.basename(shard_paths(str(tmp_path))[-1]) == "samples-p00000-000003.jsonl.gz"
  assert len(done_keys(str(tmp_path))) == 11


def test_pandas_reads_shards(tmp_path):
  with ShardWriter(str(tmp_path), process_index=1, records_per_shard=3) as w:
    for i in range(7):
      w.write({"problem_id": f"q{i}", "sample_index": 0, "correct": i % 2 == 0,
               "text": f"The answer is {i}."})
  df = pd.concat(pd.read_json(p, lines=True) for p in shard_paths(str(tmp_path)))
  assert len(df) == 7 and list(df.columns) == ["problem_id", "sample_index", "correct", "text"]
  assert df["correct"].sum() == 4 and df["text"].iloc[6] == "The answer is 6."


def test_missing_key_field_and_bad_record_lines(tmp_path, caplog):
  with ShardWriter(str(tmp_path)) as w:
    with pytest.raises(DataError, match="missing field 'sample_index'"):
      w.write({"problem_id": "q0"})
  bad = tmp_path / "samples-p00003-000000.jsonl.gz"
  with gzip.open(bad, "wt") as f:
    f.write('{"problem_id": "a", "sample_index": 0}\n{"problem_id": oops\n[1, 2]\n')
  with pytest.raises(DataError, match=r"samples-p00003-000000.jsonl.gz:2: malformed"):
    list(read_records(str(tmp_path)))
  with caplog.at_level(logging.WARNING):
    records = list(read_records(str(tmp_path), skip_malformed=True))
  assert records == [{"problem_id": "a", "sample_index": 0}]
  assert "skipped 2 malformed record line(s)" in caplog.text and ":3" in caplog.text
  with pytest.raises(DataError, match="no such shard file"):
    list(read_records(str(tmp_path / "nope")))
  assert done_keys(str(tmp_path / "nope")) == set()


def test_stale_temp_file_is_ignored_and_removed(tmp_path):
  stale = tmp_path / "samples-p00000-000000.jsonl.gz.tmp"
  stale.write_bytes(b"\x1f\x8b half a shard")
  assert list(read_records(str(tmp_path))) == []
  with ShardWriter(str(tmp_path)) as w:
    assert not stale.exists()
    w.write({"problem_id": "q", "sample_index": 0})
  assert len(shard_paths(str(tmp_path))) == 1


def test_one_live_writer_per_process_index(tmp_path):
  with ShardWriter(str(tmp_path), process_index=2):
    with pytest.raises(RuntimeError, match="process index 2"):
      ShardWriter(str(tmp_path), process_index=2)
    with ShardWriter(str(tmp_path), process_index=3) as other:
      other.write({"problem_id": "q", "sample_index": 0})
  ShardWriter(str(tmp_path), process_index=2).close()  # Free again after close.


def test_sigkill_between_writes_then_resume(tmp_path):
  problems = 40  # 120 records, 7 per shard.
  for min_shards in (2, 6):  # Kill twice, at different points, then finish.
    proc = _run_writer(tmp_path, problems)
    deadline = time.monotonic() + 60
    while len(shard_paths(str(tmp_path))) < min_shards and proc.poll() is None:
      assert time.monotonic() < deadline
      time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    keys = _keys(tmp_path)
    assert len(keys) == len(set(keys)) and len(keys) % 7 == 0 and len(keys) < 3 * problems
  proc = _run_writer(tmp_path, problems)
  assert proc.wait(timeout=120) == 0
  keys = _keys(tmp_path)
  want = {(f"q{p}", s) for p in range(problems) for s in range(3)}
  assert len(keys) == len(set(keys)) == len(want) and set(keys) == want


def test_processes_write_their_own_shards(tmp_path):
  procs = [_run_writer(tmp_path / "shared", 10, process=i, processes=2) for i in (0, 1)]
  assert [p.wait(timeout=120) for p in procs] == [0, 0]
  names = [os.path.basename(p) for p in shard_paths(str(tmp_path / "shared"))]
  assert {n.split("-")[1] for n in names} == {"p00000", "p00001"}
  keys = _keys(tmp_path / "shared")
  assert len(keys) == len(set(keys)) == 30
