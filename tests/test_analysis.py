"""Tests of the analysis scripts on synthetic run directories (and their command lines)."""

import csv
import logging
import math
import os
import pathlib
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np
import pytest

from analysis import common
from analysis import copy_table
from analysis import plot_copy
from analysis import plot_ptb
from analysis import published
from analysis import ptb_table
from analysis import tables
from ok_tf import runs

ROOT = pathlib.Path(__file__).resolve().parents[1]

LR_A = 1e-3
LR_B = 10 ** -3.5


def _copy_run(path, method, seed, steps, slope, **extra):
  config = {"task": "copy", "method": method, "rank": 16, "truncation": 25,
            "lr": LR_B, "seed": seed, "batch_size": 16, "steps": steps}
  config.update(extra)
  rd = runs.RunDir.create(path, config)
  for step in range(0, steps + 1, 100):
    chars = step * 16
    rd.log_metrics({"step": step, "chars": chars, "level": 1 + slope * chars,
                    "ema_bits": 0.2, "loss_bits": 0.2, "steps_per_sec": 100.0,
                    "wall_time": step / 100.0})
  rd.close()


@pytest.fixture()
def copy_runs(tmp_path):
  base = tmp_path / "copy"
  _copy_run(base / "ok_s0", "ok", 0, 1000, 1e-3)
  _copy_run(base / "ok_s1", "ok", 1, 800, 2e-3)      # the shorter seed
  _copy_run(base / "tbptt_s0", "tbptt", 0, 1000, 5e-4)
  _copy_run(base / "tbptt_s1", "tbptt", 1, 1000, 1e-3)
  return base


# best_valid_bpc, test_bpc per (method, lr, seed). For ok, lr A has the best
# single seed (1.70) but lr B the best mean (1.76 < 1.80).
PTB_RESULTS = {
    ("ok", LR_A): [(1.70, 1.68), (1.90, 1.88)],
    ("ok", LR_B): [(1.75, 1.72), (1.77, 1.75)],
    ("tbptt", LR_A): [(1.60, 1.58), (1.64, 1.60)],
    ("tbptt", LR_B): [(1.66, 1.62), (1.68, 1.65)],
}


def _ptb_run(path, method, lr, seed, best, test, steps=100_000):
  config = {"task": "ptb", "method": method, "rank": 8, "truncation": 100,
            "lr": lr, "seed": seed, "batch_size": 32, "steps": steps}
  rd = runs.RunDir.create(path, config)
  evals = list(range(10_000, steps + 1, 10_000))
  for i, step in enumerate(evals):
    bpc = best + 1.0 * (len(evals) - 1 - i) / len(evals)
    rd.log_eval({"step": step, "chars": step * 32, "valid_bpc": bpc,
                 "wall_time": step / 50.0})
  rd.write_results({"best_valid_bpc": best, "best_step": steps,
                    "test_bpc": test, "final_valid_bpc": best,
                    "wall_time": steps / 50.0, "steps_per_sec": 50.0,
                    "chars": steps * 32})
  rd.close()


@pytest.fixture()
def ptb_runs(tmp_path):
  base = tmp_path / "ptb"
  for (method, lr), seeds in PTB_RESULTS.items():
    for seed, (best, test) in enumerate(seeds):
      _ptb_run(base / f"{method}_{lr:g}_s{seed}", method, lr, seed, best, test)
  # an unfinished run (no results.json) and a copy run: both left out
  rd = runs.RunDir.create(base / "unfinished", {"task": "ptb", "method": "uoro",
                                         "lr": LR_A, "seed": 0})
  rd.log_eval({"step": 10_000, "chars": 320_000, "valid_bpc": 3.0,
               "wall_time": 1.0})
  rd.close()
  _copy_run(base / "a_copy_run", "ok", 0, 200, 1e-3)
  return base


def _nonempty(paths, prefix):
  assert sorted(paths) == [f"{prefix}.pdf", f"{prefix}.png"]
  for p in paths:
    assert pathlib.Path(p).stat().st_size > 1000


