"""What keeps a long run safe, in process: the signal watch, the run directory's lock,
checkpoints that cannot be read, provenance (the scripts end to end: test_scripts.py)."""

import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from ok_tf import lock
from ok_tf import preemption
from ok_tf import provenance
from ok_tf import runs

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_watch_records_the_first_signal_and_restores_the_handlers(sig):
  before = signal.getsignal(sig)
  with preemption.Watch() as watch:
    assert watch.requested is None
    os.kill(os.getpid(), sig)
    assert watch.requested == signal.Signals(sig).name
    os.kill(os.getpid(), signal.SIGTERM)       # a later SIGTERM changes nothing
    assert watch.requested == signal.Signals(sig).name
  assert signal.getsignal(sig) is before


def test_a_second_sigint_interrupts_at_once():
  with preemption.Watch() as watch:
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
    assert watch.requested == "SIGINT"


def test_preempted_says_where_it_stopped_and_how_to_resume():
  e = preemption.Preempted(300, "SIGTERM", "runs/x")
  assert str(e) == ("SIGTERM received: stopped at step 300 with a checkpoint; continue with "
                    "--run_dir=runs/x --resume (exit code 75)")
  assert preemption.EXIT_CODE not in (0, 1, 2) and preemption.EXIT_CODE < 128


# ----------------------------------------------------------------------------- the lock


def test_lock_is_exclusive_names_its_holder_and_is_released(tmp_path):
  held = lock.hold(tmp_path / "run")
  assert lock.holder(tmp_path / "run") == {"pid": os.getpid(), "host": socket.gethostname()}
  with pytest.raises(lock.LockedError) as info:   # another open file: refused in-process too
    lock.hold(tmp_path / "run")
  message = str(info.value)
  assert "\n" not in message and f"pid {os.getpid()} on host {socket.gethostname()}" in message
  held.release()
  with lock.hold(tmp_path / "run"):
    pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
  """A process holding the lock is SIGKILLed: the lock file remains, the lock does not."""
  code = ("import sys, time; from ok_tf import lock; lock.hold(sys.argv[1]); "
          "print('held', flush=True); time.sleep(600)")
  holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(lock.LockedError, match=f"pid {holder.pid} "):
      lock.hold(tmp_path)
  finally:
    holder.kill()
    holder.wait()
  assert (tmp_path / lock.LOCK_FILE).exists()
  lock.hold(tmp_path).release()


# ----------------------------------------------------------------------------- checkpoints


def _data_file(run_dir, step):
  return next((run_dir / runs.CHECKPOINT_DIR).glob(f"ckpt-{step}.data-*"))


def _zero_bytes(path):
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 40] = bytes(40)
  path.write_bytes(bytes(data))


def _truncate(path):
  path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])


CORRUPTIONS = {"checksum": _zero_bytes, "truncated": _truncate, "missing shard": os.remove}


def _two_checkpoints(path):
  """A run directory with checkpoints at steps 1 (v = 1) and 2 (v = 2); returns v."""
  v = tf.Variable(tf.zeros([2000], tf.float64))
  run = runs.RunDir.create(path, {"a": 1})
  run.checkpoint(v=v)
  for step in (1, 2):
    v.assign(tf.fill([2000], tf.constant(float(step), tf.float64)))
    run.save(step)
  run.close()
  return v


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_resume_skips_an_unreadable_newest_checkpoint(corruption, tmp_path):
  v = _two_checkpoints(tmp_path)
  CORRUPTIONS[corruption](_data_file(tmp_path, 2))
  v.assign(tf.zeros_like(v))
  run = runs.RunDir.resume(tmp_path, {"a": 1})
  run.checkpoint(v=v)
  assert run.restore_readable() == 1
  assert float(v[0]) == float(v[-1]) == 1.0
  # The unreadable checkpoint is set aside: the folder, its state file and the reader
  # agree that step 1 is the latest, and the next save is a normal one.
  assert run.latest_step == 1 and runs.Run(tmp_path).latest_step == 1
  assert list((tmp_path / runs.CHECKPOINT_DIR / runs.UNREADABLE_DIR).glob("ckpt-2.index"))
  v.assign(tf.fill([2000], tf.constant(3.0, tf.float64)))
  run.save(3)
  assert sorted(runs.Run(tmp_path).checkpoints) == [1, 3]
  run.close()


def test_resume_with_no_readable_checkpoint_stops_with_one_line(tmp_path):
  v = _two_checkpoints(tmp_path)
  _zero_bytes(_data_file(tmp_path, 2))
  _truncate(_data_file(tmp_path, 1))
  run = runs.RunDir.resume(tmp_path, {"a": 1})
  run.checkpoint(v=v)
  with pytest.raises(runs.RunDirError) as info:
    run.restore_readable()
  message = str(info.value)
  assert "\n" not in message and "ckpt-2, ckpt-1" in message
  assert "--resume cannot continue" in message
  assert sorted(runs.Run(tmp_path).checkpoints) == [1, 2]   # nothing moved


def test_restore_readable_without_checkpoints_returns_none(tmp_path):
  run = runs.RunDir.create(tmp_path, {"a": 1})
  run.checkpoint(v=tf.Variable(1.0))
  assert run.restore_readable() is None


# ----------------------------------------------------------------------------- provenance


def test_provenance_record_and_the_version_warning(tmp_path, caplog):
  record = provenance.record(step=5)
  assert record["step"] == 5 and record["tensorflow_version"] == tf.__version__
  assert record["devices"] and record["ok_tf_version"]
  commit, _ = provenance.git_commit()
  assert record["git_commit"] == commit
  provenance.append(tmp_path, dict(record, ok_tf_version="0.0.1"))
  provenance.check_resume(tmp_path, record)
  warnings = [r.getMessage() for r in caplog.records if "was started under" in r.getMessage()]
  assert len(warnings) == 1 and "0.0.1" in warnings[0], caplog.text
  provenance.append(tmp_path, record)
  assert [r["ok_tf_version"] for r in provenance.read(tmp_path)] == ["0.0.1",
                                                                      record["ok_tf_version"]]


def test_git_commit_outside_a_checkout_is_none(tmp_path):
  package = tmp_path / "site-packages" / "ok_tf"
  package.mkdir(parents=True)
  assert provenance.git_commit(package) == (None, None)


def test_git_commit_in_a_checkout(tmp_path):
  package = tmp_path / "repo" / "ok_tf"
  package.mkdir(parents=True)
  git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path / "repo")]
  try:
    subprocess.run(git + ["init", "-q"], check=True)
  except (OSError, subprocess.CalledProcessError):
    pytest.skip("git is not available")
  (package / "x.py").write_text("x = 1\n")
  subprocess.run(git + ["add", "."], check=True)
  subprocess.run(git + ["commit", "-q", "-m", "x"], check=True)
  head = subprocess.run(git + ["rev-parse", "HEAD"], check=True, capture_output=True,
                        text=True).stdout.strip()
  assert provenance.git_commit(package) == (head, False)
  (package / "x.py").write_text("x = 2\n")
  assert provenance.git_commit(package) == (head, True)
