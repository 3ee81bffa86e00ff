"""The one resize of the project's radiographs, shared by the release build (which stores images
at the training resize), the input pipeline and --mode=predict, so that every image reaches the
model scaled the same way."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_gray(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W) -> uint8 (size, size) by PIL's bilinear resize (R2Gen's Resize((size, size)):
  the aspect ratio is not kept); returned as is when already that size."""
  if image.dtype != np.uint8 or image.ndim != 2:
    raise ValueError(f"expected a 2-D uint8 gray image, got {image.dtype} {image.shape}")
  if image.shape == (size, size):
    return image
  resized = Image.fromarray(np.ascontiguousarray(image)).resize((size, size), Image.BILINEAR)
  return np.asarray(resized, dtype=np.uint8)
