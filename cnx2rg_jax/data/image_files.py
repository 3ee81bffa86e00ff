"""Reads the user's image files for `launch.py --mode=predict --images=A.png,B.dcm,DIR/`.

`expand_paths` turns the given files and folders into one `ImageJob` per image, `read_image`
decodes one PNG, JPEG or DICOM file into a 2-D uint8 array, and `read_images` runs the jobs in
order. A problem with one file (missing, not an image, truncated, too large, an undecodable
DICOM) is reported for that file, with its path, and the others go on.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from typing import Iterator, Optional, Sequence

import numpy as np
import pydicom
import pydicom.pixels
from PIL import Image
from pydicom import uid as dicom_uid
from pydicom.dataset import FileMetaDataset

from cnx2rg_jax.errors import UserError
from tfds_cncxr.release import rescale_to_uint8

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")
MAX_PIXELS = 100_000_000  # per image (one frame); more is refused as a possible decompression bomb

_DICM_OFFSET = 128  # PS3.10 7.1: a 128-byte preamble, then b"DICM"
_PIL_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG
_DEFER_SIZE = "1 MB"  # DICOM values larger than this are read only when used
_FIX_FORMAT = "give a PNG, JPEG or DICOM image instead"
_FIX_DICOM = "export the study again as an uncompressed MONOCHROME2 DICOM, PNG or JPEG"
# PIL's 'L' weights (ITU-R 601-2 luma), for colour DICOM wider than 8 bits.
_LUMA = np.array([0.299, 0.587, 0.114])


class ImageReadError(UserError):
  """One image file is unusable. The message names the file, the problem and what to do."""

  def __init__(self, path, reason: str, fix: str = _FIX_FORMAT):
    self.path, self.reason, self.fix = str(path), reason, fix
    super().__init__(f"cannot read image {self.path!r}: {reason}. To fix: {fix}.")

  def __reduce__(self):  # pickles with its fields, so it survives worker processes intact
    return functools.partial(ImageReadError, fix=self.fix), (self.path, self.reason)


@dataclasses.dataclass(frozen=True)
class ImageJob:
  """One file to read; `error` (a full message naming the path) when it is known to be unusable."""
  path: str
  error: Optional[str] = None


def _has_image_suffix(name: str) -> bool:
  return name.lower().endswith(IMAGE_SUFFIXES)


def _folder_images(folder: str) -> list[str]:
  """Files with IMAGE_SUFFIXES under `folder`, recursively, sorted by path components."""
  found = []
  for root, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    rel = os.path.relpath(root, folder)
    parts = () if rel == os.curdir else tuple(rel.split(os.sep))
    found += [parts + (f,) for f in files if not f.startswith(".") and _has_image_suffix(f)]
  return [os.path.join(folder, *parts) for parts in sorted(found)]


def expand_paths(paths: Sequence[str]) -> list[ImageJob]:
  """One ImageJob per image, in the order given; folders expanded in place.

  A file is taken as given, whatever its suffix: one that is not an image fails when read. A
  folder is walked recursively (symlinked folders are not followed) and yields its files whose
  suffix is in IMAGE_SUFFIXES, any case, sorted by path; other files, including DICOM files
  without a .dcm or .dicom suffix, and hidden files and folders (names starting with '.') are
  left out. A path that does not exist, or a folder without images, becomes one job carrying an
  error, so the rest still run. Nothing is deduplicated.
  """
  jobs = []
  for path in paths:
    path = str(path)
    if not path:
      jobs.append(ImageJob(path, str(ImageReadError(
          path, "empty path", "remove the stray comma or empty entry from the list of images"))))
    elif os.path.isdir(path):
      images = _folder_images(path)
      jobs += [ImageJob(p) for p in images] or [ImageJob(path, str(ImageReadError(
          path, f"folder holds no image files (suffixes {', '.join(IMAGE_SUFFIXES)}; hidden "
          "files are skipped)", "point at a folder of images, or name the files")))]
    elif os.path.exists(path):
      jobs.append(ImageJob(path))
    else:
      jobs.append(ImageJob(path, str(ImageReadError(path, "no such file or folder",
                                                    "check the path"))))
  return jobs


def read_image(path) -> np.ndarray:
  """A PNG, JPEG or DICOM file -> 2-D uint8 grayscale array; ImageReadError on any failure.

  The content decides, then the suffix: b"DICM" at bytes 128..132 means DICOM and a PNG or JPEG
  signature means PIL, whatever the suffix; other files named .dcm or .dicom are tried as DICOM
  without the marker, and anything else must be a PNG or JPEG. Images over MAX_PIXELS pixels are
  refused before decoding. See `_read_pil` and `_read_dicom` for how pixels become gray levels.
  """
  path = str(path)
  if os.path.isdir(path):
    raise ImageReadError(path, "is a folder", "name image files, or pass the folder to "
                         "expand_paths")
  try:
    with open(path, "rb") as f:
      head = f.read(_DICM_OFFSET + 4)
  except FileNotFoundError:
    raise ImageReadError(path, "no such file", "check the path") from None
  except OSError as e:
    raise ImageReadError(path, f"cannot open the file ({e})", "check the path and its "
                         "permissions") from None
  if not head:
    raise ImageReadError(path, "the file is empty (0 bytes), not a PNG, JPEG or DICOM image")
  if head[_DICM_OFFSET:] == b"DICM":
    arr = _read_dicom(path, has_marker=True)
  elif path.lower().endswith(DICOM_SUFFIXES) and not head.startswith(_PIL_SIGNATURES):
    arr = _read_dicom(path, has_marker=False)
  else:
    arr = _read_pil(path)
  if arr.ndim != 2 or arr.size == 0 or arr.dtype != np.uint8:
    raise ImageReadError(path, f"decoded to {arr.dtype} {arr.shape}, not a 2-D gray image")
  return np.ascontiguousarray(arr)


def read_images(jobs: Sequence[ImageJob]
                ) -> Iterator[tuple[str, Optional[np.ndarray], Optional[str]]]:
  """(path, image, None) or (path, None, error message) per job, in order; never raises for one
  file's problem."""
  for job in jobs:
    if job.error is not None:
      yield job.path, None, job.error
      continue
    try:
      image = read_image(job.path)
    except ImageReadError as e:
      yield job.path, None, str(e)
    except Exception as e:  # noqa: BLE001 -- an unforeseen failure still stays with its file
      yield job.path, None, str(ImageReadError(job.path, f"{type(e).__name__}: {e}"))
    else:
      yield job.path, image, None


