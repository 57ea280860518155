"""Every reference in the documentation and the code resolves inside the repository.

Scanned: README.md, docs/, ok_tf/, analysis/, tests/, train_*.py and results/README.md.

* ``docs/<file>`` written anywhere names an existing file or folder;
* in the Markdown files, links and backticked paths under ``docs/``, ``results/``,
  ``analysis/``, ``ok_tf/`` and ``tests/`` name existing files or folders;
* every ``§n`` cited with ``docs/algorithms.md`` is a numbered heading there, and every
  ``docs/protocol.md, "<heading>"`` starts a heading of docs/protocol.md;
* nothing cites the former notes or a data folder outside the repository (only
  ``.ci/run``, which is not scanned, names the CI machine's data location).
"""

from __future__ import annotations

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".md", ".py", ".sh", ".txt", ".toml"}
FORBIDDEN = ("ALGORITHMS" + ".md", "PROTOCOL" + ".md", "../" + "shared")
PATH_PREFIXES = ("docs/", "results/", "analysis/", "ok_tf/", "tests/")


def scanned_files() -> list[pathlib.Path]:
  files = [ROOT / "README.md", ROOT / "results" / "README.md", *sorted(ROOT.glob("train_*.py"))]
  for folder in ("docs", "ok_tf", "analysis", "tests"):
    files += sorted(p for p in (ROOT / folder).rglob("*")
                    if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts)
  return [p for p in files if p.is_file()]


FILES = scanned_files()
MARKDOWN = [p for p in FILES if p.suffix == ".md"]
THIS = pathlib.Path(__file__).resolve()
OTHERS = [p for p in FILES if p.resolve() != THIS]  # this file quotes what it looks for


def rel(path: pathlib.Path) -> str:
  return str(path.relative_to(ROOT))


def lines_of(path: pathlib.Path):
  return enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)


def exists(target: str, base: pathlib.Path = ROOT) -> bool:
  """Whether ``target`` (relative to ``base``; may hold * or ?) names a file or folder."""
  if any(c in target for c in "*?["):
    return any(base.glob(target.rstrip("/")))
  return (base / target).exists()


def joined(text: str) -> str:
  """``text`` with line breaks (and a continuing comment's ``#``) turned into one space."""
  return re.sub(r"[ \t]*\n[ \t]*(?:#[ \t]*)?", " ", text)


def algorithm_sections() -> set[str]:
  text = (ROOT / "docs" / "algorithms.md").read_text(encoding="utf-8")
  return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", text, flags=re.M))


def protocol_headings() -> list[str]:
  text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
  return re.findall(r"^#{2,4} (.+?)\s*$", text, flags=re.M)


def test_scan_covers_the_places():
  names = {rel(p) for p in FILES}
  for name in ("README.md", "results/README.md", "docs/algorithms.md", "docs/protocol.md",
               "ok_tf/data/ptb.py", "analysis/study.py", "train_ptb.py", "tests/test_docs.py"):
    assert name in names, name


def test_no_reference_to_former_notes_or_outside_data():
  bad = [f"{rel(p)}:{n}: {word!r} in {line.strip()!r}"
         for p in OTHERS for n, line in lines_of(p) for word in FORBIDDEN if word in line]
  assert not bad, "References to files that are not in the repository:\n" + "\n".join(bad)


DOCS_REF = re.compile(r"(?<![\w./-])docs/[\w.\-/]*[\w/]")


def test_docs_references_exist():
  bad = [f"{rel(p)}:{n}: {m.group(0)}"
         for p in FILES for n, line in lines_of(p)
         for m in DOCS_REF.finditer(line) if not exists(m.group(0))]
  assert not bad, "Missing files referenced as docs/...:\n" + "\n".join(bad)


LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
BACKTICK = re.compile(r"`([^`\n]+)`")


def markdown_targets(path: pathlib.Path):
  """(line, target, base folder) of the links and backticked repository paths of ``path``."""
  for n, line in lines_of(path):
    for m in LINK.finditer(line):
      target = m.group(1).split("#", 1)[0]
      if not target or re.match(r"[a-z][a-z0-9+.-]*:", target):  # anchor, http:, mailto:
        continue
      yield n, target, path.parent
    for m in BACKTICK.finditer(line):
      token = m.group(1).strip().split()[0] if m.group(1).strip() else ""
      token = token.split("::", 1)[0].rstrip(".,;:)")
      if token.startswith(PATH_PREFIXES) and not any(c in token for c in "<>{}$"):
        yield n, token, ROOT


def test_markdown_links_and_paths_exist():
  bad = [f"{rel(p)}:{n}: {target}"
         for p in MARKDOWN for n, target, base in markdown_targets(p)
         if not exists(target, base)]
  assert not bad, "Markdown links / paths to missing files:\n" + "\n".join(bad)


SECTION_LIST = re.compile(
    r"algorithms\.md\]?\)?`?,?\s*((?:§\d+(?:\.\d+)*(?:\s*(?:[–-]|,|and)\s*)?)+)")


def test_cited_algorithm_sections_exist():
  sections = algorithm_sections()
  assert {"1", "2", "3", "4", "4.1", "4.4", "5", "6", "7", "8"} <= sections
  bad, count = [], 0
  for p in OTHERS:
    text = joined(p.read_text(encoding="utf-8"))
    cited = [s for m in SECTION_LIST.finditer(text) for s in re.findall(r"§(\d+(?:\.\d+)*)", m.group(1))]
    if p == ROOT / "docs" / "algorithms.md":  # its own cross-references
      cited += re.findall(r"§(\d+(?:\.\d+)*)", text)
    count += len(cited)
    bad += [f"{rel(p)}: §{s}" for s in cited if s not in sections]
  assert count > 10  # the code cites many sections; none found means the pattern broke
  assert not bad, "Sections cited with docs/algorithms.md that it does not have:\n" + "\n".join(bad)


PROTOCOL_CITE = re.compile(r"protocol\.md\]?\)?`?,\s*[\"“]([^\"”]+)[\"”]")


def test_cited_protocol_headings_exist():
  headings = protocol_headings()
  assert any(h.startswith("Character-level Penn Treebank") for h in headings)
  bad, count = [], 0
  for p in OTHERS:
    for m in PROTOCOL_CITE.finditer(joined(p.read_text(encoding="utf-8"))):
      count += 1
      if not any(h.startswith(m.group(1).strip()) for h in headings):
        bad.append(f"{rel(p)}: {m.group(1)!r}")
  assert count > 3  # the code cites several headings; none found means the pattern broke
  assert not bad, "Headings cited with docs/protocol.md that it does not have:\n" + "\n".join(bad)


@pytest.mark.parametrize("text, ok", [("docs/algorithms.md §4.4", True), ("docs/algorithms.md §4.9", False)])
def test_section_check_catches_a_wrong_section(text, ok):
  cited = [s for m in SECTION_LIST.finditer(text) for s in re.findall(r"§(\d+(?:\.\d+)*)", m.group(1))]
  assert cited and (all(s in algorithm_sections() for s in cited) is ok)
