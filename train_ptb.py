"""Train a character-level language model on Penn Treebank, or on any text, online or with TBPTT.

    python train_ptb.py --preset=quick --data_dir=DIR         # or OK_TF_DATA=DIR
    python train_ptb.py --preset=cpu --method=kf
    python train_ptb.py --preset=paper --seed=0,1,2,3,4      # n 256, B 32, r 8, 1M steps
    python train_ptb.py --run_dir=runs/ptb/x --resume         # continue a killed run
    python train_ptb.py --train_file=my.txt --valid_file=my_valid.txt   # any text

Validation bits per character on the whole validation text every --eval_every steps
(eval.csv; the best one is kept as a checkpoint: ok_tf/validation.py); at the end the best
checkpoint is evaluated on the test text and results.json holds best_valid_bpc, best_step,
test_bpc, final_valid_bpc, final_step, chars, wall_time, steps_per_sec, tokenization, method.

With --train_file the text replaces PTB (docs/protocol.md, "Any text"): the same streams,
run directory and results; without --valid_file there is no validation (the best_* and
final_valid_bpc entries are null) and --test_file is evaluated with the last weights.
Every run records its vocabulary in vocab.json, from which `python -m ok_tf.sample` prints.
A run on a text records the text's SHA-256 in its config (train_sha256); --resume refuses
a training text with another one, with one line (its vocabulary is checked as well).
"""

from __future__ import annotations

import dataclasses

from absl import app
from absl import flags

from ok_tf import config as config_lib
from ok_tf import estimators
from ok_tf import evaluation
from ok_tf import experiment
from ok_tf import runs
from ok_tf import validation as validation_lib
from ok_tf.data import ptb
from ok_tf.data import text as text_data
from ok_tf.tasks import text as text_task

config_lib.define_flags("ptb")
flags.adopt_module_key_flags(config_lib)   # --help lists them


def load_data(cfg: config_lib.PTBConfig):
  """PTB (a :class:`~ok_tf.data.ptb.PtbData`) or, with --train_file, the text (a
  :class:`~ok_tf.data.text.TextData`): token ids, ``vocabulary``, ``vocab_size``."""
  if not cfg.train_file:
    return ptb.load_ptb(ptb.resolve_data_dir(cfg.data_dir or None), cfg.tokenization)
  data = text_data.load_text(cfg.train_file, cfg.valid_file or None, cfg.test_file or None)
  data.check_batch_size(cfg.batch_size)
  return data


def train_fingerprint(cfg: config_lib.PTBConfig, data, resume: bool) -> str:
  """The ``train_sha256`` a run of ``cfg`` records: ``data.train_sha256`` for a text, ""
  for PTB (its files are checksummed). Resuming, a recorded fingerprint must be the
  text's: :class:`ok_tf.runs.RunDirError` otherwise. A resumed run that records none
  keeps none (its vocabulary is still checked)."""
  if not cfg.train_file:
    return ""
  if resume and runs.is_run(cfg.run_dir):
    recorded = runs.Run(cfg.run_dir).config.get("train_sha256") or ""
    if not recorded:
      return ""
    if recorded != data.train_sha256:
      raise runs.RunDirError(
          f"the training text of the run in {cfg.run_dir} has changed (sha256 {recorded[:12]}… "
          f"recorded, {data.train_sha256[:12]}… in --train_file={cfg.train_file}): resume it "
          "with the same training text, or choose another --run_dir")
  return data.train_sha256


def run_one(cfg: config_lib.PTBConfig, resume: bool) -> runs.Run:
  data = load_data(cfg)
  cfg = dataclasses.replace(cfg, train_sha256=train_fingerprint(cfg, data, resume))
  task = text_task.TextStreams(data.train, cfg.batch_size, cfg.reset_every, data.vocab_size)
  validation = None
  if data.valid is not None:
    validation = validation_lib.Validation(data.valid, cfg.eval_every, cfg.steps,
                                           cfg.batch_size, cfg.eval_streams)

  def results(run: runs.Run) -> dict:
    """results.json: the best and last validation BPC, the test BPC at the best checkpoint
    (without validation: at the last one; null without a test text)."""
    best_step, best = validation.best if validation else (None, None)
    final = validation.last[1] if validation else None
    final_step = int(run.metrics[-1]["step"])
    test_bpc = None
    if data.test is not None:
      model, _ = run.load_model("best" if validation else "latest", vocab_size=data.vocab_size)
      test_bpc = evaluation.Evaluator(model, data.test, cfg.eval_streams).bpc()
    wall = float(run.metrics[-1]["wall_time"])
    return {
        "best_valid_bpc": best, "best_step": best_step, "final_valid_bpc": final,
        "test_bpc": test_bpc, "final_step": final_step, "chars": final_step * cfg.batch_size,
        "wall_time": wall, "steps_per_sec": final_step / wall if wall > 0 else None,
        "tokenization": cfg.tokenization,
        "method": estimators.label(cfg.method, cfg.rank, cfg.truncation),
    }

  return experiment.train(cfg, task, data.vocab_size, resume=resume, validation=validation,
                          summary=results, vocabulary=data.vocabulary)


def main(argv):
  del argv
  # run_one reads (and checks) the data before it creates anything.
  experiment.main("train_ptb.py", "ptb", run_one,
                  errors=(ptb.PtbDataMissingError, ptb.PtbChecksumError,
                          text_data.TextDataError))


if __name__ == "__main__":
  app.run(main)
