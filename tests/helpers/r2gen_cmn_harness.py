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
    fake = r2gen_harness._fake_models_module()  # pylint: disable=protected-access
    try:
      importlib.import_module("torchvision.models")
    except ImportError:
      tv = types.ModuleType("torchvision")
      tv.models = fake
      sys.modules.setdefault("torchvision", tv)
      sys.modules.setdefault("torchvision.models", fake)
    visual = importlib.import_module("modules.visual_extractor")
    visual.models = fake  # never torchvision's own (pretrained weights would download)
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
  args = dict(
      image_dir="", ann_path="", dataset_name="iu_xray", max_seq_length=60, threshold=3,
      num_workers=0, batch_size=16, visual_extractor="resnet101",
      visual_extractor_pretrained=False, d_model=512, d_ff=512, d_vf=2048, num_heads=8,
      num_layers=3, dropout=0.1, logit_layers=1, bos_idx=0, eos_idx=0, pad_idx=0, use_bn=0,
      drop_prob_lm=0.5, topk=32, cmm_size=2048, cmm_dim=512, sample_method="beam_search",
      beam_size=3, temperature=1.0, sample_n=1, group_size=1, output_logsoftmax=1,
      decoding_constraint=0, block_trigrams=1, seed=9233)
  unknown = set(overrides) - set(args)
  if unknown:
    raise ValueError(f"not R2GenCMN arguments: {sorted(unknown)}")
  args.update(overrides)
  return types.SimpleNamespace(**args)


def build_model(cmn, args, seed: int = 0):
  """(BaseCMNModel in eval mode with randomised norms and a spread-out memory, its Tokenizer)."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  tokenizer = cmn.Tokenizer(args)
  model = cmn.BaseCMNModel(args, tokenizer)
  with torch.no_grad():  # non-trivial norms and memory rows, so a swap or a wrong top-k shows
    for name, p in model.named_parameters():
      if name.endswith(("a_2", "b_2")) and p.dim() == 1:
        (p.uniform_(0.5, 1.5) if name.endswith("a_2") else p.normal_(0.0, 0.1))
    model.encoder_decoder.memory_matrix.normal_(0.0, 1.0)
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.1)
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
  return model.eval(), tokenizer
