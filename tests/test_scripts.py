"""End-to-end tests of train_copy.py and train_ptb.py, run as subprocesses (tiny sizes)."""

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import toolkit
from toolkit import PTB_SKIP_REASON, check_ok, ptb_data_dir, read_rows, run_script, without_timing

COPY_COLUMNS = ["step", "chars", "level", "ema_bits", "loss_bits", "steps_per_sec", "wall_time"]
TINY_COPY = ["--units=8", "--batch_size=8", "--log_every=100", "--checkpoint_every=200"]


# ----------------------------------------------------------------------------- copy task


@pytest.fixture(scope="module")
def copy_run_600(tmp_path_factory):
  """An uninterrupted OK run of 600 steps (the reference of the resume test)."""
  run_dir = tmp_path_factory.mktemp("copy") / "ok_600"
  proc, _ = run_script("train_copy.py", *TINY_COPY, "--rank=2", "--steps=600",
                       f"--run_dir={run_dir}")
  check_ok(proc)
  return run_dir


def test_copy_run_writes_run_directory(copy_run_600):
  run_dir = copy_run_600
  config = json.loads((run_dir / "config.json").read_text())
  assert config["task"] == "copy" and config["method"] == "ok" and config["rank"] == 2
  assert config["units"] == 8 and config["steps"] == 600 and config["truncation"] is None
  header, rows = read_rows(run_dir / "metrics.csv")
  assert header == COPY_COLUMNS
  assert [int(r["step"]) for r in rows] == [100, 200, 300, 400, 500, 600]
  assert [int(r["chars"]) for r in rows] == [800 * i for i in range(1, 7)]
  for row in rows:
    assert int(row["level"]) >= 1
    for key in ("ema_bits", "loss_bits", "steps_per_sec", "wall_time"):
      assert math.isfinite(float(row[key])) and float(row[key]) >= 0, (key, row)
  walls = [float(r["wall_time"]) for r in rows]
  assert walls == sorted(walls)
  assert any((run_dir / "tb").iterdir())
  ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("ckpt-*.index"))
  assert ckpts == ["ckpt-400.index", "ckpt-600.index"]  # every 200 steps, 2 kept


def test_copy_run_exports_its_final_model_as_keras(copy_run_600):
  """model.keras of a finished run loads with Keras and predicts exactly as the run's
  last checkpoint (600 training steps, so the weights are far from their init)."""
  import keras  # pylint: disable=g-import-not-at-top
  from ok_tf import models  # pylint: disable=g-import-not-at-top
  loaded = keras.models.load_model(copy_run_600 / "model.keras")
  last, step = models.load_run_model(copy_run_600, "latest")
  init, _ = models.load_run_model(copy_run_600, "init")
  assert step == 600 and type(loaded) is type(last) and loaded.cell_name == "rhn"
  ids = np.random.RandomState(0).randint(0, loaded.vocab_size, size=(4, 30))
  got = loaded.predict(ids, verbose=0)
  np.testing.assert_array_equal(got, last.predict(ids, verbose=0))
  assert np.max(np.abs(got - init.predict(ids, verbose=0))) > 1e-2


