"""Tests for ok_tf.data.ptb (files, checksums, tokenisations), ok_tf.data.ptb_tfds (the TFDS
builder) and the training streams on the real text."""

from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from ok_tf.data import ptb
from ok_tf.data import ptb_tfds  # registers the builder ptb_char
from ok_tf.data import text as text_data
from ok_tf.tasks import text as text_task

EXPECTED_COUNTS = {
    "published": {"train": 5_101_618, "valid": 399_782, "test": 449_945},
    "whitespace_eol": {"train": 5_017_482, "valid": 393_042, "test": 442_423},
}


SKIP_REASON = f"set {ptb.ENV_VAR} to a folder with the PTB character files"


@pytest.fixture(scope="module")
def data_dir() -> pathlib.Path:
  """The real character files, from $OK_TF_DATA only (the test skips without them)."""
  env = os.environ.get(ptb.ENV_VAR)
  if not env:
    pytest.skip(SKIP_REASON)
  d = pathlib.Path(env)
  if ptb.find_files(d) is None:
    pytest.skip(f"{SKIP_REASON} ({ptb.ENV_VAR}={env} does not hold them)")
  return d


@pytest.fixture
def no_data_anywhere(tmp_path, monkeypatch) -> pathlib.Path:
  """No $OK_TF_DATA and an empty TFDS data dir; returns TFDS's (absent) manual folder."""
  monkeypatch.delenv(ptb.ENV_VAR, raising=False)
  monkeypatch.setenv(ptb.TFDS_DATA_DIR_ENV_VAR, str(tmp_path / "tfds_home"))
  return tmp_path / "tfds_home" / "downloads" / "manual"


@pytest.fixture(scope="module")
def loaded(data_dir) -> dict[str, text_data.TextData]:
  return {tok: ptb.load_ptb(data_dir, tok) for tok in ptb.TOKENIZATIONS}


# ----------------------------------------------------------------------------- loader


@pytest.mark.parametrize("tokenization", ptb.TOKENIZATIONS)
def test_counts_per_split(loaded, tokenization):
  data = loaded[tokenization]
  assert isinstance(data, text_data.TextData)  # PTB is a text: the one container of texts
  assert data.tokenization == tokenization and data.train_sha256 == ptb.SHA256["train"]
  for split, n in EXPECTED_COUNTS[tokenization].items():
    ids = data.split(split)
    assert ids.dtype == np.int32 and ids.ndim == 1
    assert ids.size == n, split
  assert ptb.NUM_SYMBOLS == EXPECTED_COUNTS


@pytest.mark.parametrize("tokenization", ptb.TOKENIZATIONS)
def test_vocab_first_appearance_order(loaded, data_dir, tokenization):
  data = loaded[tokenization]
  assert data.vocab_size == 50 and len(set(data.vocabulary.symbols)) == 50
  assert data.vocabulary.symbols == ptb.VOCABS[tokenization]
  # ids are assigned in order of first appearance in train: first occurrences are 0, 1, 2, ...
  _, first = np.unique(data.train, return_index=True)
  assert np.array_equal(data.train[np.sort(first)], np.arange(50))
  for split in ptb.SPLITS:
    assert data.split(split).min() >= 0 and data.split(split).max() < 50
  # Independent check against a plain Python reading of the first train lines.
  with open(pathlib.Path(ptb.find_files(data_dir)["train"]), "rb") as f:
    head = [f.readline().decode() for _ in range(3)]
  if tokenization == "published":
    expected = "".join("_" + "".join(line.split()) + "_\n" for line in head)
  else:
    expected = [s for line in head for s in line.split() + [ptb.EOS]]
  decoded = [data.vocabulary.symbols[i] for i in data.train[: len(expected)]]
  assert decoded == list(expected)
  first_four = ("_", "a", "e", "r") if tokenization == "published" else ("a", "e", "r", "_")
  assert data.vocabulary.symbols[:4] == first_four


