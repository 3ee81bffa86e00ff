"""The `cncxr` TFDS dataset: importing this package registers the builder with TFDS."""

from tfds_cncxr.cncxr import Cncxr, CncxrConfig, release_config, synthetic_config  # noqa: F401
