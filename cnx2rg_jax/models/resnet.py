"""ResNet-18/34/50/101 in Flax linen, torchvision's architecture up to layer4, and the visual encoder.

Architecture (identical to torchvision's `resnet{18,34,50,101}`, v1.5): conv1 7x7/2 (padding 3,
no bias), bn1, relu, max-pool 3x3/2 (padding 1), layer1..layer4; no average pool and no fc. Bottleneck
blocks put the stride on their 3x3 conv (v1.5), and a block gets a 1x1 conv + BN shortcut
("downsample") when its stride is not 1 or its width changes. Padding is explicit (never 'SAME'), so
a stride-2 conv pads both sides as PyTorch does and converted weights give the same numbers.

Module names mirror torchvision's state-dict names so that `convert_torchvision` is a plain renaming:
`conv1`, `bn1`, `layer{i}_{j}` (torchvision `layer{i}.{j}`), and inside a block `conv1`..`conv3`,
`bn1`..`bn3`, `downsample_conv`, `downsample_bn` (torchvision `downsample.0`, `downsample.1`).

Grayscale: the stem conv takes `in_channels` input channels; our radiographs are 1-channel, so the
encoder uses `in_channels=1` and never replicates the image to RGB. A pretrained 3-channel stem is
converted to 1 channel by SUMMING its filters over the RGB axis: for a gray image g replicated to
(g, g, g), sum_c W[..., c] * g == (sum_c W[..., c]) * g, so the 1-channel conv's output equals the
3-channel conv's output on the replicated image exactly (see `convert_torchvision`).

BatchNorm: `use_running_average = not train`. In training the batch statistics normalise and the
running statistics (collection 'batch_stats', which must then be mutable) are updated with Flax
momentum 0.9 (= torchvision momentum 0.1); in eval the running statistics are used; epsilon 1e-5.
One small difference from PyTorch: Flax folds the biased batch variance into the running variance,
PyTorch the unbiased one (a factor n/(n-1), n = B*H*W, negligible at these sizes).
`frozen_bn=True` always normalises with the running statistics and never updates them (train or
not): the usual choice when fine-tuning pretrained weights with small per-device batches, where
batch statistics are noisy. The BN scale/bias remain parameters; freeze them in the optimizer if
wanted.

Parameters are float32; computation runs in `dtype` (BN statistics are reduced in float32).
Kernels carry logical axis names for sharding: conv ('conv_h', 'conv_w', 'conv_in', 'conv_out'),
BN scale/bias ('conv_out',).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from cnx2rg_jax.models.config import ModelConfig

# depth -> (block kind, blocks per stage), torchvision's table.
RESNET_LAYERS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}
STAGE_WIDTHS = (64, 128, 256, 512)  # torchvision's, at base width 64
BOTTLENECK_EXPANSION = 4
CONV_AXES = ("conv_h", "conv_w", "conv_in", "conv_out")
BN_AXES = ("conv_out",)

# torchvision initialises convs with kaiming_normal(mode='fan_out', nonlinearity='relu').
_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class PointwiseConv(nn.Module):
  """A bias-free 1x1 conv with `stride`, computed as a matrix product over the channels.

  Same parameter as nn.Conv's ('kernel' [1, 1, Cin, Cout], same init and axes), so converted
  weights and checkpoints load unchanged. Why: XLA:CPU runs 1x1 convolutions, and above all
  their backward pass, several times slower than the same contraction as a product; a strided
  1x1 conv (padding 0) is the product on every `stride`-th pixel.
  """
  features: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.with_logical_partitioning(_conv_init, CONV_AXES),
                        (1, 1, x.shape[-1], self.features), jnp.float32)
    if self.stride != 1:
      x = x[:, ::self.stride, ::self.stride, :]
    return jnp.einsum("bhwc,co->bhwo", x.astype(self.dtype), kernel[0, 0].astype(self.dtype))


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str) -> nn.Module:
  """A bias-free kernel x kernel conv with torch's symmetric padding (kernel - 1) // 2."""
  if kernel == 1:
    return PointwiseConv(features, stride, dtype, name=name)
  pad = (kernel - 1) // 2
  return nn.Conv(
      features, (kernel, kernel), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
      use_bias=False, dtype=dtype, param_dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(_conv_init, CONV_AXES), name=name)


