"""Compute-matched sampling budgets for weak-cheap (WC) vs strong-expensive (SE) data.

papers.md §1(b)1-2. Sampling S solutions of mean length W for each of D problems costs
c·W·S·D, where c is the model's cost per generated token. Equal cost for the two models gives

    S_WC = (c_SE / c_WC) · S_SE.

The cost per token `c` depends on the mode:
  "params"           2·P FLOPs for a model with P parameters (Kaplan et al.).
  "flops_per_token"  the FLOPs per generated token the sampler measured for each model.
  "price_per_token"  the price per output token (API models: $10.5 vs $0.3 per 1M gives 35×).
Like the paper, this assumes both models write solutions of the same mean length and ignores
attention FLOPs and the few-shot prefix.

Rounding: "floor" (default) takes floor(ratio · S_SE), so the WC samples never cost more than the
SE ones; "nearest" rounds half up. Both forgive a relative error of 1e-9, because prices such as
0.7 and 0.1 divide to 6.999999999999999 in floating point, which must give 7.

Nominal counts 27e9 and 9e9 give a ratio of exactly 3 (the paper's 1 vs 3 and 10 vs 30 samples).
The exact Gemma 2 counts implied by the shapes in DESIGN §3, 27,227,718,144 and 9,242,164,736,
give 2.946 (floor: 1 vs 2 and 10 vs 29); a config that wants them sets `params` explicitly.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import ml_collections

MODES = ("params", "flops_per_token", "price_per_token")
ROUNDINGS = ("floor", "nearest")
_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class ModelCost:
  """What one generated token of a model costs; a field left at 0 is unknown."""
  name: str
  params: float = 0.0
  flops_per_token: float = 0.0
  price_per_token: float = 0.0

  def cost_per_token(self, mode: str) -> float:
    if mode not in MODES:
      raise ValueError(f"unknown cost mode {mode!r}; choose one of {', '.join(MODES)}")
    value = getattr(self, mode)
    if not value > 0:
      raise ValueError(f"model {self.name!r} has no positive {mode} (got {value!r}), which the "
                       f"{mode!r} cost mode needs")
    return 2.0 * value if mode == "params" else float(value)


@dataclasses.dataclass(frozen=True)
class Budget:
  name: str
  se_samples: int
  wc_samples: int


@dataclasses.dataclass(frozen=True)
class SamplingPlan:
  """Samples per problem for the SE and the WC model at each budget, at equal cost."""
  se: ModelCost
  wc: ModelCost
  mode: str
  rounding: str
  ratio: float
  budgets: tuple[Budget, ...]

  def samples(self, model: str, budget: str) -> int:
    """Samples per problem that `model` (the SE or the WC name) gets at `budget`."""
    if model not in (self.se.name, self.wc.name):
      raise KeyError(f"model {model!r} is neither SE ({self.se.name}) nor WC ({self.wc.name})")
    for b in self.budgets:
      if b.name == budget:
        return b.se_samples if model == self.se.name else b.wc_samples
    raise KeyError(f"no budget {budget!r} in the plan; budgets: "
                   f"{', '.join(b.name for b in self.budgets)}")

  def pool_size(self, model: str) -> int:
    """Samples per problem to draw up front for `model`: its largest budget (papers.md §1(e))."""
    return max(self.samples(model, b.name) for b in self.budgets)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  def __str__(self) -> str:
    unit = {"params": "2·params FLOPs", "flops_per_token": "measured FLOPs",
            "price_per_token": "price"}[self.mode]
    lines = [f"Compute-matched plan: cost per token = {unit}; SE/WC cost ratio "
             f"{self.ratio:.4g}; S_WC = {self.rounding}(ratio · S_SE)",
             f"  SE {self.se.name}: {getattr(self.se, self.mode):.4g} {self.mode}",
             f"  WC {self.wc.name}: {getattr(self.wc, self.mode):.4g} {self.mode}",
             f"  {'budget':<10}{'SE samples':>12}{'WC samples':>12}"]
    lines += [f"  {b.name:<10}{b.se_samples:>12}{b.wc_samples:>12}" for b in self.budgets]
    return "\n".join(lines)


def matched_samples(ratio: float, se_samples: int, rounding: str = "floor") -> int:
  """S_WC for `se_samples` SE samples at cost ratio `ratio` = c_SE / c_WC."""
  if rounding not in ROUNDINGS:
    raise ValueError(f"unknown rounding {rounding!r}; choose one of {', '.join(ROUNDINGS)}")
  exact = ratio * se_samples * (1 + _TOLERANCE)
  return math.floor(exact) if rounding == "floor" else math.floor(exact + 0.5)


def make_plan(se: ModelCost, wc: ModelCost, se_samples: Sequence[int],
              budget_names: Sequence[str] = ("low", "high"), mode: str = "params",
              rounding: str = "floor") -> SamplingPlan:
  """The plan giving the WC model the SE model's cost at each SE budget in `se_samples`."""
  if se.name == wc.name:
    raise ValueError(f"the SE and WC models must differ, both are named {se.name!r}")
  if len(se_samples) != len(budget_names):
    raise ValueError(f"{len(se_samples)} SE budgets {tuple(se_samples)} but "
                     f"{len(budget_names)} budget names {tuple(budget_names)}")
  ratio = se.cost_per_token(mode) / wc.cost_per_token(mode)
  budgets = []
  for name, s_se in zip(budget_names, se_samples):
    if not (isinstance(s_se, int) and s_se > 0):
      raise ValueError(f"SE samples per problem must be positive integers, got {s_se!r}")
    s_wc = matched_samples(ratio, s_se, rounding)
    if s_wc < 1:
      raise ValueError(f"budget {name!r}: {s_se} SE samples buy no WC sample at ratio {ratio:.4g}")
    budgets.append(Budget(name=name, se_samples=s_se, wc_samples=s_wc))
  return SamplingPlan(se=se, wc=wc, mode=mode, rounding=rounding, ratio=ratio,
                      budgets=tuple(budgets))


