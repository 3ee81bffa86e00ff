"""Writes small DICOM files for the tests of reading user images (image_files, predict)."""

from __future__ import annotations

import numpy as np
from pydicom import uid
from pydicom.dataset import FileDataset, FileMetaDataset


def write_dicom(path, pixels: np.ndarray, photometric: str = "MONOCHROME2",
                bits_stored: int = 12, transfer_syntax=uid.ExplicitVRLittleEndian,
                **attributes) -> str:
  """A minimal DX For Presentation file holding `pixels`; extra attributes set last."""
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = uid.DigitalXRayImageStorageForPresentation
  meta.MediaStorageSOPInstanceUID = uid.generate_uid()
  meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
  ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
  ds.SOPClassUID = meta.MediaStorageSOPClassUID
  ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
  ds.Modality = "DX"
  ds.set_pixel_data(pixels, photometric, bits_stored)
  ds.file_meta.TransferSyntaxUID = transfer_syntax
  for key, value in attributes.items():
    setattr(ds, key, value)
  ds.save_as(path, enforce_file_format=True)
  return str(path)
