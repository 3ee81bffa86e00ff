"""Preparing the CN-CXR build a config names, and reading its splits without TensorFlow."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Callable, Optional

import numpy as np
import tensorflow_datasets as tfds

from cnx2rg_jax.errors import UserError
import tfds_cncxr
from cnx2rg_jax import distributed
from cnx2rg_jax.data import graph_augment, transforms
from tfds_cncxr import annotate

SPLITS = ("train", "val", "test")


class DataConfigError(UserError):
  """A data setting that cannot work; the message says what to do."""


def builder_config(data, num_views: int = 1) -> tfds_cncxr.CncxrConfig:
  """The CncxrConfig for `config.data` (an ml_collections ConfigDict or dataclass); `num_views`
  is `config.model.num_views`, the images a study the model reads."""
  if data.name == "synthetic":
    if num_views != 1:
      raise DataConfigError(f"model.num_views={num_views}, but the synthetic CN-CXR has one view "
                            "a study; use model.num_views=1, or data.name='release' with a folder "
                            "whose entries list that many images")
    if data.image_size > data.synthetic_image_size:
      raise DataConfigError(
          f"data.image_size={data.image_size} is larger than the synthetic images' stored side "
          f"data.synthetic_image_size={data.synthetic_image_size}; images are never upsampled. "
          "Lower data.image_size or raise data.synthetic_image_size")
    return tfds_cncxr.synthetic_config(num_examples=data.num_examples, seed=data.synthetic_seed,
                                       image_size=data.synthetic_image_size)
  if data.name == "release":
    annotator = annotator_name(data)
    fingerprint = ""
    if annotator == "cn_radgraph":
      try:
        fingerprint = annotate.model_fingerprint(data.cn_radgraph_dir)
      except FileNotFoundError as e:
        raise DataConfigError(f"data.annotate='cn_radgraph': {e}") from None
    stored = data.image_size if data.stored_image_size < 0 else data.stored_image_size
    if stored and data.image_size > stored:
      raise DataConfigError(
          f"data.image_size={data.image_size} is larger than the release build's stored side "
          f"data.stored_image_size={stored}; images are never upsampled. Set "
          "data.stored_image_size=-1 (the training resize) or 0 (the files' own size)")
    return tfds_cncxr.release_config(language=data.language, english_style=data.english_style,
                                     skip_bad_examples=data.skip_bad_examples,
                                     split_seed=data.split_seed, num_views=num_views,
                                     annotate_with=annotator, annotator_id=fingerprint,
                                     image_size=stored)
  raise DataConfigError(f"data.name={data.name!r} is not a dataset; use 'synthetic' (the embedded "
                        "synthetic CN-CXR) or 'release' with data.manual_dir=<folder>")


def annotator_name(data) -> str:
  """What annotates a release's unlabelled entries: data.annotate, with "auto" the language's
  default (the rule labeler for Chinese, none for English). DataConfigError for an annotator
  of English text, or for "cn_radgraph" without data.cn_radgraph_dir."""
  if data.annotate == "auto":
    return tfds_cncxr.default_annotator(data.language)
  if data.annotate not in annotate.ANNOTATORS:
    raise DataConfigError(f"data.annotate={data.annotate!r} is not an annotator; use 'auto', "
                          + ", ".join(repr(a) for a in annotate.ANNOTATORS))
  if data.annotate != "none" and data.language != "zh":
    raise DataConfigError(
        f"data.annotate={data.annotate!r} with data.language={data.language!r}: the rule labeler "
        "and CN-RadGraph read Chinese reports only, and labelling English text with the Chinese "
        "lexicon would store every keyword as 'not mentioned'. Use data.annotate='none' (or "
        "'auto'), and give 'keywords' (and 'entities') in the annotation for what needs them")
  if data.annotate == "cn_radgraph" and not data.cn_radgraph_dir:
    raise DataConfigError("data.annotate='cn_radgraph' needs data.cn_radgraph_dir, the workdir of "
                          "a trained CN-RadGraph (python launch.py --config=configs/cn_radgraph.py "
                          "--workdir=DIR)")
  return data.annotate


def num_views(config) -> int:
  """config.model.num_views, the images a study the model reads (1 when the config has no such
  key: every CN-X2RG config; configs/r2gen.py:iu_xray sets 2)."""
  return config.model.get("num_views", 1)


def data_dir(data) -> str:
  """Where TFDS builds live: data.data_dir, else $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
  return data.data_dir or os.environ.get("TFDS_DATA_DIR") or str(
      pathlib.Path.home() / "tensorflow_datasets")


