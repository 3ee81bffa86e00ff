"""ResNet / visual encoder / prompt fusion / torchvision conversion (torch parts skip without torch)."""

import json
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from cnx2rg_jax.models import convert_torchvision as conv_tv
from cnx2rg_jax.models.prompt import KeywordHead, PromptFusion
from cnx2rg_jax.models.resnet import ResNet, VisualEncoder
from tests.helpers import torch_resnet
from tests.helpers.model_configs import model_config_with


def _shape_of(model, x, **kw):
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  return jax.eval_shape(lambda v, x: model.apply(v, x, **kw), variables, x).shape


@pytest.mark.parametrize("depth,channels", [(18, 512), (34, 512), (50, 2048), (101, 2048)])
def test_resnet_shapes(depth, channels):
  x = jax.ShapeDtypeStruct((2, 64, 64, 1), jnp.float32)
  assert _shape_of(ResNet(depth=depth), x) == (2, 2, 2, channels)


def test_resnet101_224_and_input_checks():
  x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  assert _shape_of(ResNet(depth=101, in_channels=3), x) == (1, 7, 7, 2048)
  with pytest.raises(ValueError, match="1 channel"):
    ResNet(depth=18).init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))
  with pytest.raises(ValueError, match="depth 20"):
    ResNet(depth=20).init(jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 1)))


def test_logical_axes():
  variables = jax.eval_shape(ResNet(depth=18).init, jax.random.PRNGKey(0),
                             jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32))
  params = variables["params"]
  assert params["conv1"]["kernel"].names == ("conv_h", "conv_w", "conv_in", "conv_out")
  assert params["conv1"]["kernel"].value.shape == (7, 7, 1, 64)
  assert params["layer2_0"]["bn1"]["scale"].names == ("conv_out",)


def test_visual_encoder_shapes():
  cfg = model_config_with(vocab_size=10, resnet_depth=18)
  images = jnp.ones((2, 64, 96, 1))
  variables = jax.eval_shape(VisualEncoder(cfg).init, jax.random.PRNGKey(0), images)
  patches, pooled = jax.eval_shape(VisualEncoder(cfg).apply, variables, images)
  assert patches.shape == (2, 2 * 3, 512) and pooled.shape == (2, 512)
  enc = VisualEncoder(cfg)
  images = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 1))
  converted = conv_tv.convert_resnet_state_dict(_fake_state_dict(18), 18, in_channels=1)
  variables = {col: {"resnet": tree} for col, tree in converted.items()}
  patches, pooled = enc.apply(variables, images)
  np.testing.assert_allclose(pooled, patches.mean(axis=1), rtol=1e-6)
  bf = model_config_with(vocab_size=10, resnet_depth=18, dtype="bfloat16")
  patches, pooled = jax.eval_shape(VisualEncoder(bf).apply, variables, images)
  assert patches.dtype == pooled.dtype == jnp.bfloat16


def test_batchnorm_train_eval():
  """Train: batch stats normalise and running stats move by momentum 0.9; eval: running stats."""
  model = ResNet(depth=18)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 32, 32, 1))
  variables = conv_tv.convert_resnet_state_dict(_fake_state_dict(18), 18, in_channels=1)
  old_mean = variables["batch_stats"]["bn1"]["mean"]
  old_var = variables["batch_stats"]["bn1"]["var"]
  apply = model.apply  # eager: cheaper on the CPU than compiling three variants
  _, inter = apply(variables, x, train=True, mutable=("batch_stats", "intermediates"),
                   capture_intermediates=True)
  conv = np.asarray(inter["intermediates"]["conv1"]["__call__"][0], np.float64)
  bn_train = np.asarray(inter["intermediates"]["bn1"]["__call__"][0])
  scale = variables["params"]["bn1"]["scale"]
  bias = variables["params"]["bn1"]["bias"]
  mean, var = conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))
  np.testing.assert_allclose(bn_train, (conv - mean) / np.sqrt(var + 1e-5) * scale + bias,
                             atol=1e-4)
  stats = inter["batch_stats"]["bn1"]
  np.testing.assert_allclose(stats["mean"], 0.9 * old_mean + 0.1 * mean, atol=1e-5)
  np.testing.assert_allclose(stats["var"], 0.9 * old_var + 0.1 * var, rtol=1e-5)
  # Eval with the updated stats: normalised by the running statistics, nothing mutated.
  new_vars = {"params": variables["params"], "batch_stats": inter["batch_stats"]}
  _, inter = apply(new_vars, x, train=False, mutable=("intermediates",),
                   capture_intermediates=True)
  bn_eval = np.asarray(inter["intermediates"]["bn1"]["__call__"][0])
  ra_mean, ra_var = np.asarray(stats["mean"]), np.asarray(stats["var"])
  np.testing.assert_allclose(bn_eval, (conv - ra_mean) / np.sqrt(ra_var + 1e-5) * scale + bias,
                             atol=1e-4)
  # Frozen BN: train=True behaves as eval and needs no mutable collection.
  frozen = ResNet(depth=18, frozen_bn=True)
  np.testing.assert_allclose(frozen.apply(new_vars, x, train=True),
                             apply(new_vars, x, train=False), atol=1e-5, rtol=1e-5)