def _bn(use_running_average: bool, dtype: Any, name: str) -> nn.BatchNorm:
  """BatchNorm with torchvision's momentum (0.1 there = 0.9 here) and epsilon."""
  return nn.BatchNorm(
      use_running_average=use_running_average, momentum=0.9, epsilon=1e-5, dtype=dtype,
      param_dtype=jnp.float32,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones, BN_AXES),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, BN_AXES), name=name)


class BasicBlock(nn.Module):
  """torchvision BasicBlock: 3x3 (stride) -> BN -> relu -> 3x3 -> BN, + shortcut, relu."""
  planes: int
  stride: int = 1
  use_running_average: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    ura, dt = self.use_running_average, self.dtype
    y = nn.relu(_bn(ura, dt, "bn1")(_conv(self.planes, 3, self.stride, dt, "conv1")(x)))
    y = _bn(ura, dt, "bn2")(_conv(self.planes, 3, 1, dt, "conv2")(y))
    if self.stride != 1 or x.shape[-1] != self.planes:
      x = _bn(ura, dt, "downsample_bn")(_conv(self.planes, 1, self.stride, dt, "downsample_conv")(x))
    return nn.relu(y + x)


class Bottleneck(nn.Module):
  """torchvision Bottleneck (v1.5): 1x1 -> 3x3 (stride) -> 1x1 (x4 width), BN after each, + shortcut."""
  planes: int
  stride: int = 1
  use_running_average: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    ura, dt = self.use_running_average, self.dtype
    out = self.planes * BOTTLENECK_EXPANSION
    y = nn.relu(_bn(ura, dt, "bn1")(_conv(self.planes, 1, 1, dt, "conv1")(x)))
    y = nn.relu(_bn(ura, dt, "bn2")(_conv(self.planes, 3, self.stride, dt, "conv2")(y)))
    y = _bn(ura, dt, "bn3")(_conv(out, 1, 1, dt, "conv3")(y))
    if self.stride != 1 or x.shape[-1] != out:
      x = _bn(ura, dt, "downsample_bn")(_conv(out, 1, self.stride, dt, "downsample_conv")(x))
    return nn.relu(y + x)


class ResNet(nn.Module):
  """torchvision ResNet-`depth` up to layer4.

  `__call__(x, train)` takes NHWC float images with `in_channels` channels and returns the layer4
  feature map [B, ceil(H/32), ceil(W/32), C] (C = 512 for depths 18/34, 2048 for 50/101) in `dtype`.
  `width` is the stem's channel count (torchvision: 64); every stage scales with it, so C scales too.
  With `train=True` and `frozen_bn=False`, the 'batch_stats' collection must be mutable.
  """
  depth: int = 101
  in_channels: int = 1
  width: int = 64
  dtype: Any = jnp.float32
  frozen_bn: bool = False

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.depth not in RESNET_LAYERS:
      raise ValueError(f"ResNet depth {self.depth}; choose one of {sorted(RESNET_LAYERS)}")
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"ResNet expects NHWC images with {self.in_channels} channel(s); "
                       f"got shape {x.shape}")
    kind, blocks = RESNET_LAYERS[self.depth]
    block_cls = BasicBlock if kind == "basic" else Bottleneck
    ura = self.frozen_bn or not train
    x = jnp.asarray(x, self.dtype)
    scale = lambda c: c * self.width // STAGE_WIDTHS[0]  # noqa: E731
    x = _conv(scale(64), 7, 2, self.dtype, "conv1")(x)
    x = nn.relu(_bn(ura, self.dtype, "bn1")(x))
    # nn.max_pool pads with -inf, as torch's MaxPool2d(3, 2, padding=1) does.
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, (planes, n) in enumerate(zip(STAGE_WIDTHS, blocks)):
      for j in range(n):
        stride = 2 if (stage > 0 and j == 0) else 1
        x = block_cls(scale(planes), stride, ura, self.dtype, name=f"layer{stage + 1}_{j}")(x)
    return x


