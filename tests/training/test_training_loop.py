"""The loop: kill-and-resume reproduces the uninterrupted run; batching, metrics and FLOPs."""
import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cpu_devices import xla_flags
from wcse_jax.models import presets
from wcse_jax.training import batching, flops
from wcse_jax.files import read_jsonl
from wcse_jax.training.metrics import MetricWriter

SCRIPT = os.path.join(os.path.dirname(__file__), "resume_run.py")
STEPS = 12


def run(workdir, mode, delay=0.0, **popen):
  # One CPU device is enough here and compiles faster than the 8 the test session forces.
  env = {**os.environ, "XLA_FLAGS": xla_flags(1), "JAX_PLATFORMS": "cpu"}
  return subprocess.Popen([sys.executable, SCRIPT, str(workdir), str(STEPS), str(delay), mode],
                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)


def final_losses(workdir):
  """step -> loss, the last record of each step winning (a resumed run rewrites later steps)."""
  return {r["step"]: r["train/loss"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))
          if "train/loss" in r}


def finished_checkpoints(workdir):
  return sorted(int(os.path.basename(p))
                for p in glob.glob(os.path.join(workdir, "checkpoints", "*"))
                if os.path.basename(p).isdigit())


@pytest.mark.parametrize("mode", ["stream", "on_policy"])
def test_killed_run_resumes_to_the_uninterrupted_losses(tmp_path, mode):
  """Also for batches sampled from the current parameters: the resumed run regenerates them."""
  straight, killed = tmp_path / "straight", tmp_path / "killed"
  reference = run(straight, mode)
  victim = run(killed, mode, delay=0.4)
  deadline = time.time() + 240
  while not [s for s in finished_checkpoints(killed) if s >= 6]:
    assert victim.poll() is None, victim.stderr.read().decode()[-3000:]
    assert time.time() < deadline, "no checkpoint at step >= 6 in time"
    time.sleep(0.05)
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  assert victim.returncode == -signal.SIGKILL
  before = final_losses(killed)
  assert max(before) < STEPS, "the run finished before it was killed"
  assert reference.wait() == 0, reference.stderr.read().decode()[-3000:]
  resumed = run(killed, mode)
  assert resumed.wait() == 0, resumed.stderr.read().decode()[-3000:]
  expected, got = final_losses(straight), final_losses(killed)
  assert sorted(expected) == list(range(1, STEPS + 1))
  assert got == expected  # exact: same batches, same state, same compiled step
  steps = [r["step"] for r in read_jsonl(os.path.join(killed, "metrics.jsonl"))
           if "train/loss" in r]
  assert steps == sorted(set(steps)), "a resumed run logged a step twice"
  assert finished_checkpoints(killed)[-1] == STEPS
  records = read_jsonl(os.path.join(straight, "metrics.jsonl"))
  assert [(r["step"], r["eval/step_parity"]) for r in records if "eval/step_parity" in r] == [
      (4, 0.0), (8, 0.0), (12, 0.0)]
  perf = [r for r in records if "perf/mfu" in r]
  assert len(perf) == STEPS - 1 and all(r["perf/mfu"] > 0 and r["perf/tokens_per_s"] > 0
                                        for r in perf)


def test_packed_batches_are_fixed_shape_segments():
  examples = [batching.completion_example([2, 5], [6, 7, 1], weight=w) for w in (1.0, -0.5)]
  examples += [batching.completion_example([2], [9] * 6)]
  out = list(batching.batches(iter(examples), rows=2, length=10))
  assert len(out) == 1
  b = out[0]
  assert all(v.shape == (2, 10) for v in b.values())
  np.testing.assert_array_equal(b["tokens"][0], [2, 5, 6, 7, 1, 2, 5, 6, 7, 1])
  np.testing.assert_array_equal(b["segment_ids"][0], [1] * 5 + [2] * 5)
  np.testing.assert_array_equal(b["positions"][0], [0, 1, 2, 3, 4] * 2)
  np.testing.assert_array_equal(b["loss_weight"][0], [0, 0, 1, 1, 1, 0, 0, -.5, -.5, -.5])
  np.testing.assert_array_equal(b["positions"][1], list(range(7)) + [-1] * 3)
  np.testing.assert_array_equal(b["segment_ids"][1], [1] * 7 + [0] * 3)


def test_padded_batches_complete_the_last_batch_and_reject_long_examples():
  examples = [batching.completion_example([2], [3] * n) for n in (2, 3, 4)]
  out = list(batching.batches(iter(examples), rows=2, length=6, pack=False))
  assert len(out) == 2 and "segment_ids" not in out[0]
  np.testing.assert_array_equal(out[1]["positions"][0], [0, 1, 2, 3, 4, -1])
  assert (out[1]["positions"][1] == -1).all() and (out[1]["loss_weight"][1] == 0).all()
  with pytest.raises(ValueError, match="example of 9 tokens does not fit rows of length 6"):
    list(batching.batches(iter([batching.completion_example([2], [3] * 8)]), rows=2, length=6))


def test_metric_writer_writes_jsonl_and_tensorboard_events(tmp_path):
  writer = MetricWriter(str(tmp_path))
  writer.write(3, {"train/loss": 1.5, "perf/mfu": 0.25})
  writer.close()
  assert read_jsonl(str(tmp_path / "metrics.jsonl")) == [
      {"step": 3, "train/loss": 1.5, "perf/mfu": 0.25}]
  from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
  from tensorboard.compat.proto import event_pb2
  events = [event_pb2.Event.FromString(raw)
            for path in glob.glob(str(tmp_path / "events.out.tfevents.*"))
            for raw in RawEventFileLoader(path).Load()]
  events = [e for e in events if e.HasField("summary")]
  values = {(e.step, v.tag): v.simple_value for e in events for v in e.summary.value}
  assert values == {(3, "train/loss"): 1.5, (3, "perf/mfu"): 0.25}


def test_train_flops_counts_each_real_token_at_its_own_context():
  cfg = presets.get_preset("test")
  positions = np.array([[0, 1, 2, -1], [0, 1, 0, 1]])  # a padded row and a packed one
  expected = 3 * (3 * cfg.flops_per_token(1) + 3 * cfg.flops_per_token(2) + cfg.flops_per_token(3))
  assert flops.train_flops(cfg, positions) == expected
  dense = 2 * (cfg.param_count(embedding=False) + cfg.vocab_size * cfg.embed_dim)
  assert cfg.flops_per_token(1) > dense  # attention is counted


def test_core_imports_and_writes_metrics_without_tensorflow_seqio_or_gemma(tmp_path):
  code = (
      "import sys\n"
      "from wcse_jax.training import batching, checkpointing, flops, loop, objectives, optim, "
      "state, step\n"
      "from wcse_jax.models import heads\n"
      "from wcse_jax.training.metrics import MetricWriter\n"
      f"w = MetricWriter({str(tmp_path)!r}); w.write(1, {{'x': 1.0}}); w.close()\n"
      "print([m for m in ('tensorflow', 'seqio', 'gemma', 'torch') if m in sys.modules])\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "XLA_FLAGS": ""})
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().splitlines()[-1] == "[]"
