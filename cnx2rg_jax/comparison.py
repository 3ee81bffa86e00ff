"""The paper's comparison from one command: R2Gen, R2GenCMN and CN-X2RG trained on the same data
and seeds, with what each costs to train on this machine.

    python -m cnx2rg_jax.ablation --compare=r2gen,cmn,cnx2rg --seeds=0,1,2 [--root=DIR]

Each (model, seed) is one ordinary run, `python launch.py --config=configs/cnx2rg.py:VARIANT
--config.seed=SEED --workdir=DIR/MODEL/seed_SEED`, resumable as the ablation's (a run whose test
metrics exist is kept). The variants are the demo's scale on the synthetic CN-CXR, one schedule,
beam decoding: `ablation=r2gen` (R2Gen alone), `cmn_demo` (R2GenCMN, models/cmn.py, with its Adam
betas/eps) and `ablation=all` (CN-X2RG: R2Gen with all of the paper's additions). Extra
`--config.KEY=VALUE` flags go to every run and to the cost measurements.

After the runs, each model's cost is measured here, once (DIR/MODEL/efficiency.json; delete it to
measure again), on this machine: its parameter count; train examples/s of its jitted train step
(bench.train.time_config, random batches of its shapes, after warm-up); its train state
(parameters + optimizer state) from training.memory_plan; the compiled train step's memory by
XLA's buffer assignment (arguments + outputs + temporaries - aliased: what one step holds at its
peak, activations included), and the backend's peak where it reports one (GPU/TPU). DIR/
comparison.json and DIR/comparison.md hold the quality metrics' mean and spread (sample standard
deviation over seeds) and the costs.
"""

from __future__ import annotations

import ast
import functools
import json
import pathlib
from typing import Callable, Optional, Sequence

import numpy as np

# --compare name -> configs/cnx2rg.py variant
MODELS = {"r2gen": "ablation=r2gen", "cmn": "cmn_demo", "cnx2rg": "ablation=all"}
QUALITY = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider",
           "clinical_precision", "clinical_recall", "clinical_f1")
COSTS = ("parameters", "train_examples_per_sec", "train_state_mib", "train_step_memory_mib",
         "backend_peak_memory_mib")
EFFICIENCY_FILE = "efficiency.json"
MIB = 2 ** 20


def config_of(name: str, overrides: Sequence[str] = (), *, get_config: Callable):
  """configs/cnx2rg.py:MODELS[name] (`get_config`: that file's, variant -> config) with
  `--config.KEY=VALUE` overrides applied."""
  config = get_config(MODELS[name])
  for item in overrides:
    if not item.startswith("--config.") or "=" not in item:
      raise ValueError(f"override {item!r} is not --config.KEY=VALUE")
    key, _, text = item.removeprefix("--config.").partition("=")
    *path, leaf = key.split(".")
    node = config
    for part in path:
      node = node[part]
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text
    node[leaf] = value
  return config


def step_memory_mib(config, vocab_size: int) -> tuple[float, float]:
  """(MiB of the train state by training.memory_plan, MiB the compiled train step holds at its
  peak by XLA's buffer assignment: arguments + outputs + temporaries - aliased), on one device,
  from shapes only (nothing is allocated)."""
  import jax  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax import sharding  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.models import factory  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.training import memory_plan, optimizer, steps  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.training import state as state_lib  # pylint: disable=import-outside-toplevel
  mesh = sharding.make_mesh((1,), ("data",), jax.devices()[:1])
  model = factory.build_model(config, vocab_size)
  tx, schedules = optimizer.make_optimizer(config.train, steps_per_epoch=100)
  b, crop, tokens = config.train.batch_size, config.data.crop_size, config.data.max_tokens
  abstract, shardings, _ = state_lib.abstract_state(model, tx, mesh, image_size=crop,
                                                    num_tokens=tokens - 1, strategy="data")
  shapes = {"image": model.config.image_shape(b, crop), "report_tokens": (b, tokens),
            "report_mask": (b, tokens), "keyword_labels": (b, 48), "has_keyword_labels": (b,)}
  dtypes = {"image": np.float32, "report_tokens": np.int32, "report_mask": np.int32,
            "keyword_labels": np.int8, "has_keyword_labels": np.bool_}
  step = steps.make_train_step(model, tx, mesh, shardings, shapes,
                               keyword_weight=max(config.train.keyword_weight, 0.1),
                               dropout_seed=config.seed, lr_fn=schedules["rest"])
  batch = {k: jax.ShapeDtypeStruct(s, dtypes[k]) for k, s in shapes.items()}
  stats = step.lower(abstract, batch).compile().memory_analysis()
  total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
           + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
  state = sum(memory_plan.per_device_bytes(t) for t in
              (abstract.params, abstract.opt_state, abstract.batch_stats))
  return round(state / MIB, 2), round(total / MIB, 1)


