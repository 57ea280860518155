"""Character-level PTB: validation BPC versus characters seen.

    python -m analysis.plot_ptb RUN_DIRS... [--published] [--out ptb_curve]
        [--all_lrs] [--x chars|wall_time|step]

Reads eval.csv (step, chars, valid_bpc, wall_time) of PTB runs. Per method
label (split by any setting in which its runs differ: common.group_runs) the mean over seeds with a min–max band is drawn, for the learning rate
with the lowest mean best validation BPC (the one ptb_table.py reports);
--all_lrs draws every learning rate. --published overlays the published OK
r=8 curve. Log x axis. Writes OUT.png and OUT.pdf and prints their paths.
"""

from __future__ import annotations

import collections

from absl import app
from absl import flags
from absl import logging
import matplotlib.pyplot as plt

from analysis import common
from analysis import published as published_lib


def ptb_groups(runs, all_lrs: bool = False):
  """{label: runs}: best lr per method label, or every (method, lr) pair."""
  groups = collections.OrderedDict()
  for label, members in common.group_runs(runs, split_lr=False).items():
    by_lr = common.lr_groups(members)
    if all_lrs:
      for lr, lr_members in by_lr.items():
        groups[f"{label}, lr {common.lr_str(lr)}"] = lr_members
    else:
      best, best_members, _ = common.select_best_lr(members)
      name = label if len(by_lr) == 1 else f"{label}, lr {common.lr_str(best)}"
      groups[name] = best_members
  return groups


def ptb_curves(runs, x: str = "chars", all_lrs: bool = False, log: bool = True):
  """{label: {"x", "mean", "min", "max", "n", "seeds"}} of validation BPC."""
  return common.group_curves(ptb_groups(runs, all_lrs), "eval", x, "valid_bpc",
                             log=log)


def plot_ptb(paths, out: str = "ptb_curve", published: bool = False,
             x: str = "chars", all_lrs: bool = False,
             title: str | None = None) -> list[str]:
  """Plots the runs under `paths`; returns the written files (PNG, PDF)."""
  runs = common.load_runs(paths, task="ptb")
  curves = ptb_curves(runs, x=x, all_lrs=all_lrs)
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  common.plot_groups(ax, curves)
  if published:
    if x == "wall_time":
      logging.warning("--published: the published runs give no wall times; not drawn")
    else:
      published_lib.draw_band(ax, published_lib.ptb_valid(), x=x)
  ax.set_xscale("log")
  ax.set_xlabel(common.X_LABELS.get(x, x))
  ax.set_ylabel("validation BPC")
  ax.set_title(title or "Character-level Penn Treebank")
  return common.finish_figure(fig, ax, out, which="both", legend_loc="below")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``; the run directories are arguments."""
  fv = flag_values
  flags.DEFINE_string("out", "ptb_curve", "output prefix: OUT.png and OUT.pdf", flag_values=fv)
  flags.DEFINE_boolean("published", False, "draw the published OK r=8 runs (mean and band)",
                       flag_values=fv)
  flags.DEFINE_boolean("all_lrs", False,
                       "draw every learning rate, not only each method's best", flag_values=fv)
  flags.DEFINE_enum("x", "chars", ["chars", "wall_time", "step"],
                    "x axis (default: characters seen)", flag_values=fv)
  flags.DEFINE_string("title", None, "figure title", flag_values=fv)


def run(flag_values: flags.FlagValues, paths) -> list[str]:
  """Plots the runs under ``paths`` as the flags say; prints and returns the files."""
  common.require_paths(paths)
  fv = flag_values
  out = plot_ptb(paths, out=fv.out, published=fv.published, x=fv.x, all_lrs=fv.all_lrs,
                 title=fv.title)
  for p in out:
    print(p)
  return out


def main(argv):
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
