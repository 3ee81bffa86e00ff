"""Running cuhksz-nlp/R2Gen's own PyTorch code from a local checkout (env R2GEN_DIR), for the
parity test (tests/test_r2gen_parity.py) and the decode benchmark (scripts/r2gen_decode_bench.py).

Nothing of R2Gen is copied here: its modules are imported from R2GEN_DIR. The shims it needs
on a CPU-only machine without torchvision:
- `torchvision.models.resnet{18,34,50,101}`: R2Gen's VisualExtractor builds its ResNet with
  `getattr(torchvision.models, name)(pretrained=...)`. It is given tests/helpers/torch_resnet.py's ResNet (the
  same modules, children order and state-dict names as torchvision's, randomly initialised), so
  nothing is ever downloaded, whether or not torchvision is installed.
- `Tensor.cuda`: R2Gen's beam search calls `it.cuda()`; inside `cpu_only()` it is the identity.
- R2Gen's argparse namespace: `r2gen_args(...)` builds one with its main.py defaults.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import types
from typing import Any, Callable, Optional

import numpy as np

from tests.helpers import torch_resnet

ENV = "R2GEN_DIR"


def r2gen_dir() -> Optional[str]:
  """R2GEN_DIR when it is a checkout of R2Gen (holds models/r2gen.py), else None."""
  d = os.environ.get(ENV, "")
  if d and os.path.isfile(os.path.join(d, "models", "r2gen.py")) \
      and os.path.isfile(os.path.join(d, "modules", "encoder_decoder.py")):
    return d
  return None


def _fake_models_module() -> types.ModuleType:
  import torch.nn as tnn  # pylint: disable=import-outside-toplevel
  cls = torch_resnet.torchvision_resnet_class()
  mod = types.ModuleType("r2gen_harness_torchvision_models")

  def make(depth):
    def build(pretrained: bool = False, **_):
      if pretrained:
        raise RuntimeError("pretrained torchvision weights would be downloaded; the harness "
                           "builds R2Gen with visual_extractor_pretrained=False")
      net = cls(depth)
      for m in net.modules():  # torchvision's own conv init
        if isinstance(m, tnn.Conv2d):
          tnn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      return net
    return build

  for depth in (18, 34, 50, 101):
    setattr(mod, f"resnet{depth}", make(depth))
  return mod


def import_r2gen(directory: str) -> types.SimpleNamespace:
  """R2Gen's R2GenModel and Tokenizer imported from `directory` (its modules get the fake
  torchvision ResNets)."""
  if directory not in sys.path:
    sys.path.insert(0, directory)
  shim_visual_extractor()
  r2gen = importlib.import_module("models.r2gen")
  tokenizers = importlib.import_module("modules.tokenizers")
  return types.SimpleNamespace(R2GenModel=r2gen.R2GenModel, Tokenizer=tokenizers.Tokenizer)


def shim_visual_extractor() -> None:
  """Imports the checkout's modules.visual_extractor (on sys.path) with the fake torchvision
  ResNets, also as `torchvision.models` when torchvision is not installed."""
  fake = _fake_models_module()
  try:
    importlib.import_module("torchvision.models")
  except ImportError:
    tv = types.ModuleType("torchvision")
    tv.models = fake
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.models", fake)
  visual = importlib.import_module("modules.visual_extractor")
  visual.models = fake  # never torchvision's own (pretrained weights would download)


@contextlib.contextmanager
def cpu_only():
  """Tensor.cuda() is the identity inside (R2Gen's beam search calls it)."""
  import torch  # pylint: disable=import-outside-toplevel
  if torch.cuda.is_available():
    yield
    return
  original = torch.Tensor.cuda
  torch.Tensor.cuda = lambda self, *a, **k: self
  try:
    yield
  finally:
    torch.Tensor.cuda = original


def peer_args(peer: str, own: dict, overrides: dict) -> types.SimpleNamespace:
  """The main.py arguments R2Gen and R2GenCMN share (their defaults), `own` (the peer's other
  defaults) and `overrides`; an override of no such argument is an error naming `peer`."""
  args = dict(
      image_dir="", ann_path="", dataset_name="iu_xray", max_seq_length=60, threshold=3,
      num_workers=0, batch_size=16, visual_extractor="resnet101",
      visual_extractor_pretrained=False, d_model=512, d_ff=512, d_vf=2048, num_heads=8,
      num_layers=3, dropout=0.1, logit_layers=1, bos_idx=0, eos_idx=0, pad_idx=0, use_bn=0,
      drop_prob_lm=0.5, **own, sample_method="beam_search", beam_size=3, temperature=1.0,
      sample_n=1, group_size=1, output_logsoftmax=1, decoding_constraint=0, block_trigrams=1,
      seed=9233)
  unknown = set(overrides) - set(args)
  if unknown:
    raise ValueError(f"not {peer} arguments: {sorted(unknown)}")
  args.update(overrides)
  return types.SimpleNamespace(**args)


def r2gen_args(**overrides: Any) -> types.SimpleNamespace:
  """R2Gen's main.py arguments (its defaults), with `overrides`."""
  return peer_args("R2Gen", dict(rm_num_slots=3, rm_num_heads=8, rm_d_model=512), overrides)


def build_peer_model(model_class, tokenizer_class, args, seed: int, norm_fields: tuple,
                     randomise: Optional[Callable[[Any], None]] = None):
  """(model_class(args, tokenizer) in eval mode with randomised norms (`norm_fields`: the names
  of its LayerNorms' scale and bias) and batch norms, the tokenizer); `randomise(model)` runs
  between the two."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  tokenizer = tokenizer_class(args)
  model = model_class(args, tokenizer)
  scale, _ = norm_fields
  with torch.no_grad():  # non-trivial norms, so that a swapped scale/bias or mean/var shows
    for name, p in model.named_parameters():
      if name.endswith(norm_fields) and p.dim() == 1:
        (p.uniform_(0.5, 1.5) if name.endswith(scale) else p.normal_(0.0, 0.1))
    if randomise is not None:
      randomise(model)
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.1)
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
  return model.eval(), tokenizer


def build_model(r2gen, args, seed: int = 0):
  """(R2GenModel in eval mode with randomised norms, its Tokenizer) for `args`."""
  return build_peer_model(r2gen.R2GenModel, r2gen.Tokenizer, args, seed, ("gamma", "beta"))


def save_trainer_checkpoint(model, path: str, epoch: int = 7, monitor_best: float = 0.123):
  """A checkpoint as R2Gen's BaseTrainer._save_checkpoint writes it."""
  import torch  # pylint: disable=import-outside-toplevel
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=5e-5, amsgrad=True)
  torch.save({"epoch": epoch, "state_dict": model.state_dict(),
              "optimizer": optimizer.state_dict(), "monitor_best": monitor_best}, path)


