"""The cncxr TFDS builder: release folders (good and bad) and the synthetic set."""

import hashlib
import json
import pathlib
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import tfds_cncxr
from cnx2rg_jax.text import keywords as kw
from tfds_cncxr import release


def _write_png(path: pathlib.Path, seed: int, mode: str = "L"):
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 255, (32, 40), dtype=np.uint8)
  Image.fromarray(pixels).convert(mode).save(path)


def _entry(i: int, **extra):
  return {"id": f"p{i:03d}", "report": f"两肺纹理清晰。心影不大{i}。",
          "image_path": [f"images/p{i:03d}.png"], **extra}


def _release(tmp_path: pathlib.Path, n: int = 20, flat: bool = False, mutate=None):
  root = tmp_path / "release"
  entries = [_entry(i, sex="女" if i % 2 else "M", age=f"{30 + i}岁",
                    keywords={"lung": 0, "heart": 0}) for i in range(n)]
  for i, e in enumerate(entries):
    _write_png(root / e["image_path"][0], i)
  if mutate:
    mutate(root, entries)
  ann = entries if flat else {"train": entries[:14], "val": entries[14:16], "test": entries[16:]}
  (root / "annotation.json").write_text(json.dumps(ann, ensure_ascii=False), encoding="utf-8")
  return root


def _build(root, data_dir, config=None):
  builder = (tfds.builder("cncxr/release", data_dir=str(data_dir)) if config is None
             else tfds_cncxr.Cncxr(config=config, data_dir=str(data_dir)))
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  return builder


@pytest.mark.parametrize("flat", [False, True])
def test_release_loads_flat_and_presplit(tmp_path, flat):
  builder = _build(_release(tmp_path, flat=flat), tmp_path / "tfds")
  counts = {s: builder.info.splits[s].num_examples for s in ("train", "val", "test")}
  assert counts == {"train": 14, "val": 2, "test": 4}
  ids = set()
  for split in counts:
    src = builder.as_data_source(split)
    for i in range(len(src)):
      ex = src[i]
      ex_id = ex["id"].decode()  # Text features come back as UTF-8 bytes
      n = int(ex_id[1:])
      ids.add(ex_id)
      assert ex["report"].decode() == _entry(n)["report"]
      assert ex["image"].shape == (32, 40, 1)
      expect = np.random.default_rng(n).integers(0, 255, (32, 40), dtype=np.uint8)
      np.testing.assert_array_equal(ex["image"][..., 0], expect)
      assert ex["age"] == 30 + n and ex["sex"] == (1 if n % 2 else 0)  # ClassLabel M=0, F=1
      assert ex["keyword_labels"][kw.KEYWORD_INDEX["heart"]] == kw.NEGATED
      assert ex["keyword_labels"][kw.KEYWORD_INDEX["effusion"]] == kw.NOT_MENTIONED
  assert len(ids) == 20
  assert "tensorflow" not in sys.modules  # built and read without TensorFlow


def _missing_image(root, entries):
  (root / entries[3]["image_path"][0]).unlink()


def _truncated(root, entries):
  p = root / entries[3]["image_path"][0]
  p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _not_an_image(root, entries):
  (root / entries[3]["image_path"][0]).write_text("not a png")


def _escape_dotdot(root, entries):
  _write_png(root.parent / "outside.png", 0)
  entries[3]["image_path"] = ["../outside.png"]


def _escape_symlink(root, entries):
  _write_png(root.parent / "outside.png", 0)
  link = root / "images" / "link.png"
  link.symlink_to(root.parent / "outside.png")
  entries[3]["image_path"] = ["images/link.png"]


def _escape_absolute(root, entries):
  entries[3]["image_path"] = [str(root / entries[3]["image_path"][0])]


def _empty_report(root, entries):
  entries[3]["report"] = "  "


def _report_not_text(root, entries):
  entries[3]["report"] = 42


def _duplicate_id(root, entries):
  entries[5]["id"] = entries[3]["id"]


BAD = [_missing_image, _truncated, _not_an_image, _escape_dotdot, _escape_symlink,
       _escape_absolute, _empty_report, _report_not_text, _duplicate_id]


@pytest.mark.parametrize("mutate", BAD, ids=lambda f: f.__name__)
def test_bad_entry_fails_naming_it(tmp_path, mutate):
  root = _release(tmp_path, mutate=mutate)
  with pytest.raises(release.BadExampleError, match="p003"):
    _build(root, tmp_path / "tfds")


