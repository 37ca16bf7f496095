"""Every shipped config runs its whole stage list at micro scale (DESIGN §10), so no config can fail
after hours of sampling: test-sized models stand in for Gemma, tiny local files written here in
the official GSM8K / MATH / HumanEval formats stand in for the data sets, and the sizes shrink;
everything else (stages, prompts, meshes, task knobs, plans, the judge) is the config's own.

Every variant of every config also passes validation (a dry run), which is cheap. A config that
trains its own zoo runs here from the test-sized models instead (its "zoo" stage is dropped); the
zoo itself runs end to end in test_wcse_pipeline.py.
"""
import dataclasses
import importlib
import json
import os

import jax
import pytest

from wcse_jax import experiment, loading
from wcse_jax.models import gemma2, presets
from wcse_jax.tokenizer import train_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                 if f.endswith(".py") and not f.startswith(("_", "common")))
# The variant of each config run end to end (the others differ only in sizes and budgets, or, for
# bon_rl_math's "math", only in a task whose loading and grading wcse_math and genrm_math_transfer
# run). quickstart: none here; tests/stages/test_wcse_pipeline.py runs its micro variant.
RUN = {"wcse_gsm8k": ("low",), "wcse_math": ("low",), "quickstart": (),
       "verifiers": ("arith_chain",), "genrm_gsm8k": ("best_of_16",),
       "genrm_math_transfer": ("default",), "bon_rl": ("default",),
       "bon_rl_math": ("humaneval",), "compositional_gsm": ("micro",),
       "many_shot": ("micro",)}

GSM = [("Ann has {a} apples and buys {b} more. How many apples does she have?", "+"),
       ("Ben had {a} coins and lost {b}. How many coins are left?", "-"),
       ("A box holds {a} pens. How many pens are in {b} boxes?", "*")]


def _gsm_records(n, seed):
  out = []
  for i in range(n):
    template, op = GSM[(i + seed) % 3]
    a, b = 5 + (7 * i + seed) % 20, 2 + (3 * i) % 5
    value = a + b if op == "+" else a - b if op == "-" else a * b
    out.append({"question": template.format(a=a, b=b),
                "answer": f"{a} {op} {b} = <<{a}{op}{b}={value}>>{value}\n#### {value}"})
  return out


