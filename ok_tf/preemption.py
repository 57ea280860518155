"""Preemption: SIGTERM / SIGINT end a run cleanly, with a checkpoint, and a distinct exit code.

A scheduler that preempts or requeues a job sends SIGTERM and, after a grace period, SIGKILL.
While a run trains, :class:`Watch` turns the first SIGTERM or SIGINT into a request: the
current chunk of ``--log_every`` steps finishes, its metrics row and a checkpoint are
written, :class:`Preempted` is raised (one line: the step reached and how to resume) and
the script exits with :data:`EXIT_CODE`, which a job script or a Kubernetes pod-failure
policy maps to "requeue" (docs/cluster.md). A second SIGINT interrupts at once
(``KeyboardInterrupt``), losing the steps since the last checkpoint.

On several machines (``--strategy=multi_worker``) every worker must stop after the same
chunk: the workers' requests are combined after every chunk (one
scalar all-reduce: :func:`ok_tf.multi_worker.any_worker`), so a signal to any one of them stops all at the same step.
"""

from __future__ import annotations

import signal
import threading
from typing import Optional

from absl import logging

#: The exit code of a run stopped by SIGTERM / SIGINT after saving its checkpoint:
#: EX_TEMPFAIL of sysexits.h ("temporary failure, try again"), distinct from 0 (done),
#: 1 (an error, one line), 2 (a bad flag) and 128 + N (killed by signal N).
EXIT_CODE = 75

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(RuntimeError):
  """The run stopped on a signal after saving a checkpoint; ``--resume`` continues it."""

  def __init__(self, step: int, signal_name: str, run_dir: str):
    super().__init__(f"{signal_name} received: stopped at step {step} with a checkpoint; "
                     f"continue with --run_dir={run_dir} --resume (exit code {EXIT_CODE})")
    self.step = step


class Watch:
  """Records SIGTERM / SIGINT while a run trains (a context manager; handlers restored on exit).

  ``requested`` is the name of the first signal received, or None. Handlers can only be
  installed in the main thread; elsewhere the watch records nothing (signals keep their
  handlers).
  """

  def __init__(self):
    self.requested: Optional[str] = None
    self._previous = {}

  def __enter__(self) -> "Watch":
    if threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    name = signal.Signals(signum).name
    if self.requested is not None and signum == signal.SIGINT:
      raise KeyboardInterrupt   # a second Ctrl-C: stop now
    if self.requested is None:
      logging.warning("%s received: the run stops with a checkpoint after the current chunk",
                      name)
    self.requested = self.requested or name

