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

from absl import app
from absl import flags

from ok_tf import config as config_lib
from ok_tf import train

train.define_flags("ptb")
flags.adopt_module_key_flags(config_lib)   # --help lists them
main = train.entry("train_ptb.py", "ptb")

if __name__ == "__main__":
  app.run(main)
