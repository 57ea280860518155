"""Test configuration: the repository root on sys.path, quiet TensorFlow, fixed seeds."""
import os
import sys
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
  sys.path.insert(0, str(ROOT))
