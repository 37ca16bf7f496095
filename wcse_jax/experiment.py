"""Stage runner: runs an experiment's stages in order, each into its own folder with a MANIFEST.

A stage is a function `fn(ctx) -> dict` registered by name in a stage module:

  @experiment.stage("grade", config_keys=("grading",), validate=check_grading)
  def grade(ctx):
    samples = ctx.input("sample")      # the finished folder of an earlier stage
    ...                                # write into ctx.out, resuming from what is already there
    return {"records": n}              # counts for the manifest

Folder protocol, for stage S in workdir W (DESIGN §1):
  W/S.partial/  S writes here while it runs. The folder survives a crash and a rerun hands it to S
                again, so S resumes from its own shards or checkpoints. Its START.json records the
                config S was started with and the inputs it read; resuming it under another config,
                or after an input was rebuilt, is an error rather than a silent mix.
                A .partial that holds no work (nothing but START.json, empty folders and empty
                lock files: the attempt failed before writing anything) is started afresh under
                the new config instead, with a log line.
  W/S/          the finished stage: W/S.partial renamed atomically once MANIFEST.json is in it.
                A rerun skips it after checking that its config hash and its inputs still match.
  W/.lock       held (fcntl.flock, with host, pid and start time written in it) by process 0 of
                the run using W; a second live run into W is refused naming the holder. A lock
                left by a dead run (the flock is free, or its pid is gone on this host) is taken
                over with a log line. Removed when the run ends. On a filesystem whose flock
                does not reach other hosts, a live run on another host looks dead: give each
                run its own workdir there.

Records are verified: the manifest lists the stage's record files (every *.jsonl.gz, *.jsonl
and *.json under its folder but START/MANIFEST and orbax checkpoint folders) with byte size,
sha256 and, for .jsonl.gz shards, the record count, and carries a checksum of its own content.
`Context.input` checks them (on every process, once per input per run of the reading stage):
a missing, added or changed file, or an edited manifest, is a one-line DataError naming the
file. A deliberate edit is accepted by `refresh_manifest(folder)` (main's --refresh_manifest=S),
which re-lists the files and notes the edit in the manifest; the manifest's hash changes with
it, so stages built from the old one must be rerun.

The runner knows no experiment: a config lists the modules whose import registers its stages
(`config.stage_modules`). Before anything runs (or is deleted by `rerun`), every listed stage's
`validate(config)` checks the knobs it reads and raises StageError naming the key (a ValueError
it raises becomes a StageError naming the stage); `describe` gives the same checks plus the plan
without running (main's dry run).

Config scope: a stage's config hash covers `config_keys` (dotted keys it reads) or, when it names
none, the whole config except the runner's own knobs (RUNNER_KEYS). A stage that names its keys
can be reused when unrelated knobs change; one that under-declares them would be reused wrongly,
so leave `config_keys` unset unless the stage's reads are clear.

Multi-host: every process runs every stage function (each writes its own shards); only process 0
creates folders, writes START/MANIFEST files and renames; all processes meet at a barrier around
those steps.

Modules: this one registers and runs stages; W/.lock is workdir_lock.py, the manifest and its
record files are manifests.py, and StageError with the helpers all three share is
runner_common.py. Their public names are importable from here too.
"""
from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import time
import uuid
from typing import Any, Callable, Mapping

import jax
import ml_collections

from wcse_jax import files, parallel
from wcse_jax.config_base import RUNNER_KEYS
# Imported here also so that they remain experiment.X for main, the stages and the tests.
from wcse_jax.manifests import (MANIFEST, RECORD_SUFFIXES, START, list_files, read_manifest,
                                refresh_manifest, verify_files, write_manifest)
from wcse_jax.runner_common import StageError, config_hash, is_chief, now
from wcse_jax.workdir_lock import LOCK, workdir_lock

PARTIAL_SUFFIX = ".partial"
VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "ml-collections",
                      "numpy", "wcse_jax")