def _check_pixels(path: str, width: int, height: int, fix: str) -> None:
  if width * height > MAX_PIXELS:
    raise ImageReadError(path, f"{width}x{height} = {width * height} pixels exceeds the limit "
                         f"MAX_PIXELS = {MAX_PIXELS} (refused as a possible decompression bomb)",
                         fix)


def _read_pil(path: str) -> np.ndarray:
  """PNG or JPEG via PIL.

  8-bit gray as is; 16-bit gray rescaled from its own [min, max] (as tfds_cncxr.release does);
  colour, palette and alpha modes by PIL's 'L' luminance (alpha ignored). EXIF orientation is not
  applied, as in training. Truncated files fail (LOAD_TRUNCATED_IMAGES is left False). MAX_PIXELS
  is checked before decoding, and PIL's decompression-bomb warnings become errors, so the smaller
  of MAX_PIXELS and PIL's global Image.MAX_IMAGE_PIXELS (about 89.5M by default) applies here.
  """
  fix = "replace it with a valid PNG, JPEG or DICOM image"
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      with Image.open(path, formats=("PNG", "JPEG")) as im:
        _check_pixels(path, im.width, im.height, "downscale the image first")
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
          return rescale_to_uint8(np.asarray(im))
        return np.array(im if im.mode == "L" else im.convert("L"), dtype=np.uint8)
  except ImageReadError:
    raise
  except Image.UnidentifiedImageError:
    raise ImageReadError(path, "not a PNG, JPEG or DICOM image") from None
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise ImageReadError(path, f"refused as a possible decompression bomb ({e})",
                         "downscale the image first") from None
  except Exception as e:  # noqa: BLE001 -- any decoder failure (truncation included)
    raise ImageReadError(path, f"cannot decode the image ({type(e).__name__}: {e})", fix) from None


