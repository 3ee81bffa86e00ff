"""A trained CN-RadGraph: saved to and loaded from a workdir; extracts graphs; labels reports.

A trained model lives in `DIR/model/`:
  cn_radgraph.json   {"format": 1, "model": RadGraphConfig fields, "chars": [...], "metrics": {...}}
  params/            the Flax parameters (an Orbax checkpoint)

`Extractor.extract(texts)` gives one graph a text: entities {"start", "end", "label", "keyword"}
(keyword read off the span with the lexicon, `report_graph.span_keyword`) and relations
{"head", "tail", "label"}, the same form as the annotations. An Extractor is also a labeler for
the clinical metric (`evaluation.clinical`): called on a report it returns the positive
(anatomy, lesion) pairs of `report_graph.read_graph`, i.e. DPO observations linked by
located_at to Anatomy nodes (with the nodes that modify either).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from cnx2rg_jax.errors import CheckpointError  # noqa: F401  (also extractor.CheckpointError)
from cnx2rg_jax.radgraph import features
from cnx2rg_jax.radgraph.model import CNRadGraph, RadGraphConfig
from cnx2rg_jax.text import report_graph
from cnx2rg_jax.text.cleaning import clean_report

MODEL_DIR = "model"
META_FILE = "cn_radgraph.json"
FORMAT = 1


class Extractor:
  """Batched, jitted inference of a CN-RadGraph model."""

  def __init__(self, config: RadGraphConfig, params, vocab: features.CharVocab,
               batch_size: int = 64):
    self.config, self.params, self.vocab, self.batch_size = config, params, vocab, batch_size
    model = CNRadGraph(config)

    def tag(params, chars):
      def run(m, chars):
        states = m.encode(chars)
        return states, jnp.argmax(m.tag_logits(states), -1)
      return model.apply({"params": params}, chars, method=run)

    def relate(params, states, starts, ends, labels, mask):
      logits = model.apply({"params": params}, states, starts, ends, labels, mask,
                           method=CNRadGraph.relation_logits)
      return jnp.argmax(logits, -1)

    self._tag, self._relate = jax.jit(tag), jax.jit(relate)
    self._warned = False

  def _run_windows(self, texts: Sequence[str]) -> list[tuple[list[dict], list[dict]]]:
    """Graphs of window texts (each within max_chars): batched by length bucket."""
    c = self.config
    out: list = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for b0 in range(0, len(order), self.batch_size):
      rows = order[b0:b0 + self.batch_size]
      longest = max(len(texts[i]) for i in rows)
      batch = features.empty_batch(self.batch_size, c.max_chars, c.max_entities)
      for row, i in enumerate(rows):
        batch.chars[row, :len(texts[i])] = self.vocab.encode(texts[i])
      batch = batch.cut(features.bucket_length(longest, c.max_chars, c.bucket_step))
      states, tags = self._tag(self.params, batch.chars)
      tags = np.asarray(tags)
      ents_of = []
      for row, i in enumerate(rows):
        ents = features.spans_of(tags[row, :len(texts[i])])
        if len(ents) > c.max_entities and not self._warned:
          logging.warning("CN-RadGraph found %d entities in one window, more than "
                          "model.max_entities=%d; the extra ones get no relations",
                          len(ents), c.max_entities)
          self._warned = True
        features.set_entities(batch, row, ents[:c.max_entities])
        ents_of.append(ents)
      classes = np.asarray(self._relate(self.params, states, batch.starts, batch.ends,
                                        batch.labels, batch.entity_mask))
      for row, (i, ents) in enumerate(zip(rows, ents_of)):
        n = min(len(ents), c.max_entities)
        heads, tails = np.nonzero(classes[row, :n, :n])
        rels = [{"head": int(h), "tail": int(t),
                 "label": features.relation_label(int(classes[row, h, t]))}
                for h, t in zip(heads, tails) if h != t]
        out[i] = (ents, rels)
    return out

  def extract(self, texts: Sequence[str]) -> list[tuple[list[dict], list[dict]]]:
    """(entities, relations) of each text, spans indexing the text as given."""
    pieces, owner = [], []
    for i, text in enumerate(texts):
      for a, b in features.windows(text, self.config.max_chars):
        pieces.append(text[a:b])
        owner.append((i, a))
    graphs: list[tuple[list[dict], list[dict]]] = [([], []) for _ in texts]
    for (i, offset), (ents, rels) in zip(owner, self._run_windows(pieces)):
      g_ents, g_rels = graphs[i]
      base = len(g_ents)
      for e in ents:
        start, end = e["start"] + offset, e["end"] + offset
        g_ents.append({"start": start, "end": end, "label": e["label"],
                       "keyword": report_graph.span_keyword(texts[i][start:end])})
      g_rels.extend({**r, "head": r["head"] + base, "tail": r["tail"] + base} for r in rels)
    return graphs

  def label_many(self, reports: Sequence[str]) -> list[list[tuple[str, str]]]:
    """The positive (anatomy, lesion) pairs of each report (cleaned first, as the labeler)."""
    cleaned = [clean_report(r) for r in reports]
    return [report_graph.read_graph(e, r)[1] for e, r in self.extract(cleaned)]

  def __call__(self, report: str) -> list[tuple[str, str]]:
    return self.label_many([report])[0]


def _params_dir(workdir) -> pathlib.Path:
  return (pathlib.Path(workdir) / MODEL_DIR / "params").absolute()


def save(workdir, config: RadGraphConfig, params, vocab: features.CharVocab,
         metrics: dict) -> pathlib.Path:
  """Writes the model folder; returns its path."""
  folder = pathlib.Path(workdir) / MODEL_DIR
  folder.mkdir(parents=True, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(_params_dir(workdir), jax.device_get(params), force=True)
  checkpointer.wait_until_finished()
  meta = {"format": FORMAT, "model": dataclasses.asdict(config), "chars": vocab.to_json(),
          "metrics": metrics}
  (folder / META_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1))
  return folder


def has_model(workdir) -> bool:
  return (pathlib.Path(workdir) / MODEL_DIR / META_FILE).is_file()


def load(workdir, batch_size: int = 64) -> Extractor:
  """The Extractor saved in `workdir`; CheckpointError says what is wrong and what to do."""
  folder = pathlib.Path(workdir) / MODEL_DIR
  meta_path = folder / META_FILE
  if not meta_path.is_file():
    raise CheckpointError(f"no trained CN-RadGraph in {workdir}: {meta_path} is missing. Train "
                          f"one with `python launch.py --config=configs/cn_radgraph.py "
                          f"--workdir={workdir}`")
  try:
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
      raise ValueError(f"format {meta.get('format')!r}, this code reads format {FORMAT}")
    config = RadGraphConfig(**meta["model"])
    vocab = features.CharVocab.from_json(meta["chars"])
    if vocab.size != config.vocab_size:
      raise ValueError(f"{len(meta['chars'])} characters do not fit vocab_size "
                       f"{config.vocab_size}")
  except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{meta_path} is not a usable CN-RadGraph description ({e}); "
                          "retrain into a fresh workdir") from None
  model = CNRadGraph(config)
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), *_dummy_inputs(config))["params"])  # no FLOPs
  params_dir = _params_dir(workdir)
  if not params_dir.is_dir():
    raise CheckpointError(f"{params_dir} is missing: the CN-RadGraph in {workdir} is incomplete "
                          "(interrupted while saving?); retrain it")
  try:
    # Orbax fits arrays to a target's shapes without complaint, so restore as saved and compare.
    params = ocp.StandardCheckpointer().restore(params_dir)
  except Exception as e:  # orbax raises several types for missing or corrupt files
    raise CheckpointError(f"cannot restore the CN-RadGraph parameters in {params_dir}: "
                          f"{type(e).__name__}: {str(e)[:300]}; retrain into a fresh "
                          "workdir") from None
  want = {jax.tree_util.keystr(k): v.shape
          for k, v in jax.tree_util.tree_leaves_with_path(abstract)}
  got = {jax.tree_util.keystr(k): np.shape(v)
         for k, v in jax.tree_util.tree_leaves_with_path(params)}
  if want != got:
    diff = sorted(k for k in want.keys() | got.keys() if want.get(k) != got.get(k))
    raise CheckpointError(
        f"cannot restore the CN-RadGraph parameters in {params_dir}: they do not fit "
        f"{meta_path}'s model description ({len(diff)} arrays differ, first {diff[0]}: saved "
        f"{got.get(diff[0])}, described {want.get(diff[0])}); retrain into a fresh workdir")
  params = jax.tree.map(jnp.asarray, params)
  return Extractor(config, params, vocab, batch_size)


def _dummy_inputs(config: RadGraphConfig):
  b = features.empty_batch(1, config.max_chars, config.max_entities)
  return b.chars, b.starts, b.ends, b.labels, b.entity_mask
