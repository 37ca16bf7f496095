"""Verifiers: p(" Yes") read at the training position and equal to a full forward's softmax there;
MajV@K averaging; the balanced data builder; no reference leak; each verifier learns to separate
correct from incorrect solutions it was trained on; scoring resumes without duplicates."""
import collections
import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wcse_jax import parallel
from wcse_jax.data import records
from wcse_jax.data.tasks import get_task
from wcse_jax.loading import LoadedModel
from wcse_jax.models import gemma2, presets
from wcse_jax.sampling.score import Scorer
from wcse_jax.sampling.text import TextSampler
from wcse_jax.stages import verifiers as stage
from wcse_jax.tokenizer import train_tokenizer
from wcse_jax.training import batching, fit, loop, objectives, optim
from wcse_jax.verifiers import base, discriminative, dpo_verifier, formats, genrm

TASK = get_task("last_letter_concat", num_train_per_length=20, num_validation_per_length=2,
                num_test_per_length=4)


def wrong(example):
  """The reference solution with its final answer changed: a wrong candidate."""
  return example.solution.replace(f"The answer is {example.answer}.",
                                  f"The answer is {example.answer[::-1]}x.")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  corpus = [base.prompts.query(TASK, e.question) + base.prompts.target(TASK, e.solution)
            + formats.VERIFY_COT + TASK.verification_rationale(e, e.solution) + formats.VERIFY
            + formats.YES for e in TASK.examples("train")]
  return train_tokenizer(corpus, 420, str(tmp_path_factory.mktemp("tok") / "t.model"),
                         user_defined_symbols=("\u2581Yes", "\u2581No"))


@pytest.fixture(scope="module")
def loaded(tok):
  config = dataclasses.replace(presets.get_preset("test", vocab_size=tok.vocab_size,
                                                  max_len=1024, sliding_window=32), embed_dim=64)
  model = gemma2.make_model(config)
  return LoadedModel("v", config, model, gemma2.init_params(model, jax.random.key(0)), tok)


@pytest.fixture(scope="module")
def mesh():
  return parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])


def candidates(n=3):
  out = []
  for i, e in enumerate(TASK.examples("test")[:n]):
    out += [base.Candidate(e.id, 0, e.question, e.solution),
            base.Candidate(e.id, 1, e.question, wrong(e))]
  return out


def full_forward_yes(loaded, tokens):
  """p(yes) and p(no) at the last position of one cache-free forward over `tokens`."""
  ids = jnp.asarray([tokens])
  logits = gemma2.forward(loaded.model, loaded.params, ids, jnp.arange(len(tokens))[None]).logits
  logp = jax.nn.log_softmax(logits[0, -1].astype(jnp.float32))
  verdict = formats.VerdictTokens.of(loaded.tokenizer)
  return float(jnp.exp(logp[verdict.yes_id])), float(jnp.exp(logp[verdict.no_id]))


def test_verdict_is_read_where_training_puts_it(loaded, mesh):
  tok = loaded.tokenizer
  verdict = formats.VerdictTokens.of(tok)
  assert tok.id_to_piece(verdict.yes_id) == "\u2581Yes" and verdict.context == ()
  c = candidates(1)[1]
  example = genrm.direct_example(tok, TASK, verdict, c.question, c.solution, label=False)
  # The trained target is exactly the last token, and the read happens right before it.
  assert example["tokens"][-1] == verdict.no_id and example["loss_weight"].sum() == 1.0
  context = example["tokens"][:-1].tolist()
  scorer = Scorer(loaded.model, mesh=mesh, pad_id=tok.pad_id, cache_length=256)
  for renormalise in (False, True):
    got = genrm.GenRMDirect("d", loaded, scorer, TASK, renormalise=renormalise).score([c])
    yes, no = full_forward_yes(loaded, context)
    want = yes / (yes + no) if renormalise else yes
    np.testing.assert_allclose(got.scores[0], want, rtol=1e-5)
    assert got.flops[0] > 0


def test_verdict_with_a_shared_leading_token():
  """A tokenizer that splits " Yes" into " " + "Yes": the shared " " is context."""
  class Chars:
    def encode(self, text):
      return [ord(ch) for ch in text]
  verdict = formats.VerdictTokens.of(Chars())
  assert verdict.context == (ord(" "),)
  assert (verdict.yes_id, verdict.no_id) == (ord("Y"), ord("N"))
  assert verdict.target(True) == [ord(" "), ord("Y")]


