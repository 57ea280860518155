"""Copy task: the level each method reaches, as a table, from run directories.

    python -m analysis.copy_table RUN_DIRS... [--csv copy_table.csv] [--published]
        [--fractions 0.25,0.5,1] [--at_steps 6000,9000]

One row per method label (split by setting and learning rate where the runs of a method
differ in them: common.group_runs): the seeds,
the level at the given fractions of the shortest run's characters (mean over seeds,
per-seed values in brackets), the highest level reached, the characters, and the mean
wall time and steps/s (from metrics.csv). --published adds a row with the published
OK runs' level (n 128, r 16; analysis/published/: mean and range of the five runs) at
the same characters, and a second table at the published anchor points.
--at_steps=6000,9000,... prints the level of every method at those steps beside the
published runs' at the same steps. Markdown to stdout, the rows to CSV.
"""

from __future__ import annotations

from absl import app
from absl import flags
import numpy as np

from analysis import common
from analysis import published as published_lib
from analysis import ptb_table
from analysis import tables


def level_at(rows, chars: float) -> int:
  """The level logged at the last row with at most ``chars`` characters (1 before any)."""
  level = 1
  for r in rows:
    if r["chars"] <= chars:
      level = int(r["level"])
  return level


def table_rows(runs, fractions=(0.25, 0.5, 1.0)) -> list[dict]:
  rows = []
  for label, members in common.group_runs(runs).items():
    members = [m for m in members if m.metrics]
    if not members:
      continue
    end = min(m.metrics[-1]["chars"] for m in members)
    row = {"method": label, "lr": members[0].config.get("lr"), "seeds": len(members),
           "chars": end}
    for f in fractions:
      levels = [level_at(m.metrics, f * end) for m in members]
      row[f"level@{f:g}"] = levels
    row["max_level"] = [max(int(r["level"]) for r in m.metrics) for m in members]
    row["wall_time"] = common.mean_std([m.metrics[-1]["wall_time"] for m in members])[0]
    row["steps_per_sec"] = common.mean_std(
        [m.metrics[-1]["step"] / m.metrics[-1]["wall_time"] for m in members])[0]
    row["run_dirs"] = ";".join(str(m.path) for m in members)
    rows.append(row)
  return rows


def _levels(levels) -> str:
  mean = sum(levels) / len(levels)
  text = f"{mean:.1f}" if len(levels) > 1 else f"{levels[0]}"
  return text + (f" ({', '.join(map(str, levels))})" if len(levels) > 1 else "")


def published_at_chars(chars: float) -> dict | None:
  """The published level (mean, min, max) at the step with these characters."""
  p = published_lib.copy_levels()
  return published_lib.at_step(p, chars / p["batch_size"])


def to_markdown(rows, fractions, published: bool = False) -> str:
  end = ptb_table.fmt_chars(min(r["chars"] for r in rows)) if rows else "n/a"
  header = (["method", "lr", "seeds"] + [f"level at {f:g}×" for f in fractions] +
            ["highest level", "steps/s", "training time"])
  body = []
  for r in rows:
    cells = [r["method"], common.lr_str(r["lr"]), str(r["seeds"])]
    cells += [_levels(r[f"level@{f:g}"]) for f in fractions]
    wall = r["wall_time"]
    cells += [_levels(r["max_level"]), f"{r['steps_per_sec']:.0f}",
              f"{wall:.0f} s" if wall < 120 else f"{wall / 60:.0f} min"]
    body.append(cells)
  if published and rows:
    end_chars = min(r["chars"] for r in rows)
    cells = ["published OK r=16, n=128: mean (range of 5)", common.lr_str(10 ** -3.5), "5"]
    cells += [published_lib.band_text(published_at_chars(f * end_chars)) for f in fractions]
    cells += ["–", "–", "–"]
    body.append(cells)
  return (f"Levels at fractions of {end} characters (mean over seeds, per seed in brackets):"
          "\n\n" + tables.markdown(body, header, "l" + "r" * (len(header) - 1)))


