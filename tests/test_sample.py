"""Sampling text from a trained run (ok_tf.sample): lengths, symbols, seeds, temperature, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from ok_tf import runs
from ok_tf import sample
from ok_tf.data import ptb

from toolkit import check_ok, run_script

TRAIN = "hello world, hello there.\n" * 60


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  """A small character model trained 400 steps on TRAIN (no validation: latest checkpoint)."""
  folder = tmp_path_factory.mktemp("sample")
  (folder / "train.txt").write_text(TRAIN, encoding="utf-8")
  path = folder / "run"
  proc, _ = run_script("train_ptb.py", "--units=16", "--rank=2", "--batch_size=4",
                       "--steps=400", "--log_every=100", "--checkpoint_every=200", "--lr=0.03",
                       f"--train_file={folder / 'train.txt'}", f"--run_dir={path}")
  check_ok(proc)
  return path


@pytest.fixture(scope="module")
def model(run_dir):
  return runs.Run(run_dir).load_model()[0]


def greedy(model, prime_ids, length):
  """The most likely symbol at every step, one eager step at a time."""
  state = model.cell.zero_state(1)
  for symbol in prime_ids:
    state = model.cell.step(model.one_hot(tf.constant([symbol])), state)
  out, gaps = [], []
  for _ in range(length):
    logits = np.sort(model.logits(state).numpy()[0])
    symbol = int(np.argmax(model.logits(state).numpy()[0]))
    gaps.append(logits[-1] - logits[-2])
    out.append(symbol)
    state = model.cell.step(model.one_hot(tf.constant([symbol])), state)
  return np.array(out), min(gaps)


def test_length_symbols_and_seeds(run_dir):
  vocabulary = runs.Run(run_dir).vocabulary()
  text = sample.sample_text(run_dir, 200, temperature=1.0, seed=0)
  assert len(text) == 200 and set(text) <= set(vocabulary.symbols)
  assert sample.sample_text(run_dir, 200, temperature=1.0, seed=0) == text
  assert sample.sample_text(run_dir, 200, temperature=1.0, seed=1) != text
  assert sample.sample_text(run_dir, 200, temperature=0.5, seed=0) != text
  assert sample.sample_text(run_dir, 7, temperature=1.0, seed=0) == text[:7]  # draw t: seed, t
  primed = sample.sample_text(run_dir, 50, temperature=0.8, seed=0, prime="hello w")
  assert len(primed) == 57 and primed.startswith("hello w")


def test_low_temperature_is_greedy(run_dir, model):
  sampler = sample.Sampler(model)
  vocabulary = runs.Run(run_dir).vocabulary()
  for prime in ("", "hello"):
    prime_ids = vocabulary.encode(prime)
    expected, gap = greedy(model, prime_ids, 60)
    assert gap > 2e-3  # no near-tie: at τ = 1e-4 any other symbol has odds below e^-20
    for seed in (0, 1):
      np.testing.assert_array_equal(sampler.sample(prime_ids, 60, 1e-4, seed), expected)
  assert not np.array_equal(sampler.sample(prime_ids, 60, 1.0, 0), expected)


def test_temperature_follows_the_model(run_dir, model):
  """At τ the first symbol after a prime has the frequencies of softmax(logits / τ): over
  2000 seeds, total variation below 0.06 (its sampling noise is about 0.02), where the
  distributions at the other temperature are more than 0.1 apart."""
  vocabulary = runs.Run(run_dir).vocabulary()
  prime_ids = vocabulary.encode("hello ")
  state = model.cell.zero_state(1)
  for symbol in prime_ids:
    state = model.cell.step(model.one_hot(tf.constant([symbol])), state)
  logits = tf.cast(model.logits(state), tf.float64)
  p = {tau: tf.nn.softmax(logits / tau).numpy()[0] for tau in (1.0, 0.7)}
  assert 0.5 * np.abs(p[1.0] - p[0.7]).sum() > 0.1
  sampler = sample.Sampler(model)
  for tau in (1.0, 0.7):
    draws = [int(sampler.sample(prime_ids, 1, tau, seed)[0]) for seed in range(2000)]
    freq = np.bincount(draws, minlength=vocabulary.size) / len(draws)
    assert 0.5 * np.abs(freq - p[tau]).sum() < 0.06, tau


def test_errors(run_dir, tmp_path):
  for bad in (0.0, -1.0, float("nan"), float("inf")):
    with pytest.raises(sample.SampleError, match="--temperature must be a finite number > 0"):
      sample.sample_text(run_dir, 10, temperature=bad)
  with pytest.raises(sample.SampleError, match="--length must be a positive"):
    sample.sample_text(run_dir, 0)
  with pytest.raises(sample.SampleError) as info:
    sample.sample_text(run_dir, 10, prime="Hello, World!")
  message = str(info.value)
  assert "--prime has 3 symbols outside" in message and "'H', 'W', '!'" in message
  assert "3 occurrences" in message and "\n" not in message
  with pytest.raises(sample.SampleError, match="no best checkpoint.*use --which=latest") as info:
    sample.sample_text(run_dir, 10, which="best")
  assert "\n" not in str(info.value)
  with pytest.raises(sample.SampleError, match="no step 300 checkpoint: choose --which=latest "
                     r"or a step of \[200, 400\]"):
    sample.sample_text(run_dir, 10, which=300)
  with pytest.raises(sample.SampleError, match="--which must be best, latest or"):
    sample.sample_text(run_dir, 10, which="first")
  runs.RunDir(tmp_path / "copy", {"task": "copy"})
  with pytest.raises(sample.SampleError, match="copy-task run.*not text"):
    sample.sample_text(tmp_path / "copy", 10)
  runs.RunDir(tmp_path / "novocab", {"task": "text"})
  with pytest.raises(sample.SampleError, match="records no vocabulary"):
    sample.sample_text(tmp_path / "novocab", 10)
  config = dict(json.loads((run_dir / "config.json").read_text()))
  runs.RunDir(tmp_path / "untrained", config).write_vocabulary(runs.Run(run_dir).vocabulary())
  with pytest.raises(sample.SampleError, match="has no checkpoint yet.*--resume"):
    sample.sample_text(tmp_path / "untrained", 10)
  with pytest.raises(sample.SampleError, match="not a run directory"):
    sample.sample_text(tmp_path, 10)


def test_ptb_symbols_print_as_words(tmp_path, run_dir):
  """With PTB's whitespace_eol vocabulary, '_' prints as a space and '<eos>' as a new line,
  and a prime written that way reads back (a 50-symbol model with its initial weights)."""
  vocabulary = ptb.vocabulary("whitespace_eol")
  ids = vocabulary.encode("the cat\nsat")
  assert [vocabulary.symbols[i] for i in ids] == list("the_cat") + ["<eos>"] + list("sat")
  assert vocabulary.decode(ids) == "the cat\nsat"
  path = tmp_path / "ptb_run"
  config = dict(json.loads((run_dir / "config.json").read_text()), task="ptb",
                tokenization="whitespace_eol")
  runs.RunDir(path, config).write_vocabulary(vocabulary)
  model, _ = runs.Run(path).load_model("init")
  assert model.vocab_size == 50
  drawn = sample.Sampler(model).sample(ids, 300, 1.0, 0)
  symbols = [vocabulary.symbols[i] for i in drawn]
  printed = vocabulary.decode(drawn)
  assert "_" not in printed and "<eos>" not in printed
  assert printed.count("\n") == symbols.count("<eos>") and printed.count(" ") == symbols.count("_")


def test_a_ptb_run_without_vocab_json_prints_ptb_symbols(tmp_path, run_dir):
  """A PTB run whose vocab.json is missing samples through its tokenisation's vocabulary
  (ok_tf.data.ptb.vocabulary): '_' prints as a space and '<eos>' as a new line."""
  path = tmp_path / "ptb_run"
  config = dict(json.loads((run_dir / "config.json").read_text()), task="ptb",
                tokenization="whitespace_eol", train_file="", train_sha256="")
  vocabulary = ptb.vocabulary("whitespace_eol")
  with runs.RunDir(path, config) as writer:
    writer.write_vocabulary(vocabulary)
    model, _ = runs.Run(path).load_model("init")
    writer.checkpoint(model=model)
    writer.save(10)
  (path / runs.VOCAB_FILE).unlink()
  assert runs.Run(path).vocabulary() == vocabulary
  text = sample.sample_text(path, 200, temperature=1.0, seed=2, prime="the cat\n")
  drawn = sample.Sampler(model).sample(vocabulary.encode("the cat\n"), 200, 1.0, 2)
  assert text == "the cat\n" + vocabulary.decode(drawn)
  assert "_" not in text and "<eos>" not in text


def test_command_line(run_dir):
  proc, _ = run_script("-m", "ok_tf.sample", run_dir, "--length=80", "--temperature=0.7",
                       "--seed=3", "--prime=hello", timeout=120)
  check_ok(proc)
  assert proc.stdout == sample.sample_text(run_dir, 80, 0.7, 3, prime="hello") + "\n"
  proc, _ = run_script("-m", "ok_tf.sample", run_dir, "--temperature=-0.5", timeout=120)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("ok_tf.sample: --temperature must be a finite number > 0"), last
