"""A trained CN-RadGraph as a build-time annotator of release reports (data.annotate =
"cn_radgraph"): tfds_cncxr.annotate.GraphAnnotator over this extractor, named by the model's
fingerprint so that another model makes another build."""

from __future__ import annotations

from cnx2rg_jax.radgraph import extractor
from tfds_cncxr import annotate


def make(cn_radgraph_dir: str) -> annotate.GraphAnnotator:
  """The annotator of the extractor trained in `cn_radgraph_dir` (CheckpointError if none)."""
  model = extractor.load(cn_radgraph_dir)
  return annotate.GraphAnnotator(model.extract, annotate.model_fingerprint(cn_radgraph_dir))