def _read_dicom(path: str, has_marker: bool) -> np.ndarray:
  """DICOM via pydicom: frame 0, Modality LUT, VOI LUT or window, MONOCHROME1 inverted.

  Gray data: the Modality LUT or rescale slope/intercept first, then the VOI LUT Sequence or,
  without one, the first Window Center/Width (PS3.3 C.11.2.1.2), mapped onto 0..255 as if 0..255
  were the output range. A VOI LUT's output is stretched from its own smallest to largest entry
  (LUT Descriptors often claim 16 bits for 12-bit entries); without any VOI the image's own
  [min, max] is used. MONOCHROME1 is inverted last, so bone is bright as in MONOCHROME2. Colour
  (RGB, YBR as converted by pydicom) becomes luminance. Compressed transfer syntaxes decode only
  where an installed pydicom decoder plugin handles them. A file without the DICM marker (only
  tried for its suffix) is read leniently and must hold pixel data.
  """
  try:
    with warnings.catch_warnings():
      if not has_marker:  # lenient parsing of a non-DICOM file warns about nonsense; skip that
        warnings.simplefilter("ignore")
      ds = pydicom.dcmread(path, force=not has_marker, defer_size=_DEFER_SIZE)
  except Exception as e:  # noqa: BLE001 -- any parser failure
    if not has_marker:
      raise ImageReadError(path, "not a PNG, JPEG or DICOM image") from None
    raise ImageReadError(path, f"cannot parse the DICOM file ({type(e).__name__}: {e})",
                         _FIX_DICOM) from None
  if "PixelData" not in ds:
    if not has_marker:
      raise ImageReadError(path, "not a PNG, JPEG or DICOM image (no DICM marker, and no "
                           "pixel data when read as DICOM)")
    raise ImageReadError(path, "the DICOM file has no Pixel Data (7FE0,0010) element, so it "
                         "holds no image (a report, presentation state or other object?)",
                         "give the DICOM image itself")
  _ensure_transfer_syntax(ds)
  tsyntax = ds.file_meta.TransferSyntaxUID
  try:
    decoder = pydicom.pixels.get_decoder(tsyntax)
  except NotImplementedError:
    raise ImageReadError(path, f"pydicom cannot decode pixel data in the transfer syntax "
                         f"{tsyntax.name!r} ({tsyntax})", _FIX_DICOM) from None
  if not decoder.is_available:
    needs = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
    raise ImageReadError(path, f"the pixel data is compressed with transfer syntax "
                         f"{tsyntax.name!r} ({tsyntax}), which needs a pydicom decoder plugin "
                         f"that is not installed (options: {needs})",
                         f"install one, e.g. pip install pylibjpeg pylibjpeg-libjpeg "
                         f"pylibjpeg-openjpeg, or {_FIX_DICOM}")
  rows, cols = ds.get("Rows"), ds.get("Columns")
  if not rows or not cols:
    raise ImageReadError(path, f"the DICOM file has Rows={rows!r}, Columns={cols!r}", _FIX_DICOM)
  _check_pixels(path, int(cols), int(rows), "downscale the image first")
  pi = str(ds.get("PhotometricInterpretation", "")).strip().upper()
  try:
    arr = pydicom.pixels.pixel_array(ds, index=0)
    if pi in ("MONOCHROME1", "MONOCHROME2") and arr.ndim == 2:
      out = _dicom_gray(path, arr, ds)
      return 255 - out if pi == "MONOCHROME1" else out
    if (pi == "RGB" or pi.startswith("YBR")) and arr.ndim == 3 and arr.shape[-1] == 3:
      return _dicom_colour(arr, int(ds.get("BitsStored") or arr.dtype.itemsize * 8))
  except ImageReadError:
    raise
  except Exception as e:  # noqa: BLE001 -- any decoder or LUT failure
    raise ImageReadError(path, f"cannot decode the DICOM pixel data ({type(e).__name__}: {e})",
                         _FIX_DICOM) from None
  raise ImageReadError(path, f"photometric interpretation {pi!r} with decoded shape "
                       f"{arr.shape} is not supported (MONOCHROME1, MONOCHROME2, RGB and YBR are)",
                       _FIX_DICOM)


