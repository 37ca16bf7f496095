"""The two evaluation protocols' stages end to end on a test-sized model (stages/compositional.py,
stages/many_shot.py): compositional GSM on pairs built from tiny GSM8K files, and many-shot ICL
with a reinforced pool (records marked correct by hand, since an untrained model solves nothing),
exemplars shared by every method and nested, and prompts over the cache reported, not run."""
import dataclasses
import gzip
import json
import os

import jax
import numpy as np
import pytest

from configs import compositional_gsm, many_shot as many_shot_config
from wcse_jax import experiment, loading
from wcse_jax.data import prompts, records
from wcse_jax.data.tasks import get_task
from wcse_jax.eval import gap
from wcse_jax.models import gemma2, presets
from wcse_jax.tokenizer import Tokenizer, train_tokenizer

ARITH = dict(num_train=60, num_validation=4, num_test=6, max_operand=9, max_value=40, max_steps=3)


def _gsm_records(n, seed):
  out = []
  for i in range(n):
    a, b, c = 11 + (7 * i + seed) % 30, 3 + (3 * i) % 5, 4 + i % 3
    out.append({"question": f"Ann has {a} apples. She buys {b} bags of {c} apples. How many "
                            f"apples does she have?",
                "answer": f"She buys {b}*{c}=<<{b}*{c}={b * c}>>{b * c} apples.\nShe has "
                          f"{a}+{b * c}=<<{a}+{b * c}={a + b * c}>>{a + b * c}.\n"
                          f"#### {a + b * c}"})
  return out


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  root = tmp_path_factory.mktemp("protocols")
  gsm = root / "gsm8k"
  gsm.mkdir()
  for split, n, seed in (("train", 16, 0), ("test", 10, 1)):
    (gsm / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                for r in _gsm_records(n, seed)))
  task = get_task("arith_chain", **ARITH)
  corpus = [prompts.build_prompt(task, ex, 0) + prompts.target(task, ex.solution)
            for ex in task.examples("train")]
  corpus += [r["question"] + "\n" + r["answer"] for r in _gsm_records(16, 0)]
  tokenizer = train_tokenizer(corpus, 320, str(root / "tokenizer.model"))
  config = dataclasses.replace(presets.get_preset("test", vocab_size=tokenizer.vocab_size,
                                                  max_len=2048, sliding_window=64),
                               name="tiny", num_layers=2, embed_dim=32)
  model = gemma2.make_model(config)
  loading.save_model(str(root / "tiny"), config, gemma2.init_params(model, jax.random.key(0)))
  return {"gsm8k": str(gsm), "tokenizer": str(root / "tokenizer.model"),
          "model": str(root / "tiny")}


def _spec(assets):
  return dict(name="tiny", preset="", checkpoint=assets["model"], tokenizer=assets["tokenizer"],
              dtype="float32")


def _records(folder, prefix="graded"):
  return list(records.read_records(folder, prefix=prefix))


def test_compositional_gsm_on_pairs_built_from_gsm8k_files(assets, tmp_path):
  c = compositional_gsm.get_config("gemma")
  c.task.knobs.data_dir = assets["gsm8k"]
  c.models = {"tiny": _spec(assets)}
  c.mesh.shape = (-1, 1, 1)
  c.sampling.num_shots, c.sampling.max_new_tokens, c.sampling.cache_length = 2, 8, 2048
  c.sampling.max_truncated, c.report.num_resamples = 1.0, 30
  workdir = str(tmp_path / "w")
  experiment.run(c, workdir)
  construction = json.load(open(os.path.join(workdir, "comp_eval", "construction.json")))
  results = json.load(open(os.path.join(workdir, "comp_report", "results.json")))
  assert construction["pairs"] >= 3 and results["construction"] == construction
  tiny = results["models"]["tiny"]
  assert tiny["pairs"] == construction["pairs"]
  # Every figure is the one recomputed from the graded records.
  pair_of = json.load(open(os.path.join(workdir, "comp_eval", "pair_keys.json")))
  by_part = {p: _records(os.path.join(workdir, "comp_eval", "tiny", p, "graded"))
             for p in gap.PARTS}
  assert {len(v) for v in by_part.values()} == {construction["pairs"]}
  _, table = gap.outcomes(by_part, lambda r: pair_of[r["problem_id"]])
  assert tiny["s1"]["value"] == pytest.approx(table[:, 0].mean())
  assert tiny["gap"]["value"] == pytest.approx(table[:, 2].mean()
                                               - table[:, 0].mean() * table[:, 1].mean())
  report = open(os.path.join(workdir, "comp_report", "report.md")).read()
  assert "| tiny |" in report and "## Pair construction" in report
  assert os.path.isfile(os.path.join(workdir, "comp_report", "tiny.png"))
  # The composed prompt is the paper's, 2-shot with composed exemplars.
  prompt = _records(os.path.join(workdir, "comp_eval", "tiny", "pair", "raw"), "samples")[0][
      "prompt"]
  assert prompt.count("Let X be the answer to the Q1:") == 3 and prompt.count("So X = ") == 2


