"""A trained run read back from its workdir: what --mode=eval, --mode=predict and the final test
evaluation of --mode=train start from.

    load(config, workdir) -> TrainedRun(model, mesh, tokenizer, variables, step, generator)

The tokenizer comes from DIR/tokenizer, the weights from DIR/checkpoints: the best by val BLEU-4,
or the newest step when no checkpoint carries validation metrics (train.eval_every = 0).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Callable

from jax.sharding import Mesh

from cnx2rg_jax import sharding
from cnx2rg_jax.inference import generate
from cnx2rg_jax.models import factory
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.text import tokenizer as tokenizer_lib
from cnx2rg_jax.training import checkpoints as ckpt_lib
from cnx2rg_jax.training import optimizer, state as state_lib


@dataclasses.dataclass
class TrainedRun:
  model: CNX2RG
  mesh: Mesh
  tokenizer: Any
  variables: dict  # {"params", "batch_stats"}, placed by their shardings
  step: int
  chosen_by: str  # "best val bleu_4" | "latest step"
  generator: generate.ReportGenerator


def load(config, workdir: str, log: Callable[[str], None] = print) -> TrainedRun:
  """The run in `workdir` with its best (else newest) checkpoint; raises
  `checkpoints.CheckpointError` or FileNotFoundError with a one-paragraph message."""
  tok_dir = pathlib.Path(workdir) / "tokenizer"
  if not tok_dir.is_dir():
    raise FileNotFoundError(f"{workdir} holds no trained run ({tok_dir} is missing); train "
                            f"first: python launch.py --config=... --workdir={workdir}")
  tok = tokenizer_lib.load_tokenizer(tok_dir)
  model = factory.build_model(config, tok.vocab_size)
  mesh = sharding.mesh_from_config(config.mesh)
  tx, _ = optimizer.make_optimizer(config.train, steps_per_epoch=1)  # shapes only
  abstract, _, _ = state_lib.abstract_state(
      model, tx, mesh, image_size=config.data.crop_size, num_tokens=config.data.max_tokens - 1,
      strategy=config.mesh.strategy)
  ckpts = ckpt_lib.Checkpoints(str(pathlib.Path(workdir) / "checkpoints"),
                               keep_last=config.train.keep_last, keep_best=config.train.keep_best)
  try:
    best = ckpts.best_step()
    if best is not None:
      step, state, chosen = best, ckpts.restore(best, abstract), "best val bleu_4"
    else:
      step = ckpts.latest_step()
      state, chosen = ckpts.restore(step, abstract), "latest step"
  finally:
    ckpts.close()
  log(f"loaded checkpoint step {step} ({chosen}) from {workdir}/checkpoints")
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  generator = generate.ReportGenerator.from_config(model, mesh, config, tok)
  return TrainedRun(model, mesh, tok, variables, step, chosen, generator)
