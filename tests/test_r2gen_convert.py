"""The R2Gen converter without R2Gen (cnx2rg_jax/convert/r2gen.py): tensor placement, errors
that name the tensor, and the vocabulary against a brute-force re-derivation of R2Gen's rule.
(The parity with R2Gen's own code is tests/test_r2gen_parity.py, which needs R2GEN_DIR.)"""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest

from cnx2rg_jax.convert import r2gen as conv
from cnx2rg_jax.convert import r2gen_weights as weights
from cnx2rg_jax.text import english
from cnx2rg_jax.text import tokenizer as tok
from configs import r2gen as r2gen_configs
from tests.helpers import r2gen_harness as harness
from tests.helpers.r2gen_state import D, D_FF, D_VF, ED, SLOTS, r2gen_state_dict

REPORTS = [
    "The heart is normal. No effusion.", "1. Heart size normal. 2. Lungs clear.",
    "Lungs are CLEAR, no pneumothorax.", "Mild cardiomegaly... stable x-ray.",
    "no focal consolidation. heart normal", "Degenerative changes of the spine; heart normal.",
    "The lungs are clear.", "zebra",
]


@pytest.fixture(scope="module")
def vocab():
  return conv.build_tokenizer(REPORTS, "iu_xray", 2)


def _model_config(tokenizer, sd):
  config, _ = conv.r2gen_config(r2gen_configs.get_config("mimic_cxr"),
                                weights.infer_dims(sd, num_heads=4, rm_num_heads=2), 2)
  return harness.converted_model_config(config, tokenizer)


def test_vocabulary_matches_brute_force():
  """R2Gen's rule re-derived by hand: clean, count, keep >= threshold, add <unk>, sort, ids
  from 1 (0 is bos/eos/pad)."""
  for dataset, threshold in (("iu_xray", 1), ("iu_xray", 2), ("mimic_cxr", 3)):
    counts = {}
    for r in REPORTS:
      for w in english.ENGLISH_CLEANERS[dataset](r).split():
        counts[w] = counts.get(w, 0) + 1
    kept = [w for w in counts if counts[w] >= threshold] + ["<unk>"]
    idx = {}
    for w in sorted(kept):
      idx[w] = len(idx) + 1
    tokenizer, rows = conv.build_tokenizer(REPORTS, dataset, threshold)
    assert rows.max() == len(kept) and sorted(set(rows.tolist())) == list(range(len(kept) + 1))
    assert list(rows[:4]) == [0, 0, 0, idx["<unk>"]]
    assert {t: int(rows[i]) for i, t in enumerate(tokenizer.tokens) if i >= 4} == \
        {w: i for w, i in idx.items() if w != "<unk>"}
    assert tokenizer.tokens[4:] == tuple(sorted(w for w in kept if w != "<unk>"))
  # The cleaning R2Gen does before counting: capitals and ',' go, 'x-ray' and '.' stay.
  tokenizer, rows = conv.build_tokenizer(REPORTS, "iu_xray", 1)
  assert "clear" in tokenizer.tokens and "x-ray" in tokenizer.tokens and "." in tokenizer.tokens
  assert "CLEAR" not in tokenizer.tokens and "clear," not in tokenizer.tokens
  assert tokenizer.encode("zebra unicorn") == [tokenizer.token_to_id("zebra"), tok.UNK_ID]