def _write_gsm8k(root):
  os.makedirs(root, exist_ok=True)
  for split, n, seed in (("train", 40, 0), ("test", 12, 1)):
    with open(os.path.join(root, f"{split}.jsonl"), "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in _gsm_records(n, seed))
  return root


def _write_math(root):
  for split, n in (("train", 30), ("test", 10)):
    for i, r in enumerate(_gsm_records(n, 2 if split == "train" else 3)):
      folder = os.path.join(root, split, ("algebra", "prealgebra")[i % 2])
      os.makedirs(folder, exist_ok=True)
      value = r["answer"].split("#### ")[1]
      with open(os.path.join(folder, f"{i}.json"), "w") as f:
        json.dump({"problem": r["question"], "level": "Level 1", "type": "Algebra",
                   "solution": f"We compute it. The answer is $\\boxed{{{value}}}$."}, f)
  return root


@dataclasses.dataclass(frozen=True)
class Assets:
  tokenizer: str
  models: dict  # role -> checkpoint folder (our layout)
  params: dict  # role -> parameter count
  data: dict  # task name -> data_dir


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
  root = tmp_path_factory.mktemp("assets")
  data = {"gsm8k": _write_gsm8k(str(root / "gsm8k")), "math": _write_math(str(root / "MATH"))}
  corpus = [r["question"] + "\n" + r["answer"] for r in _gsm_records(200, 0)]
  corpus += ["Question: Answer: Problem: Solution: The answer is \\boxed{} Verification: Yes No"]
  tokenizer = train_tokenizer(corpus, 320, str(root / "tokenizer.model"))
  models, params = {}, {}
  for i, (role, layers, width) in enumerate((("se", 4, 64), ("wc", 2, 32), ("student", 2, 32),
                                             ("judge", 2, 32), ("policy", 2, 32),
                                             ("verifier", 2, 32), ("teacher", 2, 32))):
    config = dataclasses.replace(
        presets.get_preset("test", vocab_size=tokenizer.vocab_size, max_len=1024,
                           sliding_window=64), name=f"micro_{role}", num_layers=layers,
        embed_dim=width)
    model = gemma2.make_model(config)
    folder = str(root / role)
    loading.save_model(folder, config, gemma2.init_params(model, jax.random.key(i)))
    models[role], params[role] = folder, config.param_count()
  return Assets(str(root / "tokenizer.model"), models, params, data)


def shrink(config, assets: Assets):
  """The config at micro scale: same stages, prompts, meshes and knobs, tiny sizes and assets."""
  c = config
  c.stages = tuple(s for s in c.stages if s != "zoo")
  for role in c.models:
    c.models[role].checkpoint = assets.models.get(role, assets.models["student"])
    c.models[role].tokenizer = assets.tokenizer
    c.models[role].dtype = "float32"
  if "wcse" in c:
    c.wcse.se.params = float(assets.params["se"])
    c.wcse.wc.params = float(assets.params["wc"])
    c.wcse.probe_problems = 2
  for section in ("task", "eval_task"):
    if section in c and c[section].name:
      name = c[section].name
      name = "math" if name.startswith("math") else "gsm8k" if name.startswith("gsm8k") else name
      if name in assets.data:
        c[section].knobs.data_dir = assets.data[name]
      if "validation_size" in c[section].knobs:
        c[section].knobs.validation_size = 4
  if "grading" in c:
    c.grading.judge.checkpoint = assets.models["judge"]
    c.grading.judge.tokenizer = assets.tokenizer
    c.grading.judge.dtype = "float32"
    c.grading.judge.max_records = 4
    c.grading.human_sample = 2
  if "sampling" in c:
    c.sampling.num_problems = 4
    c.sampling.max_new_tokens = 12
    c.sampling.cache_length = 2048
    c.sampling.batch_prompts = 8
    c.sampling.max_truncated = 1.0  # the untrained test models rarely stop
    if "eval_samples" in c.sampling:
      c.sampling.samples_per_problem, c.sampling.eval_problems = 4, 3
      c.sampling.eval_samples = 4
  if "verify_data" in c:
    c.verify_data.balance = False  # the test-sized policy is never right
    c.verify_data.teacher_votes, c.verify_data.teacher_max_new_tokens = 2, 12
  if "verifiers" in c:
    for v in c.verifiers.values():
      v.steps, v.rows, v.length, v.microbatches = 1, 8, 1024, 1
      v.warmup_steps, v.save_every, v.remat = 0, 1, "none"
  if "score" in c:
    c.score.votes, c.score.max_new_tokens, c.score.cache_length = 2, 8, 2048
    # Two kinds (sampled rationales; a scalar head) cover the stages' paths; every verifier's
    # own behaviour is tested in tests/verifiers.
    kept = tuple(v for v in c.score.verifiers if v in ("genrm_cot", "discriminative"))
    c.score.verifiers = kept or c.score.verifiers
  if "bon" in c:
    c.bon.ns, c.bon.num_resamples = (1, 2, 4), 20
  if "finetune" in c:
    ft = c.finetune
    ft.steps, ft.rows, ft.length, ft.microbatches = 2, 8, 1024, 1
    ft.warmup_steps, ft.num_checkpoints, ft.validation_problems = 0, 1, 2
    ft.eval.num_problems, ft.eval.num_samples = 3, 2
  if "report" in c:
    c.report.num_resamples = 20
    if "maj_ks" in c.report:
      c.report.maj_ks = (1, 2)  # within the students' shrunk pools
  if "icl" in c:
    c.icl.shots, c.icl.seeds, c.icl.num_problems, c.icl.max_new_tokens = (0, 2), (0,), 3, 8
  if "rl" in c:
    r = c.rl
    # One method (with a verifier where the config has one): each method's weights and loop are
    # tested in tests/rl; here, that the config's stages run.
    r.methods = tuple(m for m in r.methods if m == "bon_rl_v")[:1] or r.methods[:1]
    r.n_bon, r.samples, r.prompts_per_step, r.num_problems = 2, 4, 2, 4
    r.steps, r.warmup_steps, r.save_every, r.microbatches = 1, 0, 1, 1
    r.max_new_tokens, r.length = 8, 2048
    r.eval.problems, r.eval.samples, r.eval.ns = 2, 2, (1, 2)
    r.eval.temperatures, r.eval.num_resamples = (1.0,), 20
    r.eval.max_truncated = 1.0  # the untrained test policies rarely stop
  return c


def _variants(name):
  module = importlib.import_module(f"configs.{name}")
  return [(name, v) for v in getattr(module, "VARIANTS", (None,))]


@pytest.mark.parametrize("name,variant", [nv for n in CONFIGS for nv in _variants(n)])
def test_every_variant_validates(name, variant, tmp_path):
  module = importlib.import_module(f"configs.{name}")
  config = module.get_config() if variant is None else module.get_config(variant)
  plan = experiment.describe(config, str(tmp_path))
  assert [row["stage"] for row in plan] == list(config.stages)


@pytest.mark.parametrize("name,variant", [(n, v) for n in CONFIGS for v in RUN.get(n, ())])
def test_config_runs_its_whole_stage_list_at_micro_scale(name, variant, assets, tmp_path):
  module = importlib.import_module(f"configs.{name}")
  config = shrink(module.get_config(variant), assets)
  manifests = experiment.run(config, str(tmp_path / "w"))
  assert list(manifests) == list(config.stages)
  for stage in config.stages:
    assert os.path.isfile(tmp_path / "w" / stage / experiment.MANIFEST)


def test_every_config_is_covered():
  assert set(CONFIGS) == set(RUN)
