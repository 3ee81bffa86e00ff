"""cnx2rg-jax runs R2GenCMN's own checkpoints: parity with cuhksz-nlp/R2GenCMN's PyTorch code.

Runs only when env R2GENCMN_DIR points at a checkout of cuhksz-nlp/R2GenCMN and torch is
installed (skipped otherwise). For MIMIC-CXR (one view) and IU X-Ray (two views) it builds
R2GenCMN's own BaseCMNModel with random weights at small dims (ResNet-18, d 32, 2+2 layers, a
64-row memory with top 8), saves it as its trainer does, converts it with
`python -m cnx2rg_jax.convert.r2gen_cmn`'s code, and checks on the same images:
- teacher-forced logits and log-probabilities equal R2GenCMN's within 1e-5 (on its rows);
- beam search at beam 3 (R2Gen's bookkeeping, which R2GenCMN shares) returns R2GenCMN's reports
  for every example whose two best finished beams are not a near-tie (through --mode=eval's
  loader and generator). The random models here end reports at once or run to max_len; an eos
  in mid-report is not exercised.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.helpers import r2gen_cmn_harness as harness
from tests.test_r2gen_parity import _our_images, _r2gen_images, _reports

CMN = harness.r2gen_cmn_dir()
pytestmark = [
    pytest.mark.skipif(CMN is None, reason="set R2GENCMN_DIR to a checkout of cuhksz-nlp/R2GenCMN "
                       "(with modules/base_cmn.py) to run the R2GenCMN parity tests"),
    pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                       reason="torch is not installed: R2GenCMN parity skipped"),
]

TOL = 1e-5
IMAGE = 224  # R2GenCMN's AvgPool2d(7) needs a 7 x 7 layer4 map
MAX_LEN = 20
BATCH = 6
# eos's logit row scaled and biased in the random models: MIMIC-CXR's reports run to max_len,
# IU X-Ray's end at once (eos first), so both ends of the search are compared
EOS_SCALE = {"mimic_cxr": (4.0, 0.8), "iu_xray": (4.0, 0.3)}


@pytest.fixture(scope="module", params=["mimic_cxr", "iu_xray"])
def setup(request, tmp_path_factory):
  import torch  # pylint: disable=import-outside-toplevel
  dataset = request.param
  views = 2 if dataset == "iu_xray" else 1
  tmp = tmp_path_factory.mktemp("cmn_" + dataset)
  rng = np.random.default_rng(7 + views)
  ann = str(tmp / "annotation.json")
  harness.write_annotation(ann, _reports(rng, 200), _reports(rng, 4), _reports(rng, 4))
  cmn = harness.import_r2gen_cmn(CMN)
  args = harness.cmn_args(
      ann_path=ann, dataset_name=dataset, threshold=3, max_seq_length=MAX_LEN,
      visual_extractor="resnet18", d_vf=512, d_model=32, d_ff=48, num_heads=4, num_layers=2,
      topk=8, cmm_size=64, cmm_dim=32, beam_size=3)
  model, tokenizer = harness.build_model(cmn, args, seed=views)
  with torch.no_grad():
    model.encoder_decoder.logit.weight[0] *= EOS_SCALE[dataset][0]
    model.encoder_decoder.logit.bias[0] = EOS_SCALE[dataset][1]
  ckpt = str(tmp / "model_best.pth")
  harness.save_trainer_checkpoint(model, ckpt)
  from cnx2rg_jax.convert import r2gen_cmn as conv  # pylint: disable=import-outside-toplevel
  from configs import r2gen_cmn as cmn_configs  # pylint: disable=import-outside-toplevel
  workdir = str(tmp / "workdir")
  record = conv.convert(ckpt, ann, dataset, 3, workdir, config=cmn_configs.get_config(dataset),
                        num_heads=4, topk=8, max_seq_length=MAX_LEN)
  from cnx2rg_jax.inference import trained  # pylint: disable=import-outside-toplevel
  from tests.helpers.r2gen_harness import apply_overrides  # pylint: disable=import-outside-toplevel
  config = cmn_configs.get_config(dataset)
  apply_overrides(config, record["config_overrides"])
  config.eval.batch_size = BATCH
  run = trained.load(config, workdir, log=lambda _: None)
  pixels = rng.integers(0, 256, (BATCH, 2, IMAGE, IMAGE), dtype=np.uint8)
  return dict(views=views, model=model, tok=tokenizer, run=run, pixels=pixels,
              rows=_rows(conv, ann, dataset))


def _rows(conv, ann, dataset):
  a = conv.r2gen_conv.read_annotation(ann)
  return conv.r2gen_conv.build_tokenizer([e["report"] for e in a["train"]], dataset, 3)[1]


def test_teacher_forced_logits_match(setup):
  import jax  # pylint: disable=import-outside-toplevel
  run, rows, views = setup["run"], setup["rows"], setup["views"]
  diff_logits, diff_lp, _ = harness.teacher_forced_diffs(
      setup["model"], _r2gen_images(setup["pixels"], views),
      lambda ids: jax.jit(run.model.apply)(run.variables, _our_images(setup["pixels"], views),
                                           ids)[0],
      rows, BATCH, MAX_LEN)
  print(f"\nR2GenCMN views={views}: max |logit diff| {diff_logits:.2e}, "
        f"max |log-prob diff| {diff_lp:.2e}")
  assert diff_logits < TOL and diff_lp < TOL


def test_beam_search_matches(setup):
  import torch  # pylint: disable=import-outside-toplevel
  cmn_model, run, rows = setup["model"], setup["run"], setup["rows"]
  with torch.no_grad(), harness.cpu_only():
    theirs, _ = cmn_model(_r2gen_images(setup["pixels"], setup["views"]), mode="sample")
  done = cmn_model.encoder_decoder.done_beams
  gaps = np.asarray([d[0]["p"] - d[1]["p"] if len(d) > 1 else np.inf for d in done])
  theirs = theirs.numpy()
  out = run.generator.run_batch(run.variables, _our_images(setup["pixels"], setup["views"]),
                                np.arange(BATCH))
  ours = [run.tokenizer.decode(r) for r in out[1]]
  want = setup["tok"].decode_batch(theirs)
  clear = gaps > 1e-4
  lengths = [int(np.argmax(r == 0)) if (r == 0).any() else theirs.shape[1] for r in theirs]
  same = np.asarray([a == b for a, b in zip(ours, want)])
  print(f"\nR2GenCMN views={setup['views']}: beam-3 reports equal on {int(same[clear].sum())}/"
        f"{int(clear.sum())} tie-free examples (lengths {lengths})")
  assert clear.sum() >= BATCH - 1
  assert same[clear].all(), [(a, b) for a, b, s in zip(ours, want, same) if not s]
  # These random models end every report at once or never (their logits barely move with the
  # position), so one dataset's setting covers eos and the other max_len.
  assert rows is not None and len(set(lengths)) >= 1
