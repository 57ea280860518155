"""Tests of ok_tf/runs.py and ok_tf/rundir/ (run directories: writer, CSV logs, checkpoints,
reader), ok_tf/models.py's run model and ok_tf/progress.py."""

import json
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

from ok_tf import config as config_lib  # pylint: disable=g-import-not-at-top
from ok_tf import models  # pylint: disable=g-import-not-at-top
from ok_tf import progress  # pylint: disable=g-import-not-at-top
from ok_tf import runs  # pylint: disable=g-import-not-at-top

CONFIG = {"task": "copy", "method": "ok", "rank": 16, "lr": 10 ** -3.5,
          "seed": 0, "steps": 100, "log_every": 10, "batch_size": 16}


def test_config_written(tmp_path):
  path = tmp_path / "run"
  rd = runs.RunDir.create(path, dict(CONFIG, shape=(1, 2), np_val=np.float32(0.5)))
  text = (path / "config.json").read_text()
  stored = json.loads(text)
  assert stored["lr"] == CONFIG["lr"] and stored["shape"] == [1, 2]
  assert stored["np_val"] == 0.5
  assert text == json.dumps(stored, indent=2, sort_keys=True) + "\n"
  assert rd.path == path and not rd.resumed
  rd.close()


def test_refuses_to_overwrite(tmp_path):
  runs.RunDir.create(tmp_path, CONFIG).close()
  with pytest.raises(runs.RunDirError, match="already holds a run.*--resume"):
    runs.RunDir.create(tmp_path, CONFIG)


def test_resume_on_empty_dir_starts_a_run(tmp_path):
  rd = runs.RunDir.resume(tmp_path / "new", CONFIG)
  assert not rd.resumed and (tmp_path / "new" / "config.json").exists()


def test_resume_with_changed_steps(tmp_path):
  runs.RunDir.create(tmp_path, CONFIG).close()
  rd = runs.RunDir.resume(tmp_path, dict(CONFIG, steps=500, log_every=50, resume=True),
                          merge=config_lib.merge_resumed)
  assert rd.resumed
  stored = json.loads((tmp_path / "config.json").read_text())
  assert stored["steps"] == 500 and stored["log_every"] == 50


def test_resume_with_changed_lr_refused(tmp_path):
  runs.RunDir.create(tmp_path, CONFIG).close()
  with pytest.raises(runs.RunDirError, match=r"lr \(stored") as err:
    runs.RunDir.resume(tmp_path, dict(CONFIG, lr=1e-3, steps=500), merge=config_lib.merge_resumed)
  assert "steps" not in str(err.value).split("only")[0]
  with pytest.raises(runs.RunDirError, match="extra"):
    runs.RunDir.resume(tmp_path, dict(CONFIG, extra=1), merge=config_lib.merge_resumed)
  # without a merge rule no change at all is allowed
  with pytest.raises(runs.RunDirError, match="differs in steps"):
    runs.RunDir.resume(tmp_path, dict(CONFIG, steps=500))
  # the stored config is unchanged
  assert json.loads((tmp_path / "config.json").read_text())["lr"] == CONFIG["lr"]


