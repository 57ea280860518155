"""Shared helpers of the analysis scripts.

The command line of every script (absl flags, :func:`run_script`), method labels and
their order (from the registry ``ok_tf.estimators.METHODS``), loading and grouping of
runs (the published curves: analysis/published.py), alignment of per-seed curves on a
common x grid, statistics, figure output.

The scripts run from the repository root as ``python -m analysis.<name> ...``, which
finds both ``analysis`` and ``ok_tf`` there without any change of ``sys.path``.
"""

from __future__ import annotations

import collections
import math
import os
import types
from typing import Iterable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # before TensorFlow (the registry)

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
import matplotlib  # pylint: disable=g-import-not-at-top
matplotlib.use("Agg")
import numpy as np  # pylint: disable=g-import-not-at-top

from ok_tf import config as config_lib  # pylint: disable=g-import-not-at-top
from ok_tf import estimators  # pylint: disable=g-import-not-at-top
from ok_tf import runs as runs_lib  # pylint: disable=g-import-not-at-top

# ----------------------------------------------------------------------------
# Command lines
#
# A script defines its absl flags in ``define_flags(flag_values=flags.FLAGS)``, which it
# calls only when it runs as the program, before ``app.run(main)``; ``main(argv)`` calls
# ``run(flags.FLAGS, argv[1:])``, the script's work. Flags defined on import would clash
# between scripts that share a name (--out_dir, --csv, --configs, ...) when one process
# imports several (kernels.py imports benchmark.py; the tests import them all).


def run_script(script, argv: Sequence[str] = ()):
  """``python -m analysis.<script> ARGV...`` in this process: ``script.run``'s result.

  The script's flags are defined on, and ``argv`` (flags and positional arguments, no
  program name) parsed into, a ``flags.FlagValues`` of their own, so that scripts sharing
  flag names run in one process. A bad flag raises ``flags.Error``, a bad positional
  argument ``app.UsageError``.
  """
  flag_values = flags.FlagValues()
  script.define_flags(flag_values)
  positional = flag_values([script.__name__, *argv])[1:]
  return script.run(flag_values, positional)


def flag_namespace(define_flags, flag_values) -> types.SimpleNamespace:
  """The flags that ``define_flags`` defines, read from ``flag_values``, as the attributes
  of a namespace in their order of definition (``vars()`` of it lists them)."""
  probe = flags.FlagValues()
  define_flags(probe)
  return types.SimpleNamespace(**{name: flag_values[name].value for name in probe})


def int_list(values) -> list[int]:
  """A list flag's strings as integers (ValueError for anything else)."""
  return [int(v) for v in values]


def is_int_list(values) -> bool:
  """Whether every string of a list flag is an integer (a flag validator)."""
  try:
    int_list(values)
  except (TypeError, ValueError):
    return False
  return True


def define_at_steps(flag_values: flags.FlagValues, what: str) -> None:
  """The tables' ``--at_steps`` flag: a table of ``what`` at those steps."""
  flags.DEFINE_list("at_steps", [], f"comma-separated steps: a table of {what} at those steps",
                    flag_values=flag_values)
  flags.register_validator("at_steps", is_int_list, "--at_steps takes integers",
                           flag_values=flag_values)


def require_paths(paths) -> None:
  """A script's positional run directories: at least one (else a usage error)."""
  if not paths:
    raise app.UsageError("name one or more run directories or folders")


# ----------------------------------------------------------------------------
# Method labels and order (the registry's)


def method_label(config: dict) -> str:
  """Label of a run's method in tables and legends: "ok (r=16)", "kf", "tbptt (T=25)".

  The registry's label (:func:`ok_tf.estimators.label`) of the config's method, rank and
  truncation: the rank shown for a method that takes one, the truncation length for one
  that takes one, and its hyperparameters that differ from their defaults
  ("ok (r=16, balance=False)").
  """
  return estimators.label(str(config.get("method", "?")), config.get("rank"),
                          config.get("truncation"), config)


def method_sort_key(config: dict) -> tuple:
  """Sort key of a run's method: the registry's order (:func:`ok_tf.estimators.order`),
  then the name, rank and truncation."""
  method = str(config.get("method", "?"))

  def num(key):
    try:
      return float(config.get(key))
    except (TypeError, ValueError):
      return 0.0

  return (estimators.order(method), method, num("rank"), num("truncation"))


# ----------------------------------------------------------------------------
# Loading and grouping


def load_runs(paths: Iterable, task: str | None = None) -> list[runs_lib.Run]:
  """The runs under `paths` (runs.find_runs), as readers (runs.Run).

  With `task`, runs whose config names another task are left out (runs whose
  config has no "task" key are kept).
  """
  out = []
  for path in runs_lib.find_runs(paths):
    run = runs_lib.Run(path)
    run_task = run.config.get("task")
    if task is not None and run_task is not None and run_task != task:
      continue
    out.append(run)
  return out


