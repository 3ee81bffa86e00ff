"""Test helpers: scripts run in subprocesses (e.g. with several simulated CPU devices), and
file makers shared by several tests (DICOM files)."""