def _mark_solved(folder, solved_problems):
  """Marks every sample of the first `solved_problems` pool problems correct (an untrained model
  solves nothing), as if the model had, and accepts the edit in the stage's manifest."""
  role = os.path.join(folder, "tiny")
  pool = json.load(open(os.path.join(role, "pool.json")))
  solved = pool["pool"][:solved_problems]
  for path in records.shard_paths(os.path.join(role, "graded"), "graded"):
    with gzip.open(path, "rt") as f:
      recs = [json.loads(line) for line in f]
    for r in recs:
      r["correct"] = r["problem_id"] in solved
      r["text"] = f" Rationale for {r['problem_id']} #{r['sample_index']}."
    with gzip.open(path, "wt") as f:
      f.writelines(json.dumps(r) + "\n" for r in recs)
  pool["solved"] = solved
  json.dump(pool, open(os.path.join(role, "pool.json"), "w"))
  experiment.refresh_manifest(folder)
  return solved


def test_many_shot_points_share_nested_exemplars_and_report_the_cache(assets, tmp_path):
  c = many_shot_config.get_config("gemma")
  c.task.name, c.task.knobs = "arith_chain", ARITH
  c.models = {"tiny": _spec(assets)}
  c.mesh.shape = (-1, 1, 1)
  s = c.sampling
  s.num_problems, s.samples_per_problem, s.num_shots = 16, 2, 0
  s.max_new_tokens, s.cache_length, s.max_truncated = 8, 512, 1.0
  c.icl.shots, c.icl.seeds, c.icl.num_problems = (0, 2, 4, 12), (0, 1), 5
  c.icl.max_new_tokens, c.icl.format_shots, c.report.num_resamples = 8, 1, 30
  task = get_task("arith_chain", **ARITH)
  tokenizer = Tokenizer.load(assets["tokenizer"])
  sizes = [len(tokenizer.encode(prompts.query(task, ex.question)
                                + prompts.target(task, ex.solution)))
           for split in ("train", "test") for ex in task.examples(split)]
  # 4 shots and the query fit with the answer budget; 12 shots of solved examples do not.
  c.icl.cache_length = 5 * max(sizes) + 40
  assert 13 * min(sizes) > c.icl.cache_length
  workdir = str(tmp_path / "w")
  c.stages = ("icl_rationales",)
  experiment.run(c, workdir)
  # 14 solved: one closes the unsupervised prompt, 13 are selectable, enough for 12 shots.
  solved = _mark_solved(os.path.join(workdir, "icl_rationales"), 14)
  c.stages = ("icl_rationales", "icl_eval", "icl_report")
  experiment.run(c, workdir)
  points = json.load(open(os.path.join(workdir, "icl_eval", "points.json")))
  assert len(points) == 4 * 2 * 3  # shots x seeds x methods
  fmt = sorted(solved)[-1]  # the unsupervised prompt's format example, out of every subset
  by_key = {(p["seed"], p["shots"], p["method"]): p for p in points}
  for seed in (0, 1):
    for k in (2, 4, 12):
      ids = {tuple(by_key[(seed, k, m)]["exemplars"]) for m in ("human", "reinforced",
                                                                 "unsupervised")}
      assert len(ids) == 1  # the same exemplars for every method
      shown = ids.pop()
      assert len(shown) == k and set(shown) <= set(solved) and fmt not in shown
    assert by_key[(seed, 4, "human")]["exemplars"][:2] == by_key[(seed, 2, "human")]["exemplars"]
  assert by_key[(0, 2, "human")]["exemplars"] != by_key[(1, 2, "human")]["exemplars"]
  # 0 shots: one run shared by every method and seed; 12 shots: over the cache, nothing run.
  assert len({by_key[(s_, 0, m)]["folder"] for s_ in (0, 1) for m in ("human", "reinforced")}) == 1
  for p in points:
    assert p["over_cache"] + p["run"] == 5
    if p["shots"] == 12 and p["method"] != "unsupervised":  # questions alone are shorter
      assert p["over_cache"] == 5
    elif p["shots"] < 12:
      assert p["over_cache"] == 0
  k12 = os.path.join(workdir, "icl_eval", by_key[(0, 12, "human")]["folder"])
  assert _records(os.path.join(k12, "raw"), "samples") == []
  example = json.load(open(os.path.join(workdir, "icl_eval",
                                        by_key[(0, 4, "reinforced")]["folder"],
                                        "example_prompt.json")))
  assert example["prompt"].count("Rationale for") == 4
  results = json.load(open(os.path.join(workdir, "icl_report", "results.json")))["tiny"]
  assert results["human"]["12"]["summary"] is None and results["human"]["12"]["marked"]
  assert results["human"]["12"]["over_cache"] == 10  # 5 problems x 2 seeds
  two = results["reinforced"]["2"]["summary"]
  assert two["problems"] == 5 and len(two["per_seed"]) == 2
  graded = [_records(os.path.join(workdir, "icl_eval", by_key[(s_, 2, "reinforced")]["folder"],
                                  "graded")) for s_ in (0, 1)]
  assert two["accuracy"]["value"] == pytest.approx(np.mean([r["correct"] for g in graded
                                                            for r in g]))
  report = open(os.path.join(workdir, "icl_report", "report.md")).read()
  assert "10 prompts over the cache" in report
  assert os.path.isfile(os.path.join(workdir, "icl_report", "tiny.png"))
