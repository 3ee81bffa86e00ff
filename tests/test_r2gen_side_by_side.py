"""The side-by-side benchmark with R2Gen's own code (cnx2rg_jax/bench/r2gen_side_by_side.py), at
tiny dims: its JSON lines, and ratios that are the sides' own figures divided. Skipped without
R2GEN_DIR (a checkout of cuhksz-nlp/R2Gen) or torch. Timings are printed, never asserted."""

import json

import pytest

from cnx2rg_jax.bench import r2gen_side_by_side as side_by_side
from tests.helpers import r2gen_harness


@pytest.mark.skipif(r2gen_harness.r2gen_dir() is None,
                    reason="set R2GEN_DIR to a checkout of cuhksz-nlp/R2Gen")
def test_tiny_run_prints_both_sides_and_their_ratios(capsys):
  pytest.importorskip("torch")
  rc = side_by_side.main(["--dims=tiny", "--settings=30:5", "--batch=1", "--beam=2",
                          "--repeats=1", "--warmup=0"])
  assert rc == 0
  lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  r2gen, ours, ratios = lines
  assert (r2gen["side"], ours["side"]) == ("r2gen_torch", "cnx2rg_jax")
  for line in lines:
    assert (line["vocab"], line["max_len"], line["batch"], line["beam"]) == (30, 5, 1, 2)
  for part in ("train_step", "decode"):
    for key in ("wall_min", "wall_median", "cpu_min", "cpu_median"):
      assert ratios[part][key] == pytest.approx(r2gen[part][key] / ours[part][key], rel=2e-3,
                                                abs=1e-3)
    assert r2gen[part]["repeats"] == ours[part]["repeats"] == 1


def test_bad_flags_are_named(capsys):
  assert side_by_side.main(["--settings=760x60", "--only=infer"]) == 2
  err = capsys.readouterr().err
  assert "760x60" in err and "--only=infer" in err
  with pytest.raises(ValueError, match="VOCAB:LENGTH"):
    side_by_side.parse_settings("760")
  assert side_by_side.parse_settings("760:60,2000:100") == [(760, 60), (2000, 100)]