def test_method_label_and_order_from_the_registry():
  label = common.method_label
  assert label({"method": "ok", "rank": 16}) == "ok (r=16)"
  assert label({"method": "kf_avg", "rank": 8}) == "kf_avg (r=8)"
  assert label({"method": "kf", "rank": 16}) == "kf"
  assert label({"method": "uoro", "rank": 16}) == "uoro"
  assert label({"method": "rtrl", "truncation": 5}) == "rtrl"
  assert label({"method": "tbptt", "truncation": 25, "rank": 16}) == "tbptt (T=25)"
  assert label({"method": "ok", "rank": 16.0}) == "ok (r=16)"
  assert label({"method": "new_method", "rank": 3}) == "new_method"
  configs = [{"method": "tbptt", "truncation": 100}, {"method": "zzz"}, {"method": "uoro"},
             {"method": "ok", "rank": 16}, {"method": "tbptt", "truncation": 25},
             {"method": "ok", "rank": 8}, {"method": "kf"}]
  assert [label(c) for c in sorted(configs, key=common.method_sort_key)] == [
      "ok (r=8)", "ok (r=16)", "kf", "uoro", "tbptt (T=25)", "tbptt (T=100)", "zzz"]


def test_align_curves():
  x = np.array([0.0, 10.0, 20.0])
  grid, ys = common.align_curves([(x, x), (x[:2], 2 * x[:2])])
  np.testing.assert_array_equal(grid, [0.0, 10.0])  # shared x values kept
  np.testing.assert_array_equal(ys, [[0, 10], [0, 20]])
  grid, ys = common.align_curves([(x, x), (np.array([0.0, 15.0]),
                                           np.array([0.0, 15.0]))], num=4)
  np.testing.assert_allclose(grid, [0, 5, 10, 15])
  np.testing.assert_allclose(ys, [[0, 5, 10, 15]] * 2)


def test_copy_curves(copy_runs):
  curves = plot_copy.copy_curves(common.load_runs([copy_runs], task="copy"))
  assert list(curves) == ["ok (r=16)", "tbptt (T=25)"]
  ok = curves["ok (r=16)"]
  assert ok["n"] == 2 and ok["x"][-1] == 800 * 16  # up to the shortest seed
  np.testing.assert_allclose(ok["mean"], 1 + 1.5e-3 * ok["x"])
  np.testing.assert_allclose(ok["min"], 1 + 1e-3 * ok["x"])
  np.testing.assert_allclose(ok["max"], 1 + 2e-3 * ok["x"])
  assert curves["tbptt (T=25)"]["x"][-1] == 1000 * 16


def test_copy_groups_split_by_lr(tmp_path):
  _copy_run(tmp_path / "a", "ok", 0, 200, 1e-3, lr=LR_A)
  _copy_run(tmp_path / "b", "ok", 0, 200, 1e-3, lr=LR_B)
  groups = common.group_runs(common.load_runs([tmp_path]))
  assert list(groups) == ["ok (r=16), lr 10^-3.5", "ok (r=16), lr 10^-3"]


