"""The toolkit's generator (the sample stage's) resumes after a kill: it fills in exactly the
missing (problem, sample) records, never repeats one, and ends with the records of an
uninterrupted run."""
import jax
import pytest

from wcse_jax import experiment, parallel
from wcse_jax.data import prompts, records, tasks
from wcse_jax.loading import LoadedModel
from wcse_jax.models import gemma2, presets
from wcse_jax.sampling.choosers import Temperature
from wcse_jax.stages import common
from wcse_jax.tokenizer import train_tokenizer

SAMPLES = 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  task = tasks.get_task("arith_chain")
  corpus = [prompts.build_prompt(task, ex, 0) + prompts.target(task, ex.solution)
            for ex in task.examples("train")[:400]]
  tok = train_tokenizer(corpus, 400, str(tmp_path_factory.mktemp("tok") / "t.model"))
  config = presets.get_preset("test", vocab_size=tok.vocab_size, max_len=256, sliding_window=64)
  model = gemma2.make_model(config)
  loaded = LoadedModel("m", config, model, gemma2.init_params(model, jax.random.key(0)), tok)
  mesh = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  return loaded, mesh, task, task.examples("train")[:5]


def _solve(setup, out_dir, examples, batch_prompts):
  loaded, mesh, task, _ = setup
  sampler = common.text_sampler(loaded, mesh, cache_length=256, batch_size=batch_prompts)
  return common.generate(loaded, sampler, task, examples, str(out_dir), num_samples=SAMPLES,
                         max_new_tokens=12, chooser=Temperature(1.0), seed=3)


def _by_key(directory):
  recs = list(records.read_records(str(directory)))
  keys = [(r["problem_id"], r["sample_index"]) for r in recs]
  assert len(keys) == len(set(keys)), "duplicate records"
  return {k: r["text"] for k, r in zip(keys, recs)}


def test_killed_sampling_resumes_to_the_uninterrupted_records(setup, tmp_path):
  examples = setup[3]
  _solve(setup, tmp_path / "full", examples, batch_prompts=4)
  full = _by_key(tmp_path / "full")
  assert len(full) == len(examples) * SAMPLES

  # What a kill leaves: the first chunk's shard, and one sample of the next problem whose
  # chunk died after it was flushed (the other samples of that problem were not).
  _solve(setup, tmp_path / "resumed", examples[:2], batch_prompts=2)
  partial = [r for r in records.read_records(str(tmp_path / "full"))
             if r["problem_id"] == examples[2].id and r["sample_index"] == 1]
  with records.ShardWriter(str(tmp_path / "resumed"), process_index=1) as writer:
    writer.write(partial[0])

  counts = _solve(setup, tmp_path / "resumed", examples, batch_prompts=2)
  assert counts["already_done"] == 2 * SAMPLES + 1
  assert counts["written"] == len(examples) * SAMPLES - (2 * SAMPLES + 1)
  assert _by_key(tmp_path / "resumed") == full

  again = _solve(setup, tmp_path / "resumed", examples, batch_prompts=2)
  assert again["written"] == 0 and _by_key(tmp_path / "resumed") == full


def test_too_many_cut_off_samples_fail_naming_the_knob(setup, tmp_path):
  """The untrained model rarely ends a sample within 12 tokens: above the allowed share the call
  fails naming max_new_tokens, after writing (and counting) the records."""
  loaded, mesh, task, examples = setup
  sampler = common.text_sampler(loaded, mesh, cache_length=256, batch_size=4)
  kwargs = dict(num_samples=SAMPLES, max_new_tokens=12, chooser=Temperature(1.0), seed=3)
  counts = common.generate(loaded, sampler, task, examples, str(tmp_path / "a"), **kwargs)
  assert counts["max_tokens_rate"] > 0.5 and counts["out_of_cache_rate"] == 0
  with pytest.raises(experiment.StageError,
                     match=r"were cut off .* at max_new_tokens=12.*raise `max_new_tokens`"):
    common.generate(loaded, sampler, task, examples, str(tmp_path / "b"), max_truncated=0.01,
                    **kwargs)
  assert len(list(records.read_records(str(tmp_path / "b")))) == len(examples) * SAMPLES
