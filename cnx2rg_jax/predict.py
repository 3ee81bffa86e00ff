"""--mode=predict: a report for each of the user's own image files, one JSON line per image.

    python launch.py --config=configs/cnx2rg.py --workdir=DIR --mode=predict \
        --images=A.png,B.dcm,FOLDER/ [--output=F.jsonl]

Files and folders are expanded by `data.image_files` (PNG, JPEG, DICOM), each image is prepared
exactly as evaluation prepares a dataset image (bilinear resize to data.image_size, center crop,
normalization), and the trained run's best checkpoint writes the reports by beam search. Lines
come in input order, to --output or to stdout:

    {"image": path, "report": text, "keywords": {key: 1|0|-1}[, "keyword_probs": {key: p}],
     "ood_score": s, "out_of_distribution": true|false, "trained_on": {...},
     "checkpoint_step": N[, "warning": sentences]}
    {"image": path, "error": message}

Every report says what the model was trained on ("trained_on", `inference.provenance`) and how
unlike its training images the image is ("ood_score", `inference.ood`: 1 is a typical held-out
study; "out_of_distribution" when above the threshold calibrated on val). A run without an OOD
reference (trained before it existed, or a converted R2Gen checkpoint) gives "ood_score": null,
"out_of_distribution": null and "ood_unavailable": why. "warning" is there when the model was
trained on synthetic images or the image is out of distribution; the synthetic warning and the
missing-reference notice are also printed once on stderr. Outputs are for research, not a
diagnosis.

A model of several views a study (model.num_views = V > 1: R2Gen's IU X-Ray checkpoints) reads
studies instead of single files: a study folder, a folder of study folders, or the V files
joined with '+' (see `data.study_files`). Each line then names the study as "image" and adds
"views": [its V files in the order the model read them].

"keywords" are the rule labeler's labels of the generated report, as `evaluation.label` prints
them; "keyword_probs" (the keyword head's sigmoids, 4 decimals) only when the run trained that
head (train.keyword_weight > 0), since an untrained head says nothing. A bad file gets an error
line and the others go on. Exit code: 0 all reported, 1 some failed, 2 no images given.

With `--card` (or `--card_dir=OUT`), the report card of the first `card.num_cases` good images
(0: all), each with its report, the labeler's keyword spans and the attention map of every
generated word, goes to OUT/index.html (default DIR/predict_card/); see `cnx2rg_jax.card`.

Multi-host: every process reads and prepares every file (cheap next to beam search), so that
all agree on which files failed and on the number of global steps; each one feeds only its own
slots of every global batch (`ReportGenerator.slot_batches`), all get every row back, and process
0 alone logs and writes.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Callable, Optional, Sequence, TextIO

import jax
import numpy as np

from cnx2rg_jax.data import dataset, image_files, study_files, transforms
from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.inference import ood, run_facts
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.inference import generate, trained


def print_to_stderr(message: str) -> None:
  print(message, file=sys.stderr, flush=True)


def preprocess(image: np.ndarray, data) -> np.ndarray:
  """2-D uint8 image -> float32 [crop, crop, 1], as `transforms.ExampleTransform` prepares an
  evaluation image."""
  image = transforms.resize_gray(image, data.image_size)
  image = transforms.center_crop(image, data.crop_size)
  return transforms.normalize(image, data.normalization)


def report_line(path: str, report: str, probs: Optional[np.ndarray],
                views: Sequence[str] = (), facts: Optional[dict] = None) -> dict:
  """The JSON object of one generated report; `probs` [48] or None to leave them out; `views`,
  a study's files when the model reads several; `facts`, the run's fields for this image
  (`RunFacts.line_fields`), appended."""
  line = {"image": path, **({"views": list(views)} if len(views) > 1 else {}),
          "report": report, "keywords": label_report(report).keywords}
  if probs is not None:
    line["keyword_probs"] = {k: round(float(p), 4) for k, p in zip(kw.KEYWORD_KEYS, probs)}
  line.update(facts or {})
  return line


class _OrderedWriter:
  """Writes result lines in input order as soon as every earlier line is known; `out` None
  (processes other than 0) writes nothing."""

  def __init__(self, count: int, out: Optional[TextIO]):
    self.lines: list[Optional[dict]] = [None] * count
    self.next, self.out = 0, out

  def put(self, i: int, line: dict) -> None:
    if self.out is None:
      return
    self.lines[i] = line
    while self.next < len(self.lines) and self.lines[self.next] is not None:
      self.out.write(json.dumps(self.lines[self.next], ensure_ascii=False) + "\n")
      self.lines[self.next] = {}  # written: keep the slot filled, drop the text
      self.next += 1
    self.out.flush()


def _open_output(output: str) -> TextIO:
  if not output:
    if hasattr(sys.stdout, "reconfigure"):  # Chinese text unescaped, whatever the locale
      sys.stdout.reconfigure(encoding="utf-8")
    return sys.stdout
  path = pathlib.Path(output)
  path.parent.mkdir(parents=True, exist_ok=True)
  return open(path, "w", encoding="utf-8")


def _card_reason(fields: dict) -> str:
  """The card's caption of a predicted image: its OOD score and flag."""
  flag = "; UNLIKE THE TRAINING IMAGES" if fields["out_of_distribution"] else ""
  flag = "; BLANK IMAGE" if fields.get("blank_image") else flag
  if fields["ood_score"] is None:
    return f"input (no OOD score){flag}"
  return f"input, OOD score {fields['ood_score']:.2f}{flag}"


