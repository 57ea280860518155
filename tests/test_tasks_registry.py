"""The registry's tasks: every entry imports, follows the protocol, and its flags' names are
unique across the tasks (they share one command line)."""

import dataclasses

import pytest

from ok_tf import config
from ok_tf import tasks
from ok_tf.tasks import base

NEW = ("additive", "mackey_glass", "henon", "lorenz", "mnist", "arrays")


@pytest.mark.parametrize("name", NEW)
def test_entries_are_complete(name):
  entry = tasks.get(name)
  assert entry.name == name and entry.help
  assert {"quick", "cpu"} <= set(entry.presets)
  shared = {f.name for f in dataclasses.fields(config.TrainConfig)}
  for preset in entry.presets.values():
    assert set(preset) <= shared | {f.name for f in dataclasses.fields(entry.options)}
  for field in dataclasses.fields(entry.options):
    assert field.metadata.get("help"), field.name
    assert field.name not in shared, field.name


def test_option_names_are_unique_across_tasks():
  owner = {}
  for name in tasks.names():
    options = tasks.get(name).options
    for field in dataclasses.fields(options):
      if field.name in owner and owner[field.name][1] is not options:
        pytest.fail(f"--{field.name} of {name} is also {owner[field.name][0]}'s")
      owner.setdefault(field.name, (name, options))


def test_generated_tasks_follow_the_protocol():
  cfg = type("Cfg", (), dict(batch_size=4, additive_t1=3, additive_t2=8))
  for name in ("additive", "mackey_glass", "henon", "lorenz"):
    task = tasks.get(name).build(cfg, False).task
    assert isinstance(task, base.Task)
    described = task.describe()
    assert described["baseline"] == task.baseline and described["baselines"] == task.baselines
