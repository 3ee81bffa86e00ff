"""`--mode=bench_decode`: reports/s and tokens/s of the cached beam search and of the naive
re-decode, at batch 1 and 16, beam 3, max_len 60 and 100, every report forced to full length,
with and without the visual encoder.

With `bench.workdir` set (e.g. a workdir written by `python -m cnx2rg_jax.convert.r2gen`), the
model and its weights are that run's: the model section, the image size, normalization and
vocabulary come from DIR/config.json and DIR/tokenizer, the weights from its best (else newest)
checkpoint, as --mode=eval loads them (one-view models only); images are random."""

from __future__ import annotations

import copy
import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cnx2rg_jax.models import factory, search
from cnx2rg_jax.models.cnx2rg import CNX2RG


def _decode_fn(model, *, impl, beam_size, max_len, with_encoder):
  """A jitted variables, inputs -> ids function; inputs are images or ResNet features."""

  def run(variables, inputs):
    if with_encoder:
      memory, _ = model.apply(variables, inputs, method=CNX2RG.encode)
    else:
      memory = model.apply(variables, inputs, method=CNX2RG.encode_features)
    ids, _ = search.search_reports(model, variables, memory, impl=impl, beam_size=beam_size,
                                   max_len=max_len, min_len=max_len)
    return ids

  return jax.jit(run)


def _time(fn, variables, inputs, repeats: int) -> float:
  jax.block_until_ready(fn(variables, inputs))  # compile and warm up
  start = time.perf_counter()
  for _ in range(repeats):
    ids = jax.block_until_ready(fn(variables, inputs))
  seconds = (time.perf_counter() - start) / repeats
  assert ids.shape[-1] > 0
  return seconds


def _workdir_model(config, workdir: str):
  """(model, variables, crop size) of the run in `workdir` (its own model, data and train
  sections; the bench config's mesh)."""
  from cnx2rg_jax.inference import trained  # pylint: disable=import-outside-toplevel
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"bench.workdir={workdir} has no config.json; point it at a trained "
                            "or converted run (python -m cnx2rg_jax.convert.r2gen)")
  saved = json.loads(path.read_text(encoding="utf-8"))
  run_config = copy.deepcopy(config)
  with run_config.unlocked():
    for section in ("model", "data", "train"):  # keys added since the run: this config's
      run_config[section] = ml_collections.ConfigDict({**config[section].to_dict(),
                                                       **saved[section]})
  run = trained.load(run_config, workdir, log=lambda line: print(line, file=sys.stderr))
  return run.model, run.variables, run_config.data.crop_size


def bench_decode(config) -> dict:
  b = config.bench
  workdir = b.workdir
  if workdir:
    model, variables, crop = _workdir_model(config, workdir)
    mcfg = model.config
  else:
    mcfg = factory.model_config(config.model, vocab_size=b.vocab_size, max_len=max(b.max_lens))
    model = factory.model_of(mcfg)
    variables = factory.random_variables(model, config.data.crop_size, config.seed)
    crop = config.data.crop_size
  rng = np.random.default_rng(config.seed)
  patches = (crop // 32) ** 2
  results = []
  for with_encoder in b.with_encoder:
    for max_len in b.max_lens:
      for batch in b.batches:
        inputs = (rng.normal(size=mcfg.image_shape(batch, crop)) if with_encoder
                  else rng.normal(size=(batch, mcfg.num_views * patches, mcfg.d_vf)))
        inputs = jnp.asarray(inputs, jnp.float32)
        for impl in b.impls:
          fn = _decode_fn(model, impl=impl, beam_size=b.beam_size, max_len=max_len,
                          with_encoder=with_encoder)
          repeats = b.naive_repeats if impl == "naive" else b.repeats
          seconds = _time(fn, variables, inputs, repeats)
          results.append({"impl": impl, "batch": batch, "beam": b.beam_size, "max_len": max_len,
                          "with_encoder": with_encoder,
                          "reports_per_sec": round(batch / seconds, 3),
                          "tokens_per_sec": round(batch * max_len / seconds, 1)})
          print(results[-1], flush=True, file=sys.stderr)  # progress; stdout is the JSON line
  return {"device": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
          "model": {"architecture": mcfg.architecture,
                    "resnet_depth": mcfg.resnet_depth, "d_model": mcfg.d_model,
                    "vocab_size": mcfg.vocab_size, "image_size": crop,
                    "num_views": mcfg.num_views, "r2gen_beam_search": mcfg.r2gen_beam_search},
          "workdir": workdir,
          "results": results}
