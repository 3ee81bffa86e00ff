"""The `cncxr` TFDS builder: a CN-CXR release folder, or the embedded synthetic CN-CXR.

    import tfds_cncxr  # registers the builder
    builder = tfds.builder("cncxr/release", data_dir=D)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=M))
    builder = tfds.builder("cncxr/synthetic", data_dir=D)   # no manual_dir needed

Both write sharded array_record files with the same features, readable without TensorFlow through
`builder.as_data_source()`. Variants with other parameters are `CncxrConfig`s:
`tfds.builder("cncxr", config=synthetic_config(num_examples=400), data_dir=D)`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Optional

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import shard_utils

from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.text import report_graph
from tfds_cncxr import annotate, images, release
from tfds_cncxr.synthetic import generate as synthetic

SOURCES = ("synthetic", "release")
LANGUAGES = ("zh", "en")
ENGLISH_STYLES = ("iu_xray", "mimic_cxr")
SEXES = ("M", "F", "U")
DEFAULT_SYNTHETIC_EXAMPLES = 4000
DEFAULT_NUM_SHARDS = 4
MAX_VIEWS = 8


def image_keys(num_views: int) -> tuple[str, ...]:
  """The image features of a build with `num_views` views: "image", then "image_1" ..."""
  return ("image",) + tuple(f"image_{v}" for v in range(1, num_views))


@dataclasses.dataclass(eq=False)
class CncxrConfig(tfds.core.BuilderConfig):
  """Parameters of one build. The config name must differ whenever a parameter does, because
  TFDS caches a build under data_dir/cncxr/<name>/<version>.

  source: "synthetic" or "release".
  num_examples, seed: the synthetic set's size and seed.
  image_size: the stored image side in pixels: the synthetic set renders at it; a release
    stores each image resized to it (images.resize_gray, the pipeline's own resize, so that
    training never decodes a full-size radiograph), or as the files are when 0.
  language: "zh" (Chinese reports) or "en" (R2Gen-format IU X-Ray / MIMIC-CXR annotations).
    Reports are stored raw; the language, recorded in the dataset metadata, selects cleaning and
    segmentation when the reports are tokenized (R2Gen's English cleaning for "en").
  english_style: which of R2Gen's English cleanings applies ("iu_xray" | "mimic_cxr").
  skip_bad_examples: skip broken release entries (recording their ids in the metadata) instead
    of failing the build.
  split_seed: seed of the 7:1:2 split of a release whose annotation has no splits.
  num_views: images stored a study (release only). 1 stores the first listed image as "image";
    V > 1 (R2Gen's IU X-Ray model: 2) also stores the next V - 1 listed images as "image_1" ..
    "image_{V-1}" (`image_keys`), and an entry listing fewer than V images is a bad example.
  annotate: what makes keyword labels and graphs for release entries without them
    (tfds_cncxr/annotate.py): "labeler" (the rule labeler; Chinese releases' default),
    "cn_radgraph" (a trained extractor, handed to the builder) or "none" (English releases).
  annotator_id: with "cn_radgraph", the model's fingerprint (annotate.model_fingerprint), so
    that builds made by different models never share a name.
  """

  source: str = "synthetic"
  num_examples: int = DEFAULT_SYNTHETIC_EXAMPLES
  seed: int = 0
  image_size: int = 256
  language: str = "zh"
  english_style: str = "mimic_cxr"
  skip_bad_examples: bool = False
  split_seed: int = 0
  num_views: int = 1
  annotate: str = "none"
  annotator_id: str = ""

  def __post_init__(self):
    for field, allowed in (("source", SOURCES), ("language", LANGUAGES),
                           ("english_style", ENGLISH_STYLES)):
      if getattr(self, field) not in allowed:
        raise ValueError(f"CncxrConfig {self.name!r}: {field}={getattr(self, field)!r}; "
                         f"choose one of {allowed}")
    if not 1 <= self.num_views <= MAX_VIEWS or (self.source == "synthetic" and self.num_views != 1):
      raise ValueError(f"CncxrConfig {self.name!r}: num_views={self.num_views}; a release stores "
                       f"1 to {MAX_VIEWS} views a study, the synthetic set 1")
    if self.annotate not in annotate.ANNOTATORS:
      raise ValueError(f"CncxrConfig {self.name!r}: annotate={self.annotate!r}; choose one of "
                       f"{annotate.ANNOTATORS}")
    if self.annotate != "none" and (self.source != "release" or self.language != "zh"):
      raise ValueError(f"CncxrConfig {self.name!r}: annotate={self.annotate!r}, but only a "
                       "Chinese release is annotated (the labeler and CN-RadGraph read Chinese; "
                       "the synthetic set's labels are exact); use annotate='none'")
    if (self.annotate == "cn_radgraph") != bool(self.annotator_id):
      raise ValueError(f"CncxrConfig {self.name!r}: annotator_id={self.annotator_id!r} must be "
                       "the model fingerprint exactly when annotate='cn_radgraph'")
    if self.num_examples < 10:
      raise ValueError(f"CncxrConfig {self.name!r}: num_examples={self.num_examples} is too small "
                       "for a 7:1:2 split; use at least 10")

  def __reduce__(self):
    # A registered config must unpickle (e.g. in grain workers) as the registered object itself.
    if _REGISTERED.get(self.name) is self:
      return (_registered, (self.name,))
    return super().__reduce__()


# The registered configs, by name; a parameter set that has a registered name returns that very
# object, since TFDS refuses a second config object under a registered name.
_REGISTERED: dict[str, CncxrConfig] = {}


def _registered(name: str) -> "CncxrConfig":
  return _REGISTERED[name]


def synthetic_config(num_examples: int = DEFAULT_SYNTHETIC_EXAMPLES, seed: int = 0,
                     image_size: int = 256) -> CncxrConfig:
  """A synthetic config whose name encodes its parameters (so builds never collide)."""
  name = "synthetic"
  if (num_examples, seed, image_size) != (DEFAULT_SYNTHETIC_EXAMPLES, 0, 256):
    name = f"synthetic_n{num_examples}_seed{seed}_px{image_size}"
  return _REGISTERED.get(name) or CncxrConfig(
      name=name, source="synthetic", num_examples=num_examples, seed=seed,
      image_size=image_size,
      description=f"Synthetic CN-CXR, {num_examples} studies, seed {seed}.")


def default_annotator(language: str) -> str:
  """The annotator of a release in `language` unless another is asked for: the rule labeler
  for Chinese, none for English (the labeler's lexicon is Chinese)."""
  return "labeler" if language == "zh" else "none"


def release_config(language: str = "zh", english_style: str = "mimic_cxr",
                   skip_bad_examples: bool = False, split_seed: int = 0,
                   num_views: int = 1, annotate_with: Optional[str] = None,
                   annotator_id: str = "", image_size: int = 0) -> CncxrConfig:
  """A release config whose name encodes its parameters; `annotate_with` is an
  annotate.ANNOTATORS name (None: `default_annotator(language)`); `image_size` the stored side
  (0: the files' own size)."""
  annotate_with = annotate_with or default_annotator(language)
  name = "release"
  if (language, english_style, skip_bad_examples, split_seed) != ("zh", "mimic_cxr", False, 0):
    name = (f"release_{language}" + (f"_{english_style}" if language == "en" else "")
            + ("_skipbad" if skip_bad_examples else "") + f"_split{split_seed}")
  if num_views != 1:  # one-view names are unchanged, so their earlier builds are reused
    name += f"_views{num_views}"
  if annotate_with != default_annotator(language):
    name += f"_annot{annotate_with.replace('_', '')}" + (
        f"{annotator_id[:12]}" if annotator_id else "")
  if image_size:
    name += f"_px{image_size}"
  return _REGISTERED.get(name) or CncxrConfig(name=name, source="release", language=language,
                     english_style=english_style, skip_bad_examples=skip_bad_examples,
                     split_seed=split_seed, num_views=num_views, annotate=annotate_with,
                     annotator_id=annotator_id, image_size=image_size,
                     description="A CN-CXR release read from manual_dir.")


@dataclasses.dataclass(frozen=True)
class _AtMostShards(shard_utils.ShardConfig):
  """`num_shards` per split, but never more shards than a split has examples (TFDS would fail)."""

  def get_number_shards(self, total_size, num_examples, uses_precise_sharding=True) -> int:
    return max(1, min(self.num_shards, num_examples))


@dataclasses.dataclass
class _ShardedDownloadConfig(tfds.download.DownloadConfig):
  def get_shard_config(self) -> shard_utils.ShardConfig:
    return _AtMostShards(num_shards=self.num_shards or DEFAULT_NUM_SHARDS)


class Cncxr(tfds.core.GeneratorBasedBuilder):
  """CN-CXR: Chinese chest X-ray images and reports (Tang, Pei et al. 2023), or a synthetic twin."""

  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {"1.0.0": "First release: release folders and the synthetic set.",
                   "1.1.0": "Release entries without keyword labels or graphs get them from the "
                            "config's annotator (tfds_cncxr/annotate.py); metadata['annotation'] "
                            "counts their sources per split. Release images are stored resized "
                            "to the config's image_size (0: as the files are)."}
  BUILDER_CONFIGS = [release_config(), synthetic_config()]
  _REGISTERED.update((c.name, c) for c in BUILDER_CONFIGS)
  DEFAULT_CONFIG_NAME = "synthetic"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Place a CN-CXR release in R2Gen's layout in manual_dir: manual_dir/annotation.json =
  {"train": [{"id", "report", "image_path": [...]}], "val": [...], "test": [...]} (or one flat
  list, split 7:1:2 by id), with image paths relative to manual_dir. Optional per-entry fields:
  sex, age, keywords {key: 1|0|-1}, entities [{start, end, label}], relations [{head, tail, label}].
  """

  def __init__(self, *, file_format=None, num_workers: int = 2,
               annotator: Optional[annotate.Annotator] = None, **kwargs):
    """`num_workers`: processes that render synthetic images (0 renders inline). `annotator`:
    the config's annotator when it is "cn_radgraph" (an annotate.GraphAnnotator over the model
    whose fingerprint the config names); the rule labeler needs none."""
    # array_record is what makes the build random-access for grain; it is the only format we write.
    super().__init__(file_format=file_format or "array_record", **kwargs)
    self._num_workers = num_workers
    self._annotator = annotator

  def download_and_prepare(self, *, download_config=None, **kwargs):
    """TFDS's download_and_prepare, writing each split in `download_config.num_shards` shards
    (DEFAULT_NUM_SHARDS when unset; TFDS alone would write one shard for a dataset this size),
    and never more shards than the split has examples."""
    given = download_config or tfds.download.DownloadConfig()
    sharded = _ShardedDownloadConfig(
        **{f.name: getattr(given, f.name) for f in dataclasses.fields(given) if f.init})
    return super().download_and_prepare(download_config=sharded, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    entity = {"start": np.int32, "end": np.int32,
              "label": tfds.features.ClassLabel(names=report_graph.ENTITY_LABELS),
              "keyword": tfds.features.Text()}
    relation = {"head": np.int32, "tail": np.int32,
                "label": tfds.features.ClassLabel(names=report_graph.RELATION_LABELS)}
    return tfds.core.DatasetInfo(
        builder=self,
        description="CN-CXR chest radiographs with Chinese reports, keyword labels and graphs.",
        features=tfds.features.FeaturesDict({
            "id": tfds.features.Text(),
            **{key: tfds.features.Image(shape=(None, None, 1), dtype=np.uint8,
                                        encoding_format="png")
               for key in image_keys(self.builder_config.num_views)},
            "report": tfds.features.Text(),
            "sex": tfds.features.ClassLabel(names=SEXES),
            "age": tfds.features.Scalar(dtype=np.float32, doc="years; -1 when unknown"),
            "keyword_labels": tfds.features.Tensor(
                shape=(kw.NUM_KEYWORDS,), dtype=np.int8,
                doc="Table 1 keywords in KEYWORD_KEYS order: 1 pos, 0 neg, -1 uncertain, -2 absent"),
            "has_keyword_labels": tfds.features.Scalar(dtype=np.bool_),
            "entities": tfds.features.Sequence(entity),
            "relations": tfds.features.Sequence(relation),
            "has_graph": tfds.features.Scalar(dtype=np.bool_),
            "findings": tfds.features.Sequence(tfds.features.Text(),
                                               doc="synthetic ground-truth finding kinds"),
        }),
        metadata=tfds.core.MetadataDict(),
        homepage="https://github.com/cuhksz-nlp/R2Gen",
    )

  def _split_generators(self, dl_manager):
    cfg = self.builder_config
    self.info.metadata.update({"source": cfg.source, "language": cfg.language,
                               "english_style": cfg.english_style,
                               "skipped": [], "num_skipped": 0})
    if cfg.source == "synthetic":
      splits = synthetic.split_indices(cfg.num_examples, cfg.seed)
      self.info.metadata["annotation"] = {
          "annotator": "none", "annotator_id": "",
          "splits": {name: {**annotate.empty_counts(), "labels_given": len(idx),
                            "graphs_given": len(idx)} for name, idx in splits.items()}}
      return {name: self._generate_examples(idx) for name, idx in splits.items()}
    entries, skipped = release.read_annotation(
        dl_manager.manual_dir, skip_bad_examples=cfg.skip_bad_examples,
        split_seed=cfg.split_seed, num_views=cfg.num_views)
    self._record_skipped(skipped)
    annotator = self._release_annotator()
    # Counted as examples are written (an entry skipped for a bad image is not counted).
    self.info.metadata["annotation"] = {
        "annotator": cfg.annotate, "annotator_id": cfg.annotator_id,
        "splits": {name: annotate.empty_counts() for name in entries}}
    return {name: self._generate_examples(annotate.annotate_entries(split_entries, annotator))
            for name, split_entries in entries.items()}

  def _release_annotator(self) -> Optional[annotate.Annotator]:
    cfg = self.builder_config
    if cfg.annotate == "labeler":
      return annotate.RuleAnnotator()
    if cfg.annotate == "cn_radgraph":
      given = self._annotator
      if given is None or getattr(given, "fingerprint", None) != cfg.annotator_id:
        raise ValueError(f"cncxr/{cfg.name}: annotate='cn_radgraph' needs the builder's "
                         "`annotator` argument, an annotate.GraphAnnotator over the model whose "
                         f"fingerprint is {cfg.annotator_id[:12]}...; got "
                         f"{getattr(given, 'fingerprint', given)!r}")
      return given
    return None

  def _record_skipped(self, skipped: list[dict]) -> None:
    meta = self.info.metadata
    meta["skipped"] = list(meta["skipped"]) + list(skipped)
    meta["num_skipped"] = len(meta["skipped"])
    for s in skipped:
      logging.warning("cncxr: skipped %s entry %s (id %r): %s",
                      s["split"], s["index"], s["id"], s["reason"])

  def _generate_examples(self, items):
    """Synthetic: `items` are study indices. Release: `items` are a split's ReleaseEntry list."""
    cfg = self.builder_config
    if cfg.source == "synthetic":
      workers = min(self._num_workers, os.cpu_count() or 1)
      yield from synthetic.generate(items, cfg.seed, cfg.image_size, num_workers=workers)
    else:
      yield from self._generate_release(items)

  def _generate_release(self, entries):
    cfg = self.builder_config
    for entry in entries:
      try:
        images = [release.encode_png(_stored_image(release.load_grayscale(path, entry=entry), cfg.image_size))
                  for path in entry.image_paths[:cfg.num_views]]
      except release.BadExampleError as e:
        if not cfg.skip_bad_examples:
          raise
        self._record_skipped([{"split": entry.split, "index": e.index, "id": entry.id,
                               "reason": e.reason}])
        continue
      labels = entry.keyword_labels
      entities = [_with_keyword(e, entry.report) for e in (entry.entities or [])]
      counts = self.info.metadata["annotation"]["splits"][entry.split]
      counts[f"labels_{entry.label_source}"] += 1
      counts[f"graphs_{entry.graph_source}"] += 1
      yield entry.id, {
          "id": entry.id,
          **dict(zip(image_keys(cfg.num_views), images)),
          "report": entry.report,
          "sex": entry.sex,
          "age": np.float32(entry.age),
          "keyword_labels": (labels if labels is not None
                             else np.full((kw.NUM_KEYWORDS,), kw.NOT_MENTIONED, np.int8)),
          "has_keyword_labels": labels is not None,
          "entities": entities,
          "relations": [{"head": r["head"], "tail": r["tail"], "label": r["label"]}
                        for r in (entry.relations or [])],
          "has_graph": entry.entities is not None,
          "findings": [],
      }


def _stored_image(image: np.ndarray, size: int) -> np.ndarray:
  return images.resize_gray(image, size) if size else image


def _with_keyword(entity: dict, report: str) -> dict:
  """An annotated entity with the Table 1 keyword its span names ("" for none or several)."""
  return {"start": entity["start"], "end": entity["end"], "label": entity["label"],
          "keyword": report_graph.span_keyword(report[entity["start"]:entity["end"]])}