@dataclasses.dataclass(frozen=True)
class PreparedDataset:
  builder: tfds.core.DatasetBuilder
  built_now: bool  # False when an earlier build was reused
  build_seconds: float

  @property
  def num_views(self) -> int:
    return self.builder.builder_config.num_views

  @property
  def language(self) -> str:
    return self.builder.info.metadata["language"]

  @property
  def report_cleaner(self) -> str:
    """The transforms.REPORT_CLEANERS key for this build's reports."""
    meta = self.builder.info.metadata
    return "zh" if meta["language"] == "zh" else meta["english_style"]

  def num_examples(self, split: str) -> int:
    return self.builder.info.splits[split].num_examples

  def source(self, split: str):
    """Random-access records of `split`; images ("image", and "image_1".. of a build with several
    views) stay PNG bytes (the pipeline decodes them)."""
    return self.builder.as_data_source(split, decoders={
        key: tfds.decode.SkipDecoding() for key in tfds_cncxr.image_keys(self.num_views)})


def prepare(data, num_views: int = 1,
            make_annotator: Optional[Callable[[str], annotate.Annotator]] = None
            ) -> PreparedDataset:
  """Builds the dataset `config.data` names, or reuses an existing build of the same config.
  `num_views` (config.model.num_views) > 1 stores that many images a study. With
  data.annotate='cn_radgraph', `make_annotator(data.cn_radgraph_dir)` gives the annotator
  (radgraph.annotator.make; called only when the build is made)."""
  cfg = builder_config(data, num_views)
  manual_dir = None
  if data.name == "release":
    if not data.manual_dir:
      raise DataConfigError("data.name='release' needs data.manual_dir: the folder holding "
                            "annotation.json and the images (e.g. --config.data.manual_dir=/data/cncxr)")
    manual_dir = pathlib.Path(data.manual_dir).expanduser()
    if not (manual_dir / "annotation.json").is_file():
      raise DataConfigError(f"data.manual_dir={str(manual_dir)!r} has no annotation.json; point it "
                            "at a CN-CXR release folder in R2Gen's layout (see README, 'Data')")

  def build():
    builder = tfds_cncxr.Cncxr(config=cfg, data_dir=data_dir(data),
                               num_workers=data.build_workers)
    already = builder.is_prepared()
    if not already:
      if cfg.annotate == "cn_radgraph":
        if make_annotator is None:
          raise DataConfigError("data.annotate='cn_radgraph' is not available in this mode; "
                                "build the dataset with --mode=train first, or use 'labeler'")
        builder = tfds_cncxr.Cncxr(config=cfg, data_dir=data_dir(data),
                                   num_workers=data.build_workers,
                                   annotator=make_annotator(data.cn_radgraph_dir))
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=str(manual_dir) if manual_dir else None, num_shards=data.num_shards))
    return builder, already

  start = time.perf_counter()
  # Several processes: process 0 builds; the others reuse its files, or build their own copy
  # where their data_dir is not shared.
  builder, already = distributed.first_then_others(build, f"dataset {cfg.name}")
  return PreparedDataset(builder, built_now=not already,
                         build_seconds=time.perf_counter() - start)


def annotation_summary(prepared: "PreparedDataset") -> str:
  """One line on where the build's keyword labels and graphs came from, per split."""
  meta = prepared.builder.info.metadata.get("annotation")
  if meta is None:
    return "keyword labels and graphs: not recorded (a build older than version 1.1.0)"
  parts = []
  for split, c in meta["splits"].items():
    parts.append(f"{split}: labels {c['labels_given']} given, {c['labels_made']} made, "
                 f"{c['labels_none']} none; graphs {c['graphs_given']} given, "
                 f"{c['graphs_made']} made, {c['graphs_none']} none")
  return f"annotator {meta['annotator']!r}; " + "; ".join(parts)


@dataclasses.dataclass(frozen=True)
class SplitTexts:
  """The text side of a split: what tokenizer building, oversampling and the graph augmentation's
  phrase bank need, without pixels."""

  ids: list
  reports: list  # cleaned
  keyword_labels: np.ndarray  # int8 [N, 48]
  has_keyword_labels: np.ndarray  # bool [N]
  # Per report: (entities, relations) with spans into the cleaned report, or None when the
  # record has no graph or its spans do not survive cleaning (graph_augment.record_graph).
  graphs: list = dataclasses.field(default_factory=list)


def read_split_texts(prepared: PreparedDataset, split: str) -> SplitTexts:
  source = prepared.source(split)
  clean = transforms.REPORT_CLEANERS[prepared.report_cleaner]
  ids, reports, labels, has, graphs = [], [], [], [], []
  for i in range(len(source)):
    r = source[i]
    ids.append(transforms.as_text(r["id"]))
    reports.append(clean(transforms.as_text(r["report"])))
    labels.append(r["keyword_labels"])
    has.append(bool(r["has_keyword_labels"]))
    graphs.append(graph_augment.record_graph(r, reports[-1]))
  n = len(ids)
  return SplitTexts(ids, reports,
                    np.asarray(labels, np.int8).reshape(n, -1), np.asarray(has, bool), graphs)
