"""The public API at the top of the package: ``import ok_tf`` and its table of contents."""

import importlib
import importlib.metadata
import pathlib
import pydoc
import re
import subprocess
import sys

import pytest

import ok_tf


def test_every_exported_name_resolves():
  for name in ok_tf.__all__:
    assert getattr(ok_tf, name) is not None, name
  assert ok_tf.get_estimator is ok_tf.estimators.get
  assert ok_tf.METHODS is ok_tf.estimators.METHODS
  assert set(ok_tf.METHODS) >= {"ok", "kf", "kf_avg", "uoro", "rtrl", "tbptt"}
  assert issubclass(ok_tf.RHNCell, ok_tf.KroneckerCell)
  # every registered cell and estimator class is a top-level name, with no list to extend
  for cls in [*ok_tf.cells.CELLS.values(), *ok_tf.METHODS.values()]:
    assert getattr(ok_tf, cls.__name__) is cls
  with pytest.raises(AttributeError):
    ok_tf.NoSuchCell  # pylint: disable=pointless-statement
  assert set(ok_tf.__all__) <= set(dir(ok_tf))
  # every submodule the package names exists (and every module of the package is named)
  package = pathlib.Path(ok_tf.__file__).parent
  modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
  modules |= {p.parent.name for p in package.glob("*/__init__.py")}
  assert modules == set(ok_tf._SUBMODULES), modules ^ set(ok_tf._SUBMODULES)  # pylint: disable=protected-access
  for name in modules:
    assert importlib.import_module(f"ok_tf.{name}") is getattr(ok_tf, name)


def test_the_docstring_is_a_table_of_contents():
  """help(ok_tf) lists every exported name, each at the start of a line of the contents."""
  text = pydoc.render_doc(ok_tf, renderer=pydoc.plaintext)
  listed = set()
  for line in ok_tf.__doc__.splitlines():
    entry = re.match(r"  (\S.*?)(?: {2,}|$)", line)   # "  Name, Name(args)   what it is"
    if entry:
      listed.update(re.findall(r"[A-Za-z_]\w*", entry.group(1)))
  assert set(ok_tf.__all__) - {"__version__"} <= listed, set(ok_tf.__all__) - listed
  assert "Cells" in text and "Gradient estimators" in text


def test_version_is_the_package_version():
  assert re.fullmatch(r"\d+\.\d+\.\d+", ok_tf.__version__)
  pyproject = pathlib.Path(ok_tf.__file__).parents[1] / "pyproject.toml"
  assert 'version = {attr = "ok_tf.__version__"}' in pyproject.read_text()
  try:
    installed = importlib.metadata.version("ok_tf")
  except importlib.metadata.PackageNotFoundError:
    pytest.skip("ok_tf is not installed (pip install -e .)")
  assert installed == ok_tf.__version__


def test_import_alone_does_not_load_tensorflow():
  code = "import sys, ok_tf; print('tensorflow' in sys.modules)"
  root = pathlib.Path(ok_tf.__file__).parents[1]
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, cwd=root)
  assert out.stdout.strip() == "False"


def test_a_small_online_run_through_the_top_level_names():
  """The API in a few lines (as in README.md): OK on the copy task for a few steps."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  task = ok_tf.CopyTask(batch_size=4)
  model = ok_tf.RecurrentModel("rhn", units=8, vocab_size=task.vocab_size)
  est = ok_tf.get_estimator("ok", model.cell, rank=2)
  trainer = ok_tf.OnlineTrainer(model, est, task, ok_tf.make_optimizer(1e-2), batch_size=4,
                                clip_norm=1.0)
  out = trainer.run(20)
  assert int(trainer.step.numpy()) == 20 and "loss_bits" in out
