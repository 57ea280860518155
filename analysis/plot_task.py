"""Any task: the training loss against steps for each method, with the task's baselines.

    python -m analysis.plot_task RUN_DIRS... [--task additive] [--out task_curve]
        [--x step|chars|wall_time] [--logy] [--best_lr] [--title TITLE]

Each RUN_DIR is a run directory or a folder searched for them. Runs are grouped by method
label (analysis.common.group_runs; split by learning rate when a method has several); per
group the mean over seeds of the loss in the task's unit (each logged row: the mean over
the steps and streams that count) is drawn with a min–max band, and the task's baselines
(task.json) as dashed horizontal lines. Writes OUT.png and OUT.pdf and prints their paths.
"""

from __future__ import annotations

from absl import app
from absl import flags
import matplotlib.pyplot as plt

from analysis import common
from analysis import task_table


def plot_task(paths, out: str = "task_curve", task: str | None = None, x: str = "step",
              logy: bool = False, title: str | None = None, best_lr: bool = False) -> list[str]:
  """Plots the runs under `paths`; returns the written files (PNG, PDF)."""
  runs = common.load_runs(paths, task=task)
  names = sorted({str(r.config.get("task")) for r in runs})
  if len(names) != 1:
    raise app.UsageError(f"the runs are of {len(names)} tasks ({', '.join(names) or 'none'}): "
                         "give --task")
  column = task_table.loss_column(runs[0])
  groups = common.group_runs(runs, split_lr=True)
  if best_lr:
    kept = {row["label"] for row in task_table.table_rows(runs, best_lr=True)}
    groups = type(groups)((label, members) for label, members in groups.items()
                          if label in kept)
  curves = common.group_curves(groups, "metrics", x, column, log=False)
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  common.plot_groups(ax, curves)
  described = runs[0].task() or {}
  for i, (name, value) in enumerate(described.get("baselines", {}).items()):
    if value > 0 or not logy:
      ax.axhline(value, color="0.4", linestyle=(0, (4, 2 + 2 * i)), linewidth=0.9,
                 label=f"baseline: {name}")
  if logy:
    ax.set_yscale("log")
  ax.set_xlabel(common.X_LABELS.get(x, x))
  ax.set_ylabel(f"training loss ({column.split('_', 1)[1]})")
  ax.set_title(title or f"Task {names[0]}")
  return common.finish_figure(fig, ax, out, which="both" if logy else "major",
                              legend_loc="below")


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``; the run directories are arguments."""
  fv = flag_values
  flags.DEFINE_string("out", "task_curve", "output prefix: OUT.png and OUT.pdf", flag_values=fv)
  flags.DEFINE_string("task", None, "Only runs of this task.", flag_values=fv)
  flags.DEFINE_enum("x", "step", ["step", "chars", "wall_time"], "x axis", flag_values=fv)
  flags.DEFINE_boolean("logy", False, "logarithmic loss axis", flag_values=fv)
  flags.DEFINE_string("title", None, "figure title (default: the task)", flag_values=fv)
  flags.DEFINE_boolean("best_lr", False, "Draw only each method's best learning rate "
                       "(analysis.task_table's choice).", flag_values=fv)


def run(flag_values: flags.FlagValues, paths) -> list[str]:
  common.require_paths(paths)
  fv = flag_values
  written = plot_task(paths, fv.out, fv.task, fv.x, fv.logy, fv.title, fv.best_lr)
  print("\n".join(written))
  return written


def main(argv):
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
