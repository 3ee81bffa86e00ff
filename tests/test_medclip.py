"""MedCLIP's ResNet-50 vision tower: conversion, parity with torch, frozen weights, config checks.

The torch parts build a randomly initialised model with MedCLIP's structure and state-dict names
(torchvision's resnet50, or the same modules hand-built when torchvision is absent, with `fc`
replaced by Linear(2048, 512, bias=False)) and skip without torch; nothing is downloaded.
"""

import json
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import traverse_util

from cnx2rg_jax import config_checks, sharding
from cnx2rg_jax.convert import medclip
from cnx2rg_jax.data import transforms
from cnx2rg_jax.models import factory, prompt_encoder as pe
from cnx2rg_jax.models.cnx2rg import CNX2RG
from cnx2rg_jax.training import loop, optimizer, state as state_lib, steps
from tests.conftest import tiny_config, tiny_model_config
from tests.helpers.model_configs import model_config_with
from tests.test_resnet import (_fake_state_dict, _torch_resnet, _write_safetensors,
                               randomize_batchnorm)

PREFIX = medclip.VISION_PREFIX


def _medclip_state_dict_numpy():
  """A whole-MedCLIPModel-named state dict of the right shapes, NumPy only (no torch)."""
  sd = {PREFIX + k: v for k, v in _fake_state_dict(50).items() if not k.startswith("fc.")}
  rng = np.random.default_rng(3)
  sd[PREFIX + "fc.weight"] = rng.normal(0, 0.02, (512, 2048)).astype(np.float32)
  sd["text_model.projection_head.weight"] = np.zeros((512, 768), np.float32)
  sd["logit_scale"] = np.array(2.659, np.float32)
  return sd


def _torch_medclip():
  """(MedCLIPModel-like torch module, its vision tower) with random weights, eval mode."""
  torch = pytest.importorskip("torch", reason="torch not installed: MedCLIP parity skipped")
  from torch import nn as tnn  # pylint: disable=import-outside-toplevel
  try:
    import torchvision  # pylint: disable=import-outside-toplevel
    torch.manual_seed(50)
    resnet = torchvision.models.resnet50(weights=None)
    randomize_batchnorm(resnet)
    run_resnet = resnet.forward
  except ImportError:  # the same modules and names, built by hand
    resnet = _torch_resnet(50)
    def run_resnet(x):
      return resnet.fc(torch.flatten(resnet.avgpool(resnet.features(x)), 1))
  resnet.fc = tnn.Linear(2048, 512, bias=False)

  class VisionModel(tnn.Module):  # MedCLIPVisionModel's structure: resnet as `model`
    def __init__(self):
      super().__init__()
      self.model = resnet

    def forward(self, pixel_values):
      if pixel_values.shape[1] == 1:
        pixel_values = pixel_values.repeat((1, 3, 1, 1))
      return run_resnet(pixel_values)

  class TextModel(tnn.Module):  # a stand-in for BioClinicalBERT: only its names matter
    def __init__(self):
      super().__init__()
      self.projection_head = tnn.Linear(768, 512, bias=False)

  class Model(tnn.Module):
    def __init__(self):
      super().__init__()
      self.vision_model, self.text_model = VisionModel(), TextModel()
      self.logit_scale = tnn.Parameter(torch.log(torch.tensor(1 / 0.07)))

  return Model().eval()


@pytest.fixture(scope="module")
def converted_torch(tmp_path_factory):
  """(torch model, checkpoint path, converted directory)."""
  torch = pytest.importorskip("torch", reason="torch not installed: MedCLIP parity skipped")
  model = _torch_medclip()
  folder = tmp_path_factory.mktemp("medclip")
  path = folder / "pytorch_model.bin"
  torch.save(model.state_dict(), path)
  assert medclip.main([f"--checkpoint={path}", f"--output={folder / 'converted'}"]) == 0
  return model, path, folder / "converted"


def test_state_dict_names_are_medclips(converted_torch):
  model, _, _ = converted_torch
  names = set(model.state_dict())
  assert {"vision_model.model.conv1.weight", "vision_model.model.bn1.running_var",
          "vision_model.model.layer4.2.conv3.weight",
          "vision_model.model.layer1.0.downsample.0.weight",
          "vision_model.model.fc.weight", "text_model.projection_head.weight",
          "logit_scale"} <= names
  assert "vision_model.model.fc.bias" not in names
  assert tuple(model.state_dict()["vision_model.model.fc.weight"].shape) == (512, 2048)


