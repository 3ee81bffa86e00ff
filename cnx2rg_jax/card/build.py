"""Builds the report card of an evaluation (`write_eval_card`) or of a prediction run
(`write_predict_card`).

    --mode=eval --card (and --mode=train's final test):  DIR/eval/<split>_card/index.html
    --mode=predict --card_dir=OUT:                        OUT/index.html

Every process must call these (the attention pass is collective, as beam search is); process 0
alone writes. The page embeds everything (PNG data URIs, inline SVG, CSS and script).
"""

from __future__ import annotations

import base64
import io
import pathlib
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from PIL import Image

from cnx2rg_jax.errors import UserError
from cnx2rg_jax.card import attention, cases as cases_lib, curves, html_page, spans as spans_lib
from cnx2rg_jax.data import pipeline
from cnx2rg_jax.evaluation import clinical
from cnx2rg_jax.text.labeler import label_report
from cnx2rg_jax.inference import provenance, run_facts
from cnx2rg_jax.text import keywords as kw
from cnx2rg_jax.inference import generate

CARD_FILE = "index.html"


class CardError(UserError):
  """The card cannot be made (bad card settings); the message names the item."""


def check_card_config(card) -> None:
  """Raises CardError for a card section whose values are unusable."""
  n = card.get("num_cases")
  if isinstance(n, bool) or not isinstance(n, int) or n < 0:
    raise CardError(f"config key card.num_cases={n!r} is not allowed: it must be an integer "
                    ">= 0 (0 shows every case). Fix it in the config file or with "
                    "--config.card.num_cases=24")


def _stretch(x: np.ndarray) -> np.ndarray:
  lo, hi = float(x.min()), float(x.max())
  return np.zeros(x.shape, np.uint8) if hi <= lo else np.round(
      (x - lo) / (hi - lo) * 255).astype(np.uint8)


def display_png_b64(model_input: np.ndarray) -> str:
  """The model's input image [H, W, 1] (normalised) stretched to 0..255 as a base64 PNG: the
  pixels the model saw, with their contrast. A study's views [V, H, W, 1] are each stretched
  on their own and laid side by side, [H, V * W], as the attention maps are."""
  x = np.asarray(model_input, np.float64)[..., 0]
  gray = (np.concatenate([_stretch(v) for v in x], axis=1) if x.ndim == 3 else _stretch(x))
  buf = io.BytesIO()
  Image.fromarray(gray).save(buf, format="PNG", optimize=True)
  return base64.b64encode(buf.getvalue()).decode("ascii")


def split_images(prepared, split: str, indices: Sequence[int], data) -> np.ndarray:
  """The evaluation images [N, crop, crop, 1] (or [N, V, crop, crop, 1] for a build with V
  views) of `split`'s examples `indices`, prepared by the eval pipeline's own transform."""
  source = prepared.source(split)
  prepare = pipeline.make_transform(data, None, prepared.report_cleaner,
                                    num_views=prepared.num_views).prepare_image
  out = [prepare(source[int(i)], None) for i in indices]
  crop, views = data.crop_size, prepared.num_views
  shape = (0, crop, crop, 1) if views == 1 else (0, views, crop, crop, 1)
  return np.stack(out) if out else np.zeros(shape, np.float32)


def _positive(labels) -> list[str]:
  return [k for k, v in labels.keywords.items() if v == kw.POSITIVE]