def test_published_stream_is_word_level_text(loaded):
  """The published stream decodes to word-level text (leading ' ', ' \\n' line ends) with ' ' -> '_'."""
  data = loaded["published"]
  text = "".join(np.array(data.vocabulary.symbols)[data.valid[:2000]])
  lines = text.split("\n")[:-1]
  assert all(line.startswith("_") and line.endswith("_") and "__" not in line for line in lines)
  assert text.startswith("_consumers_may_want_to_move_their_telephones_a_little_closer_to_the_tv_set_\n")


def test_tokenize_small_text():
  text = b"a b _ c \n d _ e \n "  # two lines of text and the trailing space-only line
  pub = ptb.symbol_bytes(text, "published").tobytes()
  assert pub == b"_ab_c_\n_d_e_\n"
  eol = ptb.symbol_bytes(text, "whitespace_eol").tobytes()
  assert eol == b"ab_c\nd_e\n"
  ids, vocab = ptb.tokenize({"train": text, "valid": b"e d \n "}, "whitespace_eol")
  assert vocab == ["a", "b", "_", "c", "<eos>", "d", "e"]
  assert ids["valid"].tolist() == [6, 5, 4]
  with pytest.raises(ValueError, match="never seen in train"):
    ptb.tokenize({"train": text, "valid": b"z \n "}, "published")
  with pytest.raises(ValueError, match="Not a character-level file"):
    ptb.symbol_bytes(b"ab c \n ", "published")
  with pytest.raises(ValueError, match="Unknown tokenization"):
    ptb.symbol_bytes(text, "words")


def test_load_is_fast(data_dir):
  import time

  start = time.perf_counter()
  ptb.load_ptb(data_dir)
  assert time.perf_counter() - start < 3.0


def _copy_data(src: pathlib.Path, dst: pathlib.Path, names: str = "{split}.txt") -> pathlib.Path:
  dst.mkdir(parents=True, exist_ok=True)
  for split, path in ptb.find_files(src).items():
    shutil.copyfile(path, dst / names.format(split=split))
  return dst


def test_accepts_ptb_char_names(data_dir, tmp_path, loaded):
  d = _copy_data(data_dir, tmp_path / "orig", "ptb.char.{split}.txt")
  data = ptb.load_ptb(d)
  assert np.array_equal(data.valid, loaded["published"].valid)


def test_checksum_refuses_modified_copy(data_dir, tmp_path):
  d = _copy_data(data_dir, tmp_path / "altered")
  path = d / "valid.txt"
  path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))  # a CRLF copy
  with pytest.raises(ptb.PtbChecksumError) as info:
    ptb.load_ptb(d)
  message = str(info.value)
  assert "split 'valid'" in message and str(path) in message  # names the differing file
  assert ptb.SHA256["valid"] in message  # expected hash ...
  import hashlib

  assert hashlib.sha256(path.read_bytes()).hexdigest() in message  # ... and the one found


def _assert_names_three_options(message: str, manual: pathlib.Path) -> None:
  for split in ptb.SPLITS:
    assert f"{split}.txt" in message and ptb.SHA256[split] in message
  assert "--data_dir=DIR" in message
  assert f"{ptb.ENV_VAR}=DIR" in message
  assert f"manual-download folder, {manual}" in message
  assert ptb.ARCHIVE_URL in message and "sha256sum -c SHA256SUMS" in message


def test_missing_files_message(tmp_path, no_data_anywhere):
  with pytest.raises(ptb.PtbDataMissingError) as info:
    ptb.load_ptb(tmp_path)
  _assert_names_three_options(str(info.value), no_data_anywhere)
  assert isinstance(info.value, FileNotFoundError)


def test_tfds_manual_dir_follows_tfds(tmp_path, monkeypatch):
  # The folder TFDS itself uses for a builder with its default data dir.
  builder = tfds.builder("ptb_char")
  expected = pathlib.Path(os.fspath(builder.data_dir_root)) / "downloads" / "manual"
  assert ptb.tfds_manual_dir() == expected
  monkeypatch.setenv(ptb.TFDS_DATA_DIR_ENV_VAR, str(tmp_path))
  assert ptb.tfds_manual_dir() == tmp_path / "downloads" / "manual"
  monkeypatch.delenv(ptb.TFDS_DATA_DIR_ENV_VAR)
  assert ptb.tfds_manual_dir() == pathlib.Path.home() / "tensorflow_datasets" / "downloads" / "manual"