def test_matches_torch(converted_torch):
  torch = pytest.importorskip("torch")
  model, path, folder = converted_torch
  meta = json.loads((folder / pe.META_FILE).read_text())
  assert meta["architecture"] == "medclip_resnet50" and meta["embedding_dim"] == 512
  assert meta["source"] == str(path) and meta["num_parameters"] == (
      23_508_032 - 2 * 64 * 7 * 7 + 2048 * 512)  # torchvision's less fc, gray stem, projection
  variables = jax.tree.map(jnp.asarray, pe.load_variables(folder))
  # MedCLIP-normalised gray pixels; MedCLIPVisionModel repeats them to RGB, we sum the stem.
  pixels = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    want = model.vision_model(pixels).numpy()
  x = jnp.asarray(pixels.permute(0, 2, 3, 1).numpy())
  encoder = pe.MedCLIPImageEncoder(image_size=64, input_normalization="medclip")
  got = np.asarray(jax.jit(lambda v, x: encoder.apply(v, x, method="embed"))(variables, x))
  diff = np.abs(got - want)
  print(f"torch vs Flax embedding: max abs {diff.max():.2e}, max rel "
        f"{(diff / np.abs(want).max()).max():.2e} (of max |value| {np.abs(want).max():.3f})")
  np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(), rtol=1e-4)
  # The prompt token: MedCLIPModel.encode_image's unit vector, times sqrt(512).
  tokens = np.asarray(jax.jit(encoder.apply)(variables, x))
  unit = want / np.linalg.norm(want, axis=-1, keepdims=True)
  assert tokens.shape == (2, 1, 512)
  np.testing.assert_allclose(tokens[:, 0], unit * math.sqrt(512), atol=1e-4)


def test_cli_errors(tmp_path, capsys):
  torch = pytest.importorskip("torch")
  text_only = tmp_path / "text.bin"
  torch.save({"text_model.projection_head.weight": torch.zeros(512, 768),
              "logit_scale": torch.tensor(2.6)}, text_only)
  assert medclip.main([f"--checkpoint={text_only}", f"--output={tmp_path / 'out'}"]) == 2
  err = capsys.readouterr().err
  assert "text tower only" in err and "only MedCLIP's ResNet-50 vision tower" in err
  assert medclip.main([f"--checkpoint={tmp_path / 'none.bin'}", f"--output={tmp_path}"]) == 2
  assert "does not exist" in capsys.readouterr().err
  garbage = tmp_path / "garbage.bin"
  garbage.write_bytes(b"not a checkpoint")
  assert medclip.main([f"--checkpoint={garbage}", f"--output={tmp_path / 'out'}"]) == 2
  assert "cannot be read as a PyTorch state dict" in capsys.readouterr().err
  nested = tmp_path / "nested.pt"
  torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in
                             _medclip_state_dict_numpy().items()}}, nested)
  assert medclip.main([f"--checkpoint={nested}", f"--output={tmp_path / 'nested'}"]) == 0
  assert not (tmp_path / "out").exists()


def test_safetensors_without_torch(tmp_path):
  sd = _medclip_state_dict_numpy()
  path = tmp_path / "medclip.safetensors"
  _write_safetensors(path, {k: ("F32", np.asarray(v, "<f4")) for k, v in sd.items()})
  meta = medclip.convert(path, tmp_path / "out")
  assert meta["source_tensors"] == len([k for k in sd if k.startswith(PREFIX)
                                        and not k.endswith("num_batches_tracked")])
  loaded = pe.load_variables(tmp_path / "out")
  np.testing.assert_array_equal(loaded["params"]["projection"]["kernel"],
                                sd[PREFIX + "fc.weight"].T)
  np.testing.assert_array_equal(loaded["batch_stats"]["resnet"]["layer3_5"]["bn2"]["var"],
                                sd[PREFIX + "layer3.5.bn2.running_var"])
  stem = sd[PREFIX + "conv1.weight"].sum(1, keepdims=True).transpose(2, 3, 1, 0)
  np.testing.assert_allclose(loaded["params"]["resnet"]["conv1"]["kernel"], stem)


