"""Copy task: curriculum level T reached versus characters seen.

    python analysis/plot_copy.py RUN_DIRS... [--published] [--out copy_curve]
        [--x chars|wall_time|step] [--logx]

Each RUN_DIR is a run directory or a folder searched for them. Runs are grouped
by method label ("ok (r=16)", "tbptt (T=25)", ...; split by learning rate when
a method has several); per group the mean level over seeds is drawn (each seed
interpolated onto a common grid up to the shortest run of the group) with a
min–max band. --published draws the published OK runs (analysis/published/): their
mean level and the band of the five runs, up to the end of the longest run drawn
(the whole 2M steps with --logx or without runs of ours). Writes OUT.png and OUT.pdf.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
  sys.path.insert(0, str(_ROOT))

from analysis import common  # pylint: disable=g-import-not-at-top
from analysis import published as published_lib  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top


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
      print("--published: the published runs give no wall times; not drawn",
            file=sys.stderr)
    else:
      ends = [float(np.max(c["x"])) for c in curves.values() if len(c["x"])]
      xmax = None if logx or not ends else 1.02 * max(ends)
      published_lib.draw_band(ax, published_lib.copy_levels(), x=x, xmax=xmax)
  if logx:
    ax.set_xscale("log")
  ax.set_xlabel(common.X_LABELS.get(x, x))
  ax.set_ylabel("curriculum level T")
  ax.set_title(title or "Copy task with curriculum")
  return common.finish_figure(fig, ax, out, legend_loc="upper left")


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("runs", nargs="+", help="run directories or folders")
  parser.add_argument("--out", default="copy_curve",
                      help="output prefix: OUT.png and OUT.pdf")
  parser.add_argument("--published", action="store_true",
                      help="draw the published OK r=16 runs (mean and band)")
  parser.add_argument("--x", default="chars", choices=["chars", "wall_time", "step"],
                      help="x axis (default: characters seen)")
  parser.add_argument("--title", default=None)
  parser.add_argument("--logx", action="store_true",
                      help="logarithmic x axis (e.g. short runs beside the published points)")
  args = parser.parse_args(argv)
  for p in plot_copy(args.runs, out=args.out, published=args.published,
                     x=args.x, title=args.title, logx=args.logx):
    print(p)


if __name__ == "__main__":
  main()
