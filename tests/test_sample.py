"""Sampling text from a trained run (ok_tf.sample): lengths, symbols, seeds, temperature, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from ok_tf import models
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


#: The logits of the model whose readout is set (:func:`set_logits`), one per symbol of
#: TRAIN's 12: multiples of 0.5, exact in float32. softmax(LOGITS / τ) at τ = 1 and 0.7:
#: largest probability 0.348 and 0.508, smallest 0.017 and 0.007.
LOGITS = np.array([2.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -1.0])


def set_logits(model):
  """``model`` with its readout's kernel 0 and bias LOGITS: logits(s) = LOGITS for every
  state s, whatever the weights learnt (and however the machine rounded while learning)."""
  assert model.vocab_size == len(LOGITS)
  model.readout.kernel.assign(tf.zeros_like(model.readout.kernel))
  model.readout.bias.assign(tf.constant(LOGITS, model.readout.bias.dtype))
  return model


def softmax(logits, tau):
  """softmax(logits / τ) in float64."""
  z = (logits - logits.max()) / tau
  return np.exp(z) / np.exp(z).sum()


@pytest.fixture(scope="module")
def known_model(run_dir):
  """The trained model with its readout set so that its next-symbol logits are LOGITS."""
  return set_logits(models.load_run_model(run_dir)[0])


@pytest.fixture(scope="module")
def known_run(run_dir, known_model, tmp_path_factory):
  """A run directory (the trained run's config and vocabulary) whose one checkpoint
  holds :func:`known_model`."""
  path = tmp_path_factory.mktemp("known") / "run"
  config = json.loads((run_dir / "config.json").read_text())
  with runs.RunDir.create(path, config) as writer:
    writer.write_vocabulary(runs.Run(run_dir).vocabulary())
    writer.checkpoint(model=known_model)
    writer.save(400)
  return path


def test_length_symbols_and_seeds(run_dir, known_run):
  vocabulary = runs.Run(run_dir).vocabulary()
  text = sample.sample_text(run_dir, 200, temperature=1.0, seed=0)
  assert len(text) == 200 and set(text) <= set(vocabulary.symbols)
  assert sample.sample_text(run_dir, 200, temperature=1.0, seed=0) == text
  assert sample.sample_text(run_dir, 7, temperature=1.0, seed=0) == text[:7]  # draw t: seed, t
  primed = sample.sample_text(run_dir, 50, temperature=0.8, seed=0, prime="hello w")
  assert len(primed) == 57 and primed.startswith("hello w")
  # Seeds and temperatures change the text: shown with the known logits, where no symbol
  # has probability above 0.35 at τ = 1 (a trained model may have learnt this repetitive
  # text so well that it draws it the same way at any seed).
  known = sample.sample_text(known_run, 200, temperature=1.0, seed=0)
  assert sample.sample_text(known_run, 200, temperature=1.0, seed=1) != known
  assert sample.sample_text(known_run, 200, temperature=0.5, seed=0) != known


def test_low_temperature_is_greedy(run_dir, known_model):
  """At τ = 1e-12 every draw is a most likely symbol: for the trained model (in float64)
  at every step of its own draws, and for the known logits always their argmax (which
  τ = 1 does not always draw).

  Why this holds on every machine: the sampler draws from softmax((logits − max) / τ); a
  symbol whose logit is more than 1e-9 below the largest gets weight exp(−1e-9 / τ) =
  exp(−1000), which is 0 in float64 (exp underflows below −745), so only symbols within
  1e-9 of the maximum can be drawn. The eager replay below computes the same float64
  logits as the compiled loop up to float64 rounding, far below 1e-9, so the tolerance admits
  only near-ties, and no gap between the two largest logits of the trained model (which
  depends on how the machine rounded while training) needs to hold."""
  model = models.load_run_model(run_dir, dtype="float64")[0]
  sampler = sample.Sampler(model)
  vocabulary = runs.Run(run_dir).vocabulary()
  for prime in ("", "hello"):
    prime_ids = vocabulary.encode(prime)
    for seed in (0, 1):
      drawn = sampler.sample(prime_ids, 60, 1e-12, seed)
      state = model.cell.zero_state(1)
      for symbol in prime_ids:
        state = model.cell.step(model.one_hot(tf.constant([symbol])), state)
      for t, symbol in enumerate(drawn):
        logits = model.logits(state).numpy()[0]
        assert logits[symbol] >= logits.max() - 1e-9, (prime, seed, t, logits)
        state = model.cell.step(model.one_hot(tf.constant([int(symbol)])), state)
  greedy = np.full(60, np.argmax(LOGITS))
  known = sample.Sampler(known_model)
  for seed in (0, 1):
    np.testing.assert_array_equal(known.sample([], 60, 1e-12, seed), greedy)
  # at τ = 1 all 60 draws are the argmax with probability 0.348^60 < 1e-27
  assert not np.array_equal(known.sample([], 60, 1.0, 0), greedy)


def test_temperature_follows_the_model(run_dir, known_model):
  """At τ the first symbol after a prime has the frequencies of softmax(logits / τ) over
  2000 seeds: each symbol's within 4.5 standard errors (24 comparisons: a false alarm has
  probability of order 1e-4; the seeds are fixed), while the other temperature's probabilities are more than 14
  standard errors away for some symbol, so the check tells the two temperatures apart.

  The logits are set (:func:`set_logits`), so both distributions are known exactly on
  every machine (total variation 0.160 between τ = 1 and τ = 0.7), whatever the trained
  weights."""
  vocabulary = runs.Run(run_dir).vocabulary()
  prime_ids = vocabulary.encode("hello ")
  state = known_model.cell.zero_state(1)
  for symbol in prime_ids:
    state = known_model.cell.step(known_model.one_hot(tf.constant([symbol])), state)
  np.testing.assert_array_equal(known_model.logits(state).numpy()[0], LOGITS)
  p = {tau: softmax(LOGITS, tau) for tau in (1.0, 0.7)}
  assert 0.5 * np.abs(p[1.0] - p[0.7]).sum() == pytest.approx(0.1596, abs=1e-4)
  sampler = sample.Sampler(known_model)
  n = 2000
  for tau, other in ((1.0, 0.7), (0.7, 1.0)):
    se = np.sqrt(p[tau] * (1 - p[tau]) / n)
    assert np.max(np.abs(p[other] - p[tau]) / se) > 14, tau   # the check's power
    draws = [int(sampler.sample(prime_ids, 1, tau, seed)[0]) for seed in range(n)]
    freq = np.bincount(draws, minlength=vocabulary.size) / n
    z = (freq - p[tau]) / se
    assert np.max(np.abs(z)) < 4.5, (tau, np.round(z, 2))


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
  runs.RunDir.create(tmp_path / "copy", {"task": "copy"})
  with pytest.raises(sample.SampleError, match="copy-task run.*not text"):
    sample.sample_text(tmp_path / "copy", 10)
  runs.RunDir.create(tmp_path / "novocab", {"task": "text"})
  with pytest.raises(sample.SampleError, match="records no vocabulary"):
    sample.sample_text(tmp_path / "novocab", 10)
  config = dict(json.loads((run_dir / "config.json").read_text()))
  runs.RunDir.create(tmp_path / "untrained", config).write_vocabulary(runs.Run(run_dir).vocabulary())
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
  runs.RunDir.create(path, config).write_vocabulary(vocabulary)
  model, _ = models.load_run_model(path, "init")
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
  with runs.RunDir.create(path, config) as writer:
    writer.write_vocabulary(vocabulary)
    model, _ = models.load_run_model(path, "init")
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
