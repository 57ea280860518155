"""Copy task: the level each method reaches, as a table, from run directories.

    python analysis/copy_table.py RUN_DIRS... [--csv copy_table.csv] [--published]
        [--fractions 0.25,0.5,1]

One row per method label (and learning rate, when a method has several): the seeds,
the level at the given fractions of the shortest run's characters (mean over seeds,
per-seed values in brackets), the highest level reached, the characters, and the mean
wall time and steps/s (from metrics.csv). --published adds the published OK runs'
levels (n 128, r 16; PROTOCOL.md) at their own characters, as a second table. Markdown
to stdout, the rows to CSV.
"""

from __future__ import annotations

import argparse
import csv
import math
import pathlib
import sys

_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
  sys.path.insert(0, str(_ROOT))

from analysis import common  # pylint: disable=g-import-not-at-top
from analysis import ptb_table  # pylint: disable=g-import-not-at-top


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
    members = [m for m in members if m["metrics"]]
    if not members:
      continue
    end = min(m["metrics"][-1]["chars"] for m in members)
    row = {"method": label, "lr": members[0]["config"].get("lr"), "seeds": len(members),
           "chars": end}
    for f in fractions:
      levels = [level_at(m["metrics"], f * end) for m in members]
      row[f"level@{f:g}"] = levels
    row["max_level"] = [max(int(r["level"]) for r in m["metrics"]) for m in members]
    row["wall_time"] = common.mean_std([m["metrics"][-1]["wall_time"] for m in members])[0]
    row["steps_per_sec"] = common.mean_std(
        [m["metrics"][-1]["step"] / m["metrics"][-1]["wall_time"] for m in members])[0]
    row["run_dirs"] = ";".join(m["path"] for m in members)
    rows.append(row)
  return rows


def _levels(levels) -> str:
  mean = sum(levels) / len(levels)
  text = f"{mean:.1f}" if len(levels) > 1 else f"{levels[0]}"
  return text + (f" ({', '.join(map(str, levels))})" if len(levels) > 1 else "")


def to_markdown(rows, fractions) -> str:
  end = ptb_table.fmt_chars(min(r["chars"] for r in rows)) if rows else "n/a"
  header = (["method", "lr", "seeds"] + [f"level at {f:g}×" for f in fractions] +
            ["highest level", "steps/s", "training time"])
  lines = [f"Levels at fractions of {end} characters (mean over seeds, per seed in "
           "brackets):", "", "| " + " | ".join(header) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
  for r in rows:
    cells = [r["method"], common.lr_str(r["lr"]), str(r["seeds"])]
    cells += [_levels(r[f"level@{f:g}"]) for f in fractions]
    wall = r["wall_time"]
    cells += [_levels(r["max_level"]), f"{r['steps_per_sec']:.0f}",
              f"{wall:.0f} s" if wall < 120 else f"{wall / 60:.0f} min"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def published_markdown() -> str:
  p = common.PUBLISHED_COPY
  lines = [f"{p['label']}, level T:", "",
           "| steps | characters | mean | per seed |", "|---:|---:|---:|---|"]
  for steps, chars, mean, seeds in zip(p["steps"], p["chars"], p["mean"], p["per_seed"]):
    lines.append(f"| {steps / 1e6:g}M | {ptb_table.fmt_chars(float(chars))} | {mean:.1f} | "
                 f"{', '.join(str(int(s)) for s in seeds)} |")
  return "\n".join(lines)


def write_csv(rows, path, fractions) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fields = (["method", "lr", "seeds", "chars"] + [f"level@{f:g}" for f in fractions] +
            ["max_level", "steps_per_sec", "wall_time", "run_dirs"])
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in rows:
      w.writerow({k: (";".join(map(str, v)) if isinstance(v, list) else v)
                  for k, v in r.items()})


def copy_table(paths, csv_path: str | None = "copy_table.csv", published: bool = False,
               fractions=(0.25, 0.5, 1.0)) -> tuple[str, list[dict]]:
  runs = common.load_runs(paths, task="copy")
  rows = table_rows(runs, fractions)
  text = to_markdown(rows, fractions)
  if published:
    text += "\n\n" + published_markdown()
  if csv_path:
    write_csv(rows, csv_path, fractions)
  return text, rows


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("runs", nargs="+", help="run directories or folders")
  parser.add_argument("--csv", default="copy_table.csv", help="CSV output path")
  parser.add_argument("--published", action="store_true",
                      help="add the published OK levels (n 128, r 16)")
  parser.add_argument("--fractions", default="0.25,0.5,1",
                      help="fractions of the shortest run's characters")
  args = parser.parse_args(argv)
  fractions = tuple(float(x) for x in args.fractions.split(","))
  if any(not 0 < f <= 1 or math.isnan(f) for f in fractions):
    parser.error("--fractions must lie in (0, 1]")
  text, _ = copy_table(args.runs, args.csv, args.published, fractions)
  print(text)


if __name__ == "__main__":
  main()