def test_prompt_fusion():
  patches = jnp.ones((2, 4, 512))
  off = model_config_with(vocab_size=10, resnet_depth=18)
  fusion = PromptFusion(off)
  variables = fusion.init(jax.random.PRNGKey(0), patches)
  assert not variables.get("params")
  assert fusion.apply(variables, patches) is patches
  with pytest.raises(ValueError, match="prompt_feature_dim == 0"):
    fusion.init(jax.random.PRNGKey(0), patches, jnp.ones((2, 3, 8)))

  on = model_config_with(vocab_size=10, resnet_depth=18, num_prompts=5, prompt_feature_dim=8)
  fusion = PromptFusion(on)
  feats = jnp.ones((2, 3, 8))
  variables = fusion.init(jax.random.PRNGKey(0), patches, feats)
  prompts = variables["params"]["prompts"]
  assert prompts.value.shape == (5, 512) and abs(float(prompts.value.std()) - 0.02) < 0.003
  out = fusion.apply(variables, patches, feats)
  assert out.shape == (2, 4 + 5 + 3, 512)
  np.testing.assert_array_equal(out[:, :4], patches)
  np.testing.assert_array_equal(out[0, 4:9], prompts.value)
  assert fusion.apply(variables, patches).shape == (2, 9, 512)  # prompts only
  with pytest.raises(ValueError, match="prompt_feature_dim"):
    fusion.apply(variables, patches, jnp.ones((2, 3, 7)))


