"""Running cuhksz-nlp/R2GenCMN's own PyTorch code from a local checkout (env R2GENCMN_DIR), for
tests/test_r2gen_cmn_parity.py. Nothing of R2GenCMN is copied: its modules are imported from the
checkout, with the shims of r2gen_harness (torchvision's ResNets built locally, never downloaded;
Tensor.cuda the identity on a CPU). R2Gen and R2GenCMN both name their packages `models` and
`modules`, so the import runs with those names cleared from sys.modules and restored after it.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from typing import Any, Optional

from tests.helpers import r2gen_harness

ENV = "R2GENCMN_DIR"
cpu_only = r2gen_harness.cpu_only
save_trainer_checkpoint = r2gen_harness.save_trainer_checkpoint
write_annotation = r2gen_harness.write_annotation
teacher_forced_diffs = r2gen_harness.teacher_forced_diffs


def r2gen_cmn_dir() -> Optional[str]:
  """R2GENCMN_DIR when it is a checkout of R2GenCMN (holds modules/base_cmn.py), else None."""
  d = os.environ.get(ENV, "")
  if d and os.path.isfile(os.path.join(d, "modules", "base_cmn.py")) \
      and os.path.isfile(os.path.join(d, "models", "models.py")):
    return d
  return None


def _own_packages() -> dict:
  return {k: v for k, v in sys.modules.items()
          if k in ("models", "modules") or k.startswith(("models.", "modules."))}


def import_r2gen_cmn(directory: str) -> types.SimpleNamespace:
  """R2GenCMN's BaseCMNModel and Tokenizer imported from `directory`."""
  saved = _own_packages()
  for k in saved:
    del sys.modules[k]
  sys.path.insert(0, directory)
  try:
    r2gen_harness.shim_visual_extractor()
    models = importlib.import_module("models.models")
    tokenizers = importlib.import_module("modules.tokenizers")
    return types.SimpleNamespace(BaseCMNModel=models.BaseCMNModel,
                                 Tokenizer=tokenizers.Tokenizer)
  finally:
    sys.path.remove(directory)
    for k in _own_packages():
      del sys.modules[k]
    sys.modules.update(saved)


def cmn_args(**overrides: Any) -> types.SimpleNamespace:
  """R2GenCMN's main.py arguments (its defaults), with `overrides`."""
  return r2gen_harness.peer_args("R2GenCMN", dict(topk=32, cmm_size=2048, cmm_dim=512),
                                 overrides)


def build_model(cmn, args, seed: int = 0):
  """(BaseCMNModel in eval mode with randomised norms and a spread-out memory, its Tokenizer)."""
  # a spread-out memory, so that a wrong top-k shows
  return r2gen_harness.build_peer_model(
      cmn.BaseCMNModel, cmn.Tokenizer, args, seed, ("a_2", "b_2"),
      lambda model: model.encoder_decoder.memory_matrix.normal_(0.0, 1.0))
