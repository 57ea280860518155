"""analysis/study.py: the study's commands, a tiny study run end to end, resume and skip."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _study(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "analysis.study", *args],
                        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)


def test_dry_run_lists_every_run_of_both_studies():
  out = _study("copy_cpu", "ptb_cpu", "--dry_run")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 11 + 5
  copy = [l for l in lines if l.startswith("python train_copy.py --preset=cpu")]
  assert len(copy) == 11
  for flags in ("--method=ok --rank=16 --seed=1", "--method=ok --rank=8 --seed=1",
                "--method=kf_avg --rank=8", "--method=uoro", "--method=kf",
                "--method=tbptt --truncation=100 --seed=1",
                "--method=tbptt --truncation=25 --seed=0"):
    assert any(flags in l for l in copy), flags
  ptb = [l for l in lines if l.startswith("python train_ptb.py --preset=cpu")]
  assert len(ptb) == 5


def test_unknown_study_and_run_fail_with_one_line():
  out = _study("nope")
  assert out.returncode != 0 and "copy_cpu" in out.stderr
  out = _study("copy_cpu", "--only=ok_r99_seed0")
  assert out.returncode != 0 and "ok_r99_seed0" in out.stderr


def test_tiny_study_collects_small_files_and_skips_finished_runs(tmp_path):
  args = ["copy_cpu", "--only=ok_r8_seed0,tbptt_T25_seed0", f"--runs_root={tmp_path}/runs",
          f"--results={tmp_path}/results",
          "--extra=--steps=200,--units=8,--log_every=100,--checkpoint_every=100"]
  out = _study(*args)
  assert out.returncode == 0, out.stderr[-3000:]
  for name in ("ok_r8_seed0", "tbptt_T25_seed0"):
    files = sorted(p.name for p in (tmp_path / "results" / "copy" / name).iterdir())
    assert files == ["config.json", "metrics.csv", "provenance.json", "results.json",
                     "task.json"], files
    results = json.loads((tmp_path / "results" / "copy" / name / "results.json").read_text())
    assert results["steps"] == 200
    assert (tmp_path / "runs" / "copy_cpu" / name / "checkpoints").is_dir()  # not collected
  table = (tmp_path / "results" / "copy" / "runs.md").read_text()
  assert "`python train_copy.py --preset=cpu --method=ok --rank=8 --seed=0`" in table
  again = _study(*args)
  assert again.returncode == 0
  assert again.stderr.count("finished earlier, skipped") == 2
  # collecting one run of another study (--only) keeps the other rows of runs.md
  (tmp_path / "runs" / "copy_cpu_lr" / "uoro_lr-3_seed0").mkdir(parents=True)
  shutil.copytree(tmp_path / "runs" / "copy_cpu" / "tbptt_T25_seed0",
                  tmp_path / "runs" / "copy_cpu_lr" / "uoro_lr-3_seed0", dirs_exist_ok=True)
  out = _study("copy_cpu_lr", "--only=uoro_lr-3_seed0", "--collect_only", *args[2:4])
  assert out.returncode == 0, out.stderr[-3000:]
  rows = [line.split("|")[1].strip() for line in
          (tmp_path / "results" / "copy" / "runs.md").read_text().splitlines()
          if line.startswith("| ") and not line.startswith("| run |")]
  assert sorted(rows) == ["lr_grid/uoro_lr-3_seed0", "ok_r8_seed0", "tbptt_T25_seed0"], rows
  assert "`python -m analysis.study copy_cpu copy_cpu_lr`" in (
      tmp_path / "results" / "copy" / "runs.md").read_text()


def test_print_commands_prints_a_runnable_command_per_pending_run(tmp_path):
  """One line per run not finished, each with its absolute --run_dir, --resume and
  --max_minutes; a printed line runs as it is, from any folder."""
  finished = tmp_path / "runs" / "copy_cpu" / "uoro_seed0"
  finished.mkdir(parents=True)
  (finished / "config.json").write_text("{}")
  (finished / "results.json").write_text("{}")
  out = _study("copy_cpu", "--print_commands", "--max_minutes=230",
               f"--runs_root={tmp_path}/runs",
               "--extra=--steps=100,--units=8,--log_every=100,--checkpoint_every=100")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 11 - 1 and not any("uoro_seed0" in l for l in lines)
  for line in lines:
    assert line.startswith(f"cd {ROOT} && TF_NUM_INTRAOP_THREADS=1 ")
    assert f"--run_dir={tmp_path}/runs/copy_cpu/" in line
    assert line.endswith("--resume --max_minutes=230")
  line = next(l for l in lines if "kf_seed0" in l)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  ran = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=tmp_path,
                       env=env, timeout=600)
  assert ran.returncode == 0, ran.stderr[-3000:]
  assert json.loads((tmp_path / "runs" / "copy_cpu" / "kf_seed0" / "results.json")
                    .read_text())["steps"] == 100
  again = _study("copy_cpu", "--print_commands", f"--runs_root={tmp_path}/runs")
  assert len(again.stdout.strip().splitlines()) == 11 - 2
