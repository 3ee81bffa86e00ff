"""Tests for tfds_cncxr.release (reading a release folder) and cnx2rg_jax.text.english."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from PIL import Image

from cnx2rg_jax.text.english import (ENGLISH_CLEANERS, clean_report_iu_xray,
                                     clean_report_mimic_cxr)
from cnx2rg_jax.text.keywords import KEYWORD_INDEX, NOT_MENTIONED
from tfds_cncxr import release
from tfds_cncxr.release import BadExampleError, ReleaseFormatError

RNG = np.random.default_rng(0)
GRAY8 = RNG.integers(0, 256, (24, 20), dtype=np.uint8)
GRAY16 = RNG.integers(300, 4000, (24, 20)).astype(np.uint16)  # 12-bit data, 16-bit container
RGB = RNG.integers(0, 256, (24, 20, 3), dtype=np.uint8)
RGBA = RNG.integers(0, 256, (24, 20, 4), dtype=np.uint8)


def _write_images(root):
  (root / "img").mkdir(parents=True)
  Image.fromarray(GRAY8).save(root / "img/gray8.png")
  Image.fromarray(GRAY16).save(root / "img/gray16.png")
  Image.fromarray(RGB).save(root / "img/rgb.jpg", quality=90)
  Image.fromarray(RGBA).save(root / "img/rgba.png")


def _entry(i, **kw):
  e = {"id": f"s{i:02d}", "report": f"双肺纹理清晰。 study {i}.", "image_path": ["img/gray8.png"]}
  e.update(kw)
  return e


def _release(tmp_path, data):
  root = tmp_path / "release"
  if not (root / "img").exists():
    _write_images(root)
  (root / "annotation.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
  return root


def _split(train, val=(), test=()):
  return {"train": list(train), "val": list(val), "test": list(test)}


# --- loading -------------------------------------------------------------------------------------

def test_pre_split_release_loads(tmp_path):
  root = _release(tmp_path, {
      "train": [_entry(0, image_path=["img/gray8.png", "img/rgb.jpg"]), _entry(1)],
      "valid": [_entry(2, image_path="img/gray16.png")],
      "test": [_entry(3, image_path=["img/rgba.png"])]})
  splits, skipped = release.read_annotation(root)
  assert skipped == [] and {k: len(v) for k, v in splits.items()} == {"train": 2, "val": 1,
                                                                      "test": 1}
  e = splits["train"][0]
  assert (e.id, e.split, e.num_views, e.sex, e.age) == ("s00", "train", 2, "U", -1.0)
  assert e.image_path == (root / "img/gray8.png").resolve() and e.image_path.is_absolute()
  assert e.keyword_labels is None and e.entities is None and e.relations is None
  assert splits["val"][0].split == "val" and splits["val"][0].image_path.name == "gray16.png"


def test_paths_relative_to_images_subfolder_load_as_in_r2gens_folders(tmp_path):
  # R2Gen's layout: data/iu_xray/annotation.json, images under data/iu_xray/images/<path>.
  root = tmp_path / "iu_xray"
  _write_images(root / "images")
  (root / "img").mkdir()
  Image.fromarray(GRAY8).save(root / "img" / "top.png")  # the folder itself wins over images/
  (root / "annotation.json").write_text(json.dumps(_split(
      [_entry(0, image_path=["img/gray16.png", "img/rgb.jpg"]), _entry(1, image_path=["img/top.png"])])))
  splits, _ = release.read_annotation(root)
  first, second = splits["train"]
  assert first.image_path == (root / "images/img/gray16.png").resolve() and first.num_views == 2
  assert second.image_path == (root / "img/top.png").resolve()
  (root / "annotation.json").write_text(json.dumps(_split([_entry(0, image_path=["img/no.png"])])))
  with pytest.raises(release.BadExampleError) as e:
    release.read_annotation(root)
  # the error names the path and both places looked in
  assert "'img/no.png'" in str(e.value) and "images/img/no.png" in str(e.value)
  assert str((root / "img/no.png").resolve()) in str(e.value)


def _assignment(splits):
  return {e.id: s for s, entries in splits.items() for e in entries}


def test_flat_release_is_split_7_1_2_by_id(tmp_path):
  entries = [_entry(i) for i in range(20)]
  splits, _ = release.read_annotation(_release(tmp_path, entries), split_seed=3)
  assert [len(splits[s]) for s in release.SPLITS] == [14, 2, 4]
  got = _assignment(splits)
  assert sorted(got) == sorted(e["id"] for e in entries)  # complete and, as a dict, disjoint
  assert all(e.split == s for s, es in splits.items() for e in es)
  ids = sorted(e["id"] for e in entries)
  perm = np.random.default_rng(3).permutation(20)
  assert {ids[i] for i in perm[:14]} == {e.id for e in splits["train"]}
  assert {ids[i] for i in perm[14:16]} == {e.id for e in splits["val"]}
  shuffled = entries[:]
  random.Random(1).shuffle(shuffled)
  again, _ = release.read_annotation(_release(tmp_path, {"all": shuffled}), split_seed=3)
  assert _assignment(again) == got
  other, _ = release.read_annotation(_release(tmp_path, entries), split_seed=4)
  assert _assignment(other) != got


def test_optional_fields_parse(tmp_path):
  report = "右肺下野见斑片影。"
  ents = [{"start": 0, "end": 4, "label": "Anatomy", "text": "右肺下野"},
          {"start": 5, "end": 8, "label": "DPO"}]
  cases = [("M", 45, "M", 45.0), ("female", "45", "F", 45.0), ("男", "45Y", "M", 45.0),
           ("女", "045Y", "F", 45.0), ("MALE", "62岁", "M", 62.0), ("x", " 7.5 ", "U", 7.5),
           (None, None, "U", -1.0), ("f", "", "F", -1.0)]
  train = []
  for i, (sex, age, _, _) in enumerate(cases):
    e = _entry(i, report=report, keywords={"lung": 1, "shadow": 0, "effusion": -1},
               entities=ents, relations=[{"head": 1, "tail": 0, "label": "located_at"}])
    e.update({k: v for k, v in (("sex", sex), ("age", age)) if v is not None})
    train.append(e)
  splits, _ = release.read_annotation(_release(tmp_path, _split(train)))
  for e, (_, _, sex, age) in zip(splits["train"], cases):
    assert (e.sex, e.age) == (sex, age)
  e = splits["train"][0]
  assert e.keyword_labels.dtype == np.int8 and e.keyword_labels.shape == (48,)
  want = np.full(48, NOT_MENTIONED, np.int8)
  want[[KEYWORD_INDEX["lung"], KEYWORD_INDEX["shadow"], KEYWORD_INDEX["effusion"]]] = [1, 0, -1]
  np.testing.assert_array_equal(e.keyword_labels, want)
  assert e.entities[1] == {"start": 5, "end": 8, "label": "DPO", "text": "斑片影"}
  assert e.relations == [{"head": 1, "tail": 0, "label": "located_at"}]


# --- bad entries ---------------------------------------------------------------------------------

def _symlink_out(root):
  outside = root.parent / "outside.png"
  Image.fromarray(GRAY8).save(outside)
  (root / "img/link.png").symlink_to(outside)
  return {"image_path": ["img/link.png"]}


BAD = {
    "missing image": ({"image_path": ["img/nope.png"]}, "not found"),
    "dotdot path": ({"image_path": ["img/../img/gray8.png"]}, "'..'"),
    "absolute path": ({"image_path": ["/etc/passwd"]}, "absolute"),
    "symlink outside": (_symlink_out, "outside the release folder"),
    "empty report": ({"report": "  \n "}, "'report' is empty"),
    "non-string report": ({"report": ["a"]}, "'report' must be a string"),
    "no image paths": ({"image_path": []}, "'image_path'"),
    "bad age": ({"age": "forty"}, "'age' 'forty'"),
    "negative age": ({"age": -5}, "outside"),
    "unknown keyword": ({"keywords": {"lungs": 1}}, "unknown keyword 'lungs'"),
    "bad keyword value": ({"keywords": {"lung": 2}}, "value 2"),
    "entity out of range": ({"entities": [{"start": 3, "end": 99, "label": "NO"}]}, "span"),
    "entity text mismatch": ({"entities": [{"start": 0, "end": 2, "label": "NO", "text": "x"}]},
                             "differs"),
    "entity bad label": ({"entities": [{"start": 0, "end": 2, "label": "Lesion"}]}, "label"),
    "relation bad index": ({"entities": [{"start": 0, "end": 2, "label": "NO"}],
                            "relations": [{"head": 0, "tail": 1, "label": "modify"}]}, "tail=1"),
}


def _bad_release(tmp_path, name):
  root = _release(tmp_path, _split([]))
  change, _ = BAD[name]
  bad = _entry(7, id="bad-one", **(change(root) if callable(change) else change))
  return _release(tmp_path, _split([_entry(0), bad], [_entry(1)], [_entry(2)]))


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_entry_raises_naming_it(tmp_path, name):
  root = _bad_release(tmp_path, name)
  with pytest.raises(BadExampleError) as info:
    release.read_annotation(root)
  msg = str(info.value)
  assert "'bad-one'" in msg and "train[1]" in msg and BAD[name][1] in msg, msg
  assert "skip_bad_examples=True" in msg
  assert info.value.example_id == "bad-one" and (info.value.split, info.value.index) == ("train", 1)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_entry_is_skipped_and_reported(tmp_path, name):
  splits, skipped = release.read_annotation(_bad_release(tmp_path, name), skip_bad_examples=True)
  assert [e.id for e in splits["train"]] == ["s00"] and len(splits["val"]) == len(splits["test"])
  assert len(skipped) == 1 and skipped[0]["id"] == "bad-one" and BAD[name][1] in skipped[0]["reason"]
  assert (skipped[0]["split"], skipped[0]["index"]) == ("train", 1)


def test_duplicate_id_names_both_places(tmp_path):
  root = _release(tmp_path, _split([_entry(0), _entry(1)], [_entry(2)], [_entry(1)]))
  with pytest.raises(BadExampleError, match=r"test\[0\].*'s01'.*train\[1\]"):
    release.read_annotation(root)


def test_skip_mode_collects_every_bad_entry(tmp_path):
  train = [_entry(0), _entry(1, report=""), {"report": "x", "image_path": "img/gray8.png"},
           _entry(3, image_path=["../x.png"]), "not an object", _entry(5), _entry(5)]
  root = _release(tmp_path, _split(train, [_entry(6, age="?")], [_entry(8)]))
  splits, skipped = release.read_annotation(root, skip_bad_examples=True)
  assert [e.id for s in release.SPLITS for e in splits[s]] == ["s00", "s05", "s08"]
  assert [(s["split"], s["index"], s["id"]) for s in skipped] == [
      ("train", 1, "s01"), ("train", 2, None), ("train", 3, "s03"), ("train", 4, None),
      ("train", 6, "s05"), ("val", 0, "s06")]
  assert all(s["reason"] for s in skipped)
  with pytest.raises(BadExampleError, match=r"train\[1\], id 's01'"):
    release.read_annotation(root)


def test_file_level_problems_are_never_skippable(tmp_path):
  with pytest.raises(FileNotFoundError, match="release folder"):
    release.read_annotation(tmp_path / "nowhere", skip_bad_examples=True)
  root = tmp_path / "release"
  _write_images(root)
  with pytest.raises(FileNotFoundError, match="annotation.json"):
    release.read_annotation(root, skip_bad_examples=True)
  bad_files = [b"{not json", "{}".encode("utf-16"), b'{"train": []}', b'{"train": {}, "val": [],'
               b' "test": []}', b'{"train": [], "val": [], "valid": [], "test": []}', b"42"]
  for content in bad_files:
    (root / "annotation.json").write_bytes(content)
    with pytest.raises(ReleaseFormatError, match="annotation.json"):
      release.read_annotation(root, skip_bad_examples=True)


# --- images --------------------------------------------------------------------------------------

def test_load_grayscale_modes(tmp_path):
  root = _release(tmp_path, _split([]))
  np.testing.assert_array_equal(release.load_grayscale(root / "img/gray8.png"), GRAY8)
  a = GRAY16.astype(np.int64)
  lo, hi = a.min(), a.max()
  want = ((a - lo) * 510 + (hi - lo)) // (2 * (hi - lo))  # round(255 (a - lo) / (hi - lo)), .5 up
  got = release.load_grayscale(root / "img/gray16.png")
  assert got.dtype == np.uint8 and got.min() == 0 and got.max() == 255
  np.testing.assert_array_equal(got, want)
  np.testing.assert_allclose(got, 255.0 * (a - lo) / (hi - lo), atol=0.5)
  for name in ("rgb.jpg", "rgba.png"):
    with Image.open(root / "img" / name) as im:
      want = np.asarray(im.convert("L"))
    got = release.load_grayscale(root / "img" / name)
    assert got.dtype == np.uint8 and got.shape == (24, 20)
    np.testing.assert_array_equal(got, want)
  Image.fromarray(RGB).convert("P").save(root / "img/pal.png")
  with Image.open(root / "img/pal.png") as im:
    np.testing.assert_array_equal(release.load_grayscale(root / "img/pal.png"),
                                  np.asarray(im.convert("L")))
  Image.fromarray(np.full((5, 6), 1234, np.uint16)).save(root / "img/flat16.png")
  np.testing.assert_array_equal(release.load_grayscale(root / "img/flat16.png"),
                                np.zeros((5, 6), np.uint8))


def test_undecodable_images_fail_at_load_time(tmp_path):
  root = _release(tmp_path, _split([]))
  (root / "img/text.png").write_text("this is not an image")
  buf = io.BytesIO()
  Image.fromarray(RNG.integers(0, 256, (64, 64), dtype=np.uint8)).save(buf, format="PNG")
  (root / "img/cut.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
  train = [_entry(0, image_path=["img/text.png"]), _entry(1, image_path=["img/cut.png"])]
  splits, _ = release.read_annotation(_release(tmp_path, _split(train)))  # existence only
  for e, name in zip(splits["train"], ("text.png", "cut.png")):
    with pytest.raises(BadExampleError, match="cannot decode") as info:
      release.load_grayscale(e.image_path, entry=e)
    assert name in str(info.value) and e.id in str(info.value)
  with pytest.raises(BadExampleError, match="nope.png.*not found"):
    release.load_grayscale(root / "img/nope.png")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
  root = _release(tmp_path, _split([]))
  monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
  with pytest.raises(BadExampleError, match="decompression bomb"):
    release.load_grayscale(root / "img/gray8.png")


def test_encode_png_round_trips():
  data = release.encode_png(GRAY8)
  with Image.open(io.BytesIO(data)) as im:
    assert im.format == "PNG" and im.mode == "L"
    np.testing.assert_array_equal(np.asarray(im), GRAY8)
  with pytest.raises(ValueError):
    release.encode_png(GRAY16)


# --- English cleaning (expected outputs derived by hand from R2Gen's rules) ----------------------

IU_CASES = [
    ("The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
     "the heart is normal in size . the mediastinum is unremarkable . the lungs are clear ."),
    ("1. No acute cardiopulmonary abnormality. 2. Stable appearance of the chest.. ",
     "no acute cardiopulmonary abnormality . stable appearance of the chest ."),
    ("Heart size normal.. Lungs clear. No pneumothorax, effusion, or consolidation (x-ray).",
     "heart size normal . lungs clear . no pneumothorax effusion or consolidation x-ray ."),
    ("Findings:\nNo effusion.", "findings\nno effusion ."),  # IU keeps newlines
    ("No effusion. . Clear.", "no effusion .  . clear ."),  # empty sentences are kept
    ("Heart ( normal ).", "heart  normal  ."),  # stripped before the deletion, not after
    ("BP <120> @ rest; it's \"ok\" / fine", "bp 120  rest its ok  fine ."),
    ("Stable. 3. No change 4. Clear", "stable . no change . clear ."),
    ("Rib 11. fracture", "rib 1fracture ."),  # every "1. " goes, even inside "11. "
    ("Lungs clear.  2. Heart normal.", "lungs clear .  . heart normal ."),
    ("", " ."),
]
MIMIC_CASES = [
    ("FINDINGS:\nPA and lateral views of the chest.  There is no focal consolidation.\n\n"
     "IMPRESSION: No acute process. ___ was notified.",
     "findings pa and lateral views of the chest . there is no focal consolidation . "
     "impression no acute process .  was notified ."),
    ("Lungs clear.  2. Heart normal.", "lungs clear . heart normal ."),  # "  " collapsed first
    ("Normal.......\nClear", "normal . clear ."),
    ("Rib 11. fracture", "rib 1fracture ."),
]


@pytest.mark.parametrize("text,want", IU_CASES)
def test_clean_report_iu_xray(text, want):
  assert clean_report_iu_xray(text) == want
  assert ENGLISH_CLEANERS["iu_xray"](text) == want


@pytest.mark.parametrize("text,want", MIMIC_CASES)
def test_clean_report_mimic_cxr(text, want):
  assert clean_report_mimic_cxr(text) == want
  assert ENGLISH_CLEANERS["mimic_cxr"](text) == want