# ImageNet's RGB statistics (torchvision's Normalize in R2Gen) and the input pipeline's gray ones
# (data.normalization="imagenet", cnx2rg_jax/data/transforms.py), all on [0, 1] pixel values.
IMAGENET_RGB_MEAN = (0.485, 0.456, 0.406)
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)
IMAGENET_GRAY_MEAN, IMAGENET_GRAY_STD = 0.449, 0.226


def gray_imagenet_to_rgb(images):
  """[..., 1] gray images normalised with the ImageNet gray statistics -> [..., 3] float32:
  each channel c = (pixel - mean_c) / std_c, what torchvision's ToTensor + Normalize give a gray
  image opened as RGB (R = G = B = pixel)."""
  pixels = images.astype(jnp.float32) * IMAGENET_GRAY_STD + IMAGENET_GRAY_MEAN
  mean = jnp.asarray(IMAGENET_RGB_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_RGB_STD, jnp.float32)
  return (pixels - mean) / std


class VisualEncoder(nn.Module):
  """Grayscale radiographs -> ResNet patch features (R2Gen's visual extractor, minus its avgpool).

  `__call__(images, train)`: images [B, H, W, 1] float (already normalised by the input pipeline)
  -> (patch_features [B, K, d_vf], pooled [B, d_vf]) with K = (H/32)*(W/32), d_vf =
  `config.d_vf`, pooled = mean over the K patches; both in `config.compute_dtype`. The backbone
  is the submodule `resnet` (its variables are what `convert_torchvision` produces).

  Several views [B, V, H, W, 1], V = `config.num_views` (R2Gen's IU X-Ray: frontal and lateral;
  a model with V > 1 refuses one-view input): the same ResNet runs on
  every view and the patch features are concatenated along the token axis in view order,
  [B, V * K, d_vf], as R2Gen's forward_iu_xray does; pooled is the mean over all V * K patches,
  i.e. the mean of the views' pooled features (R2Gen concatenates its pooled features instead,
  but only their shape reaches its decoder; ours feed the keyword head).

  `config.r2gen_rgb_stem`: the stem is torchvision's 3-channel one, fed `gray_imagenet_to_rgb`.
  """
  config: ModelConfig
  frozen_bn: bool = False

  @nn.compact
  def __call__(self, images, train: bool = False):
    cfg = self.config
    views = None
    if images.ndim == 5 and images.shape[1] == cfg.num_views:
      views = images.shape[1]
      images = images.reshape((-1,) + images.shape[2:])
    elif not (images.ndim == 4 and cfg.num_views == 1):
      want = ("[B, H, W, 1] (or [B, 1, H, W, 1])" if cfg.num_views == 1
              else f"[B, {cfg.num_views}, H, W, 1]")
      raise ValueError(f"this model (model.num_views={cfg.num_views}) takes images {want}; got "
                       f"shape {images.shape}")
    in_channels = 1
    if cfg.r2gen_rgb_stem:
      if images.shape[-1] != 1:
        raise ValueError(f"r2gen_rgb_stem takes one-channel images; got shape {images.shape}")
      images, in_channels = gray_imagenet_to_rgb(images), 3
    fmap = ResNet(depth=cfg.resnet_depth, in_channels=in_channels, width=cfg.resnet_width,
                  dtype=cfg.compute_dtype,
                  frozen_bn=self.frozen_bn, name="resnet")(images, train=train)
    b, h, w, c = fmap.shape
    patches = fmap.reshape(b, h * w, c)
    if views is not None:
      patches = patches.reshape(b // views, views * h * w, c)
    # Mean in float32 so a bf16 run does not lose precision summing many patches.
    pooled = jnp.mean(patches.astype(jnp.float32), axis=1).astype(patches.dtype)
    return patches, pooled