def test_conversion_errors_name_the_tensor():
  sd = _medclip_state_dict_numpy()
  convert, error = _convert, medclip.MedCLIPConversionError
  missing = dict(sd)
  del missing[PREFIX + "layer3.1.bn2.running_mean"]
  with pytest.raises(error, match="unfilled.*batch_stats/layer3_1/bn2/mean"):
    convert(missing)
  no_fc = {k: v for k, v in sd.items() if k != PREFIX + "fc.weight"}
  with pytest.raises(error, match="params/projection/kernel left unfilled"):
    convert(no_fc)
  with pytest.raises(error, match=r"cannot place.*layer9\.0\.conv1\.weight"):
    convert({**sd, PREFIX + "layer9.0.conv1.weight": np.zeros(1, np.float32)})
  with pytest.raises(error, match=r"cannot place.*vision_model\.model\.fc\.bias"):
    convert({**sd, PREFIX + "fc.bias": np.zeros(512, np.float32)})
  with pytest.raises(error, match=r"cannot place.*'classifier\.weight'"):
    convert({**sd, "classifier.weight": np.zeros(3, np.float32)})
  with pytest.raises(error, match=r"fc\.weight has shape \(512, 512\)"):
    convert({**sd, PREFIX + "fc.weight": np.zeros((512, 512), np.float32)})
  swin = {"vision_model.model.embeddings.patch_embeddings.projection.weight": np.zeros(1),
          "vision_model.projection_head.weight": np.zeros((512, 768))}
  with pytest.raises(error, match="Swin-T.*only MedCLIP's ResNet-50"):
    convert(swin)
  with pytest.raises(error, match="text tower only"):
    convert({"text_model.projection_head.weight": np.zeros(1), "logit_scale": np.zeros(())})
  # A MedCLIPVisionModel's own state dict (prefix 'model.') converts too.
  alone = {"model." + k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}
  np.testing.assert_array_equal(_convert(alone)["params"]["projection"]["kernel"],
                                sd[PREFIX + "fc.weight"].T)


def _convert(tensors):
  prefix, tower = medclip.vision_tower(tensors, "ckpt")
  return medclip.convert_vision_tower(tower, "ckpt", prefix)


def test_input_mapping_matches_the_pipeline():
  """'imagenet' images map exactly to MedCLIP's normalisation; 'zscore' passes unchanged."""
  image = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
  medclip_pixels = ((image / 255.0 - pe.MEDCLIP_MEAN) / pe.MEDCLIP_STD)[..., None]
  ours = transforms.normalize(image, "imagenet")[None]
  np.testing.assert_allclose(pe.to_medclip_pixels(jnp.asarray(ours), "imagenet", 40)[0],
                             medclip_pixels, atol=1e-5)
  z = jnp.asarray(transforms.normalize(image, "zscore")[None])
  np.testing.assert_array_equal(pe.to_medclip_pixels(z, "zscore", 40), z)
  assert pe.to_medclip_pixels(z, "zscore", 56).shape == (1, 56, 56, 1)


# ----------------------------------------------------------------------------- training

def _random_encoder_dir(tmp_path):
  """A converted directory of random weights (NumPy: a Flax init of ResNet-50 takes ~20 s of
  CPU), He-scaled with non-trivial BatchNorm so that the features are neither 0 nor huge."""
  rng = np.random.default_rng(7)
  flat = {}
  for name, shape in pe.expected_shapes().items():
    leaf = name.rsplit("/", 1)[-1]
    if leaf == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      value = rng.normal(0.0, np.sqrt((2.0 if len(shape) == 4 else 1.0) / fan_in), shape)
    elif leaf in ("scale", "var"):
      value = rng.uniform(0.5, 1.5, shape)
    else:  # bias, mean
      value = rng.normal(0.0, 0.1, shape)
    flat[name] = value.astype(np.float32)
  variables = traverse_util.unflatten_dict(flat, sep="/")
  return pe.save_variables(tmp_path / "enc", variables, {"source": "random"})


TINY = dict(vocab_size=23, max_len=10, resnet_depth=18, resnet_width=8, d_model=32, d_ff=32,
            num_heads=4, num_encoder_layers=1, num_decoder_layers=1, rm_num_slots=2,
            rm_num_heads=4, rm_d_model=32)


def _train_section():
  tr = tiny_config("").train
  tr.lr_schedule, tr.warmup_steps = "constant", 0
  tr.weight_decay = 0.01  # weight decay would move frozen weights that reached the optimizer
  return tr


def _batch(rng, b=2, s=32, t=10):
  tokens = rng.integers(4, 23, (b, t)).astype(np.int32)
  tokens[:, 0] = 1
  return {"image": rng.normal(size=(b, s, s, 1)).astype(np.float32), "report_tokens": tokens,
          "report_mask": np.ones((b, t), np.int32),
          "keyword_labels": rng.choice([-1, 0, 1], (b, 48)).astype(np.int8),
          "has_keyword_labels": np.ones((b,), bool)}