def _prepared(jobs: Sequence[study_files.StudyJob], data, blank: Optional[dict] = None):
  """(name, float32 image [crop, crop, 1] (one view) or [V, crop, crop, 1], or None, error or
  None) per study, in order; a preprocessing failure (not expected for a decoded image) stays
  with its study like a read failure. `blank[i]` is set for each readable study i: whether a
  view holds no picture (`ood.is_blank`)."""
  for i, (job, images, error) in enumerate(study_files.read_studies(jobs)):
    if error is not None:
      yield job.name, None, error
      continue
    try:
      image = transforms.study_input([preprocess(view, data) for view in images])
    except Exception as e:  # noqa: BLE001
      yield job.name, None, str(image_files.ImageReadError(job.name,
                                                           f"{type(e).__name__}: {e}"))
      continue
    if blank is not None:
      blank[i] = ood.is_blank(images)
    yield job.name, image, None


def run_predict(config, workdir: str, images: Sequence[str], output: str = "",
                log: Callable[[str], None] = print_to_stderr, card_dir: str = "",
                config_name: str = "") -> int:
  """Reports for `images` (files and folders) with the run in `workdir`, written as JSON lines to
  `output` (a file) or stdout; returns the exit code (0 ok, 1 some image failed, 2 no images).
  With `card_dir`, also the report card of the predicted images (`card.build`) in that folder.
  Raises what `trained.load` raises when the workdir holds no usable run."""
  jobs = study_files.expand_studies(list(images or []),
                                     dataset.num_views(config))
  if not jobs:
    log("error: no images to predict; pass --images=A.png,B.dcm,FOLDER/ (image files and "
        "folders of images, comma-separated)")
    return 2
  run = trained.load(config, workdir, log)
  facts = run_facts.RunFacts.of(config, workdir, run)
  gen = run.generator
  with_probs = config.train.keyword_weight > 0
  me = jax.process_index()
  if me == 0:
    for notice in facts.notices():
      log(notice)
  out = _open_output(output) if me == 0 else None
  writer = _OrderedWriter(len(jobs), out)
  good = failed = flagged = 0  # the same on every process: all of them read every file
  blank: dict[int, bool] = {}  # job index -> a view is blank; every process knows every job
  # For the card: the first card.num_cases (0: all) good images with their reports and ids, on
  # every process (all of them read every file).
  card_rows: dict[int, list] = {}
  card_cap = 0
  if card_dir:
    from cnx2rg_jax.card import build  # pylint: disable=import-outside-toplevel
    build.check_card_config(config.card)  # before the long part
    card_cap = config.card.num_cases

  def good_rows():
    """(job index, image) of each readable study, in order; a failure gets its line (and is
    counted) as it is read."""
    nonlocal good, failed
    for i, (path, image, error) in enumerate(_prepared(jobs, config.data, blank)):
      if error is not None:
        failed += 1
        if me == 0:
          log(error)
        writer.put(i, {"image": path, "error": error})
        continue
      if card_dir and (card_cap == 0 or len(card_rows) < card_cap):
        card_rows[i] = [image]
      good += 1
      yield i, image

  empty = run.model.config.image_shape(0, config.data.crop_size)
  try:
    # each process feeds its own slots of every global batch; all of them get every row back
    for rows, ids, probs, features in gen.stream(run.variables,
                                                 gen.slot_batches(good_rows(), empty)):
      texts = generate.decode_texts(run.tokenizer, ids)
      fields_of = facts.line_fields(features, [blank.pop(i, False) for i in rows.tolist()])
      for i, text, p, row_ids, fields in zip(rows.tolist(), texts, probs, ids, fields_of):
        flagged += bool(fields["out_of_distribution"])
        writer.put(i, report_line(jobs[i].name, text, p if with_probs else None, jobs[i].paths,
                                  fields))
        if i in card_rows:
          card_rows[i] += [text, row_ids, fields]
  finally:
    if out is not None and out is not sys.stdout:
      out.close()
  if me == 0:
    ood_note = ("" if facts.reference is None else f", {flagged} out of distribution (OOD "
                f"score above {facts.reference.threshold:.2f}, or blank)")
    log(f"predicted {good} reports ({failed} failed{ood_note}) -> {output or 'stdout'}")
  if card_dir and card_rows:
    order = sorted(card_rows)
    build.write_predict_card(
        config, workdir, run, [jobs[i].name for i in order],
        np.stack([card_rows[i][0] for i in order]), [card_rows[i][1] for i in order],
        np.stack([card_rows[i][2] for i in order]), card_dir, config_name=config_name,
        num_predicted=good, log=log, facts=facts,
        reasons=[_card_reason(card_rows[i][3]) for i in order])
  return 1 if failed else 0