def test_cot_score_is_the_mean_p_yes_over_the_sampled_rationales(loaded, mesh):
  tok = loaded.tokenizer
  sampler = TextSampler(loaded.model, tok, mesh=mesh, cache_length=256)
  scorer = Scorer(loaded.model, mesh=mesh, pad_id=tok.pad_id, cache_length=256)
  cot = genrm.GenRMCoT("c", loaded, sampler, scorer, TASK, votes=3, max_new_tokens=12, seed=5)
  cands = candidates(1)
  rationales, _ = cot.rationales(cands)
  got = cot.score(cands)
  verdict = formats.VerdictTokens.of(tok)
  for c, row, value in zip(cands, rationales, got.scores):
    prefix = [tok.bos_id] + [t for seg in cot._prefix(c) for t in tok.encode(seg)]
    each = [full_forward_yes(loaded, prefix + list(tok.encode(r)) + verdict.suffix)[0]
            for r in row]
    assert len(each) == 3
    np.testing.assert_allclose(value, np.mean(each), rtol=1e-5)
  # The rationales are keyed by candidate: the same in any order or chunking.
  again, _ = cot.rationales(cands[::-1])
  assert again[::-1] == rationales


def test_balanced_selection():
  recs = []
  for p in range(4):
    for i in range(10):
      correct = i < 2 + p
      recs.append({"problem_id": f"p{p}", "sample_index": i, "correct": correct,
                   "text": f"t{i % 6}{' ok' if correct else ' no'}"})
  chosen = genrm.select_balanced(recs, per_problem=3, seed=0)
  labels = collections.Counter(r["correct"] for r in chosen)
  assert labels[True] == labels[False]
  per = collections.Counter((r["problem_id"], r["correct"]) for r in chosen)
  assert max(per.values()) <= 3
  texts = [(r["problem_id"], " ".join(r["text"].split())) for r in chosen]
  assert len(texts) == len(set(texts))  # distinct solutions only
  unbalanced = genrm.select_balanced(recs, per_problem=3, seed=0, balance=False)
  assert len(unbalanced) >= len(chosen)


def test_no_reference_solution_reaches_a_verifier_input(tok):
  """A task whose references are a sentinel: no verifier's input ever contains it."""
  sentinel = "REFERENCE SENTINEL"
  ex = dataclasses.replace(TASK.examples("test")[0], solution=sentinel)
  verdict = formats.VerdictTokens.of(tok)
  inputs = [genrm.direct_example(tok, TASK, verdict, ex.question, wrong(TASK.examples("test")[0]),
                                 False),
            genrm.cot_example(tok, TASK, verdict, ex.question, "x", "a rationale", True),
            discriminative.example(tok, TASK, ex.question, "x", True),
            genrm.generation_example(tok, TASK, ex.question, "x", 0.5)]
  for example in inputs:
    weight = example.get("loss_weight", np.zeros(len(example["tokens"])))
    text = tok.decode([t for t, w in zip(example["tokens"], weight) if w == 0])
    assert sentinel not in text
  assert "solution" not in {f.name for f in dataclasses.fields(base.Candidate)} - {"solution"}
  assert [f.name for f in dataclasses.fields(base.Candidate)] == [
      "problem_id", "sample_index", "question", "solution"]


def _train(objective, batches, loaded, mesh, tmp_path, frozen=None, steps=40):
  opt = optim.OptimizerConfig(learning_rate=1e-2, warmup_steps=2, total_steps=steps,
                              weight_decay=0.0)
  result = fit.fit(objective, loop.from_stream(lambda s: itertools.islice(batches, s, None)),
                   mesh=mesh, optimizer=opt, steps=steps, workdir=str(tmp_path),
                   params={"model": loaded.params}, frozen=frozen, progress=False)
  return result.params


