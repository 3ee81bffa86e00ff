"""The `cncxr` TFDS dataset: importing this package registers the builder with TFDS."""

from tfds_cncxr.cncxr import (  # noqa: F401
    Cncxr, CncxrConfig, default_annotator, image_keys, release_config, synthetic_config)
