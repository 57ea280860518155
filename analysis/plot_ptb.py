"""Character-level PTB: validation BPC versus characters seen.

    python analysis/plot_ptb.py RUN_DIRS... [--published] [--out ptb_curve]
        [--all_lrs] [--x chars|wall_time|step]

Reads eval.csv (step, chars, valid_bpc, wall_time) of PTB runs. Per method
label the mean over seeds with a min–max band is drawn, for the learning rate
with the lowest mean best validation BPC (the one ptb_table.py reports);
--all_lrs draws every learning rate. --published overlays the published OK
r=8 curve. Log x axis. Writes OUT.png and OUT.pdf.
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import sys

_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
  sys.path.insert(0, str(_ROOT))

from analysis import common  # pylint: disable=g-import-not-at-top
from analysis import published as published_lib  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


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
      print("--published: the published runs give no wall times; not drawn",
            file=sys.stderr)
    else:
      published_lib.draw_band(ax, published_lib.ptb_valid(), x=x)
  ax.set_xscale("log")
  ax.set_xlabel(common.X_LABELS.get(x, x))
  ax.set_ylabel("validation BPC")
  ax.set_title(title or "Character-level Penn Treebank")
  return common.finish_figure(fig, ax, out, which="both", legend_loc="lower left")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("runs", nargs="+", help="run directories or folders")
  parser.add_argument("--out", default="ptb_curve",
                      help="output prefix: OUT.png and OUT.pdf")
  parser.add_argument("--published", action="store_true",
                      help="draw the published OK r=8 runs (mean and band)")
  parser.add_argument("--all_lrs", action="store_true",
                      help="draw every learning rate, not only each method's best")
  parser.add_argument("--x", default="chars", choices=["chars", "wall_time", "step"],
                      help="x axis (default: characters seen)")
  parser.add_argument("--title", default=None)
  args = parser.parse_args(argv)
  for p in plot_ptb(args.runs, out=args.out, published=args.published, x=args.x,
                    all_lrs=args.all_lrs, title=args.title):
    print(p)


if __name__ == "__main__":
  main()