def write_annotation(path: str, train_reports, val=(), test=()) -> None:
  entries = lambda split, reports: [  # noqa: E731
      {"id": f"{split}{i}", "report": r, "image_path": [f"{split}{i}/0.png", f"{split}{i}/1.png"],
       "split": split} for i, r in enumerate(reports)]
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"train": entries("train", train_reports), "val": entries("val", val),
               "test": entries("test", test)}, f)


def converted_model_config(config, tokenizer):
  """The model config of a converter's `config` for `tokenizer`, with 20 positions (tests)."""
  from cnx2rg_jax.models import factory  # pylint: disable=import-outside-toplevel
  return factory.model_config(config.model, vocab_size=tokenizer.vocab_size, max_len=20)


def apply_overrides(config, overrides) -> None:
  """Applies the converter's `--config.SECTION.KEY=VALUE` overrides to `config` in place."""
  for item in overrides:
    key, _, value = item.removeprefix("--config.").partition("=")
    section, name = key.split(".")
    config[section][name] = type(config[section][name])(value)


def teacher_forced_diffs(peer_model, peer_images, our_logits: Callable, rows, batch: int,
                         max_len: int) -> tuple[float, float, np.ndarray]:
  """Feeds random tokens (row 0 first: bos) to the peer's model in train mode and, as our ids,
  to `our_logits(ids)`; returns (max |logit diff|, max |log-prob diff|, our logits) over the ids
  both have (pad and bos have no peer row)."""
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  v = int(rows.max()) + 1
  seq = np.concatenate([np.zeros((batch, 1), np.int64),
                        np.random.default_rng(5).integers(1, v, (batch, max_len))], axis=1)
  captured = {}
  hook = peer_model.encoder_decoder.logit.register_forward_hook(
      lambda m, i, o: captured.__setitem__("logits", o.detach().numpy()))
  with torch.no_grad():
    peer_lp = peer_model(peer_images, torch.from_numpy(seq), mode="train").numpy()
  hook.remove()
  inverse = {int(r): i for i, r in enumerate(rows) if i >= 3}  # peer row -> our id
  inverse[0] = 1  # row 0 fed first is bos
  logits = np.asarray(our_logits(np.vectorize(inverse.get)(seq[:, :-1]).astype(np.int32)))
  keep = [i for i in range(len(rows)) if i not in (0, 1)]
  ours_lp = np.asarray(jax.nn.log_softmax(logits, axis=-1))[..., keep]
  cols = rows[keep]
  assert sorted(cols.tolist()) == list(range(v))
  diff_logits = np.abs(logits[..., keep] - captured["logits"][..., cols]).max()
  diff_lp = np.abs(ours_lp - peer_lp[..., cols]).max()
  return float(diff_logits), float(diff_lp), logits
