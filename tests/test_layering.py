"""The import rules of DESIGN §2, read from the source with `ast` (transitively within wcse_jax).

- the core (models/, parallel.py, sampling/, training/) imports no tensorflow, seqio,
  sentencepiece or `gemma`, and nothing of data/, stages/, wcse/, verifiers/, rl/, eval/ or
  reference/: a GPU/TPU image with only jax, flax, optax and orbax runs it;
- eval/ (generic estimators) imports no experiment: not wcse/, stages/, verifiers/ or rl/;
- the runner (experiment.py) names no stage module;
- building any shipped config imports no jax (checked in a subprocess).
"""
import ast
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "wcse_jax")

CORE = ("wcse_jax.models", "wcse_jax.parallel", "wcse_jax.sampling", "wcse_jax.training")
CORE_FORBIDDEN = ("tensorflow", "seqio", "sentencepiece", "gemma", "kauldron", "wcse_jax.data",
                  "wcse_jax.stages", "wcse_jax.wcse", "wcse_jax.verifiers", "wcse_jax.rl",
                  "wcse_jax.eval", "wcse_jax.reference", "wcse_jax.loading",
                  "wcse_jax.tokenizer")
EVAL_FORBIDDEN = ("wcse_jax.wcse", "wcse_jax.stages", "wcse_jax.verifiers", "wcse_jax.rl")


def module_name(path: str) -> str:
  rel = os.path.relpath(path, ROOT)[:-len(".py")].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


MODULES = {module_name(p): p for p in glob.glob(os.path.join(PACKAGE, "**", "*.py"),
                                                recursive=True)}


def imports_of(module: str) -> set[str]:
  """Every module `module` imports, at any depth of its code (lazy imports count too)."""
  tree = ast.parse(open(MODULES[module]).read())
  package = module if MODULES[module].endswith("__init__.py") else module.rsplit(".", 1)[0]
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parts = package.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
      found.add(base)
      # `from wcse_jax.x import y` may import the submodule wcse_jax.x.y.
      found.update(f"{base}.{alias.name}" for alias in node.names
                   if f"{base}.{alias.name}" in MODULES)
  return found


def closure(module: str) -> dict[str, str]:
  """Every module reachable from `module` through wcse_jax imports -> the module importing it."""
  seen, todo = {module: module}, [module]
  while todo:
    current = todo.pop()
    for imported in imports_of(current):
      # Importing a package module also runs its parents' __init__.
      chain = [".".join(imported.split(".")[:i]) for i in range(1, imported.count(".") + 2)]
      for name in chain:
        if name not in seen:
          seen[name] = current
          if name in MODULES:
            todo.append(name)
  return seen


def violations(roots, forbidden) -> list[str]:
  out = []
  for module in sorted(MODULES):
    if not any(module == r or module.startswith(r + ".") for r in roots):
      continue
    for reached, via in closure(module).items():
      if any(reached == f or reached.startswith(f + ".") for f in forbidden):
        out.append(f"{module} reaches {reached} (imported by {via})")
  return out


def test_core_imports_no_tensorflow_seqio_sentencepiece_gemma_or_upper_layers():
  assert violations(CORE, CORE_FORBIDDEN) == []


def test_eval_imports_no_experiment():
  assert violations(("wcse_jax.eval",), EVAL_FORBIDDEN) == []


def test_the_rules_catch_a_breach(tmp_path, monkeypatch):
  """A checker that cannot fail proves nothing: a core module importing data/ is caught."""
  bad = tmp_path / "bad.py"
  bad.write_text("from wcse_jax.data import tasks\n")
  monkeypatch.setitem(MODULES, "wcse_jax.sampling.bad", str(bad))
  assert ("wcse_jax.sampling.bad reaches wcse_jax.data.tasks (imported by wcse_jax.sampling.bad)"
          in violations(CORE, CORE_FORBIDDEN))


def test_runner_names_no_stage_module():
  source = open(MODULES["wcse_jax.experiment"]).read()
  assert not any(m.startswith("wcse_jax.stages") for m in closure("wcse_jax.experiment"))
  strings = [n.value for n in ast.walk(ast.parse(source))
             if isinstance(n, ast.Constant) and isinstance(n.value, str)]
  assert not [s for s in strings if "wcse_jax.stages" in s or "wcse_jax.zoo" in s]


CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "common")))


@pytest.mark.parametrize("name", CONFIGS)
def test_building_a_config_imports_no_jax(name):
  code = (f"import sys\nfrom configs import {name} as m\n"
          "for variant in getattr(m, 'VARIANTS', (None,)):\n"
          "  m.get_config() if variant is None else m.get_config(variant)\n"
          "print(sorted(x for x in ('jax', 'flax', 'tensorflow', 'sentencepiece') "
          "if x in sys.modules))\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().splitlines()[-1] == "[]"