@pytest.mark.parametrize("kind", ["genrm_direct", "genrm_cot", "discriminative", "dpo"])
def test_each_verifier_learns_to_separate_its_training_data(kind, loaded, mesh, tmp_path,
                                                          optimized_compilation):
  """A behaviour test, not a threshold on the real result: on the data it was trained on, the
  mean score of correct solutions ends above that of incorrect ones."""
  tok = loaded.tokenizer
  verdict = formats.VerdictTokens.of(tok)
  examples = TASK.examples("train")[:8]
  rows = [(e, e.solution, True) for e in examples] + [(e, wrong(e), False) for e in examples]
  cands = [base.Candidate(e.id, int(not label), e.question, text) for e, text, label in rows]
  labels = np.array([label for *_, label in rows])
  scorer = Scorer(loaded.model, mesh=mesh, pad_id=tok.pad_id, cache_length=256)
  if kind in ("genrm_direct", "genrm_cot"):
    make = ((lambda e, t, l: genrm.direct_example(tok, TASK, verdict, e.question, t, l))
            if kind == "genrm_direct" else
            (lambda e, t, l: genrm.cot_example(tok, TASK, verdict, e.question, t,
                                               TASK.verification_rationale(e, t), l)))
    data = [make(*row) for row in rows]
    # CoT must learn to write rationales too before its verdicts mean anything: longer.
    params = _train(objectives.make_objective("weighted_nll", loaded.model),
                    batching.epochs(data, 8, 256, 0), loaded, mesh, tmp_path,
                    steps=40 if kind == "genrm_direct" else 150)
    trained = loaded.replace_params(params["model"])
    if kind == "genrm_direct":
      verifier = genrm.GenRMDirect(kind, trained, scorer, TASK)
    else:
      sampler = TextSampler(loaded.model, tok, mesh=mesh, cache_length=256)
      verifier = genrm.GenRMCoT(kind, trained, sampler, scorer, TASK, votes=2,
                                max_new_tokens=64, temperature=0.3)
  elif kind == "discriminative":
    data = [discriminative.example(tok, TASK, e.question, t, l) for e, t, l in rows]
    objective = objectives.make_objective("scalar_head", loaded.model, z_loss=1e-4)
    params = _train(objective, discriminative.batches(data, 8, 256, 0), loaded, mesh, tmp_path)
    verifier = discriminative.Discriminative(kind, loaded.replace_params(params["model"]),
                                             params["head"], objective, scorer, TASK)
  else:
    data = [dpo_verifier.example(tok, TASK, e.question, e.solution, wrong(e)) for e in examples]
    params = _train(objectives.make_objective("dpo", loaded.model, beta=0.5),
                    dpo_verifier.batches(data, 8, 256, 0), loaded, mesh, tmp_path,
                    frozen={"reference": loaded.params})
    verifier = dpo_verifier.DPOVerifier(kind, loaded.replace_params(params["model"]), scorer,
                                        TASK)
  scores = verifier.score(cands).scores
  assert scores[labels].mean() > scores[~labels].mean(), scores


class CountingVerifier:
  """A stand-in verifier whose score is a function of the candidate; fails after `fail_after`
  calls, as a killed process would stop."""
  name = "fake"

  def __init__(self, fail_after=None):
    self.calls, self.fail_after = 0, fail_after

  def score(self, cands):
    self.calls += 1
    if self.fail_after is not None and self.calls > self.fail_after:
      raise KeyboardInterrupt("killed")
    return base.Scores(scores=np.array([len(c.solution) + c.sample_index for c in cands], float),
                       flops=np.ones(len(cands)))


def test_scoring_resumes_without_duplicates(tmp_path):
  pool = [{"problem_id": f"p{p}", "sample_index": i, "text": "x" * (p + i)}
          for p in range(7) for i in range(3)]
  questions = {f"p{p}": "q" for p in range(7)}
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  stage.score_pool(CountingVerifier, pool, questions, straight, chunk_problems=2)
  with pytest.raises(KeyboardInterrupt):
    stage.score_pool(lambda: CountingVerifier(fail_after=2), pool, questions, resumed,
                     chunk_problems=2)
  partial = list(records.read_records(resumed, prefix="scores"))
  assert len(partial) == 2 * 2 * 3  # two chunks of two problems made it to disk
  counts = stage.score_pool(CountingVerifier, pool, questions, resumed, chunk_problems=2)
  assert counts == {"written": 21 - 12, "already_done": 12}
  key = lambda r: (r["problem_id"], r["sample_index"])
  got = sorted((key(r), r["score"]) for r in records.read_records(resumed, prefix="scores"))
  want = sorted((key(r), r["score"]) for r in records.read_records(straight, prefix="scores"))
  assert got == want and len({k for k, _ in got}) == 21
  assert stage.score_pool(lambda: 1 / 0, pool, questions, resumed, 2)["written"] == 0
