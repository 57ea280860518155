"""analysis/benchmark.py: a tiny run writes the JSON, the table and the plot."""

import json
import time

from analysis import benchmark


def test_tiny_benchmark_writes_json_and_png(tmp_path):
  start = time.perf_counter()
  out = tmp_path / "bench"
  result = benchmark.main([
      "--methods=ok,tbptt", "--sizes=8,16", "--configs=8:4:4:4", "--steps=4", "--repeats=1",
      "--truncation=4", f"--out_dir={out}", "--device=cpu"])
  elapsed = time.perf_counter() - start

  assert (out / "benchmark.png").stat().st_size > 1000
  assert (out / "benchmark.md").read_text().count("| ok (r=") == 3   # the registry's label
  data = json.loads((out / "benchmark.json").read_text())
  assert data == json.loads(json.dumps(result))
  assert set(data) == {"meta", "rows", "bounds", "skipped", "slopes", "breakdown"}
  for key in ("device", "loadavg_start", "loadavg_end", "runtime_s", "memory", "timing"):
    assert key in data["meta"]

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
  assert elapsed < 30


def test_grid_and_skips(tmp_path):
  grid = benchmark.build_grid(["copy", "ptb"], [32, 128], 16, 16, 4)
  assert [(g["n"], g["r"], g["B"], g["V"], g["labels"]) for g in grid] == [
      (128, 16, 16, 4, ["copy", "sweep"]), (256, 8, 32, 50, ["ptb"]), (32, 16, 16, 4, ["sweep"])]
  args = benchmark.parse_args(["--methods=rtrl"])
  assert args.rtrl_max_n == 64 and args.out_dir == "benchmark_out/"


def test_kernels_script_times_every_kernel(tmp_path, capsys):
  from analysis import kernels  # pylint: disable=import-outside-toplevel
  out = tmp_path / "kernels.json"
  data = kernels.main(["--configs=8:2:2", "--min_time=0.01", "--repeats=1", f"--out={out}"])
  assert json.loads(out.read_text()) == json.loads(json.dumps(data))
  ms = data["configs"]["8:2:2"]["ms"]
  assert set(ms) == {"product", "product_wide", "gram_r", "gram_r1", "gram_tall", "diag_inner",
                     "mixing", "mixing_xla", "mixing_tall", "add_diagonals", "concat_gram_r1",
                     "read_pass", "write_pass"}
  assert all(v > 0 for v in ms.values())
  assert capsys.readouterr().out.count("\n| ") == len(ms) + 1     # header + one row each
