"""python -m ok_tf.train: every registered task runs through one trainer and one run
directory (in process, tiny sizes), and the command line's errors are one line each."""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ok_tf import config as config_lib
from ok_tf import experiment
from ok_tf import models
from ok_tf import runs
from ok_tf import tasks

import toolkit

TINY = dict(units=6, batch_size=4, steps=40, log_every=20, checkpoint_every=20)


def task_config(name, tmp_path, **extra):
  """A tiny run of task ``name`` with its quick preset's other values."""
  if name in ("ptb", "text"):
    if name == "ptb" and not toolkit.ptb_data_dir():
      pytest.skip(toolkit.PTB_SKIP_REASON)
    if name == "text":
      path = tmp_path / "train.txt"
      path.write_text("abcab cabba " * 20, encoding="utf-8")
      extra = dict(extra, train_file=str(path), tokenization="characters")
    extra = dict(extra, eval_every=20)
  if name == "arrays":
    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(path, inputs=rng.standard_normal((10, 5, 2)).astype(np.float32),
             targets=rng.standard_normal((10, 5, 1)).astype(np.float32))
    extra = dict(extra, arrays_file=str(path))
  preset = dict(tasks.get(name).presets["quick"], **TINY, **extra)
  return config_lib.config_class(name)(**preset, run_dir=str(tmp_path / name))


@pytest.mark.parametrize("method", ["ok", "tbptt"])
@pytest.mark.parametrize("name", tasks.names())
def test_every_task_trains_into_a_run_directory(name, method, tmp_path):
  """Each task trains 40 steps; the run records its specs (task.json), finishes with
  results.json and a model that models.load_run_model rebuilds with the same outputs; the loss
  column is the output spec's."""
  cfg = task_config(name, tmp_path, method=method, rank=2 if method == "ok" else None,
                    truncation=None if method == "ok" else 10)
  config_lib.validate(cfg)
  if name == "mnist":
    with tfds.testing.mock_data(num_examples=16):
      run = experiment.run_config(cfg)
  else:
    run = experiment.run_config(cfg)
  assert run.finished
  described = run.task()
  model, step = models.load_run_model(run, "latest")
  assert step == 40 and specs_of(described) == (model.x_spec, model.y_spec)
  column = model.y_spec.loss_column
  rows = run.metrics
  assert [int(r["step"]) for r in rows] == [20, 40]
  assert all(r[column] is None or np.isfinite(float(r[column])) for r in rows), rows
  assert json.loads((run.path / runs.CONFIG_FILE).read_text())["task"] == name


def specs_of(described):
  from ok_tf import specs  # pylint: disable=g-import-not-at-top
  return (specs.from_json(described["inputs"], "inputs"),
          specs.from_json(described["outputs"], "outputs"))


def test_a_resume_with_other_specs_is_refused(tmp_path):
  run = runs.RunDir.create(tmp_path / "r", {"task": "additive"})
  run.write_task({"inputs": {"kind": "symbols", "size": 2},
                  "outputs": {"kind": "classes", "size": 2}})
  with pytest.raises(runs.RunDirError, match="records inputs"):
    run.write_task({"inputs": {"kind": "reals", "size": 2},
                    "outputs": {"kind": "classes", "size": 2}})
  run.close()


CLI_ERRORS = {
    "unknown_task": (["--task=nope"], ["--task", "nope"]),
    "no_task": ([], ["--task is required", "copy"]),
    "other_tasks_flag": (["--task=additive", "--max_length=8"],
                         ["--max_length is a flag of task copy, not of additive"]),
    "missing_preset": (["--task=additive", "--preset=paper"], ["no preset 'paper'", "quick"]),
}


@pytest.mark.parametrize("case", sorted(CLI_ERRORS))
def test_command_line_errors_are_one_line(case, tmp_path):
  args, words = CLI_ERRORS[case]
  proc, _ = toolkit.run_script("-m", "ok_tf.train", *args, "--steps=20",
                               f"--run_dir={tmp_path / 'r'}", timeout=120)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  text = proc.stderr.strip().splitlines()
  message = next(line for line in text if any(w in line for w in words))
  for word in words:
    assert word in message, (word, proc.stderr[-2000:])
  assert not (tmp_path / "r").exists()


def test_help_lists_the_tasks_and_their_flags():
  proc, _ = toolkit.run_script("-m", "ok_tf.train", "--help", timeout=120)
  text = "".join(proc.stdout.split())   # absl wraps the lines (at spaces and hyphens)
  for name in tasks.names():
    assert "".join(f"{name}: {tasks.get(name).help}".split()) in text, name
  assert "--additive_t1" in text and "[taskadditive]" in text and "[taskptb,text]" in text
