"""`ConfigError`: a config value cannot work, raised wherever that is found (the checks before a
run in `config_checks`, the training loop, the report generator, the benchmarks); its message names
the key and the fix. `config_checks.ConfigError` is this class."""


class ConfigError(ValueError):
  """A config value cannot work; the message names the key and the fix."""