def default_config() -> ml_collections.ConfigDict:
  """The `wcse` config section read by `plan_from_config`; defaults are the paper's Gemma 2 pair."""
  c = ml_collections.ConfigDict()
  c.mode = "params"  # Cost per token: "params" (2P FLOPs), "flops_per_token" or "price_per_token".
  c.rounding = "floor"  # S_WC = floor(ratio·S_SE) (never above SE cost) or "nearest".
  c.se_samples = (1, 10)  # SE samples per problem at each budget.
  c.budget_names = ("low", "high")  # One name per entry of se_samples.
  c.probe_problems = 16  # Problems of the FLOPs-per-token probe (mode "flops_per_token").
  c.se = ml_collections.ConfigDict()
  c.se.name = "gemma2_27b"  # Strong-expensive model.
  c.se.params = 27e9  # Nominal, as in the paper (exact: 27,227,718,144).
  # Sampling FLOPs per generated token; 0 with mode "flops_per_token": measured by the sample
  # stage on a short probe (probe_problems problems, one sample each) before it plans.
  c.se.flops_per_token = 0.0
  c.se.price_per_token = 0.0  # Price per output token; 0 = unknown.
  c.wc = ml_collections.ConfigDict()
  c.wc.name = "gemma2_9b"  # Weak-cheap model.
  c.wc.params = 9e9  # Nominal, as in the paper (exact: 9,242,164,736).
  c.wc.flops_per_token = 0.0  # As for se.
  c.wc.price_per_token = 0.0  # Price per output token; 0 = unknown.
  return c


def plan_from_dict(d: Mapping) -> SamplingPlan:
  """The plan `SamplingPlan.to_dict()` wrote (e.g. the sample stage's plan.json)."""
  return SamplingPlan(se=ModelCost(**d["se"]), wc=ModelCost(**d["wc"]), mode=d["mode"],
                      rounding=d["rounding"], ratio=float(d["ratio"]),
                      budgets=tuple(Budget(**b) for b in d["budgets"]))


def plan_from_config(cfg: ml_collections.ConfigDict,
                     measured_flops_per_token: Mapping[str, float] | None = None) -> SamplingPlan:
  """The plan for a `default_config()`-shaped section; measured FLOPs/token override config's."""
  measured = dict(measured_flops_per_token or {})

  def cost(model_cfg) -> ModelCost:
    return ModelCost(name=model_cfg.name, params=model_cfg.params,
                     flops_per_token=measured.get(model_cfg.name, model_cfg.flops_per_token),
                     price_per_token=model_cfg.price_per_token)

  return make_plan(cost(cfg.se), cost(cfg.wc), se_samples=tuple(cfg.se_samples),
                   budget_names=tuple(cfg.budget_names), mode=cfg.mode, rounding=cfg.rounding)
