"""How noisy is each estimator?  Bias and variance against exact RTRL on PTB text.

    python -m analysis.noise                                   # defaults: 6–8 min on 2 cores
    python -m analysis.noise --sizes=16,32 --ranks=1,2 --sequences=2 --steps=40   # quick
    python -m analysis.noise --checkpoint=runs/ptb/ok_n64      # + a trained network
    python -m analysis.noise --training_run=RUN_A,RUN_B        # + every checkpoint of runs

With fixed weights, exact RTRL and each estimator run on the same PTB windows (every
window from a zero state); the estimator runs on --samples rows with identical inputs and
independent random draws, so each row is one independent estimate ĝ of the per-step
gradient g = dL_t/dW of the recurrent weights (L_t: cross-entropy of the next character
through the model's readout).  See ok_tf/diagnostics.py for the statistics.

Sweeps (all on the same --sequences windows of --steps steps from the --split text):

* size: relative variance E‖ĝ − g‖²/‖g‖² vs n ∈ --sizes for --methods (default ok r=8,
  kf_avg r=8, kf, uoro), through an untrained network (N(0, --init_stddev²) weights,
  seed --seed) and through every --checkpoint run (its best checkpoint, or --which);
* rank: relative variance vs r ∈ --ranks for the estimators that take a rank (ok, kf_avg)
  at n = --rank_units (untrained, and every --checkpoint run with that n);
* OK's choice per step of the sequence: singular values kept exactly (m), the mixed share
  of singular-value mass s_m/Σσ and the step variance (★)/‖C‖²;
* training: with --training_run, the same at the initial weights (the run's seed) and at
  every checkpoint of those runs (runs with the same n form one curve).

Exact RTRL costs O(n⁴) time and O(n³) memory: a size whose estimated work (exact
reference + estimators, GFLOP) exceeds --budget_gflop or whose exact state exceeds
--budget_mb is skipped, with the reason in the log and in the CSV (status, note).

Outputs in --out_dir: noise.csv (one row per measurement or skip), noise_steps.csv (per
step means), noise_table.md (the tables), noise_size / noise_rank / noise_ok .png/.pdf.
Prints the tables; the progress goes to the log.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top
from absl import logging  # pylint: disable=g-import-not-at-top
import matplotlib  # pylint: disable=g-import-not-at-top
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import matplotlib.ticker  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from analysis import common  # pylint: disable=g-import-not-at-top
from analysis import tables as tables_lib  # pylint: disable=g-import-not-at-top
from ok_tf import cells  # pylint: disable=g-import-not-at-top
from ok_tf import config as config_lib  # pylint: disable=g-import-not-at-top
from ok_tf import estimators  # pylint: disable=g-import-not-at-top
from ok_tf import models  # pylint: disable=g-import-not-at-top
from ok_tf import runs as runs_lib  # pylint: disable=g-import-not-at-top

# Every stochastic estimator of the registry, r = 8 where it takes a rank
# ("ok:8,kf_avg:8,kf,uoro").
DEFAULT_METHODS = ",".join(f"{name}:8" if m.takes_rank else name
                           for name, m in estimators.ESTIMATORS.items() if m.stochastic)
CSV_COLUMNS = [
    "sweep", "condition", "run", "checkpoint_step", "method", "rank", "units", "cell",
    "dtype", "status", "note", "rel_var", "rel_var_se", "rel_var_pooled", "cosine",
    "cosine_se", "bias_z", "bias_z_rms", "bias_z_max", "ok_kept", "ok_mixed_share",
    "ok_step_var_rel", "grad_norm", "loss_bits", "samples", "sequences", "steps", "burn_in",
    "est_gflop", "seconds"]
STEP_COLUMNS = ["sweep", "condition", "run", "checkpoint_step", "method", "rank", "units",
                "t", "rel_var", "cosine", "grad_norm", "kept", "mixed_share",
                "step_variance_rel"]


def parse_methods(text: str) -> list[tuple[str, int | None]]:
  """"ok:8,kf_avg:8,kf,uoro" → [("ok", 8), ("kf_avg", 8), ("kf", None), ("uoro", None)]."""
  out = []
  for item in filter(None, (s.strip() for s in text.split(","))):
    name, _, rank = item.partition(":")
    out.append((name, int(rank) if rank else None))
  return out


def rank_methods() -> list[str]:
  """The estimators that take a rank (the rank sweep's methods), from the registry."""
  return [name for name, m in estimators.ESTIMATORS.items() if m.takes_rank]


def _ints(text: str) -> list[int]:
  return [int(s) for s in text.split(",") if s.strip()]


def _list(text: str | None) -> list[str]:
  return [s.strip() for s in (text or "").split(",") if s.strip()]


# ----------------------------------------------------------------------------- work


class Study:
  """Holds the data, the options and the rows; one method per kind of measurement."""

  def __init__(self, args):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from ok_tf import diagnostics  # pylint: disable=g-import-not-at-top
    from ok_tf.data import ptb  # pylint: disable=g-import-not-at-top
    self.tf = tf
    tf.get_logger().setLevel("ERROR")   # one tf.function per measurement: retracing is expected
    self.diag = diagnostics
    self.args = args
    data = ptb.load_ptb(ptb.resolve_data_dir(args.data_dir))
    self.vocab_size = data.vocab_size
    self.sequences = diagnostics.ptb_sequences(data.split(args.split), args.sequences,
                                               args.steps + 1, seed=args.seed)
    self.methods = parse_methods(args.methods)
    self.rows = []
    self.steps_rows = []
    self.results = {}        # (sweep, condition, run, ckpt_step, method, rank, units) → result
    self._key = 0

  # -- helpers -----------------------------------------------------------------
  def next_seed(self) -> int:
    """A fresh generator key per measurement: independent random streams."""
    self._key += 1
    return 1_000_003 * int(self.args.seed) + self._key

  def untrained(self, units: int):
    import keras  # pylint: disable=g-import-not-at-top
    from ok_tf import models  # pylint: disable=g-import-not-at-top
    keras.utils.set_random_seed(self.args.seed)
    return models.RecurrentModel(self.args.cell, units, self.vocab_size,
                                 init_stddev=self.args.init_stddev, dtype=self.args.dtype)

  def cost(self, units: int, methods, cell: str) -> tuple[float, float]:
    """(estimated GFLOP, exact RTRL memory in MB) of measuring ``methods`` at n = units."""
    a = self.args
    reps = a.steps * a.sequences
    exact = self.diag.exact_cost(units, self.vocab_size, cell, a.dtype, steps=reps)
    gflop = exact["gflop"] + sum(
        self.diag.estimator_cost(m, units, self.vocab_size, r, a.samples, cell) * reps
        for m, r in methods)
    return gflop, exact["bytes"] / 1e6

  def over_budget(self, units: int, methods, cell: str) -> str | None:
    gflop, mb = self.cost(units, methods, cell)
    a = self.args
    reasons = []
    if gflop > a.budget_gflop:
      reasons.append(f"estimated {gflop:.0f} GFLOP (exact RTRL O(n^4) + estimators; "
                     f"~{gflop / a.gflops / 60:.0f} min at {a.gflops:g} GFLOP/s) > "
                     f"--budget_gflop={a.budget_gflop:g}")
    if mb > a.budget_mb:
      reasons.append(f"exact RTRL needs ~{mb:.0f} MB > --budget_mb={a.budget_mb:g}")
    return "; ".join(reasons) or None

  def skip(self, sweep, condition, run, ckpt_step, methods, units, cell, note):
    logging.warning("skipping %s n=%d (%s): %s", sweep, units, condition, note)
    for m, r in methods:
      self.rows.append({"sweep": sweep, "condition": condition, "run": run,
                        "checkpoint_step": ckpt_step, "method": m, "rank": r,
                        "units": units, "cell": cell, "dtype": self.args.dtype,
                        "status": "skipped", "note": note})

  def measure(self, sweep, condition, run, ckpt_step, model, methods, refs=None):
    """Measures ``methods`` on ``model``; reuses identical earlier measurements."""
    a = self.args
    if refs is None:
      start = time.perf_counter()
      refs = self.diag.exact_reference(model, self.sequences)
      logging.info("%s n=%d %s: exact RTRL reference in %.1f s", sweep, model.units,
                   condition, time.perf_counter() - start)
    for m, r in methods:
      same = (condition, run, ckpt_step, m, r, model.units)
      result = next((res for key, res in self.results.items() if key[1:] == same), None)
      reused = result is not None
      if not reused:
        est = estimators.get(m, model.cell, rank=r)
        result = self.diag.measure(model, est, self.sequences, refs, samples=a.samples,
                                   burn_in=a.burn_in, seed=self.next_seed())
        logging.info("%-6s n=%-4d %-10s %-22s rel var %.4g ± %.2g, cos %.3f, bias z %+.2f"
                     "%s (%.1f s)", sweep, model.units, estimators.label(m, r),
                     condition + (f" step {ckpt_step}" if sweep == "training" else ""),
                     result.rel_var, result.rel_var_se, result.cosine, result.bias_z,
                     f", kept {result.ok_kept:.2f}, mixed share {result.ok_mixed_share:.3f}"
                     if result.ok_kept is not None else "", result.seconds)
      self.results[(sweep,) + same] = result
      row = {"sweep": sweep, "condition": condition, "run": run,
             "checkpoint_step": ckpt_step, "status": "measured",
             "note": "same measurement as the size sweep" if reused else "",
             "est_gflop": round(self.diag.estimator_cost(m, model.units, self.vocab_size, r,
                                                         a.samples, model.cell_name)
                                * a.steps * a.sequences, 1)}
      row.update(result.row())
      row["method"], row["rank"] = m, r
      self.rows.append(row)
      for t in range(result.steps):
        srow = {"sweep": sweep, "condition": condition, "run": run,
                "checkpoint_step": ckpt_step, "method": m, "rank": r,
                "units": model.units, "t": t + 1}
        for k in ("rel_var", "cosine", "grad_norm", "kept", "mixed_share",
                  "step_variance_rel"):
          if k in result.per_step:
            srow[k] = float(result.per_step[k][t])
        self.steps_rows.append(srow)
    return refs

  # -- sweeps ------------------------------------------------------------------
  def network(self, sweep, condition, run, ckpt_step, model, methods):
    note = self.over_budget(model.units, methods, model.cell_name)
    if note:
      self.skip(sweep, condition, run, ckpt_step, methods, model.units, model.cell_name, note)
      return None
    return self.measure(sweep, condition, run, ckpt_step, model, methods)

  def rank_methods(self):
    return [(m, r) for m in rank_methods() for r in _ints(self.args.ranks)]

  def untrained_sweeps(self):
    a = self.args
    condition = f"untrained N(0,{a.init_stddev:g}^2)"
    cell = a.cell
    for units in _ints(a.sizes):
      note = self.over_budget(units, self.methods, cell)
      if note:
        self.skip("size", condition, None, None, self.methods, units, cell, note)
        continue
      model = self.untrained(units)
      refs = self.measure("size", condition, None, None, model, self.methods)
      if units == a.rank_units and a.ranks:
        self.rank_sweep(condition, None, None, model, refs)
    if a.ranks and a.rank_units not in _ints(a.sizes):
      self.rank_sweep(condition, None, None, self.untrained(a.rank_units), None)

  def rank_sweep(self, condition, run, ckpt_step, model, refs):
    methods = self.rank_methods()
    note = self.over_budget(model.units, methods, model.cell_name)
    if note:
      self.skip("rank", condition, run, ckpt_step, methods, model.units, model.cell_name,
                note)
      return
    # measurements already made in the size sweep are reused, not repeated
    self.measure("rank", condition, run, ckpt_step, model, methods, refs)

  def checkpoint_sweeps(self):
    a = self.args
    for run_dir in _list(a.checkpoint):
      run = runs_lib.Run(run_dir)
      model, step = models.load_run_model(run, a.which, a.dtype, self.vocab_size)
      name = run.path.name
      condition = f"trained ({name}, step {step})"
      logging.info("checkpoint %s: n=%d, %s, step %s", run_dir, model.units,
                   run.config.get("method"), step)
      refs = self.network("size", condition, name, step, model, self.methods)
      if refs is not None and model.units == a.rank_units and a.ranks:
        self.rank_sweep(condition, name, step, model, refs)

  def training_sweeps(self):
    """Every checkpoint of the --training_run runs, and their initial weights (step 0).

    Runs whose configs differ only in bookkeeping (steps, run_dir, logging) follow the
    same trajectory (deterministic training): a step they share is measured once.
    """
    a = self.args
    seen = set()
    # the keys a resume may change (length, logging, budget) leave the trajectory alone
    bookkeeping = config_lib.may_change_on_resume() | {"resume"}
    for run_dir in _list(a.training_run):
      run = runs_lib.Run(run_dir)
      name = run.path.name
      trajectory = json.dumps({k: v for k, v in run.config.items() if k not in bookkeeping},
                              sort_keys=True)
      points = [("init", 0)] + [(step, step) for step in run.checkpoints]
      for which, step in points:
        if (trajectory, step) in seen:
          logging.info("training %s step %d: already measured in a run of the same "
                       "trajectory", name, step)
          continue
        seen.add((trajectory, step))
        model, _ = models.load_run_model(run, which, a.dtype, self.vocab_size)
        self.network("training", f"training (n={model.units})", name, step, model,
                     self.methods)


# ----------------------------------------------------------------------------- output


def csv_rows(rows, columns) -> list[dict]:
  """The rows as noise.csv and noise_steps.csv hold them: floats to 6 significant
  digits, None and NaN empty."""
  return [{k: _fmt(row.get(k)) for k in columns} for row in rows]


def _fmt(v):
  if v is None:
    return ""
  if isinstance(v, float):
    return "" if math.isnan(v) else f"{v:.6g}"
  return v


def _measured(rows, sweep, **match):
  return [r for r in rows if r["sweep"] == sweep and r["status"] == "measured"
          and all(r.get(k) == v for k, v in match.items())]


def _pm(row) -> str:
  return f"{row['rel_var']:.3g} ± {row['rel_var_se']:.2g}"


def tables(rows, methods, ranks) -> str:
  """Markdown tables of the relative variance (mean ± standard error)."""
  lines = []
  size_rows = [r for r in rows if r["sweep"] == "size"]
  conditions = list(dict.fromkeys(r["condition"] for r in size_rows))
  labels = [estimators.label(m, r) for m, r in methods]
  lines.append("Relative variance E‖ĝ − g‖²/‖g‖² (mean ± s.e.) vs network size\n")
  body = []
  for cond in conditions:
    for units in sorted({r["units"] for r in size_rows if r["condition"] == cond}):
      cells, kept, share = [], "", ""
      for m, rk in methods:
        row = next((r for r in size_rows if r["condition"] == cond and r["units"] == units
                    and r["method"] == m and r["rank"] == rk), None)
        if row is None:
          cells.append("")
        elif row["status"] != "measured":
          cells.append("skipped")
        else:
          cells.append(_pm(row))
          if row.get("ok_kept") is not None and not kept:
            kept, share = f"{row['ok_kept']:.2f}", f"{row['ok_mixed_share']:.2g}"
      body.append([cond, units, *cells, kept, share])
  lines.append(tables_lib.markdown(body, ["network", "n", *labels, "OK kept m", "OK mixed share"]))
  rank_rows = [r for r in rows if r["sweep"] == "rank"]
  if rank_rows:
    lines.append("\nRelative variance vs rank r\n")
    body = []
    for cond in dict.fromkeys(r["condition"] for r in rank_rows):
      for m in rank_methods():
        sel = [r for r in rank_rows if r["condition"] == cond and r["method"] == m]
        if not sel:
          continue
        cells = []
        for rk in ranks:
          row = next((r for r in sel if r["rank"] == rk), None)
          cells.append("" if row is None else
                       ("skipped" if row["status"] != "measured" else _pm(row)))
        body.append([cond, sel[0]["units"], m, *cells])
    lines.append(tables_lib.markdown(body, ["network", "n", "method", *(f"r={r}" for r in ranks)]))
  train_rows = [r for r in rows if r["sweep"] == "training" and r["status"] == "measured"]
  if train_rows:
    lines.append("\nOver training (every checkpoint of the --training_run runs)\n")
    body = []
    for units, step in sorted({(r["units"], r["checkpoint_step"]) for r in train_rows}):
      sel = [r for r in train_rows if (r["units"], r["checkpoint_step"]) == (units, step)]
      cells, kept, share = [], "", ""
      for m, rk in methods:
        row = next((r for r in sel if r["method"] == m and r["rank"] == rk), None)
        cells.append("" if row is None else _pm(row))
        if row is not None and row.get("ok_kept") is not None and not kept:
          kept, share = f"{row['ok_kept']:.2f}", f"{row['ok_mixed_share']:.2g}"
      body.append([units, step, *cells, kept, share])
    lines.append(tables_lib.markdown(body, ["n", "step", *labels, "OK kept m", "OK mixed share"]))
  measured = [r for r in rows if r["status"] == "measured"
              and not estimators.method(r["method"]).exact
              and isinstance(r.get("bias_z"), (int, float)) and not math.isnan(r["bias_z"])]
  if measured:
    z = np.array([r["bias_z"] for r in measured], float)
    finite = np.isfinite(z)
    worst = measured[int(np.argmax(np.where(finite, np.abs(z), -1.0)))]
    lines.append(
        f"\nBias check (z-score of the mean relative projection ⟨ĝ − g, g⟩/‖g‖², N(0, 1) "
        f"for an unbiased estimator): {len(z)} measurements, |z| > 3 in "
        f"{int(np.sum(np.abs(z) > 3))}")
    if finite.any():
      lines[-1] += (f"; finite z: rms {np.sqrt(np.mean(z[finite] ** 2)):.2f}, max |z| "
                    f"{abs(worst['bias_z']):.2f} ({estimators.label(worst['method'], worst['rank'])}"
                    f", n={worst['units']}, {worst['condition']})")
    if not finite.all():
      lines[-1] += (f"; infinite z (a deviation with zero spread over the rows: a "
                    f"deterministic error) in {int(np.sum(~finite))}")
    lines[-1] += "."
  skipped = [r for r in rows if r["status"] == "skipped"]
  if skipped:
    lines.append("\nSkipped:\n")
    for note, units in dict.fromkeys((r["note"], r["units"]) for r in skipped):
      lines.append(f"- n={units}: {note}")
  return "\n".join(lines) + "\n"


def _log2_axis(ax):
  ax.set_xscale("log", base=2)
  ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
  ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _variance_series(ax, rows, x_key, method, condition, label):
  """Relative variance ± SE against ``x_key``: solid circles untrained, dashed squares trained."""
  untrained = condition.startswith("untrained")
  ax.errorbar([r[x_key] for r in rows], [r["rel_var"] for r in rows],
              yerr=[r["rel_var_se"] for r in rows], color=estimators.color(method), capsize=2,
              marker="o" if untrained else "s", linestyle="-" if untrained else "--",
              markersize=4, label=label)


def _log_variance_axes(ax, xlabel):
  _log2_axis(ax)
  ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel("relative variance E‖ĝ − g‖² / ‖g‖²")


def plot_size(rows, methods, out) -> list[str]:
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  measured = _measured(rows, "size")
  # one series per method and condition; every trained network joins one "trained" series
  series = list(dict.fromkeys(
      r["condition"] if r["condition"].startswith("untrained") else "trained"
      for r in measured))
  for m, rk in methods:
    for name in series:
      sel = sorted((r for r in measured if r["method"] == m and r["rank"] == rk and (
          r["condition"] == name or (name == "trained" and
                                     not r["condition"].startswith("untrained")))),
                   key=lambda r: (r["units"], str(r["checkpoint_step"])))
      if not sel:
        continue
      _variance_series(ax, sel, "units", m, name, f"{estimators.label(m, rk)}, {name}")
  _log_variance_axes(ax, "hidden units n")
  ax.set_title("Gradient noise vs network size (PTB)")
  return common.finish_figure(fig, ax, out, which="both", legend_size=6.5)


def plot_rank(rows, out) -> list[str]:
  fig, ax = plt.subplots(figsize=(6.4, 4.4))
  sel_rows = _measured(rows, "rank")
  for cond in dict.fromkeys(r["condition"] for r in sel_rows):
    for m in rank_methods():
      sel = sorted((r for r in sel_rows if r["condition"] == cond and r["method"] == m),
                   key=lambda r: r["rank"])
      if not sel:
        continue
      _variance_series(ax, sel, "rank", m, cond, f"{m}, n={sel[0]['units']}, {cond}")
  _log_variance_axes(ax, "rank r (Kronecker terms)")
  ax.set_title("Gradient noise vs rank at equal memory")
  return common.finish_figure(fig, ax, out, which="both", legend_size=7)


def plot_ok(rows, steps_rows, methods, burn_in, out) -> list[str]:
  """OK's kept singular values and mixed share over a sequence (and over training)."""
  # the method that reports OK's reduction diagnostics (its ``diagnostics`` hook)
  ok = next(((m, r) for m, r in methods
             if any("kept" in s for s in steps_rows if s["method"] == m)), None)
  training = [r for r in _measured(rows, "training")]
  ncols = 3 if training else 2
  fig, axes = plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.8))
  if ok is not None:
    series = [s for s in steps_rows if s["sweep"] == "size" and s["method"] == ok[0]
              and s["rank"] == ok[1]]
    keys = list(dict.fromkeys((s["condition"], s["units"]) for s in series))
    for i, (cond, units) in enumerate(keys):
      pts = [s for s in series if (s["condition"], s["units"]) == (cond, units)]
      t = [s["t"] for s in pts]
      style = "-" if cond.startswith("untrained") else "--"
      label = f"n={units}, {'untrained' if cond.startswith('untrained') else cond}"
      axes[0].plot(t, [s["kept"] for s in pts], style, color=f"C{i % 10}", label=label)
      share = np.array([s["mixed_share"] for s in pts], float)
      axes[1].plot(t, np.where(share > 0, share, np.nan), style, color=f"C{i % 10}",
                   label=label)
    for ax in axes[:2]:
      ax.axvline(burn_in + 0.5, color="k", linewidth=0.6, alpha=0.4)
      ax.set_xlabel("step t of the sequence")
      ax.grid(True, alpha=0.3)
    axes[0].set_ylabel(f"singular values kept exactly ({estimators.label(*ok)})")
    axes[0].set_ylim(-0.2, ok[1] - 0.8)
    axes[1].set_ylabel("mixed share of singular-value mass s_m/Σσ")
    axes[1].set_yscale("log")
    if axes[0].get_legend_handles_labels()[0]:
      axes[0].legend(fontsize=6.5)
  if training:
    ax = axes[2]
    ax2 = ax.twinx()
    okrows = [r for r in training if ok and r["method"] == ok[0] and r["rank"] == ok[1]]
    for i, units in enumerate(sorted({r["units"] for r in okrows})):
      pts = sorted((r for r in okrows if r["units"] == units),
                   key=lambda r: r["checkpoint_step"])
      steps = [max(r["checkpoint_step"], 1) for r in pts]
      ax.plot(steps, [r["ok_kept"] for r in pts], "o-", color=f"C{i}", label=f"kept, n={units}")
      share = np.array([r["ok_mixed_share"] for r in pts], float)
      ax2.plot(steps, np.where(share > 0, share, np.nan), "s--", color=f"C{i}",
               label=f"mixed share, n={units}")
    ax.set_xscale("log")
    ax.set_xlabel("training step (step 0 drawn at 1)")
    ax.set_ylabel("kept m (o, solid)")
    ax2.set_ylabel("mixed share s_m/Σσ (s, dashed)")
    ax2.set_yscale("log")
    ax.set_title("OK over training", fontsize=9)
    handles = ax.get_legend_handles_labels()
    handles2 = ax2.get_legend_handles_labels()
    if handles[0]:
      ax.legend(handles[0] + handles2[0], handles[1] + handles2[1], fontsize=6.5, loc="center left")
    ax.grid(True, alpha=0.3)
  fig.tight_layout()
  paths = common.save_figure(fig, out)
  plt.close(fig)
  return paths


