"""Tests for cnx2rg_jax.data.image_files (reading user images for --mode=predict).

DICOM expectations are re-derived here in NumPy from the standard's formulas rather than taken
from pydicom: rescale slope/intercept (PS3.3 C.11.1.1.2), the LINEAR window (C.11.2.1.2.1) with
0..255 as its output range, a VOI LUT (C.11.2.1.1), and MONOCHROME1 as inverted MONOCHROME2.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread, uid
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence as DicomSequence

from cnx2rg_jax.data import image_files
from cnx2rg_jax.data.image_files import ImageJob, ImageReadError, expand_paths, read_image
from tests.helpers.dicom_files import write_dicom as _write_dicom

RNG = np.random.default_rng(7)
GRAY8 = RNG.integers(0, 256, (24, 20), dtype=np.uint8)
GRAY16 = RNG.integers(300, 4000, (24, 20)).astype(np.uint16)  # 12-bit data, 16-bit container
RGB8 = RNG.integers(0, 256, (24, 20, 3), dtype=np.uint8)
STORED12 = RNG.integers(0, 4096, (30, 26)).astype(np.uint16)
SIGNED = RNG.integers(-2000, 2001, (30, 26)).astype(np.int16)


def _window_reference(x: np.ndarray, center: float, width: float) -> np.ndarray:
  """PS3.3 C.11.2.1.2.1 LINEAR with y_min = 0, y_max = 255, rounded."""
  x = x.astype(np.float64)
  y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0
  y[x <= center - 0.5 - (width - 1) / 2] = 0.0
  y[x > center - 0.5 + (width - 1) / 2] = 255.0
  return np.floor(y + 0.5).astype(np.uint8)


def _minmax_reference(x: np.ndarray) -> np.ndarray:
  x = x.astype(np.float64)
  return np.floor((x - x.min()) * 255.0 / (x.max() - x.min()) + 0.5).astype(np.uint8)


def _assert_close(actual: np.ndarray, expected: np.ndarray, tol: int = 1):
  assert actual.dtype == np.uint8 and actual.shape == expected.shape
  assert np.abs(actual.astype(int) - expected.astype(int)).max() <= tol


# DICOM gray levels


@pytest.mark.parametrize("slope,intercept,center,width", [
    (1.0, 0.0, 2000.0, 1500.0),
    (0.5, -100.0, 700.0, 1200.0),
    (-1.0, 4095.0, 2000.0, 1500.0),  # a negative slope: output still rises with x
])
def test_dicom_window_matches_standard(tmp_path, slope, intercept, center, width):
  path = _write_dicom(tmp_path / "w.dcm", STORED12, RescaleSlope=slope,
                      RescaleIntercept=intercept, WindowCenter=center, WindowWidth=width)
  expected = _window_reference(STORED12 * slope + intercept, center, width)
  got = read_image(path)
  _assert_close(got, expected)
  assert 0 < (got == 0).sum() < got.size and 0 < (got == 255).sum() < got.size  # both clip


def test_dicom_monochrome1_is_inverted(tmp_path):
  window = dict(WindowCenter=1800.0, WindowWidth=2000.0, RescaleSlope=1.0, RescaleIntercept=0.0)
  mono2 = read_image(_write_dicom(tmp_path / "m2.dcm", STORED12, **window))
  mono1 = read_image(_write_dicom(tmp_path / "m1.dcm", STORED12, "MONOCHROME1", **window))
  _assert_close(mono1, 255 - _window_reference(STORED12, 1800.0, 2000.0))
  _assert_close(mono1, 255 - mono2)


def test_dicom_first_of_several_windows(tmp_path):
  path = _write_dicom(tmp_path / "w2.dcm", STORED12, WindowCenter=[1000.0, 3000.0],
                      WindowWidth=[800.0, 400.0])
  _assert_close(read_image(path), _window_reference(STORED12, 1000.0, 800.0))


def test_dicom_signed_without_window_uses_min_max(tmp_path):
  path = _write_dicom(tmp_path / "s.dcm", SIGNED, bits_stored=16)
  _assert_close(read_image(path), _minmax_reference(SIGNED), tol=0)


def test_dicom_signed_with_rescale_and_window(tmp_path):
  path = _write_dicom(tmp_path / "sw.dcm", SIGNED, bits_stored=16, RescaleSlope=2.0,
                      RescaleIntercept=10.0, WindowCenter=100.0, WindowWidth=3000.0)
  _assert_close(read_image(path), _window_reference(SIGNED * 2.0 + 10.0, 100.0, 3000.0))


def test_dicom_voi_lut_sequence(tmp_path):
  first, count = 500, 3000  # inputs below 500 take entry 0, above 3499 the last entry
  table = (200 + np.sqrt(np.arange(count) / (count - 1)) * 3000).astype(np.uint16)
  item = Dataset()
  item.add_new(0x00283002, "US", [count, first, 16])  # LUT Descriptor
  item.add_new(0x00283006, "US", table.tolist())  # LUT Data
  path = _write_dicom(tmp_path / "lut.dcm", STORED12, VOILUTSequence=DicomSequence([item]),
                      WindowCenter=100.0, WindowWidth=10.0)  # the LUT wins over the window
  looked_up = table[np.clip(STORED12.astype(int) - first, 0, count - 1)].astype(np.float64)
  # Stretched from the table's own smallest to largest entry, not from 0..2**16 - 1.
  expected = np.floor((looked_up - 200) * 255.0 / (table.max() - 200) + 0.5).astype(np.uint8)
  _assert_close(read_image(path), expected)


def test_dicom_multiframe_takes_frame_zero(tmp_path):
  frames = np.stack([STORED12, 4095 - STORED12, STORED12 // 2])
  path = _write_dicom(tmp_path / "mf.dcm", frames)
  _assert_close(read_image(path), _minmax_reference(STORED12), tol=0)


def test_dicom_rgb_by_luminance(tmp_path):
  path = _write_dicom(tmp_path / "rgb.dcm", RGB8, "RGB", bits_stored=8)
  expected = np.asarray(Image.fromarray(RGB8, "RGB").convert("L"))
  np.testing.assert_array_equal(read_image(path), expected)


def test_dicom_found_by_marker_whatever_the_suffix(tmp_path):
  for name in ("no_suffix", "looks_like.png"):
    path = _write_dicom(tmp_path / name, STORED12)
    _assert_close(read_image(path), _minmax_reference(STORED12), tol=0)


# PNG and JPEG


def test_png_named_dcm_is_read_by_its_signature(tmp_path):
  Image.fromarray(GRAY8).save(tmp_path / "mislabelled.dcm", format="PNG")
  np.testing.assert_array_equal(read_image(tmp_path / "mislabelled.dcm"), GRAY8)


def test_png_gray8_round_trip_exact(tmp_path):
  Image.fromarray(GRAY8).save(tmp_path / "g8.png")
  np.testing.assert_array_equal(read_image(tmp_path / "g8.png"), GRAY8)


def test_png_gray16_rescaled_by_min_max(tmp_path):
  Image.fromarray(GRAY16).save(tmp_path / "g16.png")
  np.testing.assert_array_equal(read_image(tmp_path / "g16.png"), _minmax_reference(GRAY16))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA"])
def test_png_colour_by_pil_luminance(tmp_path, mode):
  im = Image.fromarray(RGB8, "RGB").convert(mode)
  im.save(tmp_path / "c.png")
  np.testing.assert_array_equal(read_image(tmp_path / "c.png"), np.asarray(im.convert("L")))


def test_jpeg_shape_and_values(tmp_path):
  Image.fromarray(GRAY8).save(tmp_path / "a.JPEG", quality=95)
  Image.fromarray(RGB8).save(tmp_path / "b.jpg", quality=95)
  a, b = read_image(tmp_path / "a.JPEG"), read_image(tmp_path / "b.jpg")
  assert a.shape == b.shape == (24, 20) and a.dtype == b.dtype == np.uint8
  assert np.abs(a.astype(int) - GRAY8).mean() < 12  # lossy, but the same picture


# errors


def _error(path) -> str:
  with pytest.raises(ImageReadError) as info:
    read_image(path)
  message = str(info.value)
  assert repr(str(path)) in message and "To fix:" in message
  return message


def test_error_missing_file(tmp_path):
  assert "no such file" in _error(tmp_path / "nope.png")


def test_error_empty_files(tmp_path):
  for name in ("empty.png", "empty.dcm", "empty"):
    (tmp_path / name).write_bytes(b"")
    assert "empty" in _error(tmp_path / name)


def test_error_not_an_image(tmp_path):
  (tmp_path / "text.png").write_text("findings: none\n")
  (tmp_path / "text.dcm").write_text("findings: none\n" * 20)
  (tmp_path / "noise.jpg").write_bytes(RNG.bytes(3000))
  (tmp_path / "noise.dcm").write_bytes(RNG.bytes(3000))
  for name in ("text.png", "text.dcm", "noise.jpg", "noise.dcm"):
    assert "not a PNG, JPEG or DICOM image" in _error(tmp_path / name)


def test_error_truncated_png(tmp_path):
  Image.fromarray(RNG.integers(0, 256, (200, 200), dtype=np.uint8)).save(tmp_path / "full.png")
  data = (tmp_path / "full.png").read_bytes()
  (tmp_path / "cut.png").write_bytes(data[:len(data) // 2])
  assert "cannot decode" in _error(tmp_path / "cut.png")


def test_error_dicom_without_pixel_data(tmp_path):
  path = _write_dicom(tmp_path / "sr.dcm", STORED12)
  ds = dcmread(path)
  del ds.PixelData
  ds.save_as(path, enforce_file_format=True)
  assert "no Pixel Data" in _error(path)


def test_error_oversized_png_and_dicom(tmp_path, monkeypatch):
  Image.fromarray(GRAY8).save(tmp_path / "big.png")
  dcm = _write_dicom(tmp_path / "big.dcm", STORED12)
  monkeypatch.setattr(image_files, "MAX_PIXELS", 100)
  assert "MAX_PIXELS" in _error(tmp_path / "big.png")
  assert "MAX_PIXELS" in _error(dcm)


def test_error_pil_decompression_bomb_warning_is_refused(tmp_path, monkeypatch):
  Image.fromarray(GRAY8).save(tmp_path / "bomb.png")
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", GRAY8.size - 100)  # PIL would only warn
  assert "decompression bomb" in _error(tmp_path / "bomb.png")


def test_error_dicom_rows_columns_over_limit_refused_before_decoding(tmp_path):
  # 60000 x 60000 claimed over a few bytes: decoding would fail or allocate gigabytes.
  path = _write_dicom(tmp_path / "liar.dcm", STORED12, Rows=60000, Columns=60000)
  assert "60000x60000" in _error(path) and "MAX_PIXELS" in _error(path)


def test_error_compressed_dicom_without_decoder(tmp_path):
  syntax = uid.JPEGLosslessSV1
  if get_decoder(syntax).is_available:
    pytest.skip("a JPEG Lossless decoder plugin is installed here")
  path = _write_dicom(tmp_path / "jl.dcm", STORED12, transfer_syntax=syntax,
                      PixelData=encapsulate([b"\xff\xd8\xff\xd9"]))
  message = _error(path)
  assert "JPEG Lossless" in message and "plugin" in message and "pylibjpeg" in message


def test_error_bad_window(tmp_path):
  path = _write_dicom(tmp_path / "bw.dcm", STORED12, WindowCenter=100.0, WindowWidth=0.0)
  assert "window" in _error(path)


def test_error_pickles():
  e = pickle.loads(pickle.dumps(ImageReadError("a.png", "broken", fix="replace it")))
  assert (e.path, e.reason, e.fix) == ("a.png", "broken", "replace it")
  assert str(e) == "cannot read image 'a.png': broken. To fix: replace it."


# expand_paths and read_images


def test_expand_and_read_mixed(tmp_path):
  root = tmp_path / "studies"
  (root / "sub").mkdir(parents=True)
  (root / ".cache").mkdir()
  Image.fromarray(GRAY8).save(root / "b.png")
  Image.fromarray(GRAY8).save(root / "A.JPG", quality=95)
  Image.fromarray(GRAY8).save(root / "z.png")
  Image.fromarray(GRAY8).save(root / ".hidden.png")
  Image.fromarray(GRAY8).save(root / ".cache" / "c.png")
  _write_dicom(root / "sub" / "c.dcm", STORED12)
  _write_dicom(root / "sub" / "no_suffix", STORED12)  # DICOM, but folders go by suffix
  (root / "notes.txt").write_text("ignored in folders\n")
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "readme.txt").write_text("no images here\n")
  (tmp_path / "given.txt").write_text("named directly, so read (and refused)\n")
  Image.fromarray(GRAY8).save(tmp_path / "single.png")

  given = [str(root), str(tmp_path / "missing.dcm"), str(tmp_path / "empty"),
           str(tmp_path / "given.txt"), str(tmp_path / "single.png"), ""]
  jobs = expand_paths(given)
  assert [j.path for j in jobs] == [
      str(root / "A.JPG"), str(root / "b.png"), str(root / "sub" / "c.dcm"), str(root / "z.png"),
      *given[1:]]
  assert [j.error is None for j in jobs] == [True] * 4 + [False, False, True, True, False]
  assert all(repr(j.path) in j.error for j in jobs if j.error)
  assert "no such file" in jobs[4].error and "no image files" in jobs[5].error

  results = list(image_files.read_images(jobs))
  assert [r[0] for r in results] == [j.path for j in jobs]
  ok = [path for path, image, error in results if error is None]
  assert ok == [str(root / "A.JPG"), str(root / "b.png"), str(root / "sub" / "c.dcm"),
                str(root / "z.png"), str(tmp_path / "single.png")]
  for path, image, error in results:
    assert (image is None) == (error is not None)
    if image is not None:
      assert image.dtype == np.uint8 and image.ndim == 2
  assert "not a PNG, JPEG or DICOM image" in results[6][2]
  np.testing.assert_array_equal(results[1][1], GRAY8)


def test_read_images_keeps_going_after_unexpected_failure(tmp_path, monkeypatch):
  def explode(path):
    raise RuntimeError("boom")
  monkeypatch.setattr(image_files, "read_image", explode)
  [(path, image, error)] = image_files.read_images([ImageJob(str(tmp_path / "x.png"))])
  assert image is None and "RuntimeError: boom" in error and "x.png" in error