def test_groups_never_pool_different_settings(tmp_path):
  """Runs that differ in a setting (here --grad_scale, then --clip) are not seeds of one
  group; only the differing settings are named, and lr still splits within a setting."""
  _copy_run(tmp_path / "p0", "ok", 0, 200, 1e-3, grad_scale="published", clip=1.0)
  _copy_run(tmp_path / "p1", "ok", 1, 200, 1e-3, grad_scale="published", clip=1.0)
  _copy_run(tmp_path / "m", "ok", 0, 200, 1e-3, grad_scale="mean", clip=1.0)
  _copy_run(tmp_path / "m16", "ok", 0, 200, 1e-3, grad_scale="mean", clip=16.0, lr=LR_A)
  _copy_run(tmp_path / "m16b", "ok", 0, 200, 1e-3, grad_scale="mean", clip=16.0)
  _copy_run(tmp_path / "t", "tbptt", 0, 200, 1e-3, grad_scale="mean", clip=1.0)
  groups = common.group_runs(common.load_runs([tmp_path]))
  sizes = {label: len(members) for label, members in groups.items()}
  assert list(sizes) == [   # settings in order (numbers by value, then text), methods
      "ok (r=16), grad_scale mean, clip 1", "ok (r=16), grad_scale mean, clip 16, lr 10^-3.5",
      "ok (r=16), grad_scale mean, clip 16, lr 10^-3",
      "ok (r=16), grad_scale published, clip 1", "tbptt (T=25)"]
  assert sizes == {
      "ok (r=16), grad_scale published, clip 1": 2,
      "ok (r=16), grad_scale mean, clip 1": 1,
      "ok (r=16), grad_scale mean, clip 16, lr 10^-3.5": 1,
      "ok (r=16), grad_scale mean, clip 16, lr 10^-3": 1,
      "tbptt (T=25)": 1}
  pooled = common.group_runs(common.load_runs([tmp_path]), split_lr=False)
  assert len(pooled["ok (r=16), grad_scale mean, clip 16"]) == 2
  # a config without grad_scale means "mean" (its absent rule); clip 1 and 1.0 are one
  _copy_run(tmp_path / "old", "tbptt", 1, 200, 1e-3, clip=1)
  _copy_run(tmp_path / "t2", "tbptt", 2, 200, 1e-3, grad_scale="mean", clip=1.0)
  groups = common.group_runs(common.load_runs([tmp_path]))
  assert len(groups["tbptt (T=25)"]) == 3


def test_plot_copy(copy_runs, tmp_path):
  out = str(tmp_path / "figs" / "copy_curve")
  _nonempty(plot_copy.plot_copy([str(copy_runs)], out=out, published=True), out)
  out2 = str(tmp_path / "copy_wall")
  _nonempty(plot_copy.plot_copy([str(copy_runs)], out=out2, x="wall_time"), out2)
  out3 = str(tmp_path / "copy_log")
  _nonempty(plot_copy.plot_copy([str(copy_runs)], out=out3, published=True, logx=True), out3)


