"""A build's keyword counts per split in the layout of the paper's Table 1.

The paper's Table 1 counts, per split, the reports in which CN-RadGraph found each of the 48
keywords present ("a lesion present on an anatomy counts both the anatomy and the lesion once").
Here that is the number of a split's reports whose stored label for the keyword is POSITIVE,
whichever annotator made it (the build's metadata says which); reports without labels count in
`unlabelled` only. `python launch.py --config=... --mode=table1 [--json]` prints it.
"""

from __future__ import annotations

from cnx2rg_jax.data.dataset import SPLITS, PreparedDataset, read_split_texts
from cnx2rg_jax.text import keywords as kw

# Table 1's column titles ("valid" is this project's "val").
COLUMN_TITLES = {"train": "train", "val": "valid", "test": "test"}


def keyword_counts(prepared: PreparedDataset) -> dict:
  """{"build", "annotation", "reports": {split: n}, "unlabelled": {split: n},
  "counts": {keyword key: {split: reports stating it positive}}} of the build."""
  counts = {k.key: {} for k in kw.KEYWORDS}
  reports, unlabelled = {}, {}
  for split in SPLITS:
    texts = read_split_texts(prepared, split)
    labelled = texts.keyword_labels[texts.has_keyword_labels]
    reports[split] = len(texts.ids)
    unlabelled[split] = int((~texts.has_keyword_labels).sum())
    positive = (labelled == kw.POSITIVE).sum(axis=0)
    for i, k in enumerate(kw.KEYWORDS):
      counts[k.key][split] = int(positive[i])
  return {"build": prepared.builder.builder_config.name,
          "annotation": prepared.builder.info.metadata.get("annotation"),
          "reports": reports, "unlabelled": unlabelled, "counts": counts}


def table(result: dict) -> str:
  """Table 1's layout: anatomy keywords on the left, lesion keywords on the right."""
  anatomy = [k for k in kw.KEYWORDS if k.kind == "anatomy"]
  lesion = [k for k in kw.KEYWORDS if k.kind == "lesion"]
  name_w = max(len(k.name) for k in kw.KEYWORDS) + 2

  def half(title: str, k) -> str:
    if k is None:
      return " " * (name_w + 21)
    return k.name.ljust(name_w) + "".join(f"{result['counts'][k.key][s]:>7}" for s in SPLITS)

  head = "".join(f"{COLUMN_TITLES[s]:>7}" for s in SPLITS)
  annotator = (result["annotation"] or {}).get("annotator", "not recorded")
  lines = [f"Keyword counts of cncxr/{result['build']} (labels by {annotator!r}): reports "
           "stating each keyword positive",
           "Anatomy keywords".ljust(name_w) + head + " | " + "Lesion keywords".ljust(name_w) + head]
  for i in range(max(len(anatomy), len(lesion))):
    lines.append(half("", anatomy[i] if i < len(anatomy) else None) + " | "
                 + half("", lesion[i] if i < len(lesion) else None))
  lines.append("reports".ljust(name_w) + "".join(f"{result['reports'][s]:>7}" for s in SPLITS)
               + " | " + "of them unlabelled".ljust(name_w)
               + "".join(f"{result['unlabelled'][s]:>7}" for s in SPLITS))
  return "\n".join(lines)
