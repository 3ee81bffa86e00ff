"""Word segmentation with a local spacy-pkuseg model, the optional alternative to jieba.

spacy-pkuseg (`pip install spacy-pkuseg`) ships code but no model: given a name such as
"default" or "medicine" it downloads one. Here a model is only ever read from a local directory
(passed to pkuseg as an absolute path, so pkuseg never takes it for a name), and nothing
downloads. A model directory holds `weights.npz` and `features.msgpack` (or the older
`features.pkl` / `features.json`); a `NAME_dict.pkl` domain dictionary beside them, as in
pkuseg's "medicine" and "tourism" models, is used the way pkuseg uses it for a named model.

The radiology user dictionary of `segmentation.user_terms()` is passed to pkuseg, which cuts
those terms out whole before its model sees the text, so keyword terms stay one word as with
jieba. Each process builds its own segmenter on first use (grain workers fork or spawn).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import shutil
import sys
import threading

from cnx2rg_jax.text import segmentation

# Names spacy-pkuseg would download a model for (and "default", its usual spelling in examples).
MODEL_NAMES = ("default", "spacy_ontonotes", "medicine", "tourism", "web", "news", "mixed",
               "postag")
WEIGHTS_FILE = "weights.npz"
FEATURE_FILES = ("features.msgpack", "features.pkl", "features.json")  # pkuseg's load order
DOMAIN_DICT_SUFFIX = "_dict.pkl"
RELEASES_URL = "https://github.com/lancopku/pkuseg-python/releases"

_WHITESPACE = re.compile(r"(\s+)")  # the runs pkuseg's cut() drops (it splits with str.split)
_lock = threading.Lock()
_cache: dict[int, dict[str, object]] = {}  # pid -> {model dir: pkuseg}: a forked worker rebuilds


def is_installed() -> bool:
  """Whether spacy_pkuseg can be imported (found without importing it, which takes a second)."""
  if "spacy_pkuseg" in sys.modules:
    return sys.modules["spacy_pkuseg"] is not None  # None: imports of it are blocked
  return importlib.util.find_spec("spacy_pkuseg") is not None


def _import_pkuseg():
  try:
    import spacy_pkuseg  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"the pkuseg segmenter needs the spacy-pkuseg package, which is not "
                      f"installed ({e}); install it with `pip install spacy-pkuseg`, or use the "
                      "default segmenter (--config.text.segmenter=jieba)") from None
  return spacy_pkuseg


def check_model_dir(model_dir: str | os.PathLike) -> str:
  """The absolute path of a usable local model directory `model_dir`.

  A bare model name ("default", "medicine", ...) raises ValueError (nothing is downloaded); a
  missing directory or one without the model files raises FileNotFoundError naming the path.
  """
  model_dir = os.fspath(model_dir)
  how = (f"download a model archive yourself (e.g. medicine.zip from {RELEASES_URL}), unzip it "
         f"and give the directory that holds {WEIGHTS_FILE} and {FEATURE_FILES[0]} (or "
         f"{FEATURE_FILES[1]}), e.g. --config.text.pkuseg_model=/data/pkuseg/medicine")
  if not model_dir:
    raise ValueError(f"the pkuseg segmenter needs a local model directory and none was given; "
                     f"{how}")
  if model_dir in MODEL_NAMES:
    raise ValueError(f"pkuseg model {model_dir!r} is a model name, not a directory: spacy-pkuseg "
                     "would download that model, and nothing downloads here; "
                     f"{how} (write ./{model_dir} for a directory of that name here)")
  path = os.path.abspath(model_dir)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"pkuseg model directory {path!r} does not exist; {how}")
  if not os.path.isfile(os.path.join(path, WEIGHTS_FILE)) or not any(
      os.path.isfile(os.path.join(path, f)) for f in FEATURE_FILES):
    raise FileNotFoundError(f"pkuseg model directory {path!r} lacks the model files "
                            f"({WEIGHTS_FILE} and one of {', '.join(FEATURE_FILES)}); {how}")
  return path


def model_files(model_dir: str) -> list[str]:
  """The names of the files in `model_dir` that make up the model, sorted."""
  names = [WEIGHTS_FILE, *FEATURE_FILES]
  names = [n for n in names if os.path.isfile(os.path.join(model_dir, n))]
  names += [os.path.basename(p) for p in _domain_dicts(model_dir)]
  return sorted(names)


def _domain_dicts(model_dir: str) -> list[str]:
  return sorted(glob.glob(os.path.join(glob.escape(model_dir), "*" + DOMAIN_DICT_SUFFIX)))


def copy_model(src: str | os.PathLike, dst: str | os.PathLike) -> None:
  """Makes `dst` a copy of the model in `src` (its `model_files`), nothing else in it.

  Each file is written to a temporary name and renamed, so processes that copy the same model
  at once leave a whole copy. A no-op when both name the same directory.
  """
  src, dst = check_model_dir(src), os.path.abspath(os.fspath(dst))
  os.makedirs(dst, exist_ok=True)
  if os.path.samefile(src, dst):
    return
  names = model_files(src)
  for stale in set(os.listdir(dst)) - set(names):  # another model's files would shadow ours
    stale_path = os.path.join(dst, stale)
    if os.path.isfile(stale_path):
      os.remove(stale_path)
  for name in names:
    tmp = os.path.join(dst, f".{name}.{os.getpid()}.tmp")
    shutil.copyfile(os.path.join(src, name), tmp)
    os.replace(tmp, os.path.join(dst, name))


def _build(model_dir: str):
  spacy_pkuseg = _import_pkuseg()
  seg = spacy_pkuseg.pkuseg(model_name=model_dir, user_dict=list(segmentation.user_terms()))
  dicts = _domain_dicts(model_dir)
  if dicts:
    # pkuseg merges words its model split apart when the domain dictionary lists their
    # concatenation; for a named model it reads NAME_dict.pkl from its download folder.
    default = os.path.join(os.path.dirname(spacy_pkuseg.__file__), "dicts", "default.pkl")
    seg.postprocesser = spacy_pkuseg.Postprocesser(None, [*dicts, default])
  return seg


def get_segmenter(model_dir: str | os.PathLike):
  """This process's `spacy_pkuseg.pkuseg` for the model in `model_dir` (built on first use).

  Raises ImportError (with the pip command) without spacy-pkuseg, and the errors of
  `check_model_dir` for a bad directory.
  """
  key = os.fspath(model_dir)
  pid = os.getpid()
  seg = _cache.get(pid, {}).get(key)
  if seg is None:
    with _lock:  # also serializes pkuseg's loading, which goes through its global config
      if pid not in _cache:
        _cache.clear()  # entries of a parent process are of no use here
        _cache[pid] = {}
      seg = _cache[pid].get(key)
      if seg is None:
        seg = _cache[pid][key] = _build(check_model_dir(key))
  return seg


def segment(text: str, model_dir: str | os.PathLike) -> list[str]:
  """Splits `text` into words with the pkuseg model in `model_dir`; "".join(...) == text.

  Outside whitespace this is exactly `pkuseg.cut(text)` with our user dictionary. pkuseg drops
  whitespace; here a whitespace run comes back as a token of its own instead (cleaned reports
  have none). Raises ValueError for a non-str input.
  """
  if not isinstance(text, str):
    raise ValueError(f"segment takes a str, got {type(text).__name__}")
  seg = get_segmenter(model_dir)
  out: list[str] = []
  for piece in _WHITESPACE.split(text):
    if not piece:
      continue
    if piece.isspace():
      out.append(piece)
      continue
    words = seg.cut(piece)
    if "".join(words) != piece:  # pkuseg only splits and merges; guard the invariant anyway
      raise RuntimeError(f"pkuseg changed the text {piece!r} into the words {words!r}")
    out.extend(words)
  return out
