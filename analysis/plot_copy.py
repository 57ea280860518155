"""Copy task: curriculum level T reached versus characters seen.

    python -m analysis.plot_copy RUN_DIRS... [--published] [--out copy_curve]
        [--x chars|wall_time|step] [--logx]

Each RUN_DIR is a run directory or a folder searched for them. Runs are grouped
by method label ("ok (r=16)", "tbptt (T=25)", ...; split by learning rate when
a method has several, and by any setting (ok_tf.config.distinguishing_keys) in which its runs
differ); per group the mean level over seeds is drawn (each seed
interpolated onto a common grid up to the shortest run of the group) with a
min–max band. --published draws the published OK runs (analysis/published/): their
mean level and the band of the five runs, up to the end of the longest run drawn
(the whole 2M steps with --logx or without runs of ours). Writes OUT.png and OUT.pdf
and prints their paths.
"""

from __future__ import annotations

from absl import app
from absl import flags
from absl import logging
import matplotlib.pyplot as plt
import numpy as np

from analysis import common
from analysis import published as published_lib


def copy_curves(runs, x: str = "chars", num: int = 500):
  """{label: {"x", "mean", "min", "max", "n", "seeds"}} of the level curves."""
  groups = common.group_runs(runs, split_lr=True)
  return common.group_curves(groups, "metrics", x, "level", num=num)


def plot_copy(paths, out: str = "copy_curve", published: bool = False,
              x: str = "chars", title: str | None = None, logx: bool = False) -> list[str]:
  """Plots the runs under `paths`; returns the written files (PNG, PDF)."""
  runs = common.load_runs(paths, task="copy")
  curves = copy_curves(runs, x=x)
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  common.plot_groups(ax, curves)
  if published:
    if x == "wall_time":
      logging.warning("--published: the published runs give no wall times; not drawn")
    else:
      ends = [float(np.max(c["x"])) for c in curves.values() if len(c["x"])]
      xmax = None if logx or not ends else 1.02 * max(ends)
      published_lib.draw_band(ax, published_lib.copy_levels(), x=x, xmax=xmax)
  if logx:
    ax.set_xscale("log")
  ax.set_xlabel(common.X_LABELS.get(x, x))
  ax.set_ylabel("curriculum level T")
  ax.set_title(title or "Copy task with curriculum")
  return common.finish_figure(fig, ax, out, legend_loc="below")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``; the run directories are arguments."""
  fv = flag_values
  flags.DEFINE_string("out", "copy_curve", "output prefix: OUT.png and OUT.pdf", flag_values=fv)
  flags.DEFINE_boolean("published", False, "draw the published OK r=16 runs (mean and band)",
                       flag_values=fv)
  flags.DEFINE_enum("x", "chars", ["chars", "wall_time", "step"],
                    "x axis (default: characters seen)", flag_values=fv)
  flags.DEFINE_string("title", None, "figure title", flag_values=fv)
  flags.DEFINE_boolean("logx", False,
                       "logarithmic x axis (e.g. short runs beside the published points)",
                       flag_values=fv)


def run(flag_values: flags.FlagValues, paths) -> list[str]:
  """Plots the runs under ``paths`` as the flags say; prints and returns the files."""
  common.require_paths(paths)
  fv = flag_values
  out = plot_copy(paths, out=fv.out, published=fv.published, x=fv.x, title=fv.title,
                  logx=fv.logx)
  for p in out:
    print(p)
  return out


def main(argv):
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
