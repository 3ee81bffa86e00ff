"""The R2GenCMN converter without R2GenCMN (cnx2rg_jax/convert/r2gen_cmn.py): tensor placement,
refusals that say which (the other architecture, a vocabulary that does not fit, unequal copies),
and a converted workdir that eval's loader and bench_decode open. (Parity with R2GenCMN's own
code: tests/test_r2gen_cmn_parity.py, which needs R2GENCMN_DIR.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnx2rg_jax.convert import r2gen as r2gen_conv
from cnx2rg_jax.convert import r2gen_cmn as conv
from cnx2rg_jax.convert import r2gen_cmn_weights as weights
from cnx2rg_jax.convert.r2gen_weights import ConversionError
from cnx2rg_jax.text import tokenizer as tok
from configs import r2gen as r2gen_configs, r2gen_cmn as cmn_configs
from tests.helpers import r2gen_harness as harness
from tests.helpers.r2gen_cmn_state import CMM_SIZE, D, D_FF, ED, r2gen_cmn_state_dict
from tests.helpers.r2gen_state import r2gen_state_dict

REPORTS = ["The heart is normal. No effusion.", "Lungs are CLEAR, no pneumothorax.",
           "no focal consolidation. heart normal", "The lungs are clear.", "heart size normal"]


@pytest.fixture(scope="module")
def vocab():
  return r2gen_conv.build_tokenizer(REPORTS, "mimic_cxr", 2)


def _model_config(tokenizer, sd):
  config, _ = conv.cmn_config(cmn_configs.get_config("mimic_cxr"),
                              weights.infer_dims(sd, num_heads=4, topk=5), 2)
  return harness.converted_model_config(config, tokenizer)


def test_tensors_land_where_they_belong(vocab):
  tokenizer, rows = vocab
  sd = r2gen_cmn_state_dict(int(rows.max()) + 1)
  dims = weights.infer_dims(sd, num_heads=4, topk=5)
  assert dims == {"resnet_depth": 18, "resnet_width": 64, "d_model": D, "d_ff": D_FF,
                  "num_heads": 4, "num_encoder_layers": 1, "num_decoder_layers": 1,
                  "architecture": "cmn", "cmm_size": CMM_SIZE, "cmm_dim": D, "cmn_topk": 5,
                  "_d_vf": 512}
  v = weights.convert_state_dict(sd, _model_config(tokenizer, sd), rows)
  t = v["params"]["transformer"]
  np.testing.assert_array_equal(t["cmn"]["memory"], sd[ED + "memory_matrix"])
  np.testing.assert_array_equal(t["cmn"]["key"]["kernel"], sd[ED + "cmn.linears.1.weight"].T)
  np.testing.assert_array_equal(t["cmn"]["out"]["bias"], sd[ED + "cmn.linears.3.bias"])
  np.testing.assert_array_equal(t["decoder_layers_0"]["src_attn"]["value"]["kernel"],
                                sd[ED + "model.decoder.layers.0.src_attn.linears.2.weight"].T)
  np.testing.assert_array_equal(t["decoder_layers_0"]["norm_src"]["scale"],
                                sd[ED + "model.decoder.layers.0.sublayer.1.norm.a_2"])
  np.testing.assert_array_equal(t["encoder_layers_0"]["norm_ff"]["bias"],
                                sd[ED + "model.encoder.layers.0.sublayer.1.norm.b_2"])
  np.testing.assert_array_equal(t["decoder_norm"]["scale"], sd[ED + "model.decoder.norm.a_2"])
  word = tokenizer.token_to_id("heart")
  lut = sd[ED + "model.tgt_embed.0.lut.weight"]
  np.testing.assert_array_equal(t["embed"]["lut"]["embedding"][word], lut[rows[word]])
  np.testing.assert_array_equal(t["logit"]["kernel"][:, tok.EOS_ID], sd[ED + "logit.weight"][0])
  assert (t["logit"]["kernel"][:, [tok.PAD_ID, tok.BOS_ID]] == 0).all()
  assert not v["params"]["keyword_head"]["classifier"]["kernel"].any()


def test_refusals_say_which(vocab, tmp_path, monkeypatch):
  tokenizer, rows = vocab
  sd = r2gen_cmn_state_dict(int(rows.max()) + 1)
  mcfg = _model_config(tokenizer, sd)
  # R2Gen's checkpoint into this converter, and this one into R2Gen's
  with pytest.raises(ConversionError, match=r"R2Gen checkpoint.*convert\.r2gen$"):
    weights.infer_dims(r2gen_state_dict(int(rows.max()) + 1))
  ann = tmp_path / "annotation.json"
  ann.write_text(json.dumps({"train": [{"id": str(i), "report": r} for i, r in
                                       enumerate(REPORTS)]}))
  monkeypatch.setattr(r2gen_conv, "read_checkpoint", lambda p, allow_pickle=False: (sd, {}))
  with pytest.raises(ConversionError, match=r"R2GenCMN checkpoint.*convert\.r2gen_cmn"):
    r2gen_conv.convert("x.pth", str(ann), "mimic_cxr", 2, str(tmp_path / "r"),
                       config=r2gen_configs.get_config("mimic_cxr"))
  differ = {**sd, ED + "model.cmn.linears.2.weight": sd[ED + "cmn.linears.2.weight"] + 1}
  with pytest.raises(ConversionError, match=r"two copies.*cmn\.linears\.2\.weight"):
    weights.convert_state_dict(differ, mcfg, rows)
  extra = {**sd, ED + "model.decoder.layers.0.sublayer.0.norm.mlp_gamma.0.weight":
           np.zeros((D, D), np.float32)}
  with pytest.raises(ConversionError, match=r"cannot place.*mlp_gamma"):
    weights.convert_state_dict(extra, mcfg, rows)
  missing = {k: v for k, v in sd.items() if k != ED + "model.encoder.norm.b_2"}
  with pytest.raises(ConversionError, match=r"left unfilled.*transformer/encoder_norm/bias"):
    weights.convert_state_dict(missing, mcfg, rows)
  with pytest.raises(ConversionError, match=r"--topk=41 must be in \[1, cmm_size=40\]"):
    weights.infer_dims(sd, topk=41)
  # a vocabulary the checkpoint's embedding does not fit: the threshold 1 keeps more words
  monkeypatch.setattr(conv, "read_checkpoint", lambda p, allow_pickle=False: (
      sd, {"epoch": 3, "monitor_best": 0.2}))
  with pytest.raises(ConversionError, match=r"threshold 1\).*tgt_embed\.0\.lut\.weight has"):
    conv.convert("x.pth", str(ann), "mimic_cxr", 1, str(tmp_path / "w0"),
                 config=cmn_configs.get_config("mimic_cxr"), num_heads=4, topk=5)
  smaller = {**sd, ED + "logit.bias": sd[ED + "logit.bias"][:-1]}
  monkeypatch.setattr(conv, "read_checkpoint", lambda p, allow_pickle=False: (smaller, {}))
  with pytest.raises(ConversionError, match=r"logit\.bias has"):
    conv.convert("x.pth", str(ann), "mimic_cxr", 2, str(tmp_path / "w1"),
                 config=cmn_configs.get_config("mimic_cxr"), num_heads=4, topk=5)
  assert conv.main(["--checkpoint=x.pth", f"--annotation={ann}", "--dataset=mimic_cxr",
                    "--threshold=1", f"--workdir={tmp_path / 'w2'}"]) == 2


def test_convert_writes_a_workdir_that_runs(vocab, tmp_path, monkeypatch):
  """convert(): DIR/config.json, tokenizer/ and an Orbax checkpoint that --mode=eval's loader
  and --mode=bench_decode open, and whose model decodes."""
  tokenizer, rows = vocab
  ann = tmp_path / "annotation.json"
  ann.write_text(json.dumps({"train": [{"id": str(i), "report": r} for i, r in
                                       enumerate(REPORTS)]}))
  sd = r2gen_cmn_state_dict(int(rows.max()) + 1)
  monkeypatch.setattr(conv, "read_checkpoint", lambda p, allow_pickle=False: (
      sd, {"epoch": 3, "monitor_best": 0.2}))
  workdir = tmp_path / "w"
  record = conv.convert("x.pth", str(ann), "mimic_cxr", 2, str(workdir),
                        config=cmn_configs.get_config("mimic_cxr"), num_heads=4, topk=5,
                        max_seq_length=12)
  assert record["architecture"] == "cmn" and record["config"] == "configs/r2gen_cmn.py:mimic_cxr"
  assert "--config.model.cmn_topk=5" in record["config_overrides"]
  assert json.loads((workdir / "config.json").read_text())["model"]["architecture"] == "cmn"
  from cnx2rg_jax import config_checks  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.inference import trained  # pylint: disable=import-outside-toplevel
  config = cmn_configs.get_config("mimic_cxr")
  harness.apply_overrides(config, record["config_overrides"])
  config_checks.check_workdir(config, str(workdir))  # what --mode=eval checks first
  config.eval.batch_size = 2
  run = trained.load(config, str(workdir), log=lambda _: None)
  assert type(run.model).__name__ == "CMNModel"
  np.testing.assert_array_equal(np.asarray(run.variables["params"]["transformer"]["cmn"]
                                           ["memory"]), sd[ED + "memory_matrix"])
  images = np.random.default_rng(0).normal(size=(2, 64, 64, 1)).astype(np.float32)
  out = run.generator.run_batch(run.variables, images, np.arange(2))
  assert len(out[1]) == 2 and all(len(r) <= 12 for r in out[1])
  from cnx2rg_jax.bench import decode as bench  # pylint: disable=import-outside-toplevel
  from configs import bench_decode  # pylint: disable=import-outside-toplevel
  model, _, crop = bench._workdir_model(  # pylint: disable=protected-access
      bench_decode.get_config(), str(workdir))
  assert type(model).__name__ == "CMNModel" and crop == 224