def _ensure_transfer_syntax(ds) -> None:
  """Gives a dataset read without file meta the transfer syntax it was parsed with."""
  meta = getattr(ds, "file_meta", None)
  if meta is not None and meta.get("TransferSyntaxUID"):
    return
  implicit, little = ds.original_encoding
  ds.file_meta = meta if meta is not None else FileMetaDataset()
  ds.file_meta.TransferSyntaxUID = (
      dicom_uid.ExplicitVRBigEndian if little is False else
      dicom_uid.ImplicitVRLittleEndian if implicit is not False else
      dicom_uid.ExplicitVRLittleEndian)


def _dicom_gray(path: str, arr: np.ndarray, ds) -> np.ndarray:
  """Stored gray values -> uint8 by Modality LUT then VOI (see `_read_dicom`), before any
  MONOCHROME1 inversion."""
  values = pydicom.pixels.apply_modality_lut(arr, ds)
  if values.dtype.kind == "f" and not np.isfinite(values).all():
    raise ImageReadError(path, "the Modality LUT gave non-finite values", _FIX_DICOM)
  voi_lut = ds.get("VOILUTSequence")
  if voi_lut and "LUTDescriptor" in voi_lut[0] and "LUTData" in voi_lut[0]:
    count, first = int(voi_lut[0].LUTDescriptor[0]) or 2**16, int(voi_lut[0].LUTDescriptor[1])
    # Inputs outside the LUT take its end entries (PS3.3 C.11.2.1.1); clipping here also keeps
    # pydicom's uint16 index arithmetic from wrapping.
    values = np.clip(np.rint(values), first, first + count - 1).astype(np.int64)
    table = pydicom.pixels.apply_voi_lut(np.arange(first, first + count), ds)
    return _linear_to_uint8(pydicom.pixels.apply_voi_lut(values, ds), table.min(), table.max())
  if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
    try:  # the outputs below and above the window bound its range: they map to 0 and 255
      low, high = pydicom.pixels.apply_voi_lut(np.array([-np.inf, np.inf]), ds)
      windowed = pydicom.pixels.apply_voi_lut(values, ds)
    except ValueError as e:  # e.g. Window Width < 1 for LINEAR
      raise ImageReadError(path, f"unusable VOI window: {e}", _FIX_DICOM) from None
    return _linear_to_uint8(windowed, low, high)
  if values.dtype.kind in "iub":
    return rescale_to_uint8(values)
  return _linear_to_uint8(values, values.min(), values.max())


def _linear_to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
  """Maps `low` -> 0 and `high` -> 255 linearly (`high` < `low` inverts), clipped, rounding halves
  up; zeros if low == high."""
  if high == low:
    return np.zeros(values.shape, np.uint8)
  scaled = (np.asarray(values, np.float64) - float(low)) * (255.0 / (float(high) - float(low)))
  return np.clip(np.floor(scaled + 0.5), 0, 255).astype(np.uint8)


def _dicom_colour(rgb: np.ndarray, bits_stored: int) -> np.ndarray:
  """RGB -> luminance: PIL's 'L' conversion for 8-bit, the same weights scaled to 0..255 for
  wider samples."""
  if rgb.dtype == np.uint8:
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("L"))
  luma = rgb.astype(np.float64) @ _LUMA
  return _linear_to_uint8(luma, 0.0, 2.0**bits_stored - 1)