def measure(name: str, vocab_size: int, overrides: Sequence[str] = (),
            steps: int = 3, warmup: int = 1, *, get_config: Callable) -> dict:
  """One model's costs on this machine (see the module docstring); `get_config` as `config_of`
  takes it."""
  import jax  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.bench import train as bench_train  # pylint: disable=import-outside-toplevel
  config = config_of(name, overrides, get_config=get_config)
  timed = bench_train.time_config(config, vocab_size, steps, warmup)
  state_mib, step_mib = step_memory_mib(config, vocab_size)
  return {"variant": MODELS[name], "device": jax.devices()[0].device_kind,
          "vocab_size": vocab_size, "batch": timed["batch"],
          "parameters": timed["parameters"],
          "train_examples_per_sec": timed["examples_per_sec"],
          "train_state_mib": state_mib, "train_step_memory_mib": step_mib,
          "backend_peak_memory_mib": timed["peak_memory_mib"]}


def _vocab_size(root: pathlib.Path, names: Sequence[str], default: int) -> int:
  """The word vocabulary of a finished run (all runs share the data), else `default`."""
  from cnx2rg_jax.text import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  for name in names:
    for tok_dir in sorted((root / name).glob("seed_*/tokenizer")):
      return tokenizer_lib.load_tokenizer(tok_dir).vocab_size
  return default


def measure_all(root: pathlib.Path, names: Sequence[str], overrides: Sequence[str] = (),
                measure_fn: Optional[Callable[..., dict]] = None,
                log: Callable[[str], None] = print, *, get_config: Callable) -> None:
  """DIR/MODEL/efficiency.json for every model that has none yet, by `measure_fn(name, vocab,
  overrides)` (default `measure` with `get_config`, as `config_of` takes it)."""
  measure_fn = measure_fn or functools.partial(measure, get_config=get_config)
  default_vocab = config_of(names[0], overrides, get_config=get_config).bench.train_vocab_size
  vocab = _vocab_size(root, names, default_vocab)
  for name in names:
    path = root / name / EFFICIENCY_FILE
    if path.exists():
      log(f"{name}: costs measured before, kept ({path})")
      continue
    log(f"{name}: measuring its train step's speed and memory")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(measure_fn(name, vocab, overrides), indent=2) + "\n",
                    encoding="utf-8")


def _mean_spread(values):
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def aggregate(root: pathlib.Path, names: Sequence[str]) -> dict:
  """{'models': {name: {'seeds', 'mean', 'spread', 'costs'}}} from the runs under `root`."""
  out: dict = {"models": {}}
  for name in names:
    runs = sorted((root / name).glob("seed_*/eval/test_metrics.json"))
    metrics = [json.loads(p.read_text(encoding="utf-8")) for p in runs]
    entry = {"variant": MODELS[name],
             "seeds": [int(p.parent.parent.name.removeprefix("seed_")) for p in runs],
             "mean": {}, "spread": {}, "costs": None}
    for m in QUALITY:
      entry["mean"][m], entry["spread"][m] = _mean_spread([x.get(m) for x in metrics])
    eff = root / name / EFFICIENCY_FILE
    if eff.exists():
      entry["costs"] = json.loads(eff.read_text(encoding="utf-8"))
    out["models"][name] = entry
  return out


def _cell(mean: Optional[float], spread: Optional[float]) -> str:
  if mean is None:
    return "n/a"
  return f"{mean:.3f}" if spread is None else f"{mean:.3f} ± {spread:.3f}"


def markdown(result: dict) -> str:
  """Two tables: quality (mean ± spread over seeds) and costs on the machine that measured."""
  lines = ["| model | seeds | " + " | ".join(QUALITY) + " |",
           "|---|---:|" + "---:|" * len(QUALITY)]
  for name, e in result["models"].items():
    lines.append(f"| {name} | {len(e['seeds'])} | "
                 + " | ".join(_cell(e["mean"][m], e["spread"][m]) for m in QUALITY) + " |")
  lines += ["", "| model | " + " | ".join(COSTS) + " | device |", "|---|" + "---:|" * len(COSTS)
            + "---|"]
  for name, e in result["models"].items():
    c = e["costs"] or {}
    lines.append(f"| {name} | " + " | ".join("n/a" if c.get(k) is None else f"{c[k]:,}"
                                             for k in COSTS) + f" | {c.get('device', 'n/a')} |")
  return "\n".join(lines)


def write(root: pathlib.Path, result: dict) -> None:
  (root / "comparison.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
  (root / "comparison.md").write_text(markdown(result) + "\n", encoding="utf-8")