def lr_str(lr) -> str:
  """1e-3 -> "10^-3", 10**-3.5 -> "10^-3.5", 0.002 -> "0.002"."""
  if lr is None:
    return "n/a"
  lr = float(lr)
  if lr > 0:
    e = math.log10(lr)
    if abs(e * 4 - round(e * 4)) < 1e-6:
      return f"10^{round(e * 4) / 4:g}"
  return f"{lr:.3g}"


def setting_str(key: str, value) -> str:
  """One setting as shown in a label: "grad_scale mean", "clip 16", "adam_epsilon 1.6e-07"."""
  if isinstance(value, float):
    return f"{key} {value:.10g}"
  return f"{key} {value}"


def _setting_order(values: tuple) -> tuple:
  """Sort key of a tuple of settings: numbers by value, before anything else by text."""
  return tuple((0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool)
               else (1, 0.0, str(v)) for v in values)


def group_runs(runs: Sequence[runs_lib.Run], split_lr: bool = True
               ) -> "collections.OrderedDict[str, list[runs_lib.Run]]":
  """Groups runs by :func:`method_label`, in the registry's method order.

  Runs of one method that differ in a setting (a config field marked ``distinguishes``,
  :func:`ok_tf.config.distinguishing_keys`, e.g. two ``--grad_scale`` values; a config
  that lacks one has its ``absent`` value) are never pooled: each setting becomes its own group, its
  label naming the settings in which the method's runs differ, e.g.
  "ok (r=16), grad_scale mean". With split_lr, a group whose runs use several learning
  rates is split into one group per lr as well, labelled e.g. "ok (r=16), lr 10^-3.5".
  """
  by_label = collections.defaultdict(list)
  for run in runs:
    by_label[method_label(run.config)].append(run)
  order = sorted(by_label, key=lambda l: (method_sort_key(by_label[l][0].config), l))
  groups = collections.OrderedDict()

  def add(label, members):
    assert label not in groups, f"two groups of runs would share the label {label!r}"
    groups[label] = members

  keys, absent = config_lib.distinguishing_keys(), config_lib.absent_values()
  for label in order:
    members = by_label[label]
    setting = {id(m): tuple(m.config.get(k, absent.get(k)) for k in keys)
               for m in members}
    differing = [i for i, _ in enumerate(keys)
                 if len({setting[id(m)][i] for m in members}) > 1]
    by_setting = collections.defaultdict(list)
    for m in members:
      by_setting[tuple(setting[id(m)][i] for i in differing)].append(m)
    for key in sorted(by_setting, key=_setting_order):
      same = by_setting[key]
      setting_label = ", ".join([label] + [setting_str(keys[i], v)
                                           for i, v in zip(differing, key)])
      lrs = sorted({m.config.get("lr") for m in same},
                   key=lambda v: (v is None, v if v is not None else 0))
      if split_lr and len(lrs) > 1:
        for lr in lrs:
          add(f"{setting_label}, lr {lr_str(lr)}", [m for m in same if m.config.get("lr") == lr])
      else:
        add(setting_label, same)
  return groups


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
  """(mean, sample standard deviation (ddof=1), n); std is nan for n < 2."""
  v = np.asarray([float("nan") if x is None else float(x) for x in values],
                 dtype=float)
  n = len(v)
  if n == 0:
    return float("nan"), float("nan"), 0
  mean = float(np.mean(v))
  std = float(np.std(v, ddof=1)) if n > 1 else float("nan")
  return mean, std, n


def ptb_score(run: runs_lib.Run) -> float:
  """Best validation BPC of a PTB run: results.json, else the minimum of eval.csv."""
  res = run.results or {}
  if res.get("best_valid_bpc") is not None:
    return float(res["best_valid_bpc"])
  vals = [r.get("valid_bpc") for r in run.eval]
  vals = [float(v) for v in vals if isinstance(v, (int, float))]
  return min(vals) if vals else float("nan")


def lr_groups(runs: Sequence[runs_lib.Run]) -> "collections.OrderedDict":
  """{lr: [runs]} sorted by lr."""
  by_lr = collections.defaultdict(list)
  for run in runs:
    by_lr[run.config.get("lr")].append(run)
  return collections.OrderedDict(
      sorted(by_lr.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))


def select_best_lr(runs: Sequence[runs_lib.Run], score=ptb_score):
  """(best lr, its runs, {lr: mean score}) by the lowest mean score over seeds.

  A non-finite mean (a diverged seed, no result yet) never wins unless every lr
  has one.
  """
  groups = lr_groups(runs)
  means = {lr: mean_std([score(r) for r in members])[0]
           for lr, members in groups.items()}
  def key(lr):
    m = means[lr]
    return (0, m) if math.isfinite(m) else (1, 0.0)
  best = min(groups, key=key)
  return best, groups[best], means


# ----------------------------------------------------------------------------
# Curves


