#!/usr/bin/env bash
# The GPU measurements of speed and reproduction in one short script
# (about 10 minutes on one GPU): the benchmark at the copy and PTB configurations with
# an n sweep, the copy task's paper configuration with OK for COPY_MINUTES, and a short
# PTB paper-configuration run for PTB_MINUTES. Everything goes to $OUT (default
# gpu_out/); the training runs stop with a checkpoint (--max_minutes) and can be
# continued with --resume.
#
#   bash analysis/gpu_check.sh                         # on a machine with a GPU
#   OUT=/tmp/g COPY_MINUTES=0.2 PTB_MINUTES=0.2 BENCH="--configs=copy --sizes=32 \
#     --min_time=0.2 --repeats=1 --nobreakdown" DEVICE=cpu bash analysis/gpu_check.sh
#                                                      # the same machinery on a CPU
#
# Needs TensorFlow with GPU support (pip install 'tensorflow[and-cuda]==2.21.0') and
# the PTB character files where train_ptb.py finds them (e.g. OK_TF_DATA=DIR; without
# them it says the three ways to provide them). Python runs from the repository root, so
# `python -m analysis.benchmark` and the summary below find analysis/ and ok_tf/ there.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
DEVICE=${DEVICE:-gpu}
COPY_MINUTES=${COPY_MINUTES:-3}
PTB_MINUTES=${PTB_MINUTES:-2}
BENCH=${BENCH:-"--sizes=64,128,256 --min_time=1 --repeats=2"}
mkdir -p "$OUT"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
  python -c "import tensorflow as tf; print('tensorflow', tf.__version__, tf.config.list_physical_devices())"
} | tee "$OUT/machine.txt"

# shellcheck disable=SC2086
python -m analysis.benchmark --device="$DEVICE" --methods=ok,kf,uoro,tbptt \
  --out_dir="$OUT/benchmark" $BENCH 2>&1 | tee "$OUT/benchmark.log" | grep -v "^W0000\|^I0000" || true

python train_copy.py --preset=paper --method=ok --seed=0 --max_minutes="$COPY_MINUTES" \
  --run_dir="$OUT/copy_paper_ok_seed0" 2>&1 | tail -n 3
python train_ptb.py --preset=paper --method=ok --seed=0 --max_minutes="$PTB_MINUTES" \
  --eval_every=5000 --log_every=1000 --run_dir="$OUT/ptb_paper_ok_seed0" 2>&1 | tail -n 3

# Level / validation BPC reached and speed, next to the published curves.
python - --out_dir="$OUT" <<'EOF'
import json
import pathlib

from absl import app
from absl import flags

from ok_tf import runs

flags.DEFINE_string("out_dir", None, "gpu_check.sh's output folder", required=True)


def main(argv):
  del argv
  out = pathlib.Path(flags.FLAGS.out_dir)
  summary = {}
  for name in ("copy_paper_ok_seed0", "ptb_paper_ok_seed0"):
    run = runs.Run(out / name)
    last = run.metrics[-1]
    entry = {"step": int(last["step"]), "wall_time": float(last["wall_time"]),
             "s_per_1000_steps": 1000 * float(last["wall_time"]) / int(last["step"])}
    if "level" in last:
      entry["level"] = int(last["level"])
    if (out / name / runs.EVAL_FILE).exists():
      entry["valid_bpc"] = [(int(r["step"]), float(r["valid_bpc"])) for r in run.eval]
    summary[name] = entry
  (out / "summary.json").write_text(json.dumps(summary, indent=2))
  print(json.dumps(summary, indent=2))


app.run(main)
EOF