_STAGE_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_log = logging.getLogger("wcse_jax.experiment")


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  fn: Callable[["Context"], Mapping[str, Any]]
  config_keys: tuple[str, ...] | None
  validate: Callable[[ml_collections.ConfigDict], None] | None = None


_REGISTRY: dict[str, Stage] = {}


def stage(name: str, *, config_keys: tuple[str, ...] | None = None,
          validate: Callable[[ml_collections.ConfigDict], None] | None = None):
  """Decorator registering `fn(ctx) -> dict` as the stage `name`.

  Args:
    name: lower_snake_case stage name; also its folder name in the workdir.
    config_keys: dotted config keys the stage reads (e.g. ("model", "sampling.temperature")); its
      config hash covers only these. None: the whole config except RUNNER_KEYS.
    validate: `validate(config)` raises StageError naming the bad key; run before any stage
      runs, so a bad knob fails in seconds rather than after hours of earlier stages.
  """
  if not _STAGE_NAME.match(name):
    raise ValueError(f"stage name {name!r} must be lower_snake_case (it names a folder)")

  def register(fn):
    previous = _REGISTRY.get(name)
    if previous is not None and _origin(previous.fn) != _origin(fn):
      raise ValueError(f"stage {name!r} is registered twice: by {_origin(previous.fn)} and by "
                       f"{_origin(fn)}")
    keys = None if config_keys is None else tuple(config_keys)
    _REGISTRY[name] = Stage(name=name, fn=fn, config_keys=keys, validate=validate)
    return fn

  return register


def registered_stages() -> dict[str, Stage]:
  """The stages registered so far (by the modules imported so far), by name."""
  return dict(_REGISTRY)


@dataclasses.dataclass(frozen=True)
class Context:
  """What a stage function gets. `out` is its own folder; `input(name)` an earlier stage's."""
  name: str
  config: ml_collections.ConfigDict
  workdir: str
  out: str
  is_chief: bool
  log: logging.Logger
  inputs_read: dict[str, str] = dataclasses.field(default_factory=dict)

  def input(self, stage_name: str) -> str:
    """Returns the finished folder of `stage_name` and records its manifest hash as an input.

    The first call per stage also verifies its record files against its manifest (DataError
    naming a missing, added or edited file)."""
    folder = os.path.join(self.workdir, stage_name)
    manifest_path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(manifest_path):
      raise StageError(
          f"stage {self.name!r} reads the output of stage {stage_name!r}, which is not finished "
          f"in {self.workdir} ({manifest_path} does not exist). List {stage_name!r} before "
          f"{self.name!r} in config.stages.")
    manifest = read_manifest(folder)
    source = _REGISTRY.get(stage_name)
    if source is not None:  # It may not be in config.stages this time; its config must still match.
      scoped = stage_config(self.config, source)
      _check_same_config(stage_name, folder, manifest, scoped, config_hash(scoped),
                         what="was made")
    if stage_name not in self.inputs_read:  # Once per input: stages call input() repeatedly.
      verify_files(folder, manifest)
    digest = files.sha256(manifest_path)
    start_path = os.path.join(self.out, START)
    start = files.read_json(start_path)
    started_from = start["inputs"].get(stage_name)
    if started_from is not None and started_from != digest:
      raise StageError(
          f"{self.out} was started from {stage_name!r} with manifest sha256 {started_from[:12]}, "
          f"but {stage_name!r} has been rebuilt since (now {digest[:12]}); its partial work would "
          f"mix both. Pass --config.rerun={self.name} to start {self.name!r} afresh.")
    if started_from is None and self.is_chief:
      start["inputs"][stage_name] = digest
      files.write_json(start_path, start)
    self.inputs_read[stage_name] = digest
    return folder


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, dict[str, Any]]:
  """Runs `config.stages` in order in `workdir`; returns every stage's manifest, by name."""
  stages = resolve_stages(config)
  validate(config, stages)
  names = [s.name for s in stages]
  with workdir_lock(workdir):
    if config.get("rerun"):
      _delete_from(config.rerun, names, workdir)
    return {s.name: _run_stage(s, config, workdir) for s in stages}