def test_resolve_data_dir_without_data_names_three_options(no_data_anywhere):
  with pytest.raises(ptb.PtbDataMissingError) as info:
    ptb.resolve_data_dir(None)
  message = str(info.value)
  _assert_names_three_options(message, no_data_anywhere)
  assert f"{no_data_anywhere} (does not exist)" in message  # what was looked at
  no_data_anywhere.mkdir(parents=True)
  with pytest.raises(ptb.PtbDataMissingError, match="no PTB character files"):
    ptb.resolve_data_dir(None)


def test_resolve_data_dir(tmp_path, monkeypatch, data_dir, no_data_anywhere):
  assert ptb.resolve_data_dir(str(tmp_path)) == tmp_path
  monkeypatch.setenv(ptb.ENV_VAR, str(data_dir))
  assert ptb.resolve_data_dir(None) == data_dir
  assert ptb.resolve_data_dir(str(tmp_path)) == tmp_path  # the flag comes first
  monkeypatch.setenv(ptb.ENV_VAR, str(tmp_path / "nope"))
  with pytest.raises(FileNotFoundError, match=ptb.ENV_VAR):
    ptb.resolve_data_dir(None)
  monkeypatch.delenv(ptb.ENV_VAR)
  _copy_data(data_dir, no_data_anywhere, "ptb.char.{split}.txt")  # TFDS's manual folder
  assert ptb.resolve_data_dir(None) == no_data_anywhere
  assert ptb.load_ptb(ptb.resolve_data_dir(None)).valid.size == ptb.NUM_SYMBOLS["published"]["valid"]
  with pytest.raises(FileNotFoundError, match="no such directory"):
    ptb.resolve_data_dir(str(tmp_path / "nope"))


# ----------------------------------------------------------------------------- TFDS


def test_tfds_load_valid_matches_loader(data_dir, tmp_path, loaded):
  manual = _copy_data(data_dir, tmp_path / "manual", "ptb.char.{split}.txt")
  ds, info = tfds.load(
      "ptb_char/whitespace_eol",
      split="valid",
      data_dir=str(tmp_path / "tfds"),
      with_info=True,
      download_and_prepare_kwargs={"download_config": tfds.download.DownloadConfig(manual_dir=str(manual))},
  )
  examples = list(ds)
  assert len(examples) == 1
  ids = examples[0]["ids"]
  assert ids.dtype == tf.int32
  assert np.array_equal(ids.numpy(), loaded["whitespace_eol"].valid)
  assert list(info.metadata["vocab"]) == list(loaded["whitespace_eol"].vocabulary.symbols)
  assert info.features["ids"].shape == (None,)
  # The prepared dataset reloads with its metadata.
  builder = tfds.builder("ptb_char/whitespace_eol", data_dir=str(tmp_path / "tfds"))
  assert list(builder.info.metadata["vocab"]) == list(loaded["whitespace_eol"].vocabulary.symbols)


def test_tfds_default_config_is_published():
  builder_cls = tfds.builder_cls("ptb_char")
  assert builder_cls is ptb_tfds.PtbChar
  assert [c.name for c in ptb_tfds.PtbChar.BUILDER_CONFIGS] == ["published", "whitespace_eol"]


def test_tfds_refuses_altered_manual_copy(data_dir, tmp_path):
  manual = _copy_data(data_dir, tmp_path / "manual")
  (manual / "test.txt").write_bytes((manual / "test.txt").read_bytes()[:-1])
  builder = tfds.builder("ptb_char", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(ptb.PtbChecksumError, match="split 'test'"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))


