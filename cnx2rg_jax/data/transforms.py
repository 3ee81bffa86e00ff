"""Per-example image and report transforms of the input pipeline (NumPy and PIL, no TensorFlow).

Images are single-channel: CN-CXR radiographs are grayscale, so nothing is gained by tripling
the channel; the model's stem decides how to consume one channel.

No horizontal flip: R2Gen flips training images, but a chest radiograph's left and right are
findings (右侧胸腔积液 vs 左侧), so a flip would make the report false.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np
from PIL import Image

from cnx2rg_jax.data import graph_augment
from cnx2rg_jax.text import cleaning, english, tokenizer as tokenizer_lib
from tfds_cncxr.cncxr import image_keys
from tfds_cncxr.images import resize_gray  # noqa: F401  (predict resizes through here)

# ImageNet statistics on the luminance channel, for torchvision-pretrained encoders.
_IMAGENET_GRAY_MEAN = 0.449 * 255.0
_IMAGENET_GRAY_STD = 0.226 * 255.0
NORMALIZATIONS = ("zscore", "imagenet")
Z_SCORE_EPS = 1e-6


def decode_resize(png: bytes, size: int) -> np.ndarray:
  """PNG bytes -> uint8 (size, size) image, bilinear-resized when the stored size differs (a
  release build stores images at the training resize already: images.resize_gray)."""
  with Image.open(io.BytesIO(png)) as im:
    return resize_gray(np.asarray(im.convert("L"), dtype=np.uint8), size)


def random_crop(image: np.ndarray, crop: int, rng: np.random.Generator) -> np.ndarray:
  h, w = image.shape[:2]
  top = int(rng.integers(0, h - crop + 1))
  left = int(rng.integers(0, w - crop + 1))
  return image[top:top + crop, left:left + crop]


def center_crop(image: np.ndarray, crop: int) -> np.ndarray:
  h, w = image.shape[:2]
  top, left = (h - crop) // 2, (w - crop) // 2
  return image[top:top + crop, left:left + crop]


def normalize(image: np.ndarray, method: str) -> np.ndarray:
  """uint8 (H, W) -> float32 (H, W, 1).

  "zscore" (the paper, Sect. 5.1): each image minus its own mean, over its own std, so exposure
  differences between studies vanish. "imagenet": fixed ImageNet gray statistics, for encoders
  pretrained with them.
  """
  x = image.astype(np.float32)
  if method == "zscore":
    x = (x - x.mean()) / max(float(x.std()), Z_SCORE_EPS)
  elif method == "imagenet":
    x = (x - _IMAGENET_GRAY_MEAN) / _IMAGENET_GRAY_STD
  else:
    raise ValueError(f"unknown normalization {method!r}; choose one of {NORMALIZATIONS}")
  return x[..., None]


# Report cleaning by dataset language: Chinese, or one of R2Gen's English cleanings.
REPORT_CLEANERS = {"zh": cleaning.clean_report, **english.ENGLISH_CLEANERS}


def shuffle_sentences(report: str, rng: np.random.Generator, cleaner: str = "zh") -> str:
  """The cleaned report's sentences in a random order (the paper's sentence shuffling).

  Each sentence of a radiology report describes one structure, so their order carries no meaning;
  shuffling teaches the decoder that, and multiplies the distinct targets it sees.
  """
  if cleaner == "zh":
    sentences = cleaning.split_sentences(report)
    join = cleaning.join_sentences
  else:  # R2Gen's English cleaning writes "s1 . s2 . s3 ."
    body = report.removesuffix(" .")
    sentences = body.split(" . ") if body else []
    join = lambda parts: " . ".join(parts) + " ."  # noqa: E731
  if len(sentences) < 2:
    return report
  return join([sentences[i] for i in rng.permutation(len(sentences))])


@dataclasses.dataclass(frozen=True)
class ExampleTransform:
  """A TFDS record -> model inputs. Picklable, so grain worker processes can run it.

  Called with an rng for training (random crop, optional graph augmentation, then optional
  sentence shuffle) and without one for evaluation (center crop, the report as written). The
  graph augmentation (`graph_augment.augment`) rewrites a cleaned Chinese report that has a
  graph, with `graph_augment_probability`, from the phrasings of `phrase_bank` (a
  graph_augment.PhraseBank of the train split); without a bank it is off. The "report" output
  is always the cleaned report as written.

  `num_views` > 1 (a build with that many images a study, tfds_cncxr.image_keys) gives "image"
  [V, crop, crop, 1], each view resized, cropped (independently at random in training, as R2Gen
  transforms each of its IU X-Ray views) and normalized on its own; 1 gives [crop, crop, 1].
  """

  tokenizer: Any
  report_cleaner: str  # a REPORT_CLEANERS key
  image_size: int
  crop_size: int
  normalization: str
  max_tokens: int
  sentence_shuffle: bool
  graph_augment_probability: float = 0.0
  phrase_bank: graph_augment.PhraseBank | None = None
  num_views: int = 1

  def prepare_view(self, png: bytes, rng: np.random.Generator | None) -> np.ndarray:
    """One stored view (PNG bytes) -> float32 [crop, crop, 1]: resize, crop (random with `rng`,
    else center), normalize."""
    image = decode_resize(png, self.image_size)
    if rng is None:
      image = center_crop(image, self.crop_size)
    else:
      image = random_crop(image, self.crop_size, rng)
    return normalize(image, self.normalization)

  def prepare_image(self, record: dict, rng: np.random.Generator | None) -> np.ndarray:
    """The record's model input: its views prepared (`prepare_view`), as `study_input`."""
    return study_input([self.prepare_view(record[key], rng) for key in image_keys(self.num_views)])

  def __call__(self, record: dict, rng: np.random.Generator | None = None) -> dict:
    image = self.prepare_image(record, rng)
    report = REPORT_CLEANERS[self.report_cleaner](as_text(record["report"]))
    target = report
    if rng is not None and self.phrase_bank is not None and self.graph_augment_probability > 0:
      graph = graph_augment.record_graph(record, report)
      if graph is not None:
        target = graph_augment.augment(report, *graph, self.phrase_bank, rng,
                                       probability=self.graph_augment_probability)
    if rng is not None and self.sentence_shuffle:
      target = shuffle_sentences(target, rng, self.report_cleaner)
    tokens, mask = tokenizer_lib.encode_padded(self.tokenizer, target, self.max_tokens)
    return {
        "image": image,
        "report_tokens": tokens,
        "report_mask": mask,
        "keyword_labels": np.asarray(record["keyword_labels"], np.int8),
        "has_keyword_labels": np.bool_(record["has_keyword_labels"]),
        "id": as_text(record["id"]),
        "report": report,
    }


def study_input(views: list[np.ndarray]) -> np.ndarray:
  """A study's prepared views [crop, crop, 1] -> the model's input for it: the view itself when
  there is one ([crop, crop, 1]), else the views stacked ([V, crop, crop, 1])."""
  return views[0] if len(views) == 1 else np.stack(views)


def as_text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)