def test_frozen_encoder_is_loaded_and_never_updated(tmp_path):
  folder = _random_encoder_dir(tmp_path)
  cfg = model_config_with(num_prompts=2, prompt_feature_dim=512, prompt_encoder=str(folder),
                          prompt_encoder_image_size=32, **TINY)
  model = CNX2RG(cfg)
  tx, _ = optimizer.make_optimizer(_train_section(), steps_per_epoch=10)
  mesh = sharding.make_mesh((1,), ("data",), jax.devices()[:1])
  state, shardings = state_lib.create_state(model, tx, mesh, image_size=32, num_tokens=9, seed=0)
  on_file = pe.load_variables(folder)
  before = jax.device_get({"params": state.params["prompt_encoder"],
                           "batch_stats": state.batch_stats["prompt_encoder"]})
  jax.tree.map(np.testing.assert_array_equal, before, on_file)
  # No optimizer state for the frozen weights: the 'frozen' group keeps none.
  frozen_size = sum(x.size for x in jax.tree.leaves(on_file["params"]))
  opt_size = sum(x.size for x in jax.tree.leaves(state.opt_state))
  trained_size = sum(x.size for x in jax.tree.leaves(state.params)) - frozen_size
  assert opt_size < 4 * trained_size + 100  # mu, nu, nu_max (+ counts), none for ~24M frozen

  local = _batch(np.random.default_rng(0))
  step = steps.make_train_step(model, tx, mesh, shardings,
                               {k: v.shape for k, v in local.items()}, keyword_weight=0.5,
                               dropout_seed=1, lr_fn=lambda _: 1e-3)
  assert "frozen MedCLIP ResNet-50 features" in pe.describe_prompts(cfg)
  old_trained = jax.device_get(state.params["prompt"])
  state, metrics = step(state, sharding.global_batch(local, mesh))
  assert bool(metrics["finite"])
  after = jax.device_get({"params": state.params["prompt_encoder"],
                          "batch_stats": state.batch_stats["prompt_encoder"]})
  jax.tree.map(np.testing.assert_array_equal, after, on_file)  # bit-identical
  new_trained = jax.device_get(state.params["prompt"])
  assert not np.array_equal(new_trained["feature_proj"]["kernel"],
                            old_trained["feature_proj"]["kernel"])
  assert not np.array_equal(new_trained["prompts"], old_trained["prompts"])


def test_frozen_features_are_the_encoders(tmp_path):
  """CNX2RG's fused tokens end with the encoder's token, projected; no gradient reaches it."""
  folder = _random_encoder_dir(tmp_path)
  cfg = model_config_with(num_prompts=0, prompt_feature_dim=512, prompt_encoder=str(folder),
                          prompt_encoder_image_size=32, **TINY)
  model = CNX2RG(cfg)
  images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 32, 32, 1)), jnp.float32)
  variables = nn.meta.unbox(factory.random_variables(model, 32))
  loaded = pe.load_variables(folder)
  variables["params"]["prompt_encoder"] = loaded["params"]
  variables["batch_stats"]["prompt_encoder"] = loaded["batch_stats"]

  def fused_and_grads(variables):
    def loss(params):
      feats, _ = model.apply({**variables, "params": params}, images,
                             method=CNX2RG.visual_features)
      return jnp.sum(feats ** 2), feats
    return jax.grad(loss, has_aux=True)(variables["params"])

  grads, feats = jax.jit(fused_and_grads)(variables)
  token = jax.jit(pe.MedCLIPImageEncoder(image_size=32).apply)(loaded, images)
  assert feats.shape == (2, 1 + 1, 64)  # 1 patch (32 px / 32) + 1 MedCLIP token
  assert float(jnp.abs(token).min()) > 0
  np.testing.assert_allclose(jnp.linalg.norm(token, axis=-1), math.sqrt(512), rtol=1e-5)
  proj = variables["params"]["prompt"]["feature_proj"]
  np.testing.assert_allclose(feats[:, -1], token[:, 0] @ proj["kernel"] + proj["bias"],
                             rtol=1e-4, atol=1e-4)
  assert all(not np.any(g) for g in jax.tree.leaves(grads["prompt_encoder"]))
  assert all(np.any(g) for g in jax.tree.leaves(grads["prompt"]))


