"""The report card of a tiny run, end to end: `--mode=eval` with the card and `--mode=predict`
with a card folder, read back and checked against the run's own files and the labeler.

The run is tests/test_predict.py's (tiny_model_config, two steps): its compiled train step and
beam search come from the on-disk compilation cache when that file ran first.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from cnx2rg_jax import config_checks, run
from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.training import loop
from tests.conftest import tiny_model_config
from tests.helpers import card_browser, card_checks
from tests.helpers.card_html import parse_card

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def card_run(tiny_synthetic, tmp_path_factory):
  """(config, workdir, the test card's text) after training two steps and --mode=eval --card."""
  base, _ = tiny_synthetic
  config = tiny_model_config(base.data.data_dir)
  config.train.num_steps = 2  # tests/test_predict.py's run: the same compiled train step
  workdir = str(tmp_path_factory.mktemp("card_run"))
  loop.train(config, workdir, log=lambda _: None)
  config.card.num_cases = 0  # every case of the split
  code = run.main(config, workdir=workdir, mode="eval", split="test", images=[], output="",
                  card=True, config_name="configs/cnx2rg.py")
  assert code == 0
  path = pathlib.Path(workdir) / "eval" / "test_card" / "index.html"
  return config, workdir, path.read_text(encoding="utf-8")


def test_card_has_every_case_and_every_metric(card_run):
  config, workdir, _ = card_run
  card_checks.check_every_case_and_metric(config, workdir)


def test_card_spans_are_the_labelers(card_run):
  card_checks.check_spans_are_the_labelers(card_run[1])


def test_card_words_and_attention_rows(card_run):
  card_checks.check_words_and_attention_rows(card_run[1])
  # 32-pixel crops give one patch: the tiny run's maps are 1x1
  assert all(c["attention"]["grid"] == [1, 1] for c in parse_card(card_run[2]).cases)


@pytest.mark.skipif(card_browser.find_browser() is None,
                    reason="chromium is not installed (apt-get install chromium)")
def test_clicking_a_word_of_the_run_card_shows_a_heatmap(card_run):
  _, workdir, text = card_run
  case = next(c for c in parse_card(text).cases if len(c["attention"]["maps"]) > 1)
  got = card_browser.click_word(f"{workdir}/eval/test_card/index.html", case["n"], 1)
  assert got["clicked"] and got["token"] == "1" and got["painted"] > 0
  assert case["gen"]["tokens"][1] in got["caption"]


def test_predict_writes_a_card_of_its_inputs(card_run, tmp_path):
  config, workdir, _ = card_run
  rng = np.random.default_rng(3)
  paths = []
  for name in ("a.png", "b.png"):
    Image.fromarray(rng.integers(0, 256, (48, 48), dtype=np.uint8)).save(tmp_path / name)
    paths.append(str(tmp_path / name))
  (tmp_path / "bad.png").write_text("not an image")
  out = tmp_path / "pred.jsonl"
  code = run.main(config, workdir=workdir, mode="predict", split="test",
                  images=[paths[0], str(tmp_path / "bad.png"), paths[1]], output=str(out),
                  card_dir=str(tmp_path / "card"))
  assert code == 1  # the bad file
  lines = [json.loads(s) for s in out.read_text(encoding="utf-8").splitlines()]
  card = parse_card((tmp_path / "card" / "index.html").read_text(encoding="utf-8"))
  assert [c["id"] for c in card.cases] == paths
  for case, line in zip(card.cases, [lines[0], lines[2]]):
    assert case["ref"] is None and case["gen"]["text"] == label_report(line["report"]).text
    assert len(case["attention"]["maps"]) == len(case["gen"]["tokens"])


def test_card_flags_outside_eval_and_predict_and_bad_num_cases(card_run, capsys):
  config, workdir, _ = card_run
  assert run.main(config, workdir=workdir, mode="bench_train", split="test", images=[],
                  output="", card=True) == 2
  assert "--card/--card_dir" in capsys.readouterr().err
  bad = config.copy_and_resolve_references()
  bad.card.num_cases = -3
  with pytest.raises(config_checks.ConfigError, match="card.num_cases=-3"):
    config_checks.check(bad)
  # launch.py defines --card and --card_dir and hands them to run.main (parsed in-process; the
  # flags are put back to unparsed afterwards)
  import launch  # pylint: disable=import-outside-toplevel
  from absl import flags  # pylint: disable=import-outside-toplevel
  try:
    launch.parse_flags(["launch.py", f"--config={REPO / 'configs/cnx2rg.py'}",
                        "--mode=bench_input", "--card", "--card_dir=x"])
    assert flags.FLAGS.card and flags.FLAGS.card_dir == "x"
    assert launch.main(["launch.py"]) == 2
  finally:
    flags.FLAGS.unparse_flags()
  assert "--mode=bench_input" in capsys.readouterr().err
  # --card=DIR is --card --card_dir=DIR; --card=true/false stay switches
  assert launch.card_path_flags(["--card=out/c", "--card=false", "--card", "--cardx=1"]) == [
      "--card", "--card_dir=out/c", "--card=false", "--card", "--cardx=1"]