@pytest.mark.parametrize("method", ["ok", "tbptt"])
def test_copy_resume_reproduces_uninterrupted_run(method, copy_run_600, tmp_path):
  flags = ["--rank=2"] if method == "ok" else ["--method=tbptt", "--truncation=10"]
  if method == "ok":
    reference = copy_run_600
  else:
    reference = tmp_path / "uninterrupted"
    proc, _ = run_script("train_copy.py", *TINY_COPY, *flags, "--steps=600",
                         f"--run_dir={reference}")
    check_ok(proc)
  resumed = tmp_path / "resumed"
  proc, _ = run_script("train_copy.py", *TINY_COPY, *flags, "--steps=400",
                       f"--run_dir={resumed}")
  check_ok(proc)
  assert len(read_rows(resumed / "metrics.csv")[1]) == 4
  # As if the run had been killed after logging step 500 but before its next checkpoint:
  # the resumed run must drop that row and redo the steps from the checkpoint at 400.
  with open(resumed / "metrics.csv", "a") as f:
    f.write("500,4000,9,9.0,9.0,1.0,99.0\n")
  # ok repeats its flags; tbptt gives none: --resume takes the stored config.
  again = [*TINY_COPY, *flags] if method == "ok" else []
  proc, _ = run_script("train_copy.py", *again, "--steps=600", f"--run_dir={resumed}",
                       "--resume")
  check_ok(proc)
  header_a, rows_a = read_rows(reference / "metrics.csv")
  header_b, rows_b = read_rows(resumed / "metrics.csv")
  assert header_a == header_b == COPY_COLUMNS
  assert len(rows_a) == len(rows_b) == 6
  assert without_timing(rows_a) == without_timing(rows_b)  # bit-identical strings
  config = json.loads((resumed / "config.json").read_text())
  assert config["steps"] == 600 and config["method"] == method
  # The resumed run continues the wall time of the first part.
  assert float(rows_b[4]["wall_time"]) > float(rows_b[3]["wall_time"])


def test_copy_max_minutes_stops_with_checkpoint_then_resumes(copy_run_600, tmp_path):
  """--max_minutes stops after the chunk that passes the budget, with a checkpoint there
  and no results.json; --resume finishes the run, equal to the uninterrupted one."""
  run_dir = tmp_path / "limited"
  proc, _ = run_script("train_copy.py", *TINY_COPY, "--rank=2", "--steps=600",
                       "--max_minutes=0.0001", f"--run_dir={run_dir}")
  check_ok(proc)
  assert "--resume" in proc.stderr
  assert len(read_rows(run_dir / "metrics.csv")[1]) == 1
  assert (run_dir / "checkpoints" / "ckpt-100.index").exists()
  assert not (run_dir / "results.json").exists()
  proc, _ = run_script("train_copy.py", *TINY_COPY, "--rank=2", "--steps=600",
                       f"--run_dir={run_dir}", "--resume")
  check_ok(proc)
  assert without_timing(read_rows(run_dir / "metrics.csv")[1]) == without_timing(
      read_rows(copy_run_600 / "metrics.csv")[1])
  results = json.loads((run_dir / "results.json").read_text())
  assert sorted(results) == ["chars", "ema_bits", "level", "max_level", "steps",
                             "steps_per_sec", "wall_time"]
  assert results["steps"] == 600 and results["chars"] == 600 * 8
  assert results["max_level"] >= results["level"] >= 1


