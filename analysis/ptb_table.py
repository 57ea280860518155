"""Character-level PTB: the paper's results table from run directories.

    python -m analysis.ptb_table RUN_DIRS... [--published] [--csv ptb_table.csv]
        [--all_lrs] [--digits 3] [--at_steps 10000,20000]

Collects PTB runs (config.json with task "ptb" and a results.json holding
best_valid_bpc, best_step, test_bpc, final_valid_bpc, wall_time, steps_per_sec,
chars). One row per method label (split by any setting in which
its runs differ); for each the learning rate (config
key lr) with the lowest mean best_valid_bpc over seeds is reported. Columns:
method, lr, valid BPC (mean ± std), test BPC (mean ± std), seeds, characters
trained. std is the sample standard deviation over seeds (ddof = 1). The
table is printed as Markdown and written as CSV. --published adds the
published OK r=8 row (analysis/published/) and a column with the published
validation BPC (mean and range of the five runs) at each row's characters;
--all_lrs prints a second table with every learning rate. --at_steps=10000,20000
prints the validation BPC of every method at those steps (from eval.csv, finished
or not) beside the published runs' at the same steps. Runs without results.json
(unfinished) are listed in the log (a warning each) and left out of the main table.
"""

from __future__ import annotations

import math

from absl import app
from absl import flags
from absl import logging

from analysis import common
from analysis import published as published_lib
from analysis import tables

CSV_FIELDS = [
    "method", "lr", "valid_bpc_mean", "valid_bpc_std", "test_bpc_mean",
    "test_bpc_std", "seeds", "chars", "final_valid_bpc_mean", "best_step_mean",
    "wall_time_mean", "steps_per_sec_mean", "best_lr", "run_dirs",
]


def _result(run, key):
  v = (run.results or {}).get(key)
  return float("nan") if v is None else float(v)


def _row(label, lr, members, best_lr=True):
  valid = common.mean_std([_result(r, "best_valid_bpc") for r in members])
  test = common.mean_std([_result(r, "test_bpc") for r in members])
  chars = [_result(r, "chars") for r in members]
  return {
      "method": label,
      "lr": lr,
      "valid_bpc_mean": valid[0],
      "valid_bpc_std": valid[1],
      "test_bpc_mean": test[0],
      "test_bpc_std": test[1],
      "seeds": len(members),
      "chars": common.mean_std(chars)[0],
      "chars_min": min(chars),
      "chars_max": max(chars),
      "final_valid_bpc_mean": common.mean_std(
          [_result(r, "final_valid_bpc") for r in members])[0],
      "best_step_mean": common.mean_std(
          [_result(r, "best_step") for r in members])[0],
      "wall_time_mean": common.mean_std(
          [_result(r, "wall_time") for r in members])[0],
      "steps_per_sec_mean": common.mean_std(
          [_result(r, "steps_per_sec") for r in members])[0],
      "best_lr": best_lr,
      "run_dirs": ";".join(str(r.path) for r in members),
  }


PUBLISHED_LABEL = "OK r=8 (published)"


def published_row():
  """The published runs' row: best validation BPC per run (mean ± std), 1M steps."""
  p = published_lib.ptb_valid()
  valid = common.mean_std(list(p["best_per_run"]))
  nan = float("nan")
  chars = float(p["chars"][-1])
  return {
      "method": PUBLISHED_LABEL, "lr": p["lr"],
      "valid_bpc_mean": valid[0], "valid_bpc_std": valid[1],
      "test_bpc_mean": nan, "test_bpc_std": nan, "seeds": len(p["best_per_run"]),
      "chars": chars, "chars_min": chars, "chars_max": chars,
      "final_valid_bpc_mean": float(p["mean"][-1]), "best_step_mean": nan,
      "wall_time_mean": nan, "steps_per_sec_mean": nan, "best_lr": True,
      "run_dirs": "",
  }


def published_at_chars(chars: float) -> dict | None:
  """The published validation BPC (mean, min, max) at the step with these characters."""
  p = published_lib.ptb_valid()
  return published_lib.at_step(p, chars / p["batch_size"])


def valid_at(run, step: int) -> float | None:
  """The run's validation BPC logged at ``step`` (eval.csv), or None."""
  for row in run.eval:
    if int(row["step"]) == step:
      return float(row["valid_bpc"])
  return None


def steps_markdown(runs, steps, digits: int = 3) -> str:
  """Validation BPC of every method at ``steps`` beside the published runs'."""
  header = ["method", "lr"] + [f"{s // 1000}k" if s % 1000 == 0 else str(s) for s in steps]
  body = []
  for label, members in common.group_runs(runs, split_lr=True).items():
    cells = [label, common.lr_str(members[0].config.get("lr"))]
    for s in steps:
      values = [v for v in (valid_at(m, s) for m in members) if v is not None]
      cells.append(f"{sum(values) / len(values):.{digits}f}" if values else "–")
    body.append(cells)
  p = published_lib.ptb_valid()
  cells = [f"{PUBLISHED_LABEL}: mean (range of 5)", common.lr_str(p["lr"])]
  cells += [published_lib.band_text(published_lib.at_step(p, s), digits) for s in steps]
  body.append(cells)
  return tables.markdown(body, header)