def test_csv_append_and_truncate(tmp_path):
  rd = runs.RunDir.create(tmp_path, CONFIG)
  for step in (10, 20, 30, 40):
    rd.log_metrics({"step": step, "level": step // 10, "ema_bits": np.float32(0.25)})
  rd.log_eval({"step": 20, "valid_bpc": 2.5})
  rd.log_eval({"step": 40, "valid_bpc": 2.0})
  # flushed on every call: readable before close
  assert [r["step"] for r in runs.read_csv(tmp_path / "metrics.csv")] == [10, 20, 30, 40]
  rd.close()

  # resume from a checkpoint at step 20: later rows go, the header is kept
  rd = runs.RunDir.resume(tmp_path, CONFIG)
  rd.truncate_after(20)
  rd.log_metrics({"step": 30, "level": 3, "ema_bits": 0.5, "new_col": 1})
  rd.log_eval({"step": 40, "valid_bpc": 1.9})
  rd.close()
  metrics = runs.read_csv(tmp_path / "metrics.csv")
  assert [r["step"] for r in metrics] == [10, 20, 30]
  # a column new on resume widens the header; the rows before have it empty
  assert list(metrics[0]) == ["step", "level", "ema_bits", "new_col"]
  assert metrics[0]["new_col"] is None and metrics[1]["new_col"] is None
  assert metrics[2] == {"step": 30, "level": 3, "ema_bits": 0.5, "new_col": 1}
  assert isinstance(metrics[0]["step"], int) and metrics[0]["ema_bits"] == 0.25
  assert [(r["step"], r["valid_bpc"]) for r in runs.read_csv(tmp_path / "eval.csv")] == [
      (20, 2.5), (40, 1.9)]

  # no checkpoint restored: every row goes
  rd = runs.RunDir.resume(tmp_path, CONFIG)
  rd.truncate_after(None)
  rd.close()
  assert runs.read_csv(tmp_path / "metrics.csv") == []
  assert (tmp_path / "metrics.csv").read_text().startswith("step,level,ema_bits,new_col")


def test_a_column_first_seen_later_widens_the_header(tmp_path):
  with runs.RunDir.create(tmp_path, CONFIG) as rd:
    rd.expect_metrics(["valid_bpc"])
    rd.log_metrics({"step": 10, "loss_bits": 1.0})
    rd.log_metrics({"step": 20, "loss_bits": 0.9, "valid_bpc": 2.0, "shadow_cosine": 0.5})
    rd.log_metrics({"step": 30, "loss_bits": 0.8})
  lines = (tmp_path / "metrics.csv").read_text().splitlines()
  assert lines == ["step,loss_bits,valid_bpc,shadow_cosine", "10,1.0,,", "20,0.9,2.0,0.5",
                   "30,0.8,,"]


def test_checkpoint_names_are_parsed_once(tmp_path):
  from ok_tf.rundir import checkpoints  # pylint: disable=g-import-not-at-top
  assert checkpoints.step_of("a/b/ckpt-120") == 120 and checkpoints.step_of(None) is None
  assert checkpoints.step_of("a/ckpt-x") is None and runs.step_of is checkpoints.step_of
  for name in ("ckpt-20.index", "ckpt-3.index", "ckpt-3.data-00000-of-00001", "other.index"):
    (tmp_path / name).touch()
  assert checkpoints.steps_in(tmp_path) == {3: str(tmp_path / "ckpt-3"),
                                            20: str(tmp_path / "ckpt-20")}
  assert checkpoints.steps_in(tmp_path / "missing") == {}


def test_checkpoint_round_trip(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  var = tf.Variable([1.0, 2.0])
  gen = tf.random.Generator.from_seed(123)
  rd = runs.RunDir.create(tmp_path, CONFIG)
  rd.checkpoint(w=var, rng=gen)
  assert rd.restore_latest() is None
  assert rd.save(10).endswith("ckpt-10")
  var.assign([3.0, 4.0])
  rd.save(20)
  expected_draw = gen.normal([4]).numpy()
  rd.save(30)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == sorted(
      ["checkpoint", "ckpt-20.index", "ckpt-20.data-00000-of-00001",
       "ckpt-30.index", "ckpt-30.data-00000-of-00001"])
  rd.close()

  # a fresh process-like restore into new objects
  var2 = tf.Variable([0.0, 0.0])
  gen2 = tf.random.Generator.from_seed(999)
  rd2 = runs.RunDir.resume(tmp_path, CONFIG)
  rd2.checkpoint(w=var2, rng=gen2)
  assert rd2.latest_step == 30
  assert rd2.restore_latest() == 30
  np.testing.assert_array_equal(var2.numpy(), [3.0, 4.0])
  # the generator continues where the saved one stood at step 30
  np.testing.assert_array_equal(gen2.normal([4]).numpy(), gen.normal([4]).numpy())
  assert not np.array_equal(expected_draw, gen.normal([4]).numpy())


def test_generator_state_restored_exactly(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  gen = tf.random.Generator.from_seed(7)
  rd = runs.RunDir.create(tmp_path, CONFIG)
  rd.checkpoint(rng=gen)
  rd.save(5)
  first = gen.uniform([3]).numpy()
  assert rd.restore_latest() == 5
  np.testing.assert_array_equal(gen.uniform([3]).numpy(), first)


def test_best_checkpoint(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  var = tf.Variable(0.0)
  rd = runs.RunDir.create(tmp_path, CONFIG)
  rd.checkpoint(w=var)
  assert rd.restore_best() is None
  var.assign(1.0)
  rd.save_best(100)
  var.assign(2.0)
  rd.save_best(200)
  var.assign(3.0)
  rd.save(300)
  assert rd.best_step == 200
  assert len([f for f in os.listdir(tmp_path / "best") if f.endswith(".index")]) == 1
  assert rd.restore_best() == 200 and float(var.numpy()) == 2.0
  assert rd.restore_latest() == 300 and float(var.numpy()) == 3.0


def test_checkpoint_needed_first(tmp_path):
  rd = runs.RunDir.create(tmp_path, CONFIG)
  with pytest.raises(runs.RunDirError, match="checkpoint"):
    rd.save(1)


def test_scalars_and_results(tmp_path):
  rd = runs.RunDir.create(tmp_path, CONFIG)
  rd.scalars(10, {"loss_bits": 0.5, "level": np.int64(3)})
  rd.scalars(10, {"valid_bpc": 2.0}, prefix="eval")
  rd.write_results({"best_valid_bpc": np.float32(1.75), "chars": 3200})
  rd.close()
  events = [f for f in os.listdir(tmp_path / "tb") if f.startswith("events")]
  assert len(events) == 1
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  values = {}
  for record in tf.data.TFRecordDataset(str(tmp_path / "tb" / events[0])):
    event = tf.compat.v1.Event.FromString(record.numpy())
    for v in event.summary.value:
      assert v.metadata.plugin_data.plugin_name == "scalars"
      values[(v.tag, event.step)] = float(tf.make_ndarray(v.tensor))
  assert values == {("train/loss_bits", 10): 0.5, ("train/level", 10): 3.0,
                    ("eval/valid_bpc", 10): 2.0}
  assert json.loads((tmp_path / "results.json").read_text()) == {
      "best_valid_bpc": 1.75, "chars": 3200}


def test_find_runs_and_read_run(tmp_path):
  a = tmp_path / "sweep" / "ok" / "seed0"
  b = tmp_path / "sweep" / "tbptt" / "seed1"
  c = tmp_path / "single"
  for i, p in enumerate((a, b, c)):
    rd = runs.RunDir.create(p, dict(CONFIG, seed=i))
    rd.log_metrics({"step": 10, "chars": 160, "level": 2, "ema_bits": 0.3,
                    "note": "x"})
    rd.close()
  rd = runs.RunDir.resume(tmp_path / "sweep" / "ok" / "seed0", CONFIG)
  rd.write_results({"x": 1})
  (tmp_path / "sweep" / "empty").mkdir()

  found = runs.find_runs([str(tmp_path / "sweep"), str(c), str(a)])
  assert found == sorted([a, b, c], key=str)
  assert runs.find_runs([c / "config.json"]) == [c]
  with pytest.raises(FileNotFoundError):
    runs.find_runs([str(tmp_path / "missing")])

  run = runs.Run(a)
  assert run.config["seed"] == 0 and run.path == a
  assert run.metrics == [{"step": 10, "chars": 160, "level": 2,
                          "ema_bits": 0.3, "note": "x"}]
  assert run.eval == [] and run.results == {"x": 1} and run.finished
  assert [p.name for p in run.log_files()] == ["config.json", "metrics.csv", "results.json"]
  assert runs.Run(b).results is None and not runs.Run(b).finished
  assert runs.Run(b).checkpoints == {} and runs.Run(b).latest_step is None
  with pytest.raises(FileNotFoundError, match="no best or latest checkpoint"):
    runs.Run(b).checkpoint()
  assert runs.is_run(a) and not runs.is_run(tmp_path / "sweep" / "empty")
  with pytest.raises(FileNotFoundError, match="not a run directory"):
    runs.Run(tmp_path / "sweep" / "empty")


def test_progress(monkeypatch):
  lines = []
  monkeypatch.setattr(progress.logging, "info",
                      lambda fmt, *args: lines.append(fmt % args if args else fmt))
  clock = iter([100.0, 110.0, 120.0])
  monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
  prog = progress.Progress(5000, start_step=200, wall_time_offset=5.0)
  out = prog.update(1200, {"step": 1200, "level": 7, "ema_bits": 0.2071})
  assert out == {"steps_per_sec": 100.0, "wall_time": 15.0}
  assert lines[-1] == ("step 1200/5000 (24%) | level 7 | ema_bits 0.2071 | "
                       "100.0 steps/s | ETA 0:00:38")
  out = prog.update(2200, {"level": 8.0})
  assert out == {"steps_per_sec": 100.0, "wall_time": 25.0}
  assert lines[-1].startswith("step 2200/5000 (44%) | level 8 |")


def test_run_reads_checkpoints_and_loads_the_model(tmp_path):
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ok_tf import models  # pylint: disable=g-import-not-at-top
  config = dict(CONFIG, task="ptb", cell="rhn", units=3, dtype="float32", seed=3)
  keras.utils.set_random_seed(4)
  model = models.RecurrentModel("rhn", 3, 50, init_stddev=0.3, dtype="float32")
  rd = runs.RunDir.create(tmp_path, config)
  rd.checkpoint(model=model, step=tf.Variable(0))
  rd.save(5)
  rd.save_best(5)
  model.cell.kernel.assign_add(tf.ones_like(model.cell.kernel))
  rd.save(9)
  rd.close()
  run = runs.Run(tmp_path)
  assert list(run.checkpoints) == [5, 9] and run.latest_step == 9 and run.best_step == 5
  assert run.checkpoint()[1] == 5 and run.checkpoint("latest") == (run.checkpoints[9], 9)
  with pytest.raises(FileNotFoundError, match="step 7"):
    run.checkpoint(7)
  assert run.vocab_size == 50
  latest, step = models.load_run_model(run, "latest", dtype="float64")
  assert step == 9 and latest.cell.kernel.dtype == tf.float64
  for a, b in zip(latest.weights, model.weights):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-7)
  best, step = models.load_run_model(tmp_path)  # best if there is one
  assert step == 5 and best.cell.kernel.dtype == tf.float32
  np.testing.assert_array_equal(best.cell.kernel.numpy() + 1, model.cell.kernel.numpy())
  init, step = models.load_run_model(run, "init")
  assert step == 0 and not np.allclose(init.cell.kernel.numpy(), best.cell.kernel.numpy())


def test_restore_allows_named_objects_missing_from_an_older_checkpoint(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rd = runs.RunDir.create(tmp_path, CONFIG)
  rd.checkpoint(w=tf.Variable(1.0))
  rd.save(10)
  rd.close()
  w, extra = tf.Variable(0.0), tf.Variable(5.0)
  rd = runs.RunDir.resume(tmp_path, CONFIG)
  rd.checkpoint(w=w, extra=extra)
  with pytest.raises(AssertionError):
    rd.restore_latest()
  assert rd.restore_latest(allow_missing=("extra",)) == 10
  assert float(w.numpy()) == 1.0 and float(extra.numpy()) == 5.0
  assert rd.not_restored == ("extra",)
  rd.save(20)
  assert rd.restore_latest(allow_missing=("extra",)) == 20 and rd.not_restored == ()