def case_view(number: int, case_id: str, reason: str, image: np.ndarray, generated: str,
              ids: np.ndarray, maps: np.ndarray, share: np.ndarray, grid, tokenizer,
              reference: Optional[str] = None, score: Optional[cases_lib.CaseScore] = None
              ) -> html_page.CaseView:
  """One case of the page: the labeler's spans of both reports (coloured against each other's
  positive pairs), the generated tokens' characters and attention maps."""
  gen = label_report(generated)
  ref = label_report(reference) if reference is not None else None
  gen_spans = spans_lib.highlight(gen, ref.pairs if ref is not None else None, "generated")
  token_spans = spans_lib.token_spans(tokenizer, ids, gen.text)
  n = len(token_spans)
  view = html_page.CaseView(
      number=number, case_id=case_id, reason=reason, image_png_b64=display_png_b64(image),
      generated=gen.text, generated_spans=gen_spans, token_spans=token_spans,
      maps=[np.round(m.reshape(-1).astype(np.float64), 4).tolist() for m in maps[:n]],
      visual_share=[round(float(s), 4) for s in share[:n]], grid=tuple(grid),
      views=image.shape[0] if image.ndim == 4 else 1)
  filters = {"gen": _positive(gen), "mentioned": sorted(gen.keywords)}
  if ref is not None:
    view.reference, view.reference_spans = ref.text, spans_lib.highlight(ref, gen.pairs,
                                                                        "reference")
    filters["ref"] = _positive(ref)
    filters["mentioned"] = sorted(set(gen.keywords) | set(ref.keywords))
  if score is not None:
    view.score = {"tp": score.tp, "fp": score.fp, "fn": score.fn, "f1": score.f1}
    filters["missed"] = sorted({l for _, l in score.missed})
    filters["false"] = sorted({l for _, l in score.false})
  view.filters = filters
  return view


def _write(folder: pathlib.Path, page: html_page.Page) -> pathlib.Path:
  folder.mkdir(parents=True, exist_ok=True)
  path = folder / CARD_FILE
  path.write_text(html_page.render(page), encoding="utf-8")
  return path


def _scorer_note(config) -> list[str]:
  if config.eval.clinical_scorer == "labeler":
    return []
  return [f"Scores use the {config.eval.clinical_scorer} clinical scorer; the highlighted "
          "spans and their colours come from the rule labeler, which may read some reports "
          "differently."]


def _provenance(config, workdir: str, run, facts) -> tuple[list, list[str]]:
  """(header facts, notes) on what the model was trained on (`inference.run_facts.RunFacts`;
  read from the workdir when not given) and its OOD reference."""
  facts = facts or run_facts.RunFacts.of(config, workdir, run)
  lines = [("trained on", provenance.describe(facts.fields))]
  if facts.reference is not None:
    r = facts.reference
    lines.append(("OOD score", f"k {r.k} nearest of {len(r.features)} training studies, "
                  f"threshold {r.threshold:.2f} (val quantile {r.quantile:g})"))
  else:
    lines.append(("OOD score", f"unavailable: {facts.unavailable}"))
  notes = [provenance.SYNTHETIC_WARNING] if facts.synthetic else []
  return lines, notes + ["Reports generated by this model are for research and are not a "
                         "diagnosis."]


