"""analysis/benchmark.py: a tiny run writes the JSON, the table and the plot; kernels.py;
the timing harness (analysis/timing.py)."""

import json
import time

from absl import flags
import pytest
import tensorflow as tf

from analysis import benchmark
from analysis import common
from analysis import estimator_steps
from analysis import kernels
from analysis import timing
from ok_tf import estimators
from ok_tf import models
from ok_tf import training


def test_tiny_benchmark_writes_json_and_png(tmp_path, capsys):
  start = time.process_time()   # CPU time: the budget holds on a loaded machine too
  out = tmp_path / "bench"
  result = common.run_script(benchmark, [
      "--methods=ok,tbptt", "--sizes=8,16", "--configs=8:4:4:4", "--steps=4", "--repeats=1",
      "--truncation=4", f"--out_dir={out}", "--device=cpu"])
  elapsed = time.process_time() - start
  printed = capsys.readouterr().out.splitlines()
  assert printed[-3:] == [str(out / name) for name in
                          ("benchmark.json", "benchmark.md", "benchmark.png")]
  assert (out / "benchmark.md").read_text().endswith("\n".join(printed[:-3]) + "\n")

  assert (out / "benchmark.png").stat().st_size > 1000
  assert (out / "benchmark.md").read_text().count("| ok (r=") == 3   # the registry's label
  data = json.loads((out / "benchmark.json").read_text())
  assert data == json.loads(json.dumps(result))
  assert set(data) == {"meta", "rows", "bounds", "skipped", "slopes", "breakdown"}
  for key in ("device", "loadavg_start", "loadavg_end", "runtime_s", "memory", "timing"):
    assert key in data["meta"]
  # the flags as they were given, in their order of definition (argparse's namespace)
  assert list(data["meta"]["args"]) == [
      "methods", "configs", "sizes", "sweep_rank", "sweep_batch", "sweep_vocab", "steps",
      "min_time", "repeats", "truncation", "reset_every", "cell", "rtrl_max_n", "out_dir",
      "device", "breakdown", "breakdown_min_time", "fine_breakdown", "estimator", "bound"]
  assert data["meta"]["args"]["sizes"] == [8, 16]
  assert data["meta"]["args"]["configs"] == ["8:4:4:4"]
  assert data["meta"]["args"]["breakdown"] is True

  rows = data["rows"]
  assert [(r["method"], r["n"]) for r in rows] == [
      ("ok", 8), ("tbptt", 8), ("ok", 8), ("tbptt", 8), ("ok", 16), ("tbptt", 16)]
  for r in rows:
    for key in ("ms_per_step", "steps_per_s", "peak_mem_bytes", "peak_rss_bytes", "state_mb",
                "loadavg_1m", "times_s", "steps"):
      assert key in r, key
    assert r["ms_per_step"] > 0 and r["peak_mem_bytes"] >= 0 and r["peak_rss_bytes"] > 0
    assert r["steps"] % (4 if r["method"] == "tbptt" else 1) == 0
  ok_rows = [r for r in rows if r["method"] == "ok"]
  for r in ok_rows:
    assert r["bound_ms"] > 0 and r["ratio_to_bound"] > 0
  # est.step is timed at the named configurations (--estimator=configs), not on the sweep
  assert abs(ok_rows[0]["estimator_ms"] + ok_rows[0]["rest_ms"] - ok_rows[0]["ms_per_step"]) < 1e-9
  assert "estimator_ms" not in ok_rows[1]
  assert "bound_ms" not in rows[1]   # tbptt has no bound

  # the named configuration gets the breakdown of OK's step
  assert set(data["breakdown"]) == {"8:4:4:4"}
  parts = data["breakdown"]["8:4:4:4"]
  assert {"full_step", "est.step", "H·A products", "est.gradient"} <= set(parts)
  # slopes over the sweep (n = 8, 16) for both methods and the bound
  assert set(data["slopes"]) == {"ok", "tbptt", "bound (H·A)"}
  assert all(e["slope"] is not None and e["n"] == [8, 16] for e in data["slopes"].values())
  assert elapsed < 40, elapsed   # about 11 s of CPU


def _flags(script, argv):
  flag_values = flags.FlagValues()
  script.define_flags(flag_values)
  flag_values([script.__name__, *argv])
  return flag_values