def test_plot_copy_command_line(copy_runs, tmp_path):
  """``python -m analysis.plot_copy`` from the repository root: the figures' paths printed."""
  out = tmp_path / "cli_curve"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run(
      [sys.executable, "-m", "analysis.plot_copy", str(copy_runs), "--published", "--out",
       str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == [str(out) + ".png", str(out) + ".pdf"]
  _nonempty(proc.stdout.split(), str(out))
  proc = subprocess.run([sys.executable, "-m", "analysis.plot_copy", "--out", str(out)],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                        check=False)
  assert proc.returncode != 0 and "run directories" in proc.stderr


def test_scripts_run_in_one_process_with_their_own_flags(copy_runs, tmp_path, capsys):
  """Scripts that share flag names (--out, --csv, --published, ...) run side by side."""
  out = str(tmp_path / "copy_curve")
  assert common.run_script(plot_copy, [str(copy_runs), f"--out={out}", "--logx"]) == [
      out + ".png", out + ".pdf"]
  text, rows = common.run_script(copy_table, [str(copy_runs), "--csv=", "--fractions=0.5,1",
                                              "--at_steps=100,200"])
  assert [r["method"] for r in rows] == ["ok (r=16)", "tbptt (T=25)"]
  assert text in capsys.readouterr().out and "| 100 | 200 |" in text
  with pytest.raises(flags.IllegalFlagValueError):
    common.run_script(copy_table, [str(copy_runs), "--fractions=0,1"])
  with pytest.raises(flags.IllegalFlagValueError):
    common.run_script(ptb_table, [str(copy_runs), "--at_steps=1k"])
  with pytest.raises(app.UsageError):
    common.run_script(ptb_table, [])


def test_published_curves_match_the_anchor_points():
  """The CSVs give the published anchor points (mean of the five runs)."""
  copy = published.copy_levels()
  assert copy["per_run"].shape == (2000, 5) and copy["step"][0] == 1000
  np.testing.assert_array_equal(copy["chars"], copy["step"] * 16)
  at = {s: published.at_step(copy, s)["mean"] for s in (10_000, 50_000, 100_000, 2_000_000)}
  assert at == pytest.approx({10_000: 4.0, 50_000: 11.8, 100_000: 16.0, 2_000_000: 41.8})
  assert published.at_step(copy, 12_500)["step"] == 12_000  # the last point at or before
  assert published.at_step(copy, 500) is None and published.at_step(copy, 3e6) is None
  ptb_ = published.ptb_valid()
  assert published.at_step(ptb_, 10_000)["mean"] == pytest.approx(2.9736)
  assert published.at_step(ptb_, 10_000)["min"] == pytest.approx(2.9705)
  np.testing.assert_allclose(ptb_["best_per_run"], [1.7411, 1.7404, 1.7414, 1.7447, 1.7433])
  assert published.band_text(published.at_step(copy, 30_000)) == "9.4 (8–10)"


def test_tables_quote_the_published_runs_at_the_same_steps(copy_runs, ptb_runs, tmp_path):
  text, _ = copy_table.copy_table([str(copy_runs)], csv_path=None, published=True,
                                  at_steps=[1000, 2000])
  assert "published OK r=16, n=128: mean (range of 5)" in text
  assert "| 1k | 2k |" in text
  text, _ = ptb_table.ptb_table([str(ptb_runs)], csv_path=None, published=True,
                                at_steps=[10_000])
  assert "published OK valid BPC at these characters" in text
  assert "2.974 (2.970–2.978)" in text


def test_plot_ptb(ptb_runs, tmp_path):
  runs_ = common.load_runs([ptb_runs], task="ptb")
  curves = plot_ptb.ptb_curves(runs_)
  # canonical method order; the unfinished uoro run is drawn from its eval.csv
  assert list(curves) == ["ok (r=8), lr 10^-3.5", "uoro",
                          "tbptt (T=100), lr 10^-3"]
  np.testing.assert_allclose(curves["ok (r=8), lr 10^-3.5"]["mean"][-1], 1.76)
  assert len(plot_ptb.ptb_curves(runs_, all_lrs=True)) == 5
  out = str(tmp_path / "ptb_curve")
  _nonempty(plot_ptb.plot_ptb([str(ptb_runs)], out=out, published=True), out)
  out2 = str(tmp_path / "ptb_all")
  _nonempty(plot_ptb.plot_ptb([str(ptb_runs)], out=out2, all_lrs=True), out2)


def test_ptb_table(ptb_runs, tmp_path, caplog):
  csv_path = tmp_path / "table.csv"
  with caplog.at_level(logging.WARNING):
    text, rows = ptb_table.ptb_table([str(ptb_runs)], csv_path=str(csv_path),
                                     published=True)
  assert "unfinished" in caplog.text
  assert [r["method"] for r in rows] == ["ok (r=8)", "tbptt (T=100)",
                                         "OK r=8 (published)"]
  ok, tbptt, pub = rows
  # best lr by mean best_valid_bpc, not by the best single seed
  assert ok["lr"] == LR_B and tbptt["lr"] == LR_A
  assert ok["valid_bpc_mean"] == pytest.approx(1.76)
  assert ok["valid_bpc_std"] == pytest.approx(math.sqrt(2 * 0.01 ** 2))
  assert ok["test_bpc_mean"] == pytest.approx(1.735)
  assert ok["test_bpc_std"] == pytest.approx(0.015 * math.sqrt(2))
  assert tbptt["valid_bpc_mean"] == pytest.approx(1.62)
  assert tbptt["test_bpc_std"] == pytest.approx(0.01 * math.sqrt(2))
  assert ok["seeds"] == 2 and ok["chars"] == 3_200_000
  assert pub["valid_bpc_mean"] == pytest.approx(1.74218)
  assert pub["valid_bpc_std"] == pytest.approx(0.0017712, abs=1e-6)

  lines = text.splitlines()
  assert lines[0] == ("| method | lr | valid BPC | test BPC | seeds | "
                      "characters trained | published OK valid BPC at these characters |")
  # 3.2M characters = 100k steps of 32 streams: the published runs' 2.0736 (2.069–2.077)
  assert lines[2] == ("| ok (r=8) | 10^-3.5 | 1.760 ± 0.014 | 1.735 ± 0.021 | 2 | 3.2M | "
                      "2.074 (2.069–2.077) |")
  assert lines[3] == ("| tbptt (T=100) | 10^-3 | 1.620 ± 0.028 | 1.590 ± 0.014 | 2 | 3.2M | "
                      "2.074 (2.069–2.077) |")
  assert lines[4] == "| OK r=8 (published) | 10^-3.5 | 1.742 ± 0.002 | n/a | 5 | 32.0M | – |"

  with open(csv_path, newline="") as f:
    table = list(csv.DictReader(f))
  assert [r["method"] for r in table] == ["ok (r=8)", "tbptt (T=100)",
                                          "OK r=8 (published)"]
  assert float(table[0]["lr"]) == pytest.approx(LR_B)
  assert float(table[0]["valid_bpc_mean"]) == pytest.approx(1.76)
  assert float(table[0]["valid_bpc_std"]) == pytest.approx(0.0141421356)
  assert table[0]["chars"] == "3200000" and table[0]["seeds"] == "2"
  assert table[2]["test_bpc_mean"] == ""


def test_ptb_table_all_lrs_command_line(ptb_runs, tmp_path, capsys):
  csv_path = tmp_path / "t.csv"
  common.run_script(ptb_table, [str(ptb_runs), "--csv", str(csv_path), "--all_lrs"])
  out = capsys.readouterr().out
  assert "| ok (r=8) | 10^-3 * |" not in out
  assert "| ok (r=8) | 10^-3.5 * | 1.760 ± 0.014 |" in out
  assert "| ok (r=8) | 10^-3 | 1.800 ± 0.141 |" in out
  assert csv_path.exists()


def test_tables_write_no_csv_unless_asked(copy_runs, ptb_runs, tmp_path, monkeypatch):
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  common.run_script(copy_table, [str(copy_runs)])
  common.run_script(ptb_table, [str(ptb_runs)])
  assert list(cwd.iterdir()) == []


def test_copy_table_levels_at_fractions_of_the_shortest_run(copy_runs, tmp_path):
  """Levels read at the last logged row at or before each fraction of the group's end."""
  text, rows = copy_table.copy_table([str(copy_runs)], str(tmp_path / "t.csv"),
                                     published=True, fractions=(0.5, 1.0))
  by = {r["method"]: r for r in rows}
  ok, tbptt = by["ok (r=16)"], by["tbptt (T=25)"]
  assert ok["chars"] == 800 * 16 and tbptt["chars"] == 1000 * 16   # shortest seed
  assert ok["level@1"] == [13, 26] and ok["level@0.5"] == [7, 13]  # 1 + slope·chars
  assert tbptt["level@1"] == [9, 17] and ok["max_level"] == [17, 26]
  assert ok["steps_per_sec"] == pytest.approx(100.0)
  assert "| ok (r=16) | 10^-3.5 | 2 | 10.0 (7, 13) | 19.5 (13, 26) | 21.5 (17, 26) |" in text
  assert "| 2M | 32.0M | 41.8 | 44, 43, 38, 45, 39 |" in text
  lines = (tmp_path / "t.csv").read_text().splitlines()
  assert lines[0].startswith("method,lr,seeds,chars,level@0.5,level@1,max_level")
  assert len(lines) == 3


EPS = 1e-2   # large, so that ε's effect on the step is far above float32's rounding


@pytest.mark.parametrize("grad_scale,clip,norm,expect_rms,expect_clip", [
    ("mean", 1.0, 3.0, 1.0, 1.0),          # clipped on every update: the RMS is the clip
    ("published", 1.0, 3.0, 3.0, 4.0),     # B = 4: 3/4 < 1, never clipped; clip 1·B
    ("mean", 0.0, 3.0, 3.0, math.inf),     # no clip
])
@pytest.mark.parametrize("alternate", [False, True])
def test_adam_moments(tmp_path, grad_scale, clip, norm, expect_rms, expect_clip, alternate):
  """A trainer's checkpoint after 5 updates with gradient ±g (its first row zero; the sign
  alternating or not). The expected values follow Adam's recurrences, computed here in
  numpy for u = clip(s·g, c): m = Σ(1−β1)β1^k u_k, v = Σ(1−β2)β2^k u_k², the step
  m / (√v + ε)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from analysis import adam_moments  # pylint: disable=g-import-not-at-top
  from ok_tf import models, training  # pylint: disable=g-import-not-at-top
  config = {"task": "copy", "method": "ok", "rank": 2, "cell": "rhn", "units": 4,
            "batch_size": 4, "lr": 1e-3, "clip": clip, "grad_scale": grad_scale,
            "adam_epsilon": EPS, "dtype": "float32", "seed": 0, "steps": 5}
  model = models.RecurrentModel("rhn", 4, 4, dtype="float32")
  optimizer = training.make_optimizer(1e-3, EPS)
  scale = training.grad_scale_factor(grad_scale, 4)
  trainer = training.Trainer(model, optimizer, 4, clip or None, scale)
  (w,) = model.recurrent_variables
  direction = tf.random.stateless_normal(w.shape, [1, 2])
  direction = tf.concat([tf.zeros_like(direction[:1]), direction[1:]], axis=0)
  g = direction * norm / tf.norm(direction)
  signs = [(-1) ** k if alternate else 1 for k in range(5)]
  for sign in signs:
    trainer.apply([sign * g], [tf.zeros_like(v) for v in model.readout_variables])
  with runs.RunDir.create(tmp_path / "run", config) as rd:
    rd.checkpoint(model=model, optimizer=optimizer, step=trainer.step,   # and a state the
                  task_state=tf.Variable([1.0, 2.0]))                   # script must skip
    rd.save(5)
  csv_path = tmp_path / "moments.csv"
  _, rows = common.run_script(adam_moments, [str(tmp_path / "run"), f"--csv={csv_path}"])
  (row,) = rows
  assert row["step"] == 5 and row["grad_scale"] == grad_scale
  assert row["rms_clipped_norm"] == pytest.approx(expect_rms, rel=1e-4)
  assert row["clip_g"] == pytest.approx(expect_clip)
  u = g.numpy()[1:].astype(np.float64) * (expect_rms / norm) * scale
  m = sum((1 - 0.9) * 0.9 ** (4 - k) * s * u for k, s in enumerate(signs))
  v = sum((1 - 0.999) * 0.999 ** (4 - k) * u ** 2 for k in range(5))
  effect = 1 - np.linalg.norm(m / (np.sqrt(v) + EPS)) / np.linalg.norm(m / np.sqrt(v))
  assert 0.01 < effect < 0.9
  assert row["eps_effect"] == pytest.approx(effect, rel=1e-3)
  share = np.quantile(EPS / (np.sqrt(v) + EPS), 0.999)
  assert row["eps_share_p999"] == pytest.approx(share, rel=1e-3)
  assert row["zero_v"] == pytest.approx(1 / w.shape[0])
  assert csv_path.read_text().splitlines()[0].split(",") == list(adam_moments.COLUMNS)


def test_adam_moments_needs_a_checkpoint(tmp_path, caplog):
  """Runs without checkpoints are named and skipped; none at all is an error."""
  from analysis import adam_moments  # pylint: disable=g-import-not-at-top
  _copy_run(tmp_path / "ok", "ok", 0, 200, 1e-3, units=4)
  with caplog.at_level(logging.WARNING), pytest.raises(FileNotFoundError,
                                                       match="no checkpoints in any run"):
    common.run_script(adam_moments, [str(tmp_path)])
  assert "no checkpoints, skipped" in caplog.text
  with pytest.raises(flags.IllegalFlagValueError):
    common.run_script(adam_moments, [str(tmp_path), "--which=last"])


# ----------------------------------------------------------------------------- any task


def _task_run(path, method, lr, final, shadow=None, rank=None, truncation=None):
  """A mackey_glass-like run: loss_mse falling linearly to ``final`` over 10 rows."""
  config = {"task": "mackey_glass", "method": method, "rank": rank, "truncation": truncation,
            "lr": lr, "seed": 0, "batch_size": 16, "steps": 1000}
  rd = runs.RunDir.create(path, config)
  rd.write_task({"inputs": {"kind": "reals", "size": 1}, "outputs": {"kind": "reals", "size": 1},
                 "baselines": {"mean": 1.0, "no_memory": 0.02}, "baseline": 1.0})
  for i in range(1, 11):
    row = {"step": 100 * i, "chars": 1600 * i, "loss_mse": final + 0.1 * (10 - i)}
    if shadow is not None:
      row.update(shadow_cosine=shadow, shadow_rel_error=1 - shadow)
    rd.log_metrics(row)
  rd.close()


def test_task_table_and_figure(tmp_path):
  """The tail loss (last 10% of rows = the last row here), its ratio to the baseline, the
  shadow's means, the best rate per method (--best_lr) and the baselines line."""
  from analysis import plot_task  # pylint: disable=g-import-not-at-top
  from analysis import task_table  # pylint: disable=g-import-not-at-top
  base = tmp_path / "mg"
  _task_run(base / "ok_a", "ok", LR_A, 0.5, shadow=0.9, rank=8)
  _task_run(base / "ok_b", "ok", LR_B, 0.25, shadow=0.8, rank=8)
  _task_run(base / "tbptt", "tbptt", LR_A, 0.75, truncation=4)
  text, rows = task_table.task_table([base])
  by_label = {r["label"]: r for r in rows}
  assert by_label["ok (r=8), lr 10^-3"]["loss"] == pytest.approx(0.5)
  assert by_label["ok (r=8), lr 10^-3.5"]["cosine"] == pytest.approx(0.8)
  assert by_label["tbptt (T=4)"]["ratio"] == pytest.approx(0.75) and by_label["tbptt (T=4)"]["cosine"] is None
  assert "Baselines (mse): mean 1, no_memory 0.02." in text
  _, best = task_table.task_table([base], best_lr=True)
  assert [(r["method"], r["lr"]) for r in best] == [("ok (r=8)", "10^-3.5"), ("tbptt (T=4)", "10^-3")]
  paths = plot_task.plot_task([base], str(tmp_path / "fig"), logy=True, best_lr=True)
  assert all(pathlib.Path(p).stat().st_size > 0 for p in paths)
  _copy_run(tmp_path / "copy_run", "ok", 0, 200, 1e-3)
  with pytest.raises(app.UsageError, match="2 tasks"):
    task_table.task_table([base, tmp_path / "copy_run"])


# ----------------------------------------------------------------------------- tables


def test_markdown_table_format():
  """Header, separator by alignment, cells as given (an empty one leaves two spaces);
  rows as sequences or as mappings column → text."""
  text = tables.markdown([["ok", "1.50", ""], {"method": "kf", "ms": "2", "note": "x"}],
                         ["method", "ms", "note"], "lrl")
  assert text == ("| method | ms | note |\n|---|---:|---|\n| ok | 1.50 |  |\n| kf | 2 | x |")
  assert tables.markdown([], ["a", "b"]) == "| a | b |\n|---|---|"
  with pytest.raises(ValueError, match="align"):
    tables.markdown([], ["a", "b"], "l")
  with pytest.raises(ValueError, match="2 columns"):
    tables.markdown([["only one"]], ["a", "b"])


def test_write_csv_header_order_extra_and_missing_keys(tmp_path):
  """The header is ``columns``; other keys are left out, missing ones empty; the folder is made."""
  path = tmp_path / "new" / "t.csv"
  tables.write_csv(path, [{"b": 2, "a": "é", "extra": 9}, {"a": 1.5}], ["a", "b"])
  assert path.read_bytes() == "a,b\r\né,2\r\n1.5,\r\n".encode("utf-8")