def curve(rows: Sequence[dict], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
  """Columns x and y of CSV rows (rows missing either are skipped), sorted by x.

  Repeated x values keep the last row.
  """
  pts = {}
  for row in rows:
    xv, yv = row.get(x), row.get(y)
    if isinstance(xv, (int, float)) and isinstance(yv, (int, float)):
      pts[float(xv)] = float(yv)
  xs = np.array(sorted(pts), dtype=float)
  ys = np.array([pts[k] for k in xs], dtype=float)
  return xs, ys


def align_curves(curves: Sequence[tuple[np.ndarray, np.ndarray]],
                 num: int = 500, log: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Puts per-seed curves on a common x grid, up to the shortest curve.

  Returns (grid, Y) with Y[i] the i-th curve on the grid. When all curves
  share their x values over the common range (e.g. evaluations every 10k
  steps) those values are the grid; otherwise each curve is linearly
  interpolated onto `num` points, evenly spaced (geometrically when `log`).
  Empty curves are ignored.
  """
  curves = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves
            if len(x)]
  if not curves:
    return np.zeros(0), np.zeros((0, 0))
  if log:
    curves = [(x[x > 0], y[x > 0]) for x, y in curves]
    curves = [(x, y) for x, y in curves if len(x)]
    if not curves:
      return np.zeros(0), np.zeros((0, 0))
  lo = max(x[0] for x, _ in curves)
  hi = min(x[-1] for x, _ in curves)
  if hi < lo:  # curves do not overlap; keep the shortest one's range
    lo = hi
  inside = [x[(x >= lo) & (x <= hi)] for x, _ in curves]
  if all(len(s) == len(inside[0]) and np.allclose(s, inside[0]) for s in inside):
    grid = inside[0]
  elif hi == lo:
    grid = np.array([lo])
  elif log:
    grid = np.geomspace(lo, hi, num)
  else:
    grid = np.linspace(lo, hi, num)
  ys = np.stack([np.interp(grid, x, y) for x, y in curves])
  return grid, ys


def group_curves(groups, rows_key: str, x: str, y: str, log: bool = False,
                 num: int = 500) -> "collections.OrderedDict[str, dict]":
  """{label: {"x", "mean", "min", "max", "n", "seeds"}} for plotting.

  rows_key: the runs' rows to draw from, "metrics" or "eval".
  """
  out = collections.OrderedDict()
  for label, members in groups.items():
    curves = [curve(getattr(m, rows_key), x, y) for m in members]
    curves = [c for c in curves if len(c[0])]
    if not curves:
      continue
    grid, ys = align_curves(curves, num=num, log=log)
    if not len(grid):
      continue
    out[label] = {"x": grid, "mean": ys.mean(axis=0), "min": ys.min(axis=0),
                  "max": ys.max(axis=0), "n": len(curves),
                  "seeds": [m.config.get("seed") for m in members]}
  return out


def seeds_str(n: int) -> str:
  return f"{n} seed" + ("" if n == 1 else "s")


X_LABELS = {"chars": "characters seen", "wall_time": "wall-clock time (s)",
            "step": "training steps"}


def plot_groups(ax, curves, marker_if_short=True):
  """Mean line and min–max band per group."""
  for label, c in curves.items():
    text = f"{label} ({seeds_str(c['n'])})"
    if len(c["x"]) == 1 and marker_if_short:
      line, = ax.plot(c["x"], c["mean"], "o", label=text)
    else:
      line, = ax.plot(c["x"], c["mean"], label=text)
    if c["n"] > 1:
      ax.fill_between(c["x"], c["min"], c["max"], color=line.get_color(),
                      alpha=0.2, linewidth=0)


def finish_figure(fig, ax, out: str, *, which: str = "major", legend_size: float = 8,
                  legend_loc: str = "best") -> list[str]:
  """Grid, a legend when anything is labelled, OUT.png and OUT.pdf; closes the figure.

  ``legend_loc`` is a Matplotlib location, or ``"below"``: under the axes, in two columns
  (for curves that fill the whole plot).
  """
  import matplotlib.pyplot as plt
  ax.grid(True, which=which, alpha=0.3)
  if ax.get_legend_handles_labels()[0]:
    if legend_loc == "below":
      ax.legend(fontsize=legend_size, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    else:
      ax.legend(fontsize=legend_size, loc=legend_loc)
  paths = save_figure(fig, out)
  plt.close(fig)
  return paths


def save_figure(fig, out: str) -> list[str]:
  """Writes OUT.png and OUT.pdf; returns the paths."""
  out = str(out)
  for ext in (".png", ".pdf"):
    if out.endswith(ext):
      out = out[: -len(ext)]
  parent = os.path.dirname(out)
  if parent:
    os.makedirs(parent, exist_ok=True)
  paths = []
  for ext in ("png", "pdf"):
    p = f"{out}.{ext}"
    fig.savefig(p, dpi=150, bbox_inches="tight")
    paths.append(p)
  return paths
