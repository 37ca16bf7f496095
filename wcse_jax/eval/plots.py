"""PNG figures for reports.

Drawn on matplotlib's Agg canvas directly (no pyplot), so importing this module changes no global
backend or figure state of the process that imports it.
"""
from __future__ import annotations

from typing import Mapping

import matplotlib
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wcse_jax.eval import bootstrap


def curves_vs_k(path: str, curves: Mapping[str, Mapping[int, float]], *, title: str,
                ylabel: str) -> str:
  """One line per name over k (log2 axis); writes `path` and returns it."""
  figure = Figure(figsize=(6, 4), dpi=120)
  ax = figure.add_subplot()
  _lines(ax, curves)
  if max((k for curve in curves.values() for k in curve), default=1) > 8:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
  ax.set(title=title, xlabel="k (samples per problem)", ylabel=ylabel)
  ax.grid(alpha=0.3)
  ax.legend()
  return _save(figure, path)


def bars_with_intervals(path: str, bars: Mapping[str, bootstrap.Interval], *, title: str,
                        ylabel: str) -> str:
  """One bar per name with its interval as an error bar; writes `path` and returns it."""
  names = list(bars)
  values = [bars[n].value for n in names]
  errors = [[bars[n].value - bars[n].low for n in names],
            [bars[n].high - bars[n].value for n in names]]
  figure = Figure(figsize=(max(4, 1.2 * len(names) + 2), 4), dpi=120)
  ax = figure.add_subplot()
  ax.bar(range(len(names)), values, yerr=errors, capsize=4, color="tab:blue", alpha=0.8)
  ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
  confidence = next(iter(bars.values())).confidence if bars else 0.95
  ax.set(title=title, ylabel=f"{ylabel} ({confidence:.0%} bootstrap CI)")
  ax.grid(axis="y", alpha=0.3)
  return _save(figure, path)


def bands_vs_k(path: str, bands: Mapping[str, Mapping[int, tuple[float, float, float]]], *,
               title: str, ylabel: str) -> str:
  """One line per name over k (log2 axis) with its (low, high) band shaded; values are
  (value, low, high) per k. Writes `path` and returns it."""
  figure = Figure(figsize=(7, 4.5), dpi=120)
  ax = figure.add_subplot()
  palette = _palette(len(bands))
  for i, (name, band) in enumerate(bands.items()):
    ks = sorted(band)
    line, = ax.plot(ks, [band[k][0] for k in ks], marker="o", markersize=3, label=name,
                    color=palette[i])
    ax.fill_between(ks, [band[k][1] for k in ks], [band[k][2] for k in ks],
                    color=line.get_color(), alpha=0.15)
  if max((k for band in bands.values() for k in band), default=1) > 8:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
  ax.set(title=title, xlabel="N (samples per problem)", ylabel=ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  return _save(figure, path)


def curves_vs_compute(path: str, curves: Mapping[str, Mapping[float, float]], *,
                      budgets: Mapping[str, float], title: str, ylabel: str,
                      xlabel: str = "sampling FLOPs per problem") -> str:
  """One line per name over compute (x = FLOPs per problem, log axis), with a vertical line at
  each named budget, so compute-matched points stand at the same x; writes `path`."""
  figure = Figure(figsize=(6.5, 4), dpi=120)
  ax = figure.add_subplot()
  _lines(ax, curves)
  for name, x in budgets.items():
    ax.axvline(x, color="gray", linestyle=":", linewidth=1)
    ax.annotate(f"{name} budget", (x, 0), xycoords=("data", "axes fraction"), rotation=90,
                fontsize=7, color="gray", va="bottom", ha="right")
  ax.set_xscale("log")
  ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  return _save(figure, path)


def grouped_bars(path: str, groups: Mapping[str, Mapping[str, bootstrap.Interval]], *,
                 title: str, ylabel: str, baseline: str | None = None) -> str:
  """Bars with intervals grouped by the outer key, one bar per inner key (side by side); the
  inner key `baseline`, when present, is drawn as a horizontal mark across its group instead
  of a bar (e.g. a student's accuracy before fine-tuning); writes `path`."""
  names = sorted({n for bars in groups.values() for n in bars if n != baseline})
  width = 0.8 / max(len(names), 1)
  figure = Figure(figsize=(max(5, 1.8 * len(groups) + 2), 4), dpi=120)
  ax = figure.add_subplot()
  colors = ["tab:orange", "tab:blue", "tab:green", "tab:red", "tab:purple"]
  confidence = 0.95
  for j, name in enumerate(names):
    xs, values, errors = [], [], [[], []]
    for i, bars in enumerate(groups.values()):
      if name in bars:
        interval = bars[name]
        confidence = interval.confidence
        xs.append(i - 0.4 + width * (j + 0.5))
        values.append(interval.value)
        errors[0].append(interval.value - interval.low)
        errors[1].append(interval.high - interval.value)
    ax.bar(xs, values, width=width * 0.9, yerr=errors, capsize=3, label=f"{name} data",
           color=colors[j % len(colors)], alpha=0.85)
  if baseline is not None:
    for i, bars in enumerate(groups.values()):
      if baseline in bars:
        ax.hlines(bars[baseline].value, i - 0.45, i + 0.45, colors="black", linestyles="--",
                  label=baseline if i == 0 else None)
  ax.set_xticks(range(len(groups)), list(groups), rotation=10)
  ax.set(title=title, ylabel=f"{ylabel} ({confidence:.0%} bootstrap CI)")
  ax.title.set_fontsize(9)
  ax.grid(axis="y", alpha=0.3)
  ax.legend(fontsize=8)
  return _save(figure, path)


def _lines(ax, curves: Mapping[str, Mapping[float, float]]) -> None:
  """One marked line per name, x sorted, in distinct colours."""
  for color, (name, curve) in zip(_palette(len(curves)), curves.items()):
    xs = sorted(curve)
    ax.plot(xs, [curve[x] for x in xs], marker="o", markersize=3, label=name, color=color)


def _palette(n: int) -> tuple:
  """n distinct line colours: matplotlib's default cycle repeats after 10 (a verifier report
  draws 11 lines), so past 10 they come from tab20, and past 20 they repeat."""
  colors = matplotlib.colormaps["tab20" if n > 10 else "tab10"].colors
  return tuple(colors[i % len(colors)] for i in range(n))


def _save(figure: Figure, path: str) -> str:
  FigureCanvasAgg(figure)
  figure.tight_layout()
  figure.savefig(path)
  return path
