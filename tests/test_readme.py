"""The README's "API in a few lines" runs as written (small sizes substituted).

The block is taken from README.md, the names it leaves to the reader (``input_dim``,
``batch_size``, ``x``, ``rng``, ``dl_ds``, ``mask``, ``xs``, ``targets``, ``loss_fn``,
``ids``, ``data_dir``, the run directory) are defined here, and only step counts and the run directory are replaced.
"""

import os
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

import toolkit

ROOT = pathlib.Path(__file__).resolve().parents[1]


def api_block() -> str:
  readme = (ROOT / "README.md").read_text()
  section = readme[readme.index("## The API in a few lines"):]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_api_block_runs(tmp_path, monkeypatch):
  data_dir = os.environ.get("OK_TF_DATA")
  if not data_dir:
    pytest.skip("set OK_TF_DATA to a folder with the PTB character files")
  run_dir = tmp_path / "ptb_run"
  proc, _ = toolkit.run_script("train_ptb.py", "--units=8", "--rank=2", "--batch_size=4",
                               "--steps=200", "--log_every=100", "--eval_every=100",
                               "--eval_streams=64", f"--run_dir={run_dir}")
  toolkit.check_ok(proc)
  code = api_block()
  replacements = {'"runs/ptb/<run>"': repr(str(run_dir)), "trainer.run(1000)": "trainer.run(20)",
                  "samples=32, burn_in=20": "samples=4, burn_in=5"}
  for old, new in replacements.items():
    assert old in code, old
    code = code.replace(old, new)
  input_dim, batch_size, units = 5, 4, 64
  rs = np.random.RandomState(0)
  readout = tf.constant(rs.normal(size=(units, 3)), tf.float32)
  names = {
      "input_dim": input_dim, "batch_size": batch_size, "data_dir": data_dir,
      "x": tf.constant(rs.normal(size=(batch_size, input_dim)), tf.float32),
      "rng": tf.random.Generator.from_seed(0),
      "dl_ds": tf.constant(rs.normal(size=(batch_size, units)), tf.float32),
      "mask": tf.constant([True, False, False, True]),
      "xs": tf.constant(rs.normal(size=(6, batch_size, input_dim)), tf.float32),
      "targets": tf.constant(rs.randint(0, 3, size=(6, batch_size))),
      "loss_fn": lambda s, y: tf.nn.sparse_softmax_cross_entropy_with_logits(y, s @ readout),
      "ids": rs.randint(0, 4, size=(2, 7)),
  }
  monkeypatch.chdir(tmp_path)   # the block saves copy.keras in the working directory
  exec(compile(code, "README.md", "exec"), names)  # pylint: disable=exec-used
  assert names["step"] == 200 and (tmp_path / "copy.keras").exists()
  # sanity bounds: measured rel_var ≈ 1e-9 and cosine ≈ 1 − 1e-9, also with other kernels
  grads = names["seq"].grads     # the estimator ran over the 6 steps of xs in one call
  assert grads[0].shape == (input_dim + units + 1, 2 * units)
  assert names["seq"].losses.shape == (6, batch_size)
  assert bool(tf.reduce_all(tf.math.is_finite(grads[0]))) and float(tf.norm(grads[0])) > 0
  assert 0.0 <= names["res"].rel_var < 1.0 and names["res"].cosine > 0.9


def arrays_block() -> str:
  readme = (ROOT / "README.md").read_text()
  section = readme[readme.index("### Any sequence problem"):]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_arrays_block_runs(capsys):
  """The README's own-arrays block trains (200 steps instead of 2000) and evaluates."""
  code = arrays_block()
  assert "trainer.run(2000)" in code
  names = {}
  exec(compile(code.replace("trainer.run(2000)", "trainer.run(200)"), "README.md", "exec"),
       names)  # pylint: disable=exec-used
  out = names["out"]
  assert out["loss_bits"].shape == (200,) and out["weight"].shape == (200,)
  # weight 0 on the first two steps of every 20-step sequence: 9/10 of the steps count
  assert abs(float(np.mean(out["weight"])) - 0.9) < 1e-6
  printed = capsys.readouterr().out.splitlines()
  assert np.isfinite(float(printed[-2])) and "'accuracy'" in printed[-1]
