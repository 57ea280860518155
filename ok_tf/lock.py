"""One writer per run directory: an OS file lock held for the run's lifetime.

``hold(path)`` takes an exclusive, non-blocking ``flock`` on ``path/.lock`` and writes the
holder's pid and host into it. The operating system releases the lock when the process
ends, however it ends (SIGKILL, a crash, a lost node's process), so a killed run never
leaves a stale lock: the file may remain, but the next run takes the lock at once. A
second process on the same directory stops with one line naming the holder.

``flock`` works between processes of one machine and, on Linux, on NFS (where it is
mapped to POSIX record locks) between machines sharing the folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import socket

#: The lock file in a run directory.
LOCK_FILE = ".lock"


class LockedError(RuntimeError):
  """Another process holds the run directory."""


class Lock:
  """A held lock on a directory (``release()``, or use it as a context manager)."""

  def __init__(self, path: pathlib.Path, fd: int):
    self.path, self._fd = path, fd

  def release(self) -> None:
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "Lock":
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def holder(path) -> dict:
  """What the lock file of directory ``path`` says of its last holder ({} if nothing)."""
  try:
    return json.loads((pathlib.Path(path) / LOCK_FILE).read_text() or "{}")
  except (OSError, ValueError):
    return {}


def hold(path, what: str = "run directory") -> Lock:
  """Takes the lock of directory ``path`` (created if needed) for this process.

  Raises:
    LockedError: another process holds it; the message names its pid and host.
  """
  path = pathlib.Path(path)
  path.mkdir(parents=True, exist_ok=True)
  fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError:
    os.close(fd)
    h = holder(path)
    who = (f"pid {h.get('pid')} on host {h.get('host')}" if h else
           "another process (it has not written its pid yet)")
    raise LockedError(f"{what} {path} is in use by {who}: the same run launched twice? "
                      f"wait for it to end (or stop it), or choose another --run_dir")
  os.ftruncate(fd, 0)
  os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode())
  return Lock(path, fd)