# ----------------------------------------------------------------------------- main


def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """The script's flags (absl), on ``flag_values``."""
  fv = flag_values
  flags.DEFINE_string("sizes", "16,32,64,128", "hidden sizes n of the size sweep",
                      flag_values=fv)
  flags.DEFINE_string("methods", DEFAULT_METHODS,
                      "estimators of the size sweep, name[:rank] with name one of "
                      f"{', '.join(estimators.ESTIMATORS)}", flag_values=fv)
  flags.DEFINE_string("ranks", "1,2,4,8,16",
                      "ranks of the rank sweep, for the estimators that take one "
                      f"({', '.join(rank_methods())}; '' for none)", flag_values=fv)
  flags.DEFINE_integer("rank_units", 64, "n of the rank sweep", flag_values=fv)
  flags.DEFINE_integer("samples", 32, "independent estimates (batch rows) per sequence",
                       flag_values=fv)
  flags.DEFINE_integer("sequences", 4, "PTB windows (sequences)", flag_values=fv)
  flags.DEFINE_integer("steps", 100, "steps per sequence (training resets every 100 by default)",
                       flag_values=fv)
  flags.DEFINE_integer("burn_in", 20, "first steps of each sequence left out of the summaries",
                       flag_values=fv)
  flags.DEFINE_enum("cell", cells.default(), list(cells.CELLS), "the cell", flag_values=fv)
  flags.DEFINE_float("init_stddev", 0.01, "σ of the untrained networks' N(0, σ²) weights",
                     flag_values=fv)
  flags.DEFINE_enum("dtype", "float64", ["float32", "float64"],
                    "float64 (default) measures the estimators' own variance; in float32 "
                    "OK's orthonormalisation cutoff adds a deterministic error floor",
                    flag_values=fv)
  flags.DEFINE_string("checkpoint", None, "comma-separated run directories of trained networks",
                      flag_values=fv)
  flags.DEFINE_enum("which", None, ["best", "latest"],
                    "checkpoint of --checkpoint runs (default: best, else latest)",
                    flag_values=fv)
  flags.DEFINE_string("training_run", None,
                      "comma-separated run directories: measure at init and every checkpoint",
                      flag_values=fv)
  flags.DEFINE_float("budget_gflop", 20000.0,
                     "skip a size whose estimated work exceeds this (GFLOP)", flag_values=fv)
  flags.DEFINE_float("budget_mb", 4000.0, "skip a size whose exact RTRL state exceeds this (MB)",
                     flag_values=fv)
  flags.DEFINE_float("gflops", 25.0,
                     "assumed throughput, only for the time estimate in skip notes",
                     flag_values=fv)
  flags.DEFINE_string("data_dir", None, "PTB character files (default: as training)",
                      flag_values=fv)
  flags.DEFINE_enum("split", "train", ["train", "valid", "test"], "the PTB text of the windows",
                    flag_values=fv)
  flags.DEFINE_integer("seed", 0,
                       "seed of the windows, the untrained weights and the random draws",
                       flag_values=fv)
  flags.DEFINE_string("out_dir", "results/noise", "output folder", flag_values=fv)
  flags.DEFINE_boolean("replot", False,
                       "measure nothing: redraw the table and figures from --out_dir's CSVs "
                       "(pass the --methods / --ranks / --burn_in of the run)", flag_values=fv)


