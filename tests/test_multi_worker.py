"""--strategy=multi_worker: two worker processes on localhost (MultiWorkerMirroredStrategy
from a TF_CONFIG each) train one run equal to the single-process run, and stop together
on a signal to one of them."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import toolkit
from ok_tf import models
from ok_tf import preemption
from ok_tf import runs

FLAGS = ["--preset=quick", "--units=8", "--rank=2", "--log_every=100",
         "--checkpoint_every=200", "--dtype=float64", "--grad_scale=mean"]


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def _workers(run_dir, *flags, signal_worker=None):
  """Runs train_copy.py as two workers; with ``signal_worker``, SIGTERM is sent to that
  worker once it holds its folder. Returns the two (returncode, stderr)."""
  cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
  procs = []
  for index in range(2):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=tf_config)
    procs.append(subprocess.Popen(
        [sys.executable, "train_copy.py", "--strategy=multi_worker", f"--run_dir={run_dir}",
         *flags], cwd=toolkit.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True))
  try:
    if signal_worker is not None:
      held = run_dir / ("workers/worker-1/.lock" if signal_worker else ".lock")
      start = time.monotonic()
      while not held.exists():
        assert time.monotonic() - start < 300 and procs[signal_worker].poll() is None
        time.sleep(0.02)
      procs[signal_worker].send_signal(signal.SIGTERM)
    errors = [p.communicate(timeout=600)[1] for p in procs]
    return [(p.returncode, e) for p, e in zip(procs, errors)]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


def _losses(run_dir):
  return [(r["step"], r["level"], r["loss_bits"]) for r in runs.Run(run_dir).metrics]


def _equal_runs(one, two, rows):
  """The logged losses agree to 1e-6 relative, the last checkpoint's weights to 1e-10
  (float64, --grad_scale=mean: test_distributed's mirrored test says why)."""
  a, b = _losses(one), _losses(two)
  assert [r[:2] for r in a] == [r[:2] for r in b] and len(a) == rows
  for (_, _, la), (_, _, lb) in zip(a, b):
    assert la == pytest.approx(lb, rel=1e-6)
  (m1, s1), (m2, s2) = models.load_run_model(one, "latest"), models.load_run_model(two, "latest")
  assert s1 == s2
  for w1, w2 in zip(m1.weights, m2.weights):
    assert toolkit.rel_err(np.asarray(w2), np.asarray(w1)) < 1e-10


@pytest.fixture(scope="module")
def preempted(tmp_path_factory):
  """Two workers training to 300 steps; SIGTERM to worker 1 during the first chunk."""
  two = tmp_path_factory.mktemp("multi_worker") / "two"
  return two, _workers(two, *FLAGS, "--steps=300", signal_worker=1)


def test_two_workers_stop_together_on_a_signal_to_one_equal_to_one_process(preempted, tmp_path):
  """Both workers finish the chunk, save checkpoints of step 100 (the chief in the run
  directory, worker 1 in workers/worker-1/) and exit with code 75; the run so far equals
  the single-process run of 100 steps."""
  two, ((rc0, err0), (rc1, err1)) = preempted
  assert rc0 == rc1 == preemption.EXIT_CODE, (err0[-3000:], err1[-3000:])
  assert err1.strip().splitlines()[-1].startswith(
      "train_copy.py: SIGTERM received: stopped at step 100 with a checkpoint")
  assert "another worker's signal received: stopped at step 100" in err0.strip().splitlines()[-1]
  assert runs.Run(two).latest_step == 100
  assert (two / "workers" / "worker-1" / "ckpt-100.index").exists()
  assert runs.Run(two).config["strategy"] == "multi_worker"
  assert json.loads((two / "provenance.json").read_text())[-1]["workers"] == 2
  one = tmp_path / "one"
  proc, _ = toolkit.run_script("train_copy.py", *FLAGS, "--steps=100", f"--run_dir={one}")
  toolkit.check_ok(proc)
  _equal_runs(one, two, rows=1)


@pytest.mark.slow
def test_two_workers_resumed_equal_one_process(preempted, tmp_path):
  """The preempted two-worker run, resumed on both workers, ends equal to the
  uninterrupted single-process run of 300 steps."""
  two = tmp_path / "two"
  shutil.copytree(preempted[0], two)
  (rc0, err0), (rc1, err1) = _workers(two, "--steps=300", "--resume")
  assert rc0 == rc1 == 0, (err0[-3000:], err1[-3000:])
  one = tmp_path / "one"
  proc, _ = toolkit.run_script("train_copy.py", *FLAGS, "--steps=300", f"--run_dir={one}")
  toolkit.check_ok(proc)
  _equal_runs(one, two, rows=3)


def test_multi_worker_without_tf_config_stops_with_one_line(tmp_path):
  proc, _ = toolkit.run_script("train_copy.py", "--strategy=multi_worker", "--steps=100",
                               f"--run_dir={tmp_path / 'r'}", unset=("TF_CONFIG",))
  assert proc.returncode == 1
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("train_copy.py: --strategy=multi_worker needs TF_CONFIG"), last