def validate(config: ml_collections.ConfigDict, stages: list[Stage] | None = None) -> None:
  """Runs every stage's own checks (and the rerun key's) before anything is run or deleted."""
  stages = resolve_stages(config) if stages is None else stages
  names = [s.name for s in stages]
  rerun = config.get("rerun")
  if rerun and rerun not in names:
    raise StageError(f"config.rerun={rerun!r} is not in config.stages ({', '.join(names)})")
  for spec in stages:
    stage_config(config, spec)  # a stage naming a key the config lacks fails here
    if spec.validate is not None:
      try:
        spec.validate(config)
      except (StageError, files.DataError):
        raise
      except ValueError as e:  # e.g. an unknown preset or task named in the config
        raise StageError(f"stage {spec.name!r} rejects the config: {e}") from e


def describe(config: ml_collections.ConfigDict, workdir: str) -> list[dict[str, Any]]:
  """What `run` would do, without running, deleting or writing anything: per stage its config
  hash, the keys it reads and its state in `workdir` (finished and reusable, finished but stale,
  partly done, or to run). Validates the config first (StageError on a bad knob)."""
  stages = resolve_stages(config)
  validate(config, stages)
  names = [s.name for s in stages]
  rerun_from = names.index(config.rerun) if config.get("rerun") else len(names)
  plan = []
  for i, spec in enumerate(stages):
    scoped = stage_config(config, spec)
    digest = config_hash(scoped)
    final = os.path.join(workdir, spec.name)
    start = os.path.join(final + PARTIAL_SUFFIX, START)
    if i >= rerun_from:
      state = "rerun (deleted, then run)"
    elif os.path.isfile(os.path.join(final, MANIFEST)):
      same = read_manifest(final)["config_hash"] == digest
      state = "finished: skipped" if same else "finished with another config: refused"
    elif os.path.isfile(start) and _holds_no_work(final + PARTIAL_SUFFIX):
      state = "failed before any work: started afresh"
    elif os.path.isfile(start):
      same = files.read_json(start)["config_hash"] == digest
      state = "partly done: resumed" if same else "partly done with another config: refused"
    else:
      state = "to run"
    plan.append({"stage": spec.name, "state": state, "config_hash": digest[:12],
                 "reads": list(spec.config_keys) if spec.config_keys is not None
                          else ["(whole config)"]})
  return plan


