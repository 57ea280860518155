"""The published OK learning curves (analysis/published/*.csv), as arrays.

Benzing et al. (2019) released the logs of five OK runs per task; the CSV files in
``analysis/published/`` hold the numbers of those logs (see its README). This module
reads them into curves that the plots draw as a band and the tables quote at the
steps of the runs in results/:

* :func:`copy_levels`: curriculum level of runs 1–5 every 1000 steps to 2M
  (copy task, RHN n 128, OK r 16, B 16, lr 10^-3.5).
* :func:`ptb_valid`: validation BPC of runs 1–5 every 10k steps to 1M
  (PTB, RHN n 256, OK r 8, B 32, lr 10^-3.5).

A curve is a dict with ``step`` and ``chars`` ([N]), ``per_run`` ([N, 5]) and its
``mean``, ``min`` and ``max`` over the runs ([N]), plus ``label``, ``batch_size`` and
``lr``. :func:`at_step` reads a curve at a step.
"""

from __future__ import annotations

import csv
import functools
import pathlib

import numpy as np

DIR = pathlib.Path(__file__).resolve().parent / "published"
SOURCE = "Benzing et al. 2019"
COPY_FILE = "copy_ok_n128_r16_b16.csv"
PTB_VALID_FILE = "ptb_ok_n256_r8_b32_valid.csv"
RUNS = 5


def _read(name: str, prefix: str) -> dict:
  with open(DIR / name, newline="") as f:
    rows = list(csv.DictReader(f))
  if not rows:
    raise ValueError(f"{DIR / name} holds no rows")
  step = np.array([int(r["step"]) for r in rows])
  per_run = np.array([[float(r[f"{prefix}_{k}"]) for k in range(1, RUNS + 1)] for r in rows])
  return {"step": step, "chars": np.array([int(r["chars"]) for r in rows]),
          "per_run": per_run, "mean": per_run.mean(axis=1),
          "min": per_run.min(axis=1), "max": per_run.max(axis=1)}


@functools.lru_cache(maxsize=None)
def copy_levels() -> dict:
  """Curriculum level of the five published copy-task runs every 1000 steps."""
  curve = _read(COPY_FILE, "level")
  curve.update(label=f"published OK r=16, n=128 ({SOURCE})", batch_size=16, lr=10 ** -3.5)
  return curve


@functools.lru_cache(maxsize=None)
def ptb_valid() -> dict:
  """Validation BPC of the five published PTB runs every 10k steps (best: minimum per run)."""
  curve = _read(PTB_VALID_FILE, "valid_bpc")
  curve.update(label=f"published OK r=8, n=256 ({SOURCE})", batch_size=32, lr=10 ** -3.5,
               best_per_run=curve["per_run"].min(axis=0))
  return curve


def at_step(curve: dict, step: float) -> dict | None:
  """The curve at the last published step ≤ ``step``: {step, mean, min, max}, or None.

  None when ``step`` lies before the first published point or after the last one
  (the published runs say nothing there).
  """
  if step < curve["step"][0] or step > curve["step"][-1]:
    return None
  i = int(np.searchsorted(curve["step"], step, side="right")) - 1
  return {"step": int(curve["step"][i]), "mean": float(curve["mean"][i]),
          "min": float(curve["min"][i]), "max": float(curve["max"][i])}


def band_text(point: dict | None, digits: int = 0) -> str:
  """``"mean (min–max)"`` of :func:`at_step`'s result; ``"–"`` for None."""
  if point is None:
    return "–"
  return f"{point['mean']:.{max(digits, 1)}f} ({point['min']:.{digits}f}–{point['max']:.{digits}f})"


def draw_band(ax, curve: dict, x: str = "chars", xmax: float | None = None,
              color: str = "0.35") -> None:
  """Draw the published mean (dashed) over the min–max band of the five runs.

  ``x`` is "chars" or "step"; with ``xmax`` only the points up to it are drawn.
  """
  xs = curve["chars"] if x == "chars" else curve["step"]
  keep = xs <= xmax if xmax is not None else np.ones(xs.shape, bool)
  keep[:1] = True
  xs = xs[keep]
  ax.fill_between(xs, curve["min"][keep], curve["max"][keep], color=color, alpha=0.25,
                  linewidth=0)
  ax.plot(xs, curve["mean"][keep], linestyle="--", color=color, linewidth=1.2,
          label=f"{curve['label']}: mean, band of {RUNS} runs")