def finished_runs(runs):
  """(runs with results.json, runs without)."""
  done = [r for r in runs if r.results]
  return done, [r for r in runs if not r.results]


def table_rows(runs, all_lrs: bool = False) -> list[dict]:
  """One row per method label at its best lr (every lr with all_lrs).

  `runs` are runs (runs.Run) with results; the best lr of a method
  is the one with the lowest mean best_valid_bpc over its seeds.
  """
  rows = []
  for label, members in common.group_runs(runs, split_lr=False).items():
    best, best_members, _ = common.select_best_lr(members)
    if all_lrs:
      for lr, lr_members in common.lr_groups(members).items():
        rows.append(_row(label, lr, lr_members, best_lr=(lr == best)))
    else:
      rows.append(_row(label, best, best_members))
  return rows


def _fmt_num(v, digits):
  return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def fmt_mean_std(mean, std, digits=3) -> str:
  if mean is None or not math.isfinite(mean):
    return "n/a"
  if std is None or not math.isfinite(std):
    return f"{mean:.{digits}f}"
  return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_chars(c) -> str:
  if c is None or not math.isfinite(c):
    return "n/a"
  if c >= 1e9:
    return f"{c / 1e9:.2f}G"
  if c >= 1e6:
    return f"{c / 1e6:.1f}M"
  if c >= 1e3:
    return f"{c / 1e3:.1f}k"
  return f"{c:.0f}"


def to_markdown(rows, digits: int = 3, mark_best: bool = False,
                published: bool = False) -> str:
  """The rows as a Markdown table (with ``published``: the published BPC at each row's characters)."""
  header = ["method", "lr", "valid BPC", "test BPC", "seeds", "characters trained"]
  if published:
    header.append("published OK valid BPC at these characters")
  body = []
  for r in rows:
    if r["chars_min"] != r["chars_max"]:
      chars = f"{fmt_chars(r['chars_min'])}–{fmt_chars(r['chars_max'])}"
    else:
      chars = fmt_chars(r["chars"])
    lr = common.lr_str(r["lr"])
    if mark_best and r.get("best_lr"):
      lr += " *"
    cells = [r["method"], lr,
             fmt_mean_std(r["valid_bpc_mean"], r["valid_bpc_std"], digits),
             fmt_mean_std(r["test_bpc_mean"], r["test_bpc_std"], digits),
             str(r["seeds"]), chars]
    if published:
      at = None if r["method"] == PUBLISHED_LABEL else published_at_chars(r["chars_max"])
      cells.append(published_lib.band_text(at, digits))
    body.append(cells)
  return tables.markdown(body, header)


def csv_value(column: str, value):
  """A value as the CSV holds it: NaN empty, whole counts (chars, best_step_mean) as integers."""
  if isinstance(value, float) and math.isnan(value):
    return ""
  if column in ("chars", "best_step_mean") and isinstance(value, float) and value.is_integer():
    return int(value)
  return value


def ptb_table(paths, csv_path: str | None = None,
              published: bool = False, all_lrs: bool = False,
              digits: int = 3, at_steps=()) -> tuple[str, list[dict]]:
  """Builds the table of the runs under `paths`; returns (markdown, rows).

  Writes the rows (best lr per method, plus the published row) to csv_path
  unless it is None. With all_lrs the markdown gets a second table with every
  (method, lr) pair, the best marked with *.
  """
  runs = common.load_runs(paths, task="ptb")
  done, unfinished = finished_runs(runs)
  for r in unfinished:
    logging.warning("no results.json yet, left out: %s", r.path)
  rows = table_rows(done)
  if published:
    rows.append(published_row())
  text = to_markdown(rows, digits, published=published)
  if at_steps:
    text += ("\n\nValidation BPC at the same steps (published: mean and range of the five "
             "runs):\n\n" + steps_markdown(runs, at_steps, digits))
  if all_lrs:
    text += ("\n\nAll learning rates (* = best mean valid BPC):\n\n" +
             to_markdown(table_rows(done, all_lrs=True), digits, mark_best=True))
  if csv_path:
    tables.write_csv(csv_path, ({k: csv_value(k, v) for k, v in r.items()} for r in rows),
                     CSV_FIELDS)
  return text, rows


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``; the run directories are arguments."""
  fv = flag_values
  flags.DEFINE_string("csv", "", "Also write the rows to this CSV file (none if empty).",
                      flag_values=fv)
  flags.DEFINE_boolean("published", False, "add the published OK r=8 row", flag_values=fv)
  flags.DEFINE_boolean("all_lrs", False, "also print every learning rate", flag_values=fv)
  flags.DEFINE_integer("digits", 3, "decimals of the BPC", flag_values=fv)
  common.define_at_steps(fv, "validation BPC")


def run(flag_values: flags.FlagValues, paths) -> tuple[str, list[dict]]:
  """The table of the runs under ``paths`` as the flags say: printed, the rows to --csv."""
  common.require_paths(paths)
  fv = flag_values
  text, rows = ptb_table(paths, csv_path=fv.csv, published=fv.published, all_lrs=fv.all_lrs,
                         digits=fv.digits, at_steps=common.int_list(fv.at_steps))
  print(text)
  return text, rows


def main(argv):
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