@pytest.mark.parametrize("mutate", BAD, ids=lambda f: f.__name__)
def test_skip_mode_counts_and_names_what_it_skipped(tmp_path, mutate):
  root = _release(tmp_path, mutate=mutate)
  builder = _build(root, tmp_path / "tfds", tfds_cncxr.release_config(skip_bad_examples=True))
  meta = builder.info.metadata
  skipped_ids = {s["id"] for s in meta["skipped"]}
  expected = 1  # for a duplicated id, the later holder goes and the first stays
  assert meta["num_skipped"] == expected and skipped_ids == {"p003"}
  total = sum(builder.info.splits[s].num_examples for s in ("train", "val", "test"))
  assert total == 20 - expected
  # The record survives a reload from disk.
  reloaded = tfds_cncxr.Cncxr(config=tfds_cncxr.release_config(skip_bad_examples=True),
                              data_dir=str(tmp_path / "tfds"))
  assert reloaded.info.metadata["num_skipped"] == expected


def _digest(builder) -> str:
  h = hashlib.sha256()
  for f in sorted(pathlib.Path(builder.data_dir).glob("*.array_record*")):
    h.update(f.name.encode())
    h.update(f.read_bytes())
  return h.hexdigest()


def test_synthetic_is_deterministic_and_sharded(tmp_path):
  builds = []
  for d, seed, workers in (("a", 0, 0), ("b", 0, 2), ("c", 1, 0)):
    b = tfds_cncxr.Cncxr(config=tfds_cncxr.synthetic_config(num_examples=80, seed=seed),
                         data_dir=str(tmp_path / d), num_workers=workers)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=2))
    builds.append(b)
  assert _digest(builds[0]) == _digest(builds[1])
  assert _digest(builds[0]) != _digest(builds[2])
  assert len(list(pathlib.Path(builds[0].data_dir).glob("*train.array_record-*"))) == 2
  counts = [builds[0].info.splits[s].num_examples for s in ("train", "val", "test")]
  assert counts == [56, 8, 16]


def test_standard_synthetic_name_resolves(tmp_path):
  builder = tfds.builder("cncxr/synthetic", data_dir=str(tmp_path))
  assert builder.builder_config.num_examples == 4000 and builder.info.file_format.value == "array_record"


def test_standard_release_build_is_sharded(tmp_path):
  builder = _build(_release(tmp_path, n=40, flat=True), tmp_path / "tfds")  # 28 / 4 / 8 examples
  files = pathlib.Path(builder.data_dir)
  assert len(list(files.glob("*train.array_record-*"))) == 4
  assert len(list(files.glob("*val.array_record-*"))) == 4
  assert builder.info.splits["train"].num_shards == 4


def test_release_carries_entity_annotations(tmp_path):
  def annotate(root, entries):
    entries[0]["report"] = "右侧胸腔积液。"
    entries[0]["entities"] = [{"start": 0, "end": 4, "label": "Anatomy"},
                              {"start": 4, "end": 6, "label": "DPO", "text": "积液"}]
    entries[0]["relations"] = [{"head": 1, "tail": 0, "label": "located_at"}]
  builder = _build(_release(tmp_path, mutate=annotate), tmp_path / "tfds")
  src = builder.as_data_source("train")
  ex = next(src[i] for i in range(len(src)) if src[i]["id"] == b"p000")
  assert bool(ex["has_graph"])
  np.testing.assert_array_equal(ex["entities"]["start"], [0, 4])
  assert [k.decode() for k in ex["entities"]["keyword"]] == ["chest", "effusion"]
  np.testing.assert_array_equal(ex["relations"]["head"], [1])
  # An entry without a graph gets the rule labeler's (tests/test_plain_release.py checks what
  # it holds), unless the build annotates nothing.
  other = next(src[i] for i in range(len(src)) if src[i]["id"] == b"p001")
  assert bool(other["has_graph"]) and len(other["entities"]["start"]) > 0
  plain = _build(_release(tmp_path, mutate=annotate), tmp_path / "tfds_none",
                 tfds_cncxr.release_config(annotate_with="none"))
  src = plain.as_data_source("train")
  other = next(src[i] for i in range(len(src)) if src[i]["id"] == b"p001")
  assert not bool(other["has_graph"]) and len(other["entities"]["start"]) == 0


def test_english_release_is_cleaned_the_r2gen_way(tmp_path):
  from cnx2rg_jax.data import dataset  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.text import english  # pylint: disable=import-outside-toplevel
  from tests.conftest import tiny_config  # pylint: disable=import-outside-toplevel

  raw = "The Heart is normal in size. No pleural effusion or pneumothorax!"
  def english_reports(root, entries):
    for e in entries:
      e["report"] = raw
  root = _release(tmp_path, mutate=english_reports)
  config = tiny_config(str(tmp_path / "tfds"))
  config.data.name, config.data.manual_dir = "release", str(root)
  config.data.language, config.data.english_style = "en", "iu_xray"
  prepared = dataset.prepare(config.data)
  # stored at the training resize, data.image_size
  assert prepared.builder.builder_config.name == "release_en_iu_xray_split0_px256"
  texts = dataset.read_split_texts(prepared, "train")
  assert texts.reports[0] == english.clean_report_iu_xray(raw)
  assert texts.reports[0] == "the heart is normal in size . no pleural effusion or pneumothorax ."