def test_keyword_head():
  cfg = model_config_with(vocab_size=10, resnet_depth=18, num_keywords=48)
  head = KeywordHead(cfg, dropout_rate=0.5)
  pooled = jnp.ones((3, 512), jnp.bfloat16)
  variables = head.init(jax.random.PRNGKey(0), pooled)
  assert variables["params"]["classifier"]["kernel"].names == ("visual", "keywords")
  logits = head.apply(variables, pooled)
  assert logits.shape == (3, 48) and logits.dtype == jnp.float32
  dropped = head.apply(variables, pooled, deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
  assert not np.allclose(dropped, logits)


def _write_safetensors(path, tensors):
  """Hand-written safetensors: u64 LE header length, JSON header, concatenated raw data."""
  header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
  for name, (tag, array) in tensors.items():
    data = array.tobytes()
    header[name] = {"dtype": tag, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
    blobs.append(data)
    offset += len(data)
  head = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def test_safetensors_reader(tmp_path):
  rng = np.random.default_rng(0)
  f32 = rng.normal(size=(2, 3)).astype("<f4")
  f16 = rng.normal(size=(4,)).astype("<f2")
  bf16 = rng.normal(size=(3, 2)).astype(ml_dtypes.bfloat16)
  i64 = np.arange(5, dtype="<i8")
  path = tmp_path / "w.safetensors"
  _write_safetensors(path, {"a": ("F32", f32), "b": ("F16", f16), "c": ("BF16", bf16),
                            "n": ("I64", i64)})
  got = conv_tv.load_torch_weights(path)
  assert sorted(got) == ["a", "b", "c", "n"]
  np.testing.assert_array_equal(got["a"], f32)
  assert got["b"].dtype == np.float32 and got["c"].dtype == np.float32
  np.testing.assert_array_equal(got["b"], f16.astype(np.float32))
  np.testing.assert_array_equal(got["c"], bf16.astype(np.float32))
  np.testing.assert_array_equal(got["n"], i64)
  with pytest.raises(FileNotFoundError):
    conv_tv.load_torch_weights(tmp_path / "missing.safetensors")
  (tmp_path / "w.bin").write_bytes(b"x")
  with pytest.raises(ValueError, match="unknown weights format"):
    conv_tv.load_torch_weights(tmp_path / "w.bin")


def _fake_state_dict(depth, in_channels=3):
  """A torchvision-named state dict of the right shapes, built from the Flax shapes."""
  sd = {}
  rng = np.random.default_rng(0)
  for col, shapes in conv_tv.expected_shapes(depth, 1).items():
    for path, shape in shapes.items():
      mod, leaf = path[-2], path[-1]
      prefix = ".".join(path[0][len("layer"):].split("_")) if len(path) == 3 else ""
      prefix = f"layer{prefix}." if prefix else ""
      mod = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(mod, mod)
      if leaf == "kernel":
        kh, kw, cin, cout = shape
        cin = in_channels if (prefix == "" and mod == "conv1") else cin
        std = np.sqrt(2.0 / (kh * kw * cin))  # He scale: activations stay O(1) through the depth
        sd[f"{prefix}{mod}.weight"] = (rng.normal(size=(cout, cin, kh, kw)) * std).astype(np.float32)
      else:
        field = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
        sd[f"{prefix}{mod}.{field[leaf]}"] = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
        sd[f"{prefix}{mod}.num_batches_tracked"] = np.array(3)
  sd["fc.weight"] = np.zeros((1000, 512), np.float32)
  sd["fc.bias"] = np.zeros((1000,), np.float32)
  return sd


def test_converter_errors():
  sd = _fake_state_dict(18)
  converted = conv_tv.convert_resnet_state_dict(sd, 18, in_channels=1)
  np.testing.assert_allclose(converted["params"]["conv1"]["kernel"],
                             sd["conv1.weight"].sum(1, keepdims=True).transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(converted["batch_stats"]["layer2_0"]["downsample_bn"]["var"],
                                sd["layer2.0.downsample.1.running_var"])
  with pytest.raises(ValueError, match=r"layer9\.0\.conv1\.weight"):
    conv_tv.convert_resnet_state_dict({**sd, "layer9.0.conv1.weight": np.zeros(1)}, 18)
  with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.bias"):
    conv_tv.convert_resnet_state_dict({**sd, "layer1.0.conv1.bias": np.zeros(64)}, 18)
  missing = dict(sd)
  del missing["layer3.1.bn2.running_mean"]
  with pytest.raises(ValueError, match="unfilled.*batch_stats/layer3_1/bn2/mean"):
    conv_tv.convert_resnet_state_dict(missing, 18)
  bad = {**sd, "layer1.1.conv2.weight": np.zeros((64, 64, 1, 1), np.float32)}
  with pytest.raises(ValueError, match=r"layer1\.1\.conv2\.weight: shape \(64, 64, 1, 1\)"):
    conv_tv.convert_resnet_state_dict(bad, 18)
  with pytest.raises(ValueError, match="does not fit"):
    conv_tv.convert_resnet_state_dict(sd, 50)  # wrong depth: shapes/names do not fit


def _torch_resnet(depth):
  """A randomly initialised torch ResNet with torchvision's exact modules and state-dict names."""
  import torch  # pylint: disable=import-outside-toplevel
  torch.manual_seed(depth)
  net = torch_resnet.torchvision_resnet_class()(depth)
  randomize_batchnorm(net)
  return net.eval()


def randomize_batchnorm(net) -> None:
  """Non-trivial BatchNorm in a torch module, so that a swapped mean/var or scale/bias shows up."""
  import torch  # pylint: disable=import-outside-toplevel
  from torch import nn as tnn  # pylint: disable=import-outside-toplevel
  with torch.no_grad():
    for m in net.modules():
      if isinstance(m, tnn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.1)
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 1.5)


@pytest.mark.parametrize("depth", [18, 50])
def test_matches_torch(depth):
  torch = pytest.importorskip("torch", reason="torch not installed: torchvision parity skipped")
  net = _torch_resnet(depth)
  sd = {k: v.numpy() for k, v in net.state_dict().items()}
  rgb = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
  gray = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
  with torch.no_grad():
    ref_rgb = net.features(rgb).permute(0, 2, 3, 1).numpy()
    ref_gray = net.features(gray.expand(-1, 3, -1, -1)).permute(0, 2, 3, 1).numpy()
  for channels, image, ref in ((3, rgb, ref_rgb), (1, gray, ref_gray)):
    variables = conv_tv.convert_resnet_state_dict(sd, depth, in_channels=channels)
    x = jnp.asarray(image.permute(0, 2, 3, 1).numpy())
    out = jax.jit(ResNet(depth=depth, in_channels=channels).apply)(variables, x)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_torch_files_round_trip(tmp_path):
  torch = pytest.importorskip("torch", reason="torch not installed: .pth reading skipped")
  sd = {"conv1.weight": torch.randn(64, 3, 7, 7), "bn1.num_batches_tracked": torch.tensor(7),
        "half": torch.randn(3).half(), "brain": torch.randn(2, 2).bfloat16()}
  torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in sd.items()}},
             tmp_path / "w.pth")
  got = conv_tv.load_torch_weights(tmp_path / "w.pth")
  assert sorted(got) == sorted(sd)
  for k, v in sd.items():
    np.testing.assert_array_equal(got[k], v.float().numpy() if v.is_floating_point() else v.numpy())
  assert got["half"].dtype == got["brain"].dtype == np.float32
  try:
    from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel
  except ImportError:
    return  # safetensors not installed: the hand-written file test covers the reader
  save_file(sd, str(tmp_path / "w.safetensors"))
  got = conv_tv.load_torch_weights(tmp_path / "w.safetensors")
  for k, v in sd.items():
    np.testing.assert_array_equal(got[k], v.float().numpy() if v.is_floating_point() else v.numpy())
