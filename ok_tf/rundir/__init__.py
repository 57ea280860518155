"""Run directories, one job per module (:mod:`ok_tf.runs` gathers their public names).

- :mod:`~ok_tf.rundir.layout`: the file names, finding runs, JSON files, ``RunDirError``;
- :mod:`~ok_tf.rundir.log`: the CSV logs and the TensorBoard scalars;
- :mod:`~ok_tf.rundir.checkpoints`: the checkpoints' names, saving, restoring, the
  fail-safe restore that sets unreadable checkpoints aside;
- :mod:`~ok_tf.rundir.writer`: ``RunDir``, the directory of a run being trained
  (``RunDir.create``, ``RunDir.resume``);
- :mod:`~ok_tf.rundir.reader`: ``Run``, a run directory read (config, logs, results,
  checkpoints); it builds no model (:func:`ok_tf.models.load_run_model` does).

TensorFlow is imported lazily, so reading logs works without loading it.
"""
