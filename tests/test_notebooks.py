"""The notebooks: each runs top to bottom on CPU with its defaults (TINY = True), the cells tagged
`colab-only` skipped, and gives what it says it shows; every notebook is committed without
outputs and keeps the common layout (a first markdown cell, one Colab set-up cell, a TINY switch).

How they run: the code cells are exec'd in order in one namespace, in this process, with the
notebook's folder as the working directory (as Jupyter does) and matplotlib's Agg backend. No
Jupyter kernel: nbclient / papermill / nbmake and ipykernel are not dependencies, a kernel per
notebook would import jax and tensorflow again (seconds each on a small CPU), and in-process the
notebooks see the 8 simulated devices of conftest.py, tracebacks name the cell, and the checks
below read the notebook's variables rather than parse its printout. So notebook code is plain
Python: IPython syntax (%pip, !git, display) belongs in the colab-only cell.
"""
import json
import math
import os

import matplotlib
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "notebooks")
NOTEBOOKS = sorted(name for name in os.listdir(FOLDER) if name.endswith(".ipynb"))
SKIP_DIRS = {"runs", "build", "dist", "node_modules", "venv", "site-packages"}


def load(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def source(cell):
  return "".join(cell["source"])


def colab_only(cell):
  return "colab-only" in cell["metadata"].get("tags", [])


def run(name, monkeypatch):
  """Executes the notebook's non-colab-only code cells; returns their namespace."""
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  path = os.path.join(FOLDER, name)
  monkeypatch.chdir(FOLDER)
  namespace = {"__name__": "__main__"}
  cells = [c for c in load(path)["cells"] if c["cell_type"] == "code" and not colab_only(c)]
  try:
    for i, cell in enumerate(cells):
      exec(compile(source(cell), f"{name} code cell {i}", "exec"), namespace)
  finally:
    plt.close("all")
  return namespace


def check_quickstart(ns, printed):
  assert "max |saved - restored| 0.0" in printed
  out = ns["out"]
  assert len(out.completions) == len(ns["questions"]) == 2
  assert all(len(row) == ns["NUM_SAMPLES"] for row in out.completions)
  assert out.flops > 0 and out.generated_tokens > 0
  # The scorer's log-likelihood of each sample is the one the sampler recorded.
  assert ns["gap"] < 1e-3
  assert np.isfinite(ns["scored"].logprob_sum).all()


def check_wcse_analysis(ns, printed):
  for role, recs in ns["recs"].items():
    assert recs, role
    for field in ("problem_id", "sample_index", "model", "text", "tokens", "flops",
                  "finish_reason", "answer", "answer_key", "correct", "steps_valid"):
      assert field in recs[0], (role, field)
  differences = ns["differences"]
  plan = ns["plan"]
  assert len(differences) == 2 * len(plan.budgets) + 1  # coverage and diversity per budget, FPR
  assert np.isfinite(differences[["WC - SE", "low", "high"]].to_numpy()).all()
  assert (differences["low"] <= differences["WC - SE"]).all()
  assert (differences["WC - SE"] <= differences["high"]).all()
  # The synthetic WC data was made more varied and more often a false positive than SE's.
  by_metric = differences.set_index(["metric", "budget"])["WC - SE"]
  assert by_metric["false-positive rate"].iloc[0] > 0
  assert (by_metric["diversity"] > 0).all()


def check_verifiers_bon(ns, printed):
  curves = ns["curves"]
  assert {"pass@N", "self-consistency (majority vote)", "Best-of-N, genrm_direct",
          "Best-of-N, noisy oracle"} <= set(curves)
  assert ns["NS"] == [1, 2, 4, 8]
  ceiling = curves["pass@N"].values()
  assert np.all(np.diff(ceiling) >= -1e-12)
  for label, curve in curves.items():  # one of N cannot beat "any of N is right"
    assert np.all(curve.values() <= ceiling + 1e-9), label
    assert math.isclose(curve.values()[0], ceiling[0]), label  # N = 1: one random sample
  scores = np.array([r["genrm_direct"] for r in ns["pool"]])
  assert ((0 < scores) & (scores < 1)).all()  # p(Yes) renormalised over {Yes, No}
  assert (ns["result"].flops > 0).all()


def check_bon_rl(ns, printed):
  methods = ns["methods"]
  assert methods["SFT on correct"].active.tolist() == [True, True, True]
  for name, w in methods.items():
    if name != "SFT on correct":  # a baseline makes an all-right prompt carry no gradient
      assert not w.active[2], name
  assert ns["result"].steps == ns["WARMUP_STEPS"] + ns["RL_STEPS"]
  rollouts = ns["rollouts"]
  assert len(rollouts) == ns["RL_STEPS"]
  reward, pass_at_n = rollouts["rollout/reward"], rollouts["rollout/pass_at_n"]
  assert ((0 <= reward) & (reward <= 1)).all()
  assert (pass_at_n >= reward - 1e-9).all()  # pass@N of a pool is at least its pass@1
  assert len(os.listdir(os.path.join(ns["workdir"], "rollouts"))) == ns["RL_STEPS"]


CHECKS = {"quickstart.ipynb": check_quickstart, "wcse_analysis.ipynb": check_wcse_analysis,
          "verifiers_bon.ipynb": check_verifiers_bon, "bon_rl.ipynb": check_bon_rl}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_on_cpu(name, monkeypatch, capsys):
  namespace = run(name, monkeypatch)
  assert namespace["TINY"] is True
  CHECKS[name](namespace, capsys.readouterr().out)


def test_every_notebook_is_checked():
  assert set(NOTEBOOKS) == set(CHECKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_layout(name):
  cells = load(os.path.join(FOLDER, name))["cells"]
  assert cells[0]["cell_type"] == "markdown" and source(cells[0]).startswith("# ")
  setup = [c for c in cells if colab_only(c)]
  assert len(setup) == 1 and setup[0]["cell_type"] == "code"
  assert "pip install" in source(setup[0]) and "[tpu]" in source(setup[0])
  assert "jax.devices()" in source(setup[0])
  code = [source(c) for c in cells if c["cell_type"] == "code" and not colab_only(c)]
  assert any(line == "TINY = True" for text in code for line in text.splitlines())
  for text in code:
    for line in text.splitlines():
      assert not line.lstrip().startswith(("%", "!")), f"IPython syntax outside colab-only: {line}"
      assert len(line) <= 100, f"{name}: line over 100 characters: {line}"


def notebooks_in_repository():
  for folder, dirs, files in os.walk(ROOT):
    dirs[:] = [d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS]
    yield from (os.path.join(folder, f) for f in files if f.endswith(".ipynb"))


def test_notebooks_are_committed_without_outputs():
  found = list(notebooks_in_repository())
  assert {os.path.basename(p) for p in found} >= set(NOTEBOOKS)
  for path in found:
    for i, cell in enumerate(load(path)["cells"]):
      if cell["cell_type"] == "code":
        where = f"{os.path.relpath(path, ROOT)} cell {i}"
        assert cell.get("outputs") == [], f"{where} has outputs: clear them before committing"
        assert cell.get("execution_count") is None, f"{where} has an execution count"