def test_grid_and_flags(tmp_path):
  grid = benchmark.build_grid(["copy", "ptb"], [32, 128], 16, 16, 4)
  assert [(g["n"], g["r"], g["B"], g["V"], g["labels"]) for g in grid] == [
      (128, 16, 16, 4, ["copy", "sweep"]), (256, 8, 32, 50, ["ptb"]), (32, 16, 16, 4, ["sweep"])]
  fv = _flags(benchmark, ["--methods=rtrl", "--sizes=", "--nobreakdown"])
  assert fv.rtrl_max_n == 64 and fv.out_dir == "benchmark_out/"
  assert fv.methods == ["rtrl"] and fv.sizes == [] and not fv.breakdown
  assert fv.configs == ["copy", "ptb"]
  for bad in ("--methods=ok,nope", "--sizes=8,x", "--configs=1:2:3"):
    with pytest.raises(flags.IllegalFlagValueError):
      _flags(benchmark, [bad])
  with pytest.raises(flags.IllegalFlagValueError):
    _flags(kernels, ["--configs=8:2"])


def test_breakdown_times_the_stages_of_ok_step():
  """OK.step is OK.linearize, OK.propagate and OK.reduce: the breakdown times these."""
  tf.keras.utils.set_random_seed(0)
  model = models.RecurrentModel("rhn", 8, 4)
  est = estimators.get("ok", model.cell, rank=2)
  state = est.init(3)._replace(h=tf.random.stateless_uniform([3, 8], [1, 2], -0.5, 0.5))
  for ids in ([2, 0, 1], [3, 3, 0]):    # two steps: u and A hold two terms
    state = est.step(state, model.one_hot(tf.constant(ids)), training.make_generator(1, 1))
  x = model.one_hot(tf.constant([0, 1, 3]))
  whole = est.step(state, x, training.make_generator(0, 1))
  st, last = est.linearize(state, x)
  red = est.reduce(state.u, st.hhat, est.propagate(st.jacobian, state.a), last,
                   training.make_generator(0, 1))
  for got, want in zip((st.state, red.left, red.right, red.kept, red.variance), whole):
    assert bool(tf.reduce_all(got == want))
  runners = benchmark.breakdown_runners(est, model, 3, fine=True)
  assert set(runners) == {"linearize", "ok_reduce", "gradient", "reset", "gram_eigh", "mixing",
                          "small"}
  res = timing.measure_group(runners, 0.01, 1, steps=2)
  assert all(r["steps"] == 2 and r["sec_per_step"] > 0 for r in res.values())


def test_kernels_script_times_every_kernel(tmp_path, capsys):
  out = tmp_path / "kernels.json"
  data = common.run_script(kernels, ["--configs=8:2:2", "--min_time=0.01", "--repeats=1",
                                     f"--out={out}"])
  assert json.loads(out.read_text()) == json.loads(json.dumps(data))
  ms = data["configs"]["8:2:2"]["ms"]
  assert set(ms) == {"product", "product_wide", "gram_r", "gram_r1", "gram_tall", "diag_inner",
                     "mixing", "mixing_xla", "mixing_tall", "add_diagonals", "concat_gram_r1",
                     "read_pass", "write_pass"}
  assert all(v > 0 for v in ms.values())
  assert capsys.readouterr().out.count("\n| ") == len(ms) + 1     # header + one row each


def test_estimator_steps_script_times_every_estimator(tmp_path, capsys):
  out = tmp_path / "steps.json"
  result = common.run_script(estimator_steps, [
      "--sizes=4", "--batches=2", "--seq_len=2", "--min_time=0.01", "--repeats=1",
      f"--out={out}"])
  printed = capsys.readouterr().out
  data = json.loads(out.read_text())
  assert data == json.loads(json.dumps(result))
  rows = data["rows"]
  assert [r["method"] for r in rows] == list(estimators.ESTIMATORS)
  for r in rows:
    assert r["step_ms"] > 0 and r["floor_ms"] > 0 and r["sequence_ms"] > 0
    assert r["python_loop_ms"] > 0 and (r["n"], r["B"]) == (4, 2)
    assert ("bound_ms" in r) == (r["method"] in ("ok", "kf_avg", "kf", "rtrl"))
    assert f"| {r['label']} | 4 | 2 |" in printed
  assert set(rows[list(estimators.ESTIMATORS).index("snap1")]["stages_ms"]) == {
      "linearize_blocks", "update"}