def test_without_encoder_the_run_says_only_learnable_prompts(tiny_synthetic, tmp_path):
  """loop.train says once that only the learnable prompts are used; with prompts off, nothing."""
  base, _ = tiny_synthetic
  config = tiny_model_config(base.data.data_dir)
  config.train.num_steps, config.train.eval_every, config.train.checkpoint_every = 1, 0, 0
  config.model.num_prompts = 3
  lines = []
  loop.train(config, str(tmp_path / "on"), log=lines.append)
  said = [l for l in lines if "prompt training" in l]
  assert len(said) == 1 and "only the 3 learnable prompt token(s) are used" in said[0]
  assert pe.describe_prompts(model_config_with(**TINY)) is None  # prompts off: nothing to say


def test_optimizer_state_layout_unchanged_without_frozen_params():
  """Runs without a prompt encoder keep the optimizer state they had (their checkpoints restore)."""
  tr = _train_section()
  params = {"visual": {"w": jnp.ones(3)}, "transformer": {"w": jnp.ones(2)}}
  tx, _ = optimizer.make_optimizer(tr, 4)
  groups = {g: optimizer._group(optimizer.schedule(1e-3, tr, 4), tr) for g in optimizer.GROUPS}
  old = optax.chain(optax.clip(tr.clip_value), optax.multi_transform(groups,
                                                                     optimizer.param_groups))
  assert (jax.tree_util.tree_structure(tx.init(params))
          == jax.tree_util.tree_structure(old.init(params)))
  frozen = {**params, "prompt_encoder": {"w": jnp.ones(4)}}
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, frozen), tx.init(frozen), frozen)
  assert not np.any(updates["prompt_encoder"]["w"]) and np.all(updates["visual"]["w"] != 0)


# ----------------------------------------------------------------------------- config checks

def _config(**model):
  c = tiny_config("")
  for key, value in model.items():
    c.model[key] = value
  return c


def test_config_check(tmp_path):
  config_checks.check(_config(num_prompts=4))  # no encoder: fine
  missing = tmp_path / "nowhere"
  with pytest.raises(config_checks.ConfigError, match=f"{missing}.*does not exist.*convert"):
    config_checks.check(_config(prompt_encoder=str(missing), prompt_feature_dim=512))
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / pe.META_FILE).write_text(json.dumps({"format": pe.FORMAT, "format_version": 1,
                                              "architecture": pe.ARCHITECTURE}))
  (bad / pe.WEIGHTS_FILE).write_bytes(b"garbage")
  with pytest.raises(config_checks.ConfigError, match=f"{bad / pe.WEIGHTS_FILE}.*not a readable"):
    config_checks.check(_config(prompt_encoder=str(bad), prompt_feature_dim=512))
  np.savez(bad / pe.WEIGHTS_FILE, **{"params/resnet/conv1/kernel": np.zeros((7, 7, 1, 64),
                                                                            np.float32)})
  with pytest.raises(config_checks.ConfigError, match=r"missing \[batch_stats/resnet/bn1/mean"):
    config_checks.check(_config(prompt_encoder=str(bad), prompt_feature_dim=512))
  (bad / pe.META_FILE).write_text("{")
  with pytest.raises(config_checks.ConfigError, match=f"{bad / pe.META_FILE} cannot be read"):
    config_checks.check(_config(prompt_encoder=str(bad), prompt_feature_dim=512))
  good = _random_encoder_dir(tmp_path)
  config_checks.check(_config(prompt_encoder=str(good), prompt_feature_dim=512))
  with pytest.raises(config_checks.ConfigError, match="prompt_feature_dim=512"):
    config_checks.check(_config(prompt_encoder=str(good), prompt_feature_dim=0))


def test_config_keys_reach_the_model():
  c = tiny_config("")
  c.model.prompt_encoder, c.data.normalization = "/x", "imagenet"
  model = factory.build_model(c, vocab_size=11)
  assert model.config.prompt_encoder == "/x" and model.config.prompt_encoder_image_size == 224
  assert model.image_normalization == "imagenet"
  assert isinstance(c.model, ml_collections.ConfigDict)


def test_workdirs_saved_before_the_new_keys_still_match(tmp_path):
  """A config.json written before model.prompt_encoder* existed resumes and evaluates."""
  c = tiny_config("")
  saved = c.to_dict()
  del saved["model"]["prompt_encoder"], saved["model"]["prompt_encoder_image_size"]
  (tmp_path / config_checks.CONFIG_FILE).write_text(json.dumps(saved))
  config_checks.check_workdir(c, str(tmp_path))
  c.model.prompt_encoder = str(tmp_path / "enc")
  with pytest.raises(config_checks.WorkdirError, match="model.prompt_encoder"):
    config_checks.check_workdir(c, str(tmp_path))
