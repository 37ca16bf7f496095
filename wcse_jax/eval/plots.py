"""PNG figures for reports.

Drawn on matplotlib's Agg canvas directly (no pyplot), so importing this module changes no global
backend or figure state of the process that imports it.
"""
from __future__ import annotations

from typing import Mapping

from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from wcse_jax.eval import bootstrap


def curves_vs_k(path: str, curves: Mapping[str, Mapping[int, float]], *, title: str,
                ylabel: str) -> str:
  """One line per name over k (log2 axis); writes `path` and returns it."""
  figure = Figure(figsize=(6, 4), dpi=120)
  ax = figure.add_subplot()
  for name, curve in curves.items():
    ks = sorted(curve)
    ax.plot(ks, [curve[k] for k in ks], marker="o", markersize=3, label=name)
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


def _save(figure: Figure, path: str) -> str:
  FigureCanvasAgg(figure)
  figure.tight_layout()
  figure.savefig(path)
  return path