def resolve_stages(config: ml_collections.ConfigDict) -> list[Stage]:
  """Imports the stage modules and returns the stages `config.stages` names, in order."""
  if "stages" not in config:
    raise StageError("the config has no `stages` list; start it from experiment.base_config()")
  names = config.stages
  if isinstance(names, str) or not all(isinstance(n, str) for n in names):
    raise StageError(f"config.stages must be a tuple of stage names, got {names!r}")
  if len(set(names)) != len(names):
    raise StageError(f"config.stages lists a stage twice: {names!r}")
  modules = tuple(config.get("stage_modules", ()))
  for module in modules:
    try:
      importlib.import_module(module)
    except ModuleNotFoundError as e:
      if e.name is None or not (module == e.name or module.startswith(e.name + ".")):
        raise  # The module exists; something it imports is missing.
      raise StageError(f"stage module {module!r} cannot be imported: {e}") from e
  known = sorted(_REGISTRY)
  for name in names:
    if name not in _REGISTRY:
      close = difflib.get_close_matches(name, known, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise StageError(
          f"unknown stage {name!r} in config.stages.{hint} Known stages: "
          f"{', '.join(known) or '(none)'} (registered by the modules "
          f"{', '.join(modules) or '(none)'}; list the module that defines it in "
          f"config.stage_modules).")
  return [_REGISTRY[name] for name in names]


def stage_config(config: ml_collections.ConfigDict, spec: Stage) -> dict[str, Any]:
  """The part of `config` that `spec`'s hash covers, as plain JSON-able data."""
  if spec.config_keys is None:
    scoped = {k: v for k, v in config.to_dict().items() if k not in RUNNER_KEYS}
  else:
    scoped = {}
    for key in spec.config_keys:
      node = config
      for part in key.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
          raise StageError(f"stage {spec.name!r} reads config key {key!r}, which the config lacks")
        node = node[part]
      scoped[key] = node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node
  return json.loads(json.dumps(scoped, sort_keys=True, default=repr))


def versions() -> dict[str, str]:
  """Versions of the packages whose behaviour the outputs depend on."""
  found = {"python": platform.python_version()}
  for package in VERSIONED_PACKAGES:
    try:
      found[package] = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
      found[package] = "not installed"
  return found


def _run_stage(spec: Stage, config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  final = os.path.join(workdir, spec.name)
  partial = final + PARTIAL_SUFFIX
  scoped = stage_config(config, spec)
  digest = config_hash(scoped)
  parallel.sync(f"wcse_jax:{spec.name}:begin")
  if os.path.isdir(final):
    manifest = _check_reusable(spec.name, final, workdir, scoped, digest)
    _log.info("stage %s: finished earlier in %s; skipping", spec.name, final)
    return manifest

  start_path = os.path.join(partial, START)
  fresh_start = {"stage": spec.name, "config_hash": digest, "config": scoped, "inputs": {},
                 "started_at": now()}
  if os.path.isfile(start_path) and _holds_no_work(partial):
    # Nothing to lose: the corrected run (another config, or rebuilt inputs) must not be blocked
    # by an attempt that failed before writing anything.
    if is_chief():
      before = files.read_json(start_path)
      changed = _changes(before.get("config", {}), scoped)
      _log.info("stage %s: %s holds no work from its earlier attempt (started %s%s); starting "
                "it afresh", spec.name, partial, before.get("started_at", "at an unknown time"),
                f" with another config: {changed}" if changed else "")
      files.write_json(start_path, fresh_start)
  elif os.path.isfile(start_path):
    _check_same_config(spec.name, partial, files.read_json(start_path), scoped, digest,
                       what="was started")
    _log.info("stage %s: resuming from %s (%d entries)", spec.name, partial,
              len(os.listdir(partial)) - 1)
  elif is_chief():
    os.makedirs(partial, exist_ok=True)
    files.write_json(start_path, fresh_start)
    _log.info("stage %s: starting in %s", spec.name, partial)
  parallel.sync(f"wcse_jax:{spec.name}:ready")

  ctx = Context(name=spec.name, config=config, workdir=workdir, out=partial,
                is_chief=is_chief(), log=logging.getLogger(f"wcse_jax.stage.{spec.name}"))
  began = time.time()
  counts = spec.fn(ctx)
  wall = time.time() - began
  if not isinstance(counts, Mapping):
    raise StageError(f"stage {spec.name!r} returned {type(counts).__name__}; a stage returns a "
                     f"dict of counts for its manifest")
  try:
    counts = json.loads(json.dumps(dict(counts), default=_numpy_scalar))
  except TypeError as e:
    raise StageError(f"stage {spec.name!r} returned counts that JSON cannot hold: {e}") from e
  parallel.sync(f"wcse_jax:{spec.name}:computed")

  if is_chief():
    start = files.read_json(start_path)
    manifest = {
        "stage": spec.name,
        # Unique per build, so a rebuild that happens to give equal counts still changes the
        # manifest hash that later stages recorded as their input.
        "build_id": uuid.uuid4().hex,
        "config_hash": digest,
        "config": scoped,
        # START.json also holds inputs read by earlier attempts that this one skipped.
        "inputs": {name: {"manifest_sha256": h}
                   for name, h in sorted({**start["inputs"], **ctx.inputs_read}.items())},
        "counts": counts,
        "versions": versions(),
        "process_count": jax.process_count(),
        "started_at": start["started_at"],
        "finished_at": now(),
        "wall_time_s": round(wall, 3),
        "files": list_files(partial),
    }
    write_manifest(os.path.join(partial, MANIFEST), manifest)
    os.rename(partial, final)
    _log.info("stage %s: finished in %.1fs: %s", spec.name, wall, counts)
  parallel.sync(f"wcse_jax:{spec.name}:end")
  return read_manifest(final)


def _check_reusable(name, final, workdir, scoped, digest) -> dict[str, Any]:
  """The finished stage's manifest, if it may be reused; otherwise a StageError saying why."""
  manifest_path = os.path.join(final, MANIFEST)
  if not os.path.isfile(manifest_path):
    raise StageError(f"{final} exists but holds no {MANIFEST}, so this runner did not finish it; "
                     f"move it out of the workdir")
  manifest = read_manifest(final)
  _check_same_config(name, final, manifest, scoped, digest, what="was made")
  for source, recorded in manifest["inputs"].items():
    source_manifest = os.path.join(workdir, source, MANIFEST)
    if not os.path.isfile(source_manifest):
      _log.warning("stage %s: its input %r is no longer in %s; reusing %s as built",
                   name, source, workdir, final)
    elif files.sha256(source_manifest) != recorded["manifest_sha256"]:
      raise StageError(
          f"stage {name!r} in {final} was built from {source!r} with manifest sha256 "
          f"{recorded['manifest_sha256'][:12]}, but {source!r} has been rebuilt since; refusing "
          f"to reuse it. Pass --config.rerun={name} to rebuild {name!r} and the stages after it.")
  return manifest


def _check_same_config(name, folder, recorded, scoped, digest, what):
  if recorded["config_hash"] == digest:
    return
  raise StageError(
      f"stage {name!r} in {folder} {what} with a different config (changed: "
      f"{_changes(recorded['config'], scoped)}); refusing to reuse it. "
      f"Either use a new --workdir, or pass --config.rerun={name} to delete {name!r} and every "
      f"later stage in config.stages and run them again.")


def _changes(old_config: Mapping[str, Any], new_config: Mapping[str, Any]) -> str:
  """The config keys that differ, "key: old -> new; ..." (the first ten)."""
  old, new = _flatten(old_config), _flatten(new_config)
  absent = "<absent>"
  changed = [f"{k}: {old.get(k, absent)!r} -> {new.get(k, absent)!r}"
             for k in sorted(set(old) | set(new)) if old.get(k, absent) != new.get(k, absent)]
  return f"{'; '.join(changed[:10])}{' ...' if len(changed) > 10 else ''}"


def _holds_no_work(partial: str) -> bool:
  """Whether a .partial folder holds nothing but START.json, empty folders and empty files (the
  lock files of shard writers): its attempt failed before writing any work."""
  for root, _, names in os.walk(partial):
    for name in names:
      # START.json's own temporary copy appears while process 0 rewrites it.
      if root == partial and (name == START or name.startswith(START + ".tmp")):
        continue
      if os.path.getsize(os.path.join(root, name)) > 0:
        return False
  return True


def _delete_from(rerun: str, names: list[str], workdir: str) -> None:
  if is_chief():
    for name in names[names.index(rerun):]:
      for folder in (os.path.join(workdir, name), os.path.join(workdir, name) + PARTIAL_SUFFIX):
        if os.path.isdir(folder):
          _log.info("config.rerun=%s: deleting %s", rerun, folder)
          shutil.rmtree(folder)
  parallel.sync(f"wcse_jax:rerun:{rerun}")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(tree, dict):
    return {prefix: tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
  return flat




def _origin(fn) -> str:
  return f"{fn.__module__}.{fn.__qualname__}"


def _numpy_scalar(value):
  if hasattr(value, "item") and getattr(value, "shape", None) == ():
    return value.item()
  raise TypeError(f"{value!r} ({type(value).__name__}) is not JSON-serialisable")