def test_tfds_refuses_wrong_files_in_manual_dir(tmp_path):
  """Files of the right names but other content (no real data needed): PtbChecksumError."""
  manual = tmp_path / "manual"
  manual.mkdir()
  for split in ptb.SPLITS:
    (manual / f"ptb.char.{split}.txt").write_bytes(b"a b \n ")
  builder = tfds.builder("ptb_char", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(ptb.PtbChecksumError, match="split 'train'") as info:
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  assert ptb.SHA256["train"] in str(info.value) and ptb.ARCHIVE_URL in str(info.value)


def test_tfds_without_data_or_network_says_what_to_do(tmp_path, monkeypatch, no_data_anywhere):
  """Empty manual dir and a failing download: PtbDataMissingError naming the three options."""
  urls = []

  def offline(self, url, *args, **kwargs):
    urls.append(url)
    raise OSError("network is unreachable")

  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", offline)
  builder = tfds.builder("ptb_char", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(ptb.PtbDataMissingError) as info:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "empty"))
    )
  assert urls == [ptb.ARCHIVE_URL]
  message = str(info.value)
  _assert_names_three_options(message, no_data_anywhere)
  assert "download failed: OSError: network is unreachable" in message
  assert str(tmp_path / "empty") in message


def test_tfds_downloads_archive_when_manual_dir_is_empty(data_dir, tmp_path, monkeypatch, loaded):
  """Without manual files the builder downloads and unpacks ARCHIVE_URL and checks the files."""
  extracted = tmp_path / "extracted"
  for split, path in ptb.find_files(data_dir).items():
    member = extracted / ptb.ARCHIVE_MEMBER.format(split=split)
    member.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, member)
  urls = []

  def fake_download(self, url, *args, **kwargs):
    urls.append(url)
    return extracted

  monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", fake_download)
  ds = tfds.load(
      "ptb_char/published",
      split="test",
      data_dir=str(tmp_path / "tfds"),
      download_and_prepare_kwargs={
          "download_config": tfds.download.DownloadConfig(manual_dir=str(tmp_path / "empty"))
      },
  )
  assert urls == [ptb.ARCHIVE_URL]
  assert np.array_equal(next(iter(ds))["ids"].numpy(), loaded["published"].test)
  # An altered member of the archive is refused like an altered manual copy.
  member = extracted / ptb.ARCHIVE_MEMBER.format(split="valid")
  member.write_bytes(member.read_bytes() + b" ")
  builder = tfds.builder("ptb_char/whitespace_eol", data_dir=str(tmp_path / "tfds2"))
  with pytest.raises(ptb.PtbChecksumError, match="split 'valid'"):
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / "empty"))
    )


# ----------------------------------------------------------------------------- streams on the real text


def test_streams_on_real_text(loaded):
  """Published offsets and per-stream resets on the real training text, in a while loop."""
  data = loaded["published"]
  streams = text_task.TextStreams(data.train, batch_size=32, reset_every=100,
                                  vocab_size=data.vocab_size)
  n = data.train.size
  offsets = np.linspace(0, n - 1, 32, dtype=np.int32)  # the published code's expression
  np.testing.assert_array_equal(streams.offsets, offsets)

  @tf.function
  def run(state, k):
    def body(i, s, acc):
      s, (inputs, targets, reset, _) = streams.next(s, None)
      return i + 1, s, acc + tf.cast(reset, tf.int32)

    _, s, acc = tf.while_loop(lambda i, s, acc: i < k, body,
                              (tf.constant(0), state, tf.zeros([32], tf.int32)))
    return s, acc

  state, resets = run(streams.init(None), tf.constant(250))
  positions = (offsets[:, None] + np.arange(250)[None, :]) % n
  expected = (positions % 100 == 0).sum(axis=1) + (offsets % 100 != 0)  # + the step-0 reset
  np.testing.assert_array_equal(resets.numpy(), expected)
  np.testing.assert_array_equal(state.position.numpy(), (offsets + 250) % n)


def test_loader_needs_neither_tensorflow_nor_tfds():
  """The loader module imports numpy only; the builder lives in ok_tf.data.ptb_tfds."""
  import subprocess
  import sys

  code = ("import sys; import ok_tf.data.ptb; "
          "print(sorted(m for m in ('tensorflow', 'tensorflow_datasets') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=pathlib.Path(__file__).resolve().parents[1], check=True)
  assert out.stdout.strip() == "[]"