def outputs(rows, steps_rows, methods, ranks, args, out, header) -> tuple[str, list[str]]:
  """Writes noise_table.md and the figures from the rows; returns (table, figure paths)."""
  table = header + tables(rows, methods, ranks)
  (out / "noise_table.md").write_text(table)
  figures = plot_size(rows, methods, out / "noise_size")
  figures += plot_ok(rows, steps_rows, methods, args.burn_in, out / "noise_ok")
  if any(r["sweep"] == "rank" for r in rows):
    figures += plot_rank(rows, out / "noise_rank")
  return table, figures


def run(flag_values: flags.FlagValues, argv=()) -> dict:
  """Runs the study the flags describe; returns {"csv", "steps_csv", "table", "figures",
  "rows", "seconds"}."""
  if argv:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv)}")
  args = common.flag_namespace(define_flags, flag_values)
  start = time.perf_counter()
  out = pathlib.Path(args.out_dir)
  if args.replot:
    # the rows with numbers parsed (empty cells → None)
    rows = runs_lib.read_csv(out / "noise.csv")
    steps_rows = runs_lib.read_csv(out / "noise_steps.csv")
    if not rows:
      raise SystemExit(f"--replot: no {out / 'noise.csv'}")
    old = (out / "noise_table.md").read_text().split("\n\n", 1)[0] if (
        out / "noise_table.md").exists() else "analysis/noise.py (replotted)"
    table, figures = outputs(rows, steps_rows, parse_methods(args.methods),
                             _ints(args.ranks), args, out, old + "\n\n")
    print(table)
    return {"csv": str(out / "noise.csv"), "steps_csv": str(out / "noise_steps.csv"),
            "table": str(out / "noise_table.md"), "figures": figures, "rows": rows,
            "seconds": time.perf_counter() - start}
  if args.burn_in >= args.steps:
    raise SystemExit(f"--burn_in ({args.burn_in}) must be below --steps ({args.steps})")
  if args.samples < 2:
    raise SystemExit("--samples must be at least 2")
  study = Study(args)
  study.untrained_sweeps()
  study.checkpoint_sweeps()
  study.training_sweeps()
  out.mkdir(parents=True, exist_ok=True)
  tables_lib.write_csv(out / "noise.csv", csv_rows(study.rows, CSV_COLUMNS), CSV_COLUMNS)
  tables_lib.write_csv(out / "noise_steps.csv", csv_rows(study.steps_rows, STEP_COLUMNS),
                       STEP_COLUMNS)
  seconds = time.perf_counter() - start
  header = (f"analysis/noise.py: cell {args.cell}, {args.dtype}, {args.sequences} PTB "
            f"{args.split} windows of {args.steps} steps (burn-in {args.burn_in}), "
            f"{args.samples} estimates each; {seconds / 60:.1f} min.\n\n")
  table, figures = outputs(study.rows, study.steps_rows, study.methods, _ints(args.ranks),
                           args, out, header)
  seconds = time.perf_counter() - start
  logging.info("wrote %s, %s, %s and %s in %.1f min", out / "noise.csv",
               out / "noise_steps.csv", out / "noise_table.md", ", ".join(figures),
               seconds / 60)
  print(table)
  return {"csv": str(out / "noise.csv"), "steps_csv": str(out / "noise_steps.csv"),
          "table": str(out / "noise_table.md"), "figures": figures, "rows": study.rows,
          "seconds": seconds}


def main(argv):
  run(flags.FLAGS, argv[1:])


if __name__ == "__main__":
  define_flags()
  app.run(main)
