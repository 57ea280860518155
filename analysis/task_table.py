"""Any task: the final loss of each method beside the task's baselines, and the gradient's
agreement with exact RTRL.

    python -m analysis.task_table RUN_DIRS... [--task additive] [--best_lr] [--csv FILE]

Each RUN_DIR is a run directory or a folder searched for them (runs of one task; with
several tasks present, --task picks one). Runs are grouped by method label (split by
learning rate, and by any setting (ok_tf.config.distinguishing_keys) in which a method's runs differ).
Per group and seed: the loss in the task's unit (bits, or the mean squared error) averaged
over the last --tail of the logged rows, as a mean over seeds; its ratio to the task's
baseline (task.json's ``baseline``); and, for runs with ``--shadow_exact``, the mean
cosine and relative error of the estimated gradient against exact RTRL over the whole
run (over the rows where they are defined: not where exact RTRL's gradient is 0). With --best_lr only each method's best learning rate (lowest tail loss) is kept.
The task's baselines (task.json) close the table. Prints Markdown.
"""

from __future__ import annotations

import collections
import math

from absl import app
from absl import flags
import numpy as np

from analysis import common
from analysis import tables
from ok_tf import specs


def loss_column(run) -> str:
  """The run's loss column (``loss_bits``, ``loss_mse``), from its task.json."""
  task = run.task() or {}
  outputs = task.get("outputs", {"kind": "classes", "size": 2})
  return specs.from_json(outputs, "outputs").loss_column


def tail_mean(rows, column: str, tail: float) -> float:
  """The mean of ``column`` over the last ``tail`` fraction of the rows that have it."""
  values = [float(r[column]) for r in rows if r.get(column) not in (None, "")]
  if not values:
    return math.nan
  count = max(1, int(math.ceil(tail * len(values))))
  return float(np.mean(values[-count:]))


def whole_mean(rows, column: str) -> float | None:
  """The mean of ``column`` over the rows where it is a finite number (the shadow's
  cosine and relative error are undefined, NaN, where exact RTRL's gradient is 0);
  None when no row has it."""
  values = [float(r[column]) for r in rows if r.get(column) not in (None, "")]
  finite = [v for v in values if math.isfinite(v)]
  if not values:
    return None
  return float(np.mean(finite)) if finite else math.nan


def table_rows(runs, tail: float = 0.1, best_lr: bool = False) -> list[dict]:
  """One row per group: label, lr, seeds, loss (mean over seeds), its ratio to the
  baseline, steps, and the shadow's cosine and relative error when logged."""
  rows = []
  for label, members in common.group_runs(runs, split_lr=True).items():
    column = loss_column(members[0])
    losses = [tail_mean(m.metrics, column, tail) for m in members]
    baseline = (members[0].task() or {}).get("baseline")
    cosines = [whole_mean(m.metrics, "shadow_cosine") for m in members]
    errors = [whole_mean(m.metrics, "shadow_rel_error") for m in members]
    loss = float(np.mean(losses))
    rows.append({
        "method": label.split(", lr ")[0], "label": label,
        "lr": common.lr_str(members[0].config.get("lr")), "seeds": len(members),
        "steps": min(int(m.metrics[-1]["step"]) for m in members if m.metrics),
        "unit": column.split("_", 1)[1], "loss": loss,
        "ratio": loss / baseline if baseline else None,
        "cosine": float(np.mean(cosines)) if None not in cosines else None,
        "rel_error": float(np.mean(errors)) if None not in errors else None,
    })
  if best_lr:
    best = collections.OrderedDict()
    for row in rows:
      kept = best.get(row["method"])
      if kept is None or (math.isfinite(row["loss"]) and
                          not row["loss"] >= kept["loss"]):
        best[row["method"]] = row
    rows = list(best.values())
  return rows


def fmt(value, digits: int = 4) -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "–"
  return f"{value:.{digits}g}"


def to_markdown(rows, baselines: dict, unit: str, tail: float) -> str:
  header = ["method", "lr", "seeds", "steps", f"loss ({unit}, last {tail:.0%} of rows)",
            "/ baseline", "cosine to RTRL", "rel. error"]
  lines = [tables.markdown(([r["method"], r["lr"], r["seeds"], r["steps"], fmt(r["loss"]),
                             fmt(r["ratio"], 3), fmt(r["cosine"], 3), fmt(r["rel_error"], 3)]
                            for r in rows), header)]
  if baselines:
    lines.append("")
    lines.append("Baselines (" + unit + "): " + ", ".join(
        f"{name} {fmt(value)}" for name, value in baselines.items()) + ".")
  return "\n".join(lines)


def task_table(paths, task: str | None = None, csv_path: str | None = None,
               tail: float = 0.1, best_lr: bool = False) -> tuple[str, list[dict]]:
  runs = common.load_runs(paths, task=task)
  names = sorted({str(r.config.get("task")) for r in runs})
  if len(names) != 1:
    raise app.UsageError(f"the runs are of {len(names)} tasks ({', '.join(names) or 'none'}): "
                         "give --task")
  rows = table_rows(runs, tail, best_lr)
  described = runs[0].task() or {}
  text = to_markdown(rows, described.get("baselines", {}), rows[0]["unit"] if rows else "",
                     tail)
  if csv_path:
    tables.write_csv(csv_path, rows, list(rows[0]))
  return text, rows


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``; the run directories are arguments."""
  fv = flag_values
  flags.DEFINE_string("task", None, "Only runs of this task.", flag_values=fv)
  flags.DEFINE_string("csv", "", "Also write the rows to this CSV file (none if empty).",
                      flag_values=fv)
  flags.DEFINE_float("tail", 0.1, "The fraction of the last logged rows averaged.",
                     lower_bound=1e-9, upper_bound=1.0, flag_values=fv)
  flags.DEFINE_boolean("best_lr", False, "Keep only each method's best learning rate.",
                       flag_values=fv)


def run(flag_values: flags.FlagValues, paths) -> tuple[str, list[dict]]:
  """The table of the runs under ``paths`` as the flags say: printed, the rows to --csv."""
  common.require_paths(paths)
  fv = flag_values
  text, rows = task_table(paths, fv.task, fv.csv, fv.tail, fv.best_lr)
  print(text)
  return text, rows


def main(argv):
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
