"""Train on the copy task (string memorisation) with curriculum, online or with TBPTT.

    python train_copy.py --preset=quick                    # OK, small RHN, a few minutes
    python train_copy.py --method=kf --preset=quick
    python train_copy.py --method=tbptt --truncation=100
    python train_copy.py --preset=paper --seed=0,1,2,3,4   # n 128, B 16, r 16, 2M steps
    python train_copy.py --run_dir=runs/copy/x --resume    # continue a killed run

Each run writes config.json, metrics.csv (step, chars, level, ema_bits, loss_bits,
steps_per_sec, wall_time), TensorBoard summaries and checkpoints to its run directory,
and at the end results.json (level, max_level, ema_bits, steps, chars, wall_time,
steps_per_sec).
"""

from __future__ import annotations

from absl import app
from absl import flags

from ok_tf import config as config_lib
from ok_tf import train

train.define_flags("copy")
flags.adopt_module_key_flags(config_lib)   # --help lists them
main = train.entry("train_copy.py", "copy")

if __name__ == "__main__":
  app.run(main)
