"""Tests of ok_tf/config.py in process: the flags generated from the config fields, presets,
overrides, grids, validation (one-line errors) and the resume rules."""

from __future__ import annotations

import dataclasses
import json

import pytest
from absl import flags

from ok_tf import config as config_lib
from ok_tf import runs
from ok_tf import tasks


def parse(task, *args):
  """Flags of ``train_{task}.py`` (``task`` None: ``python -m ok_tf.train``) parsed from
  ``args`` in a FlagValues of their own."""
  fv = flags.FlagValues()
  config_lib.define_flags(task, fv)
  fv(["prog", *args])
  return fv


def configs(task, *args):
  return config_lib.from_flags(task, parse(task, *args))


def error(task, *args) -> str:
  with pytest.raises(config_lib.ConfigError) as info:
    configs(task, *args)
  message = str(info.value)
  assert "\n" not in message
  return message


def write_run(path, config: dict) -> None:
  """A run directory holding ``config`` (as training writes it)."""
  runs.RunDir.create(path, config).close()


def test_every_field_has_a_flag_with_its_help_and_default():
  fv = parse("copy")
  for f in dataclasses.fields(config_lib.CopyConfig):
    if f.name == "task":
      continue
    flag = fv[config_lib.flag_name(f)]
    assert config_lib.help_of(f)[:20] in flag.help, f.name
    mode = f.metadata.get("flag_default", "option")
    expected = {config_lib.OWN: [str(f.default)] if f.metadata.get("grid") else f.default}
    assert flag.default == expected.get(mode), f.name
  assert "task" not in fv and "eval_every" not in fv      # the copy task's flags only
  assert fv["adam_epsilon"].default == 1e-8 and fv["seed"].default == ["0"]
  assert "Default from --preset: cpu 64, paper 128, quick 32." in fv["units"].help
  assert "--eval_every, --log_every, --max_minutes, --run_dir, --steps)" in fv["resume"].help
  fv = parse(None, "--task=ptb")
  assert "[task ptb, text]" in fv["eval_every"].help and "max_length" in fv


def test_preset_and_overrides():
  (cfg,), resume = configs("copy")
  quick = tasks.get("copy").presets["quick"]
  assert not resume and isinstance(cfg, config_lib.CopyConfig)
  assert {k: getattr(cfg, k) for k in quick if k != "truncation"} == {
      k: v for k, v in quick.items() if k != "truncation"}
  assert cfg.truncation is None     # ok takes none; the preset's is tbptt's
  assert cfg.task == "copy" and cfg.preset == "quick" and cfg.seed == 0
  assert cfg.run_dir.startswith("runs/copy/ok_")
  (cfg,), _ = configs("copy", "--preset=cpu", "--units=8", "--clip=0", "--max_length=20",
                      "--adam_epsilon=1e-7", "--run_dir=x")
  assert (cfg.units, cfg.clip, cfg.max_length, cfg.adam_epsilon, cfg.run_dir) == (
      8, 0.0, 20, 1e-7, "x")
  assert cfg.steps == tasks.get("copy").presets["cpu"]["steps"]


def test_rank_and_truncation_follow_the_method():
  (cfg,), _ = configs("copy", "--method=kf")
  assert cfg.rank == 1 and cfg.truncation is None       # kf: rank one, always
  (cfg,), _ = configs("copy", "--method=tbptt")
  assert cfg.truncation == tasks.get("copy").presets["quick"]["truncation"] and cfg.rank is None
  (cfg,), _ = configs("copy", "--method=ok", "--rank=3")
  assert cfg.rank == 3


def test_grid_of_learning_rates_and_seeds():
  found, _ = configs("copy", "--lr=1e-3,10^-3.5", "--seed=0,1", "--run_dir=g")
  assert [(c.lr, c.seed) for c in found] == [(1e-3, 0), (1e-3, 1), (10 ** -3.5, 0),
                                             (10 ** -3.5, 1)]
  assert found[1].run_dir == "g/lr0.001_seed1" and len({c.run_dir for c in found}) == 4
  assert config_lib.parse_number("10**-2") == pytest.approx(0.01)


@pytest.mark.parametrize("task, args, message", [
    ("copy", ["--units=0"], "--units must be positive"),
    ("copy", ["--method=nope"], "unknown --method 'nope'"),
    ("copy", ["--cell=nope"], "unknown --cell 'nope'"),
    ("copy", ["--truncation=5"], "--truncation is for tbptt; ok takes none"),
    ("copy", ["--seed=a"], "--seed takes integers"),
    ("copy", ["--lr=fast"], "cannot read 'fast' as a number"),
    ("copy", ["--lr=0"], "--lr must be positive"),
    ("copy", ["--resume"], "--resume needs --run_dir"),
    ("copy", ["--log_every=300", "--checkpoint_every=1000"], "must be a multiple of --log_every"),
    ("copy", ["--devices=/gpu:0"], "--devices is for --strategy=mirrored"),
    ("copy", ["--max_minutes=-1"], "--max_minutes must be ≥ 0"),
    (None, [], "--task is required"),
    (None, ["--task=copy", "--eval_every=5"], "--eval_every is a flag of task ptb and text"),
    ("ptb", ["--train_file=a.txt", "--data_dir=d"], "--data_dir is for PTB"),
])
def test_validation_errors_are_one_line(task, args, message):
  assert message in error(task, *args)