def write_eval_card(config, workdir: str, split: str, run, prepared, results: dict,
                    rows: list[dict], token_ids: np.ndarray, index: np.ndarray,
                    labeler: Callable, config_name: str = "", card_dir: str = "",
                    log: Callable[[str], None] = print, facts=None) -> Optional[pathlib.Path]:
  """DIR/eval/<split>_card/index.html of an evaluation: `results` by method (the model's
  under "CN-X2RG", as written to <split>_metrics.json), `rows` the {"id", "prediction",
  "reference"} rows, `token_ids` [N, L] their generated ids and `index` [N] their examples'
  positions in `split`. Written to `card_dir` when given. Returns the path (None on processes
  other than 0)."""
  check_card_config(config.card)
  pred_pairs = clinical.pairs_many(labeler, [r["prediction"] for r in rows])
  ref_pairs = clinical.pairs_many(labeler, [r["reference"] for r in rows])
  scores = cases_lib.case_scores(pred_pairs, ref_pairs)
  chosen = cases_lib.select_cases(scores, config.card.num_cases, config.seed)
  rows_idx = [i for i, _ in chosen]
  images = split_images(prepared, split, [int(index[i]) for i in rows_idx], config.data)
  reader = attention.AttentionReader(run.model, run.variables, run.mesh, config.data.crop_size,
                                     run.generator.batch_size)
  maps, share = reader.maps(run.variables, images, np.asarray(token_ids)[rows_idx])
  if jax.process_index() != 0:
    return None
  views = [case_view(n + 1, rows[i]["id"], reason, images[n], rows[i]["prediction"],
                     token_ids[i], maps[n], share[n], reader.grid, run.tokenizer,
                     rows[i]["reference"], scores[i])
           for n, (i, reason) in enumerate(chosen)]
  metrics = results["CN-X2RG"]
  baselines = {k: v for k, v in results.items() if k != "CN-X2RG"}
  per_keyword = []
  for key, v in (metrics.get("per_keyword") or {}).items():
    per_keyword.append({"key": key, **v, "baselines": {
        n: (b.get("per_keyword") or {}).get(key, {}).get("f1") for n, b in baselines.items()}})
  from cnx2rg_jax.inference import evaluate  # pylint: disable=import-outside-toplevel
  trained_on, notes = _provenance(config, workdir, run, facts)
  page = html_page.Page(
      title=f"CN-X2RG report card: {split} split",
      facts=[("config", config_name or "(not given)"), ("variant", config.variant),
             ("workdir", workdir), ("checkpoint step", f"{run.step} ({run.chosen_by})"),
             *trained_on, ("split", f"{split}, {len(rows)} reports"),
             ("clinical scorer", config.eval.clinical_scorer),
             ("cases shown", f"{len(views)} (card.num_cases={config.card.num_cases}; best, "
              "worst and random by per-case clinical F1, seed " f"{config.seed})"),
             ("decoding", generate.describe(config.decode))],
      cases=views, results=results, metrics=metrics, table_metrics=evaluate.TABLE_METRICS,
      curves_svg=curves.curves_svg(curves.read_scalars(pathlib.Path(workdir) / "events")),
      per_keyword=per_keyword, baseline_names=list(baselines),
      confusion=cases_lib.confusion(scores, [r["id"] for r in rows]),
      notes=notes + _scorer_note(config))
  path = _write(pathlib.Path(card_dir) if card_dir
                else pathlib.Path(workdir) / "eval" / f"{split}_card", page)
  log(f"wrote the report card {path}")
  return path


def write_predict_card(config, workdir: str, run, paths: Sequence[str], images: np.ndarray,
                       reports: Sequence[str], token_ids: np.ndarray, card_dir: str,
                       config_name: str = "", num_predicted: Optional[int] = None,
                       log: Callable[[str], None] = print, facts=None,
                       reasons: Optional[Sequence[str]] = None) -> Optional[pathlib.Path]:
  """CARD_DIR/index.html of a prediction run: the first card.num_cases (0: all) of the given
  images in input order, each with its generated report, the labeler's spans and attention
  maps. `num_predicted`: how many reports the run wrote in all (default: the images given);
  `facts`, the run's `RunFacts`; `reasons`, each image's caption (default "input")."""
  check_card_config(config.card)
  n = len(paths) if config.card.num_cases == 0 else min(len(paths), config.card.num_cases)
  reader = attention.AttentionReader(run.model, run.variables, run.mesh, config.data.crop_size,
                                     run.generator.batch_size)
  maps, share = reader.maps(run.variables, np.asarray(images[:n], np.float32),
                            np.asarray(token_ids[:n]))
  if jax.process_index() != 0:
    return None
  views = [case_view(i + 1, paths[i], reasons[i] if reasons else "input", images[i], reports[i],
                     token_ids[i], maps[i], share[i], reader.grid, run.tokenizer)
           for i in range(n)]
  trained_on, notes = _provenance(config, workdir, run, facts)
  page = html_page.Page(
      title="CN-X2RG report card: predictions",
      facts=[("config", config_name or "(not given)"), ("variant", config.variant),
             ("workdir", workdir), ("checkpoint step", f"{run.step} ({run.chosen_by})"),
             *trained_on, ("images", f"{n} shown of {num_predicted or len(paths)} predicted")],
      cases=views, notes=notes)
  path = _write(pathlib.Path(card_dir), page)
  log(f"wrote the report card {path}")
  return path