ANCHOR_STEPS = (10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 1_500_000, 2_000_000)


def published_markdown() -> str:
  """The published runs' levels at anchor steps (mean, per run)."""
  p = published_lib.copy_levels()
  body = []
  for step in ANCHOR_STEPS:
    i = int(np.searchsorted(p["step"], step))
    body.append([f"{step / 1e6:g}M", ptb_table.fmt_chars(float(p["chars"][i])),
                 f"{p['mean'][i]:.1f}", ", ".join(str(int(v)) for v in p["per_run"][i])])
  return (f"{p['label']}, level T:\n\n"
          + tables.markdown(body, ["steps", "characters", "mean", "per run"], "rrrl"))


def steps_markdown(runs, steps) -> str:
  """The level of every method at ``steps`` (mean over seeds) beside the published runs'."""
  header = ["method", "lr"] + [f"{s // 1000}k" if s % 1000 == 0 else str(s) for s in steps]
  body = []
  for label, members in common.group_runs(runs).items():
    members = [m for m in members if m.metrics]
    if not members:
      continue
    cells = [label, common.lr_str(members[0].config.get("lr"))]
    for s in steps:
      levels = [level_at(m.metrics, s * m.config["batch_size"]) for m in members
                if m.metrics[-1]["step"] >= s]
      cells.append(_levels(levels) if levels else "–")
    body.append(cells)
  p = published_lib.copy_levels()
  cells = ["published OK r=16, n=128: mean (range of 5)", common.lr_str(p["lr"])]
  cells += [published_lib.band_text(published_lib.at_step(p, s)) for s in steps]
  body.append(cells)
  return tables.markdown(body, header)


def csv_columns(fractions) -> list[str]:
  """The columns of the CSV of the rows."""
  return (["method", "lr", "seeds", "chars"] + [f"level@{f:g}" for f in fractions] +
          ["max_level", "steps_per_sec", "wall_time", "run_dirs"])


def csv_rows(rows) -> list[dict]:
  """The rows as the CSV holds them: a list (levels per seed, run folders) joined by ";"."""
  return [{k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()}
          for r in rows]


def copy_table(paths, csv_path: str | None = None, published: bool = False,
               fractions=(0.25, 0.5, 1.0), at_steps=()) -> tuple[str, list[dict]]:
  runs = common.load_runs(paths, task="copy")
  rows = table_rows(runs, fractions)
  text = to_markdown(rows, fractions, published=published)
  if at_steps:
    text += ("\n\nLevel at the same steps (mean over seeds; published: mean and range of "
             "the five runs):\n\n" + steps_markdown(runs, at_steps))
  if published:
    text += "\n\n" + published_markdown()
  if csv_path:
    tables.write_csv(csv_path, csv_rows(rows), csv_columns(fractions))
  return text, rows


def _valid_fractions(values) -> bool:
  try:
    return all(0 < float(v) <= 1 for v in values)   # False for nan
  except ValueError:
    return False


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``; the run directories are arguments."""
  fv = flag_values
  flags.DEFINE_string("csv", "", "Also write the rows to this CSV file (none if empty).",
                      flag_values=fv)
  flags.DEFINE_boolean("published", False, "add the published OK levels (n 128, r 16)",
                       flag_values=fv)
  flags.DEFINE_list("fractions", ["0.25", "0.5", "1"],
                    "fractions of the shortest run's characters", flag_values=fv)
  common.define_at_steps(fv, "levels")
  flags.register_validator("fractions", _valid_fractions, "--fractions must lie in (0, 1]",
                           flag_values=fv)


def run(flag_values: flags.FlagValues, paths) -> tuple[str, list[dict]]:
  """The table of the runs under ``paths`` as the flags say: printed, the rows to --csv."""
  common.require_paths(paths)
  fv = flag_values
  fractions = tuple(float(x) for x in fv.fractions)
  text, rows = copy_table(paths, fv.csv, fv.published, fractions, common.int_list(fv.at_steps))
  print(text)
  return text, rows


def main(argv):
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