def _start_script(script, *args):
  """``python script args`` in the background (as toolkit.run_script, without waiting)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.Popen([sys.executable, script, *map(str, args)], cwd=toolkit.ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc, timeout=300):
  start = time.monotonic()
  while not path.exists():
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert time.monotonic() - start < timeout, f"{path} did not appear"
    time.sleep(0.02)


def test_copy_sigterm_stops_with_checkpoint_then_resume_is_identical(copy_run_600, tmp_path):
  """SIGTERM while the first chunk runs: the chunk finishes, its row and a checkpoint are
  written (off the --checkpoint_every schedule), one line says how to resume, exit code
  75; --resume gives the uninterrupted run's rows. The resume is also made to look like
  one under another package version: one warning line."""
  from ok_tf import preemption  # pylint: disable=g-import-not-at-top
  from ok_tf import provenance  # pylint: disable=g-import-not-at-top
  run_dir = tmp_path / "preempted"
  proc = _start_script("train_copy.py", *TINY_COPY, "--rank=2", "--steps=600",
                       f"--run_dir={run_dir}")
  _wait_for(run_dir / ".lock", proc)    # the watch is on before the lock is taken
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == preemption.EXIT_CODE == 75, stderr[-3000:]
  last = stderr.strip().splitlines()[-1]
  assert last == (f"train_copy.py: SIGTERM received: stopped at step 100 with a checkpoint; "
                  f"continue with --run_dir={run_dir} --resume (exit code 75)"), last
  assert [r["step"] for r in read_rows(run_dir / "metrics.csv")[1]] == ["100"]
  assert (run_dir / "checkpoints" / "ckpt-100.index").exists()
  assert not (run_dir / "results.json").exists()
  records = json.loads((run_dir / "provenance.json").read_text())
  records[-1]["ok_tf_version"] = "0.0.1"
  (run_dir / "provenance.json").write_text(json.dumps(records))
  proc, _ = run_script("train_copy.py", "--steps=600", f"--run_dir={run_dir}", "--resume")
  check_ok(proc)
  assert proc.stderr.count("was started under ok_tf 0.0.1") == 1
  assert without_timing(read_rows(run_dir / "metrics.csv")[1]) == without_timing(
      read_rows(copy_run_600 / "metrics.csv")[1])
  assert [r["step"] for r in provenance.read(run_dir)] == [0, 100]


def _corrupt(path):
  """40 bytes in the middle of ``path`` flipped (zeroing them may change nothing: a
  checkpoint holds tensors of zeros)."""
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 40] = bytes(b ^ 0xFF for b in data[middle:middle + 40])
  path.write_bytes(bytes(data))


def test_copy_resume_falls_back_from_a_corrupted_checkpoint(copy_run_600, tmp_path):
  """The newest checkpoint (step 400) has 40 bytes changed: --resume names it in one line
  and continues from step 200, equal to the uninterrupted run; with every checkpoint
  corrupted, one line says --resume cannot continue."""
  run_dir = tmp_path / "corrupted"
  proc, _ = run_script("train_copy.py", *TINY_COPY, "--rank=2", "--steps=400",
                       f"--run_dir={run_dir}")
  check_ok(proc)
  _corrupt(next((run_dir / "checkpoints").glob("ckpt-400.data-*")))
  proc, _ = run_script("train_copy.py", "--steps=600", f"--run_dir={run_dir}", "--resume")
  check_ok(proc)
  lines = [l for l in proc.stderr.splitlines() if "cannot be read" in l]
  assert len(lines) == 1 and "ckpt-400" in lines[0] and "Checksum does not match" in lines[0], lines
  assert "resuming" in proc.stderr and "from step 200" in proc.stderr
  assert without_timing(read_rows(run_dir / "metrics.csv")[1]) == without_timing(
      read_rows(copy_run_600 / "metrics.csv")[1])
  for data in (run_dir / "checkpoints").glob("ckpt-*.data-*"):
    _corrupt(data)
  proc, _ = run_script("train_copy.py", "--steps=800", f"--run_dir={run_dir}", "--resume")
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("train_copy.py: no checkpoint of") and "ckpt-600, ckpt-400" in last
  assert "--resume cannot continue" in last


def test_copy_second_launch_on_a_run_directory_is_refused(tmp_path):
  """A run holds its directory: the same command launched again stops at once with one
  line naming the first one's pid and host; once the first is SIGKILLed, no stale lock
  remains and the run resumes."""
  run_dir = tmp_path / "twice"
  args = [*TINY_COPY, "--rank=2", "--steps=100000", f"--run_dir={run_dir}"]
  first = _start_script("train_copy.py", *args)
  try:
    _wait_for(run_dir / "metrics.csv", first)
    second, _ = run_script("train_copy.py", *args, "--resume")
    assert second.returncode == 1
    last = second.stderr.strip().splitlines()[-1]
    assert f"is in use by pid {first.pid} on host {socket.gethostname()}" in last, last
    assert "launched twice" in last
  finally:
    first.kill()
    first.communicate()
  rows = read_rows(run_dir / "metrics.csv")[1]
  assert [int(r["step"]) for r in rows] == list(range(100, 100 * len(rows) + 1, 100))
  proc, _ = run_script("train_copy.py", "--steps=200", f"--run_dir={run_dir}", "--resume")
  check_ok(proc)


def test_copy_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  """A learning rate of 1e4 without clipping: the loss leaves log2(V) far behind."""
  run_dir = tmp_path / "diverged"
  proc, _ = run_script("train_copy.py", *TINY_COPY, "--rank=2", "--lr=1e4", "--clip=0",
                       "--steps=2000", f"--run_dir={run_dir}")
  assert proc.returncode != 0
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("train_copy.py: training diverged") and "--lr" in last, last
  assert not (run_dir / "results.json").exists()
  _, rows = read_rows(run_dir / "metrics.csv")
  losses = [float(r["loss_bits"]) for r in rows]
  assert all(x > 4.0 for x in losses[-3:])  # 2 x log2(4) bits
  saved = sorted(int(p.name.split("-")[1].split(".")[0])
                 for p in (run_dir / "checkpoints").glob("ckpt-*.index"))
  diverged_steps = {int(r["step"]) for r in rows if float(r["loss_bits"]) > 4.0}
  assert not set(saved) & diverged_steps


def test_copy_grid_makes_one_directory_per_run(tmp_path):
  base = tmp_path / "grid"
  proc, _ = run_script("train_copy.py", "--units=4", "--rank=1", "--batch_size=4",
                       "--steps=20", "--log_every=10", "--checkpoint_every=20",
                       "--lr=1e-2,1e-3", "--seed=0,1", f"--run_dir={base}")
  check_ok(proc)
  subdirs = sorted(p.name for p in base.iterdir())
  assert subdirs == ["lr0.001_seed0", "lr0.001_seed1", "lr0.01_seed0", "lr0.01_seed1"]
  for name in subdirs:
    config = json.loads((base / name / "config.json").read_text())
    assert f"lr{config['lr']:.3g}_seed{config['seed']}" == name
    assert len(read_rows(base / name / "metrics.csv")[1]) == 2


def test_help_lists_the_flags_with_their_preset_defaults():
  proc, _ = run_script("train_copy.py", "--help", timeout=120)
  assert "--units: Hidden units n. Default from --preset: cpu 64, paper 128, quick 32." in (
      " ".join(proc.stdout.split())), proc.stdout[-3000:]


BAD_FLAGS = {
    "unknown_method": (["--method=sgd"], ["unknown", "--method", "sgd"]),
    "negative_rank": (["--rank=-2"], ["--rank", "positive", "-2"]),
    "rank_with_tbptt": (["--method=tbptt", "--rank=4"], ["--rank", "tbptt"]),
    "truncation_with_ok": (["--method=ok", "--truncation=10"], ["--truncation", "ok"]),
    "checkpoint_not_multiple": (["--log_every=100", "--checkpoint_every=150"],
                                ["--checkpoint_every", "150", "multiple", "--log_every"]),
    "existing_run_dir": ([], ["already holds a run", "--resume"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_copy_flag_errors_fail_fast_with_one_line(case, tmp_path):
  args, words = BAD_FLAGS[case]
  run_dir = tmp_path / "run"
  if case == "existing_run_dir":
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}\n")
  proc, seconds = run_script("train_copy.py", "--units=4", "--steps=100", *args,
                             f"--run_dir={run_dir}", timeout=120)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("train_copy.py: "), proc.stderr[-3000:]
  for word in words:
    assert word in last, (word, last)
  # Nothing was trained: no metrics, no checkpoints (the time is mostly importing TF).
  assert not (run_dir / "metrics.csv").exists()
  assert not (run_dir / "checkpoints").exists()
  assert seconds < 60, seconds


# ----------------------------------------------------------------------------- PTB


def test_ptb_run_writes_results(tmp_path):
  data_dir = ptb_data_dir()
  if data_dir is None:
    pytest.skip(PTB_SKIP_REASON)
  run_dir = tmp_path / "ptb"
  proc, _ = run_script("train_ptb.py", "--units=8", "--rank=2", "--batch_size=4",
                       "--steps=300", "--log_every=100", "--eval_every=200",
                       "--eval_streams=64", f"--data_dir={data_dir}", f"--run_dir={run_dir}")
  check_ok(proc)
  results = json.loads((run_dir / "results.json").read_text())
  assert sorted(results) == ["best_step", "best_valid_bpc", "chars", "final_step",
                             "final_valid_bpc", "method", "steps_per_sec", "test_bpc",
                             "tokenization", "wall_time"]
  assert results["method"] == "ok (r=2)" and results["tokenization"] == "published"
  for key in ("best_valid_bpc", "best_step", "test_bpc", "final_valid_bpc", "wall_time",
              "steps_per_sec", "chars"):
    assert key in results and results[key] is not None, key
    assert math.isfinite(float(results[key])) and float(results[key]) > 0, (key, results)
  assert results["chars"] == 300 * 4 and results["best_step"] in (200, 300)
  # An untrained 50-symbol model is near log2(50) ≈ 5.64 bits; after 300 steps 4.35 (and
  # 4.35 with other kernels): an 8-unit model cannot come near 3 in 300 steps.
  for key in ("best_valid_bpc", "test_bpc", "final_valid_bpc"):
    assert 3.0 < results[key] < 6.0, (key, results)
  header, rows = read_rows(run_dir / "eval.csv")
  assert header == ["step", "chars", "valid_bpc"]
  assert [int(r["step"]) for r in rows] == [200, 300]  # every 200 steps and at the end
  assert float(rows[-1]["valid_bpc"]) == pytest.approx(results["final_valid_bpc"], rel=1e-12)
  assert min(float(r["valid_bpc"]) for r in rows) == pytest.approx(results["best_valid_bpc"],
                                                                   rel=1e-12)
  header, rows = read_rows(run_dir / "metrics.csv")
  assert header[:4] == ["step", "chars", "epoch", "loss_bits"] and "valid_bpc" in header
  # The first row has no evaluation; the column is in the header all the same.
  assert [r["valid_bpc"] for r in rows][0] == "" and all(r["valid_bpc"] for r in rows[1:])
  assert "not in the header" not in proc.stderr
  assert any((run_dir / "best").glob("ckpt-*.index"))
  # model.keras holds the best model: its BPC through Keras is the best validation BPC.
  import keras  # pylint: disable=g-import-not-at-top
  from ok_tf.data import ptb  # pylint: disable=g-import-not-at-top
  model = keras.models.load_model(run_dir / "model.keras")
  valid = ptb.load_ptb(data_dir).split("valid")
  assert toolkit.keras_bpc(model, valid, 64) == pytest.approx(results["best_valid_bpc"],
                                                              rel=1e-5)


def test_ptb_missing_data_names_the_files(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  run_dir = tmp_path / "run"
  proc, _ = run_script("train_ptb.py", "--units=4", "--steps=100", "--log_every=100",
                       "--eval_every=100", f"--data_dir={empty}", f"--run_dir={run_dir}",
                       unset=("OK_TF_DATA",), timeout=120)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert "train_ptb.py: " in proc.stderr
  for name in ("train.txt", "valid.txt", "test.txt", str(empty)):
    assert name in proc.stderr, name
  assert not (run_dir / "metrics.csv").exists()


def test_ptb_without_data_anywhere_names_three_options(tmp_path):
  """No --data_dir, no $OK_TF_DATA, an empty TFDS folder: one clean message, three options."""
  home = tmp_path / "home"
  home.mkdir()
  run_dir = tmp_path / "run"
  proc, _ = run_script("train_ptb.py", "--preset=quick", f"--run_dir={run_dir}",
                       env_update={"HOME": str(home)}, unset=("OK_TF_DATA", "TFDS_DATA_DIR"),
                       timeout=120)
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert "train_ptb.py: Character-level Penn Treebank files not found." in proc.stderr
  manual = home / "tensorflow_datasets" / "downloads" / "manual"
  for text in ("--data_dir=DIR", "OK_TF_DATA=DIR", f"manual-download folder, {manual}",
               "simple-examples.tgz", "train.txt", "valid.txt", "test.txt"):
    assert text in proc.stderr, text
  assert not run_dir.exists()
