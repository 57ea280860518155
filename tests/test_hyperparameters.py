"""The hyperparameters that methods and cells declare (ok_tf/hyperparameters.py): their
config fields and flags, their checks, and that a value given on the command line reaches
the estimator (``--method=uoro --uoro_eps=…``, ``--method=ok --ok_balance=false``)."""

import dataclasses
import json

import keras
import pytest

from ok_tf import cells
from ok_tf import config
from ok_tf import estimators
from ok_tf import experiment
from ok_tf import hyperparameters
from ok_tf import tasks

import toolkit


def declared():
  """(kind, owner, class, hyperparameter) of every declaration in both registries."""
  for kind, registry in (("method", estimators.METHODS), ("cell", cells.CELLS)):
    for owner, cls in registry.items():
      for hp in cls.hyperparameters:
        yield kind, owner, cls, hp


def test_every_declaration_is_a_config_field_with_its_default():
  fields = {f.name: f for f in dataclasses.fields(config.config_class("copy"))}
  for kind, owner, _, hp in declared():
    field = fields[hyperparameters.field_name(owner, hp)]
    assert field.default == hp.default and field.type is hp.type
    assert field.metadata["owner"] == f"{kind} {owner}" and field.metadata["help"] == hp.help


def test_values_and_checks_read_the_declaration():
  for _, owner, cls, hp in declared():
    assert hyperparameters.values(owner, cls, {}) [hp.name] == hp.default
    assert hyperparameters.check(owner, cls, {}) is None
  uoro = estimators.method("uoro")
  assert hyperparameters.check("uoro", uoro, {"uoro_eps": 0.0}) == (
      "--uoro_eps must be positive, got 0.0")


def trainer_of(cfg):
  """The trainer ``python -m ok_tf.train`` builds for ``cfg``."""
  task = tasks.get(cfg.task).build(cfg, False).task
  model = experiment.build_model(cfg, task)
  return experiment.build_trainer(cfg, model, task)


@pytest.mark.parametrize("method,flag,field,attribute,value", [
    ("uoro", "--uoro_eps=1e-5", "uoro_eps", "eps", 1e-5),
    ("ok", "--ok_balance=false", "ok_balance", "balance", False),
])
def test_command_line_reaches_the_estimator(method, flag, field, attribute, value, tmp_path):
  run_dir = tmp_path / "run"
  proc, _ = toolkit.run_script("-m", "ok_tf.train", "--task=copy", f"--method={method}", flag,
                               "--units=4", "--steps=10", "--log_every=5",
                               "--checkpoint_every=10", f"--run_dir={run_dir}", timeout=300)
  toolkit.check_ok(proc)
  stored = json.loads((run_dir / "config.json").read_text())
  assert stored["method"] == method and stored[field] == value
  # only the run's own method's and cell's hyperparameters are recorded
  others = {f for f, _, _ in config.model_options()} - {field}
  assert others and not others & set(stored)
  # the stored config, as the run used it, builds the estimator with that value
  cfg = config.config_class("copy")(**stored)
  assert getattr(trainer_of(cfg).estimator, attribute) == value


def test_command_line_sets_the_leaky_cells_alpha(tmp_path):
  """``--cell=leaky --leaky_alpha=…`` trains that cell, and its model file keeps α."""
  run_dir = tmp_path / "run"
  proc, _ = toolkit.run_script("-m", "ok_tf.train", "--task=copy", "--method=kf", "--cell=leaky",
                               "--leaky_alpha=0.25", "--units=4", "--steps=10", "--log_every=5",
                               "--checkpoint_every=10", f"--run_dir={run_dir}", timeout=300)
  toolkit.check_ok(proc)
  assert json.loads((run_dir / "config.json").read_text())["leaky_alpha"] == 0.25
  model = keras.models.load_model(run_dir / "model.keras")
  assert model.cell_name == "leaky" and model.cell.alpha == 0.25


@pytest.mark.parametrize("args,words", [
    (["--method=uoro", "--ok_balance=false"], ["--ok_balance is a flag of method ok",
                                                "not of method uoro"]),
    (["--method=uoro", "--uoro_eps=-1"], ["--uoro_eps must be positive"]),
    (["--cell=leaky", "--leaky_alpha=2"], ["--leaky_alpha must be in (0, 1]"]),
    (["--cell=tanh", "--leaky_alpha=0.5"], ["--leaky_alpha is a flag of cell leaky"]),
])
def test_command_line_errors_are_one_line(args, words, tmp_path):
  proc, _ = toolkit.run_script("-m", "ok_tf.train", "--task=copy", *args, "--steps=10",
                               f"--run_dir={tmp_path / 'r'}", timeout=120)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  line = next(l for l in proc.stderr.splitlines() if words[0] in l)
  assert all(w in line for w in words)
  assert not (tmp_path / "r").exists()


def test_labels_show_values_other_than_the_default():
  assert estimators.label("ok", 8, None, {"ok_balance": True}) == "ok (r=8)"
  assert estimators.label("ok", 8, None, {"ok_balance": False}) == "ok (r=8, balance=False)"
  assert estimators.label("uoro", None, None, {"uoro_eps": 1e-6}) == "uoro (eps=1e-06)"
