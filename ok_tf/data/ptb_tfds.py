"""Character-level Penn Treebank as the tensorflow-datasets builder ``ptb_char``.

Importing this module registers the builder::

    import ok_tf.data.ptb_tfds  # noqa: F401
    import tensorflow_datasets as tfds
    ds = tfds.load("ptb_char", split="valid")   # or "ptb_char/whitespace_eol"

Configs ``published`` (default) and ``whitespace_eol`` (:data:`ok_tf.data.ptb.TOKENIZATIONS`);
splits ``train``, ``valid``, ``test``, each one example whose feature ``ids`` (int32
``[N]``) is the whole symbol stream; ``info.metadata["vocab"][i]`` is the symbol of id i.
Like TFDS's own text builders, it reads the three files from its ``manual_dir``
(``<data_dir>/downloads/manual`` by default) when they are there and otherwise downloads
the archive :data:`ok_tf.data.ptb.ARCHIVE_URL` itself (no network probe beforehand); the
files' SHA-256 and the tokenisation are those of the loader :mod:`ok_tf.data.ptb`.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ok_tf.data import ptb


_CITATION = """\
@phdthesis{mikolov2012statistical,
  title  = {Statistical Language Models Based on Neural Networks},
  author = {Mikolov, Tom{\\'a}{\\v{s}}},
  school = {Brno University of Technology},
  year   = {2012}
}
@article{marcus1993building,
  title   = {Building a Large Annotated Corpus of {E}nglish: The {P}enn {T}reebank},
  author  = {Marcus, Mitchell P. and Santorini, Beatrice and Marcinkiewicz, Mary Ann},
  journal = {Computational Linguistics},
  volume  = {19},
  number  = {2},
  pages   = {313--330},
  year    = {1993}
}
"""


class PtbChar(tfds.core.GeneratorBasedBuilder):
  """Character-level Penn Treebank (Mikolov et al. 2012 split) as one id sequence per split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: one example per split, vocabulary in metadata."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name="published",
          description=(
              "Published code's tokenisation: per line '_' + symbols + '_' + '\\n' (the word-level "
              "text with spaces as '_'); 50 symbols in order of first appearance in train."
          ),
      ),
      tfds.core.BuilderConfig(
          name="whitespace_eol",
          description=(
              "Whitespace-separated symbols plus one '<eos>' per line of text; 50 symbols in "
              "order of first appearance in train."
          ),
      ),
  ]
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: without it the builder downloads the archive itself. Put the three files "
      + ", ".join(f"ptb.char.{s}.txt" for s in ptb.SPLITS)
      + f" of {ptb.ARCHIVE_URL} (simple-examples/data/; also accepted as <split>.txt) in manual_dir, "
      "by default <data_dir>/downloads/manual. Their SHA-256 are checked."
  )
  # TFDS 4.9.x derives code_path through `importlib_resources`, which it does not install on
  # Python >= 3.9 (tensorflow/datasets#11212); giving the path directly avoids that import.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    tokenization = self.builder_config.name
    return self.dataset_info_from_configs(
        description=(
            "Character-level Penn Treebank from Mikolov's RNNLM simple-examples archive "
            "(files ptb.char.{train,valid,test}.txt, SHA-256 checked). Each split is one "
            "example whose feature 'ids' is the whole symbol stream (int32); "
            "metadata['vocab'][i] is the symbol of id i."
        ),
        features=tfds.features.FeaturesDict(
            {
                "ids": tfds.features.Tensor(
                    shape=(None,), dtype=np.int32, encoding=tfds.features.Encoding.ZLIB
                )
            }
        ),
        homepage="http://www.fit.vutbr.cz/~imikolov/rnnlm/",
        citation=_CITATION,
        metadata=tfds.core.MetadataDict(
            vocab=list(ptb.VOCABS[tokenization]),
            tokenization=tokenization,
            num_symbols=dict(ptb.NUM_SYMBOLS[tokenization]),
            sha256=dict(ptb.SHA256),
        ),
    )

  def _manual_files(
      self, dl_manager: tfds.download.DownloadManager
  ) -> tuple[dict[str, pathlib.Path] | None, str]:
    """The three files in ``dl_manager.manual_dir`` (or ``None``) and where that was."""
    try:
      manual = pathlib.Path(os.fspath(dl_manager.manual_dir))
    except AssertionError as e:  # TFDS: the manual dir is missing or empty
      return None, f"the TFDS manual directory ({str(e).split('. ')[0]})"
    return ptb.find_files(manual), f"the TFDS manual directory {manual} (no PTB character files)"

  def _download_files(
      self, dl_manager: tfds.download.DownloadManager, searched: list[str]
  ) -> dict[str, pathlib.Path]:
    """Download and unpack :data:`ptb.ARCHIVE_URL`; the three files inside it."""
    try:
      root = pathlib.Path(os.fspath(dl_manager.download_and_extract(ptb.ARCHIVE_URL)))
    except Exception as e:  # offline, server or archive failure: say what to do instead
      searched.append(f"{ptb.ARCHIVE_URL} (download failed: {type(e).__name__}: {e})")
      raise ptb.PtbDataMissingError(ptb.missing_data_message(searched)) from e
    files = ptb.find_files(root)
    if files is None:
      searched.append(f"{ptb.ARCHIVE_URL} (the archive lacks {ptb.ARCHIVE_MEMBER})")
      raise ptb.PtbDataMissingError(ptb.missing_data_message(searched))
    return files

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    """Files from ``manual_dir`` if they are there, else from the downloaded archive; checked."""
    files, where = self._manual_files(dl_manager)
    if files is None:
      files = self._download_files(dl_manager, [where])
    texts = ptb.read_verified(files)
    ids, vocab = ptb.tokenize(texts, self.builder_config.name)
    if tuple(vocab) != ptb.VOCABS[self.builder_config.name]:  # fixed by the checksums; guard anyway
      raise RuntimeError(f"Vocabulary {vocab} differs from the constant one; report this as a bug.")
    return {split: self._generate_examples(split, ids[split]) for split in ptb.SPLITS}

  def _generate_examples(self, split: str, ids: np.ndarray):
    yield split, {"ids": ids}