def test_tensors_land_where_they_belong(vocab):
  tokenizer, rows = vocab
  sd = r2gen_state_dict(int(rows.max()) + 1)
  dims = weights.infer_dims(sd, num_heads=4, rm_num_heads=2)
  assert dims == {"resnet_depth": 18, "resnet_width": 64, "d_model": D, "d_ff": D_FF,
                  "num_heads": 4, "num_encoder_layers": 1, "num_decoder_layers": 1,
                  "rm_num_slots": SLOTS, "rm_num_heads": 2, "rm_d_model": D, "_d_vf": D_VF}
  v = weights.convert_state_dict(sd, _model_config(tokenizer, sd), rows)
  p, t = v["params"], v["params"]["transformer"]
  np.testing.assert_array_equal(t["att_embed"]["kernel"], sd[ED + "att_embed.0.weight"].T)
  np.testing.assert_array_equal(t["decoder_layers_0"]["src_attn"]["value"]["kernel"],
                                sd[ED + "model.decoder.layers.0.src_attn.linears.2.weight"].T)
  np.testing.assert_array_equal(
      t["decoder_layers_0"]["norm_ff"]["mlp_beta"]["fc2"]["bias"],
      sd[ED + "model.decoder.layers.0.sublayer.2.norm.mlp_beta.2.bias"])
  np.testing.assert_array_equal(t["encoder_layers_0"]["norm_ff"]["scale"],
                                sd[ED + "model.encoder.layers.0.sublayer.1.norm.gamma"])
  np.testing.assert_array_equal(t["rm"]["cell"]["u"]["kernel"], sd[ED + "model.rm.U.weight"].T)
  np.testing.assert_array_equal(t["rm"]["cell"]["mlp2"]["bias"], sd[ED + "model.rm.mlp.2.bias"])
  lut, w, b = (sd[ED + "model.tgt_embed.0.lut.weight"], sd[ED + "logit.weight"],
               sd[ED + "logit.bias"])
  word = tokenizer.token_to_id("heart")
  np.testing.assert_array_equal(t["embed"]["lut"]["embedding"][word], lut[rows[word]])
  for i in (tok.PAD_ID, tok.BOS_ID, tok.EOS_ID):  # R2Gen's row 0 is all three
    np.testing.assert_array_equal(t["embed"]["lut"]["embedding"][i], lut[0])
  np.testing.assert_array_equal(t["logit"]["kernel"][:, tok.EOS_ID], w[0])
  np.testing.assert_array_equal(t["logit"]["kernel"][:, tok.UNK_ID], w[rows[tok.UNK_ID]])
  assert t["logit"]["bias"][word] == b[rows[word]]
  assert (t["logit"]["bias"][[tok.PAD_ID, tok.BOS_ID]] == weights.SUPPRESSED_LOGIT).all()
  assert (t["logit"]["kernel"][:, [tok.PAD_ID, tok.BOS_ID]] == 0).all()
  np.testing.assert_array_equal(  # the 3-channel stem is kept, OIHW -> HWIO
      p["visual"]["resnet"]["conv1"]["kernel"],
      sd["visual_extractor.model.0.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(v["batch_stats"]["visual"]["resnet"]["layer3_0"]["downsample_bn"]
                                ["var"], sd["visual_extractor.model.6.0.downsample.1.running_var"])
  assert not p["keyword_head"]["classifier"]["kernel"].any()  # R2Gen has none: zeros


def test_errors_name_the_tensor(vocab):
  tokenizer, rows = vocab
  sd = r2gen_state_dict(int(rows.max()) + 1)
  mcfg = _model_config(tokenizer, sd)
  extra = {**sd, ED + "model.decoder.layers.0.extra.weight": np.zeros((2, 2), np.float32)}
  with pytest.raises(conv.ConversionError, match=r"cannot place.*decoder\.layers\.0\.extra\.weight"):
    weights.convert_state_dict(extra, mcfg, rows)
  missing = dict(sd)
  del missing[ED + "model.rm.W.bias"]
  with pytest.raises(conv.ConversionError, match=r"left unfilled.*transformer/rm/cell/w/bias"):
    weights.convert_state_dict(missing, mcfg, rows)
  bad = {**sd, ED + "model.encoder.layers.0.feed_forward.w_2.weight":
         np.zeros((D, D), np.float32)}
  with pytest.raises(conv.ConversionError,
                     match=r"feed_forward\.w_2\.weight: shape \(16, 16\)"):
    weights.convert_state_dict(bad, mcfg, rows)
  vis = {k: v for k, v in sd.items() if k != "visual_extractor.model.5.1.conv2.weight"}
  with pytest.raises(conv.ConversionError, match=r"layer2_1/conv2/kernel"):
    weights.convert_state_dict(vis, mcfg, rows)
  with pytest.raises(conv.ConversionError, match="not a torchvision ResNet"):
    weights.infer_dims({k: v for k, v in sd.items() if ".model.7.1." not in k})
  with pytest.raises(conv.ConversionError, match="--num_heads=5 does not divide"):
    weights.infer_dims(sd, num_heads=5)
  with pytest.raises(conv.ConversionError, match="unknown dataset"):
    conv.build_tokenizer(REPORTS, "chexpert", 3)


def test_convert_writes_a_workdir(vocab, tmp_path, monkeypatch):
  """convert(): the vocabulary size is checked against the embedding, and the workdir holds
  config.json, tokenizer/ and an Orbax checkpoint the eval loader restores."""
  tokenizer, rows = vocab
  ann = tmp_path / "annotation.json"
  ann.write_text(json.dumps({"train": [{"id": str(i), "report": r, "image_path": ["a.png"]}
                                       for i, r in enumerate(REPORTS)]}))
  sd = r2gen_state_dict(int(rows.max()) + 1)
  monkeypatch.setattr(conv, "read_checkpoint", lambda path, allow_pickle=False: (
      sd, {"epoch": 3, "monitor_best": 0.2}))
  with pytest.raises(conv.ConversionError, match=r"threshold 1\).*has \d+ tokens.*lut\.weight has"):
    conv.convert("x.pth", str(ann), "iu_xray", 1, str(tmp_path / "w0"),
                 config=r2gen_configs.get_config("iu_xray"), num_heads=4, rm_num_heads=2)
  bad = json.loads(ann.read_text())
  bad["train"][2]["report"] = None
  (tmp_path / "bad.json").write_text(json.dumps(bad))
  with pytest.raises(conv.ConversionError, match=r"train entry 2 \(id 2\) has no str 'report'"):
    conv.convert("x.pth", str(tmp_path / "bad.json"), "iu_xray", 2, str(tmp_path / "w1"),
                 config=r2gen_configs.get_config("iu_xray"))
  workdir = tmp_path / "w"
  # mimic_cxr: one view, so the workdir opens as --mode=eval/predict open it
  record = conv.convert("x.pth", str(ann), "mimic_cxr", 2, str(workdir),
                        config=r2gen_configs.get_config("mimic_cxr"), num_heads=4,
                        rm_num_heads=2)
  assert record["r2gen_vocab_size"] == rows.max() and record["r2gen_epoch"] == 3
  assert "--config.model.d_model=16" in record["config_overrides"]
  from cnx2rg_jax.text.word_vocab import WordTokenizer  # pylint: disable=import-outside-toplevel
  assert WordTokenizer.load(workdir / "tokenizer").tokens == \
      conv.build_tokenizer(REPORTS, "mimic_cxr", 2)[0].tokens
  assert json.loads((workdir / "config.json").read_text())["model"]["r2gen_beam_search"]
  from cnx2rg_jax import config_checks  # pylint: disable=import-outside-toplevel
  config = r2gen_configs.get_config("mimic_cxr")
  harness.apply_overrides(config, record["config_overrides"])
  assert config.data.manual_dir == str(tmp_path)  # the annotation's folder by default
  config_checks.check_workdir(config, str(workdir))  # what --mode=eval checks first
  # --mode=bench_decode with bench.workdir loads it as --mode=eval does (inference.trained).
  from cnx2rg_jax.bench import decode as bench  # pylint: disable=import-outside-toplevel
  from configs import bench_decode  # pylint: disable=import-outside-toplevel
  model, variables, crop = bench._workdir_model(  # pylint: disable=protected-access
      bench_decode.get_config(), str(workdir))
  assert crop == 224 and model.config.r2gen_beam_search and model.config.r2gen_rgb_stem
  np.testing.assert_array_equal(
      np.asarray(variables["params"]["transformer"]["rm"]["cell"]["w"]["kernel"]),
      sd[ED + "model.rm.W.weight"].T)
  with pytest.raises(conv.ConversionError, match="already holds checkpoints"):
    conv.convert("x.pth", str(ann), "mimic_cxr", 2, str(workdir),
                 config=r2gen_configs.get_config("mimic_cxr"), num_heads=4, rm_num_heads=2)


def test_read_checkpoint_needs_the_trainer_format(tmp_path):
  torch = pytest.importorskip("torch", reason="torch not installed: .pth reading skipped")
  path = tmp_path / "m.pth"
  torch.save({"module.x": torch.zeros(2)}, path)
  with pytest.raises(conv.ConversionError, match="not an R2Gen trainer checkpoint"):
    weights.read_checkpoint(str(path))
  torch.save({"epoch": 2, "state_dict": collections.OrderedDict(
      [("module.a.weight", torch.ones(2, 3))]), "optimizer": {}, "monitor_best": 0.5}, path)
  sd, meta = weights.read_checkpoint(str(path))
  assert list(sd) == ["a.weight"] and meta == {"epoch": 2, "monitor_best": 0.5}
  with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
    weights.read_checkpoint(str(tmp_path / "absent.pth"))


def test_config_overrides(vocab):
  tokenizer, rows = vocab
  dims = weights.infer_dims(r2gen_state_dict(int(rows.max()) + 1), num_heads=4, rm_num_heads=2)
  iu = r2gen_configs.get_config("iu_xray")
  config, overrides = conv.r2gen_config(iu, dims, 3, "/data/iu", max_seq_length=40)
  assert config.decode.max_len == config.data.max_tokens == 40
  assert config.model.num_views == 2 and config.data.english_style == "iu_xray"
  assert config.model.r2gen_layernorm and config.model.r2gen_rgb_stem
  assert overrides[:3] == ["--config.decode.max_len=40", "--config.data.max_tokens=40",
                           "--config.data.manual_dir=/data/iu"]
  assert "--config.text.min_count=3" not in overrides  # IU's threshold is the config's
  _, overrides = conv.r2gen_config(iu, dims, 3, "", max_seq_length=60)
  assert not any("max_len" in o or "manual_dir" in o for o in overrides)
  with pytest.raises(conv.ConversionError, match="--max_seq_length must be >= 1"):
    conv.r2gen_config(iu, dims, 3, "", max_seq_length=0)