def test_resume_takes_the_stored_config_and_refuses_other_changes(tmp_path):
  path = str(tmp_path / "run")
  (cfg,), _ = configs("copy", "--units=8", "--max_minutes=5", f"--run_dir={path}")
  write_run(path, dataclasses.asdict(cfg))
  # flags not given now: the stored values; steps may change; max_minutes is this process's
  (cfg2,), resume = configs("copy", f"--run_dir={path}", "--resume", "--steps=50000")
  assert resume and cfg2.units == 8 and cfg2.steps == 50_000 and cfg2.max_minutes == 0
  merged = config_lib.merge_resumed(dataclasses.asdict(cfg), dataclasses.asdict(cfg2), path)
  assert merged["steps"] == 50_000
  # a flag given now that differs from the stored value: refused, in one line
  (cfg3,), _ = configs("copy", f"--run_dir={path}", "--resume", "--units=16")
  with pytest.raises(runs.RunDirError) as info:
    config_lib.merge_resumed(dataclasses.asdict(cfg), dataclasses.asdict(cfg3), path)
  assert "differs in units (stored 8, new 16)" in str(info.value)
  assert "\n" not in str(info.value)
  assert "steps" in str(info.value)


def test_a_key_absent_from_an_older_config_means_its_absent_value(tmp_path):
  path = tmp_path / "old"
  (cfg,), _ = configs("copy", f"--run_dir={path}")
  old = dataclasses.asdict(cfg)
  for key in ("grad_scale", "strategy", "max_minutes"):
    del old[key]
  write_run(path, old)
  (resumed,), _ = configs("copy", f"--run_dir={path}", "--resume")
  assert (resumed.grad_scale, resumed.strategy) == ("mean", "none")   # not the preset's
  assert config_lib.merge_resumed(old, dataclasses.asdict(resumed))["grad_scale"] == "mean"
  with pytest.raises(runs.RunDirError, match="grad_scale .stored '<absent>', new 'published'"):
    config_lib.merge_resumed(old, dict(dataclasses.asdict(resumed), grad_scale="published"))
  # a key the stored config lacks and that has no absent rule differs
  with pytest.raises(runs.RunDirError, match="units"):
    config_lib.merge_resumed({k: v for k, v in old.items() if k != "units"},
                             dataclasses.asdict(resumed))
  assert json.loads((path / runs.CONFIG_FILE).read_text())["units"] == cfg.units


def test_config_json_records_only_the_runs_own_hyperparameters(tmp_path):
  """config.json leaves out the hyperparameters of other cells and methods; a run written
  before, which recorded all of them at their defaults, still resumes, and a non-default
  one it recorded still counts."""
  path = tmp_path / "run"
  (cfg,), _ = configs("copy", "--method=uoro", "--uoro_eps=1e-5", f"--run_dir={path}")
  declared = {name for name, _, _ in config_lib.model_options()}
  recorded = config_lib.recorded(cfg)
  assert recorded["uoro_eps"] == 1e-5 and not (declared - {"uoro_eps"}) & set(recorded)
  assert set(dataclasses.asdict(cfg)) - set(recorded) == declared - {"uoro_eps"}
  (leaky,), _ = configs("copy", "--cell=leaky", "--leaky_alpha=0.25", "--method=ok")
  assert {k for k in config_lib.recorded(leaky) if k in declared} == {"leaky_alpha",
                                                                      "ok_balance"}
  older = dataclasses.asdict(cfg)          # every declared one, the others at their defaults
  write_run(path, older)
  (again,), _ = configs("copy", f"--run_dir={path}", "--resume")
  assert config_lib.merge_resumed(older, config_lib.recorded(again), path)["uoro_eps"] == 1e-5
  with pytest.raises(runs.RunDirError, match="leaky_alpha .stored 0.25, new '<absent>'"):
    config_lib.merge_resumed(dict(older, leaky_alpha=0.25), config_lib.recorded(again), path)


def test_rules_read_from_the_fields():
  # the declared hyperparameters of cells and methods (ok_tf.hyperparameters): absent in
  # an older run means the default; a cell's makes runs different settings
  declared = {name: f for name, _, f in config_lib.model_options()}
  cell_keys = tuple(name for name, f in declared.items() if f.metadata["owner"].startswith("cell "))
  assert config_lib.may_change_on_resume() == {
      "steps", "log_every", "checkpoint_every", "eval_every", "max_minutes", "run_dir"}
  assert config_lib.distinguishing_keys() == (
      "cell", "units", "batch_size", "dtype", "grad_scale", "clip", "adam_epsilon",
      *cell_keys, "tokenization", "reset_every", "train_sha256")
  absent = config_lib.absent_values()
  assert absent == {"strategy": "none", "devices": "", "cpu_devices": 0, "max_minutes": 0.0,
                    "grad_scale": "mean", "train_file": "", "valid_file": "", "test_file": "",
                    "train_sha256": "", **{k: f.default for k, f in declared.items()}}
