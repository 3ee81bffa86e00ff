"""The README's and docs/'s relative links resolve: every file a link names exists, and every
#anchor names a heading of its target page, slugged as GitHub slugs headings."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_LINK = re.compile(r"(?<!!)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^()\s]*(?:\([^()]*\)[^()\s]*)*)\)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


def doc_pages(root=ROOT):
  """The markdown pages whose links are checked: README.md and docs/*.md."""
  return [root / "README.md"] + sorted((root / "docs").glob("*.md"))


def _prose_lines(text):
  """(line number, line) of the lines outside fenced code blocks."""
  fenced = False
  for number, line in enumerate(text.splitlines(), 1):
    if _FENCE.match(line):
      fenced = not fenced
      continue
    if not fenced:
      yield number, line


def slug(heading):
  """GitHub's anchor for a heading's text: markup dropped, lower case, every character that is
  not a letter, digit, underscore, hyphen or space removed, spaces turned into hyphens."""
  text = _LINK.sub(lambda m: m.group(1), heading)
  text = text.replace("`", "").replace("**", "").lower()
  text = re.sub(r"[^\w\- ]", "", text)
  return text.replace(" ", "-")


def anchors(text):
  """The anchors of a page's headings, GitHub's -1, -2 ... suffixes on repeated ones."""
  seen = {}
  out = set()
  for _, line in _prose_lines(text):
    match = _HEADING.match(line)
    if not match:
      continue
    base = slug(match.group(2))
    count = seen.get(base, 0)
    seen[base] = count + 1
    out.add(base if count == 0 else f"{base}-{count}")
  return out


def links(text):
  """(line number, target) of every inline markdown link outside code."""
  for number, line in _prose_lines(text):
    line = _CODE_SPAN.sub("", line)
    for match in _LINK.finditer(line):
      yield number, match.group(2)


def broken_links(page):
  """One message for each relative link of `page` whose file or #anchor does not exist."""
  problems = []
  for number, target in links(page.read_text(encoding="utf-8")):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
      continue
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    where = f"{page.name}:{number}: {target}"
    if not file.exists():
      problems.append(f"{where}: no file {file}")
      continue
    if anchor:
      if file.suffix != ".md":
        problems.append(f"{where}: an anchor into a file that is not markdown")
      elif anchor not in anchors(file.read_text(encoding="utf-8")):
        problems.append(f"{where}: no heading with anchor #{anchor} in {file.name}")
  return problems


@pytest.mark.parametrize(("heading", "expected"), [
    ("Quick start", "quick-start"),
    ("The CPU demo: does it learn?", "the-cpu-demo-does-it-learn"),
    ("The `cncxr` TFDS builder (`tfds_cncxr/`)", "the-cncxr-tfds-builder-tfds_cncxr"),
    ("R2GenCMN: the paper's other baseline (`model.architecture=\"cmn\"`)",
     "r2gencmn-the-papers-other-baseline-modelarchitecturecmn"),
    ("Training throughput (`--mode=bench_train`)", "training-throughput---modebench_train"),
    ("Side by side with R2Gen (`python -m cnx2rg_jax.bench.r2gen_side_by_side`)",
     "side-by-side-with-r2gen-python--m-cnx2rg_jaxbenchr2gen_side_by_side"),
    ("胸部 X 线 **报告**", "胸部-x-线-报告"),
])
def test_slug_matches_githubs_anchor(heading, expected):
  assert slug(heading) == expected


def test_repeated_headings_get_numbered_anchors():
  text = "# Limits\n\n```\n# not a heading\n```\n## Limits\n### Limits #\n"
  assert anchors(text) == {"limits", "limits-1", "limits-2"}


def test_the_check_finds_a_missing_file_and_a_missing_anchor(tmp_path):
  (tmp_path / "docs").mkdir()
  (tmp_path / "README.md").write_text(
      "# Top\n\n[ok](docs/a.md#part-one) [gone](docs/b.md) [bad](docs/a.md#part-two)\n"
      "`[in code](docs/c.md)` [web](https://example.org/x#y) [here](#top)\n", encoding="utf-8")
  (tmp_path / "docs" / "a.md").write_text("# A\n\n## Part one\n\n[back](../README.md#nope)\n",
                                          encoding="utf-8")
  problems = [p for page in doc_pages(tmp_path) for p in broken_links(page)]
  assert len(problems) == 3, problems
  assert "no file" in problems[0] and "docs/b.md" in problems[0]
  assert "#part-two" in problems[1]
  assert "a.md:5" in problems[2] and "#nope" in problems[2]


def test_readme_and_docs_links_resolve():
  pages = doc_pages()
  assert len(pages) > 1, "docs/ holds no pages"
  problems = [p for page in pages for p in broken_links(page)]
  assert not problems, "\n".join(problems)
