"""The LLM judge fills in steps_valid only for answer-correct records of unknown reasoning."""
import jax
import pytest

from wcse_jax import parallel
from wcse_jax.data import prompts, tasks
from wcse_jax.models import gemma2, presets
from wcse_jax.loading import LoadedModel
from wcse_jax.sampling.text import TextSampler
from wcse_jax.tokenizer import train_tokenizer
from wcse_jax.verifiers import llm_judge as judge


@pytest.fixture(scope="module")
def judge_model(tmp_path_factory):
  task = tasks.get_task("arith_chain")
  corpus = [prompts.build_prompt(task, ex, 0) + prompts.target(task, ex.solution)
            for ex in task.examples("train")[:400]] + [judge.PROMPT + "Yes No"]
  tok = train_tokenizer(corpus, 400, str(tmp_path_factory.mktemp("tok") / "t.model"))
  config = presets.get_preset("test", vocab_size=tok.vocab_size, max_len=512, sliding_window=64)
  model = gemma2.make_model(config)
  params = gemma2.init_params(model, jax.random.key(0))
  mesh = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  loaded = LoadedModel("judge", config, model, params, tok)
  return loaded, TextSampler(model, tok, mesh=mesh, cache_length=512)


def test_only_correct_unjudged_records_are_judged(judge_model):
  loaded, sampler = judge_model
  recs = [dict(problem_id=f"p{i % 3}", sample_index=i, text=f"Step 1: {i} + 1 = {i + 1}",
               correct=i % 2 == 0, steps_valid=True if i == 4 else None) for i in range(10)]
  questions = {f"p{i}": f"What is {i} + 1?" for i in range(3)}
  n = judge.judge_reasoning(loaded, sampler, recs, questions, max_records=3, seed=0)
  judged = [r for r in recs if "judged_by" in r]
  assert len(judged) == 3
  assert n == sum(r["steps_valid"] is not None for r in judged)
  assert all(r["correct"] and r["sample_index"] != 4 for r in judged)
  assert recs[4]["steps_valid"] is True and "judged_by" not in recs[4]
  assert all(r["steps_valid"] is None for r in recs if not r["correct"])
  # The verdict is the judge's own greedy answer to the prompt; anything but yes/no is unjudged.
  for r in judged:
    prompt = judge.PROMPT.format(question=questions[r["problem_id"]], solution=r["text"])
    (text,), = sampler(loaded.params, [prompt], 1, 4).texts
    assert r["judge_verdict"] == text
    assert r["steps_valid"] == judge.parse_verdict(text)


@pytest.mark.parametrize("text,verdict", [(" Yes", True), ("yes, every step", True),
                                          ("No.", False), (" NO", False), ("", None),
                                          ("Maybe", None), ("Yesterday", None), ("Nope", None)])
def test_verdicts_other_than_yes_or_no_stay_unjudged(text, verdict):
  assert judge.parse_verdict(text) is verdict


def test_judged_subset_is_seeded(judge_model):
  loaded, sampler = judge_model
  make = lambda: [dict(problem_id="p0", sample_index=i, text="x", correct=True, steps_valid=None)
                  for i in range(8)]
  a, b = make(), make()
  judge.judge_reasoning(loaded, sampler, a, {"p0": "q"}, max_records=3, seed=7)
  judge.judge_reasoning(loaded, sampler, b, {"p0": "q"}, max_records=3, seed=7)
  assert [("judged_by" in r) for r in a] == [("judged_by" in r) for r in b]
