"""Run directories: the public names of :mod:`ok_tf.rundir`, in one place.

``RunDir.create`` / ``RunDir.resume`` write a run (:mod:`ok_tf.rundir.writer`); ``Run``
reads one (:mod:`ok_tf.rundir.reader`); :func:`find_runs` finds them under folders; the
file names, the CSV reader and the checkpoints' names are those of
:mod:`ok_tf.rundir.layout`, :mod:`ok_tf.rundir.log` and :mod:`ok_tf.rundir.checkpoints`.
A run's model: :func:`ok_tf.models.load_run_model`. The layout: docs/design.md, "The run
directory".
"""

from __future__ import annotations

# pylint: disable=unused-import
from ok_tf.rundir.checkpoints import restore_newest_readable
from ok_tf.rundir.checkpoints import step_of
from ok_tf.rundir.checkpoints import UNREADABLE_DIR
from ok_tf.rundir.layout import BEST_DIR
from ok_tf.rundir.layout import CHECKPOINT_DIR
from ok_tf.rundir.layout import CONFIG_FILE
from ok_tf.rundir.layout import EVAL_FILE
from ok_tf.rundir.layout import find_runs
from ok_tf.rundir.layout import is_run
from ok_tf.rundir.layout import LOG_FILES
from ok_tf.rundir.layout import METRICS_FILE
from ok_tf.rundir.layout import MODEL_FILE
from ok_tf.rundir.layout import PROVENANCE_FILE
from ok_tf.rundir.layout import RESULTS_FILE
from ok_tf.rundir.layout import RunDirError
from ok_tf.rundir.layout import TASK_FILE
from ok_tf.rundir.layout import TB_DIR
from ok_tf.rundir.layout import VOCAB_FILE
from ok_tf.rundir.log import read_csv
from ok_tf.rundir.reader import Run
from ok_tf.rundir.writer import RunDir
