"""The one idea of a user error: the input is wrong, not the code.

A bad config, file, annotation, checkpoint or workdir raises a subclass of `UserError` whose
message names the bad item and says what to do. `run.py` (launch.py) and the command-line tools
catch `UserError` once and print its message as one paragraph with exit code 2, never a
traceback. The subclasses (e.g. `data.dataset.DataConfigError`, `training.checkpoints.
CheckpointError`) only say where the error comes from; each is also a ValueError, as before.
"""


class UserError(ValueError):
  """The input is wrong; the message names the bad item (shown without a traceback)."""


class CheckpointError(UserError):
  """A checkpoint or saved model folder that cannot be used: missing, damaged, incomplete, or not
  fitting the config (training's checkpoints and a trained CN-RadGraph alike)."""


class ConfigError(UserError):
  """A config value cannot work; the message names the key and the fix (raised by the checks
  before a run in config_checks.py and wherever else a value is found unusable)."""


class WorkdirError(UserError):
  """A workdir that does not fit the run asked of it; the message says what to do."""
