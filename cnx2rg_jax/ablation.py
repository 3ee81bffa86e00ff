"""The ablation of the paper's additions to R2Gen, run and tabulated.

    python -m cnx2rg_jax.ablation --root=DIR [--names=r2gen,all] [--seeds=0,1,2] [--aggregate_only]
    python -m cnx2rg_jax.ablation --compare=r2gen,cmn,cnx2rg [--seeds=0,1,2] [--root=DIR]

(both take --config=FILE, default configs/cnx2rg.py: the runs' config file, whose ABLATIONS
name the ablation's configurations and whose variants the comparison measures)

The second form is the paper's model comparison (cnx2rg_jax/comparison.py): R2Gen, R2GenCMN and
CN-X2RG on the same data and seeds, plus each model's parameters, train speed and memory.

Each (name, seed) is one ordinary run, `python launch.py --config=configs/cnx2rg.py:ablation=NAME
--config.seed=SEED --workdir=DIR/NAME/seed_SEED`, at the demo's scale on the synthetic CN-CXR;
its test metrics land in that workdir's eval/ as in any run. A run whose test metrics exist is
not repeated, so the ablation can be stopped and continued. Then DIR/ablation.json and
DIR/ablation.md hold, per configuration, the mean and the spread (sample standard deviation over
seeds) of BLEU-1..4, METEOR, ROUGE-L, CIDEr and clinical P/R/F1, the keyword head's test AUROC
(macro and per keyword), and for every addition its difference from R2Gen alone, which is called
"no difference" where it is smaller than the larger of the two spreads.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import subprocess
import sys
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from cnx2rg_jax import comparison, config_files

# The configurations (R2Gen alone, R2Gen plus one addition, and everything) are the config file's
# ABLATIONS (configs/cnx2rg.py), each run as its variant ablation=NAME.
METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider",
           "clinical_precision", "clinical_recall", "clinical_f1", "keyword_head_macro_auroc")
COMPARED = ("bleu_4", "cider", "clinical_f1")  # the differences the table states
ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG_FILE = str(ROOT / "configs" / "cnx2rg.py")  # the runs' config file (--config's default)


def ablation_variants(names: Sequence[str]) -> dict[str, str]:
  """name -> its variant of the config file, ablation=NAME (`names`: the file's ABLATIONS)."""
  return {n: f"ablation={n}" for n in names}


def run_dir(root: pathlib.Path, name: str, seed: int) -> pathlib.Path:
  return root / name / f"seed_{seed}"


def command(name: str, seed: int, workdir: pathlib.Path, overrides: Sequence[str] = (),
            variant: Optional[str] = None, config_file: str = CONFIG_FILE) -> list[str]:
  """The launch.py command line of one run of `config_file`:`variant` (default
  ablation=`name`)."""
  return [sys.executable, str(ROOT / "launch.py"),
          f"--config={config_file}:{variant or 'ablation=' + name}",
          f"--config.seed={seed}", f"--workdir={workdir}", *overrides]


def _runner(cmd: list[str], log: pathlib.Path) -> int:
  with open(log, "a", encoding="utf-8") as f:
    return subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, check=False).returncode


def run_all(root: pathlib.Path, names: Sequence[str], seeds: Sequence[int],
            overrides: Sequence[str] = (), runner: Callable[[list[str], pathlib.Path], int] = _runner,
            log: Callable[[str], None] = print, *, variants: Mapping[str, str],
            config_file: str = CONFIG_FILE) -> list[tuple[str, int]]:
  """Runs every (name, seed) whose test metrics are missing; returns the ones that failed.
  `variants`: name -> variant of `config_file` (the ablation's: `ablation_variants`)."""
  failed = []
  for name in names:
    if name not in variants:
      raise ValueError(f"unknown ablation {name!r}; use one of {', '.join(variants)}")
    for seed in seeds:
      wd = run_dir(root, name, seed)
      if (wd / "eval" / "test_metrics.json").exists():
        log(f"{name} seed {seed}: done before, kept ({wd})")
        continue
      wd.mkdir(parents=True, exist_ok=True)
      log(f"{name} seed {seed}: running, log in {wd / 'log.txt'}")
      rc = runner(command(name, seed, wd, overrides, variants[name], config_file), wd / "log.txt")
      if rc != 0 or not (wd / "eval" / "test_metrics.json").exists():
        log(f"{name} seed {seed}: FAILED (exit {rc}); see {wd / 'log.txt'}")
        failed.append((name, seed))
  return failed


def _mean_spread(values: list[float]) -> tuple[Optional[float], Optional[float]]:
  values = [v for v in values if v is not None]
  if not values:
    return None, None
  spread = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return float(np.mean(values)), spread


def _verdict(diff: float, spread_a: Optional[float], spread_b: Optional[float]) -> str:
  spreads = [s for s in (spread_a, spread_b) if s is not None]
  if not spreads:
    return "one seed: no spread to judge by"
  if abs(diff) <= max(spreads):
    return "no difference"
  return "better" if diff > 0 else "worse"


def _head_trained(run: pathlib.Path) -> bool:
  """Whether the run trained its keyword head (train.keyword_weight > 0, read from the run's
  config.json; a run without one is taken as trained)."""
  f = run / "config.json"
  if not f.exists():
    return True
  return float(json.loads(f.read_text(encoding="utf-8"))["train"]["keyword_weight"]) > 0


def aggregate(root: pathlib.Path, names: Sequence[str]) -> dict:
  """Mean and spread per configuration over the seeds found under `root`."""
  out: dict = {"configs": {}, "vs_r2gen": {}}
  for name in names:
    runs = sorted((root / name).glob("seed_*/eval/test_metrics.json"))
    if not runs:
      continue
    metrics = [json.loads(p.read_text(encoding="utf-8")) for p in runs]
    aurocs = []
    for p in runs:
      f = p.parent / "test_keyword_auroc.json"
      if _head_trained(p.parent.parent) and f.exists():
        aurocs.append(json.loads(f.read_text(encoding="utf-8"))["per_keyword"])
      else:  # an untrained head's constant output scores 0.5: not a measurement
        aurocs.append({})
        metrics[len(aurocs) - 1]["keyword_head_macro_auroc"] = None
    entry = {"seeds": [int(p.parent.parent.name.removeprefix("seed_")) for p in runs],
             "mean": {}, "spread": {}, "keyword_auroc_mean": {}}
    for m in METRICS:
      entry["mean"][m], entry["spread"][m] = _mean_spread([x.get(m) for x in metrics])
    for key in (aurocs[0] if aurocs else {}):
      entry["keyword_auroc_mean"][key] = _mean_spread([a.get(key, {}).get("auroc")
                                                       for a in aurocs])[0]
    out["configs"][name] = entry
  base = out["configs"].get("r2gen")
  for name, entry in out["configs"].items():
    if name == "r2gen" or base is None:
      continue
    out["vs_r2gen"][name] = {}
    for m in COMPARED:
      a, b = entry["mean"][m], base["mean"][m]
      if a is None or b is None:
        continue
      out["vs_r2gen"][name][m] = {
          "difference": a - b,
          "verdict": _verdict(a - b, entry["spread"][m], base["spread"][m])}
  return out


def _cell(mean: Optional[float], spread: Optional[float]) -> str:
  if mean is None:
    return "n/a"
  return f"{mean:.3f}" if spread is None or math.isnan(spread) else f"{mean:.3f} ± {spread:.3f}"


def markdown(result: dict) -> str:
  """The ablation table, the differences from R2Gen, and the per-keyword AUROC beside them."""
  cols = METRICS
  lines = ["| configuration | seeds | " + " | ".join(cols) + " |",
           "|---|---:|" + "---:|" * len(cols)]
  for name, e in result["configs"].items():
    lines.append(f"| {name} | {len(e['seeds'])} | "
                 + " | ".join(_cell(e["mean"][m], e["spread"][m]) for m in cols) + " |")
  if result["vs_r2gen"]:
    lines += ["", "Difference from R2Gen alone (mean over seeds; \"no difference\" where it is "
              "within the larger spread):", "",
              "| configuration | " + " | ".join(COMPARED) + " |", "|---|" + "---|" * len(COMPARED)]
    for name, d in result["vs_r2gen"].items():
      lines.append(f"| {name} | " + " | ".join(
          f"{d[m]['difference']:+.3f} ({d[m]['verdict']})" if m in d else "n/a"
          for m in COMPARED) + " |")
  names = list(result["configs"])
  keys = sorted({k for e in result["configs"].values() for k, v in e["keyword_auroc_mean"].items()
                 if v is not None})
  if keys:
    lines += ["", "Keyword head test AUROC per keyword (mean over seeds):", "",
              "| keyword | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for k in keys:
      vals = [result["configs"][n]["keyword_auroc_mean"].get(k) for n in names]
      lines.append(f"| {k} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in vals)
                   + " |")
  return "\n".join(lines)


def write(root: pathlib.Path, result: dict) -> None:
  (root / "ablation.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
  (root / "ablation.md").write_text(markdown(result) + "\n", encoding="utf-8")


def compare(root: pathlib.Path, names: Sequence[str], seeds: Sequence[int],
            overrides: Sequence[str], aggregate_only: bool, results: Optional[pathlib.Path],
            runner: Callable[[list[str], pathlib.Path], int] = _runner,
            measure_fn: Optional[Callable[..., dict]] = None, *, get_config: Callable,
            config_file: str = CONFIG_FILE) -> int:
  """The model comparison (cnx2rg_jax/comparison.py): runs of `config_file`'s variants, costs,
  tables in `root` and in `results` (e.g. the repository's results/). `get_config` (variant ->
  config of the same file) and `measure_fn` as `comparison.measure_all` takes them."""
  failed = [] if aggregate_only else run_all(root, names, seeds, overrides, runner=runner,
                                             variants=comparison.MODELS, config_file=config_file)
  root.mkdir(parents=True, exist_ok=True)
  if not aggregate_only:
    comparison.measure_all(root, names, overrides, measure_fn, get_config=get_config)
  result = comparison.aggregate(root, names)
  for folder in (root, results):
    if folder is not None:
      folder.mkdir(parents=True, exist_ok=True)
      comparison.write(folder, result)
  print(comparison.markdown(result))
  print(f"wrote comparison.json and comparison.md to {root}" + (f" and {results}" if results
                                                                 else ""))
  return 1 if failed else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--root", default=None, help="folder of the runs and tables (needed for the "
                 "ablation; --compare: default runs/compare)")
  p.add_argument("--compare", default="", help="comma-separated models of the comparison, from "
                 f"{', '.join(comparison.MODELS)} (instead of the ablation)")
  p.add_argument("--results", default=str(ROOT / "results"),
                 help="--compare: also write comparison.{json,md} here ('' = only --root)")
  p.add_argument("--names", default=None, help="comma-separated configurations (default: all "
                 "of the config file's ABLATIONS)")
  p.add_argument("--config", default="configs/cnx2rg.py",
                 help="the runs' config file: its ablation=NAME variants, or --compare's models")
  p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
  p.add_argument("--aggregate_only", action="store_true", help="tabulate the finished runs only")
  p.add_argument("overrides", nargs="*", help="extra launch.py flags, e.g. --config.KEY=VALUE")
  args = p.parse_args(argv)
  try:
    seeds = [int(s) for s in args.seeds.split(",") if s]
  except ValueError:
    print(f"error: --seeds={args.seeds} must be comma-separated integers", file=sys.stderr)
    return 2
  config_file = str(pathlib.Path(config_files.resolve(args.config)).absolute())
  if args.compare:
    names = [n for n in args.compare.split(",") if n]
    unknown = [n for n in names if n not in comparison.MODELS]
    if unknown or not names:
      print(f"error: --compare={args.compare}: unknown model(s) {unknown}; use "
            f"{', '.join(comparison.MODELS)}", file=sys.stderr)
      return 2
    return compare(pathlib.Path(args.root or "runs/compare"), names, seeds, args.overrides,
                   args.aggregate_only, pathlib.Path(args.results) if args.results else None,
                   get_config=config_files.getter(config_file), config_file=config_file)
  if not args.root:
    print("error: the ablation needs --root=DIR (its runs and tables)", file=sys.stderr)
    return 2
  root = pathlib.Path(args.root)
  try:
    ablations = tuple(config_files.module(config_file).ABLATIONS)
  except (OSError, AttributeError) as e:
    print(f"error: --config={args.config} names no config file with ABLATIONS ({e})",
          file=sys.stderr)
    return 2
  names = [n for n in args.names.split(",") if n] if args.names is not None else list(ablations)
  unknown = [n for n in names if n not in ablations]
  if unknown:
    print(f"error: unknown ablation configuration(s) {unknown}; use {', '.join(ablations)}",
          file=sys.stderr)
    return 2
  failed = [] if args.aggregate_only else run_all(
      root, names, seeds, args.overrides, variants=ablation_variants(ablations),
      config_file=config_file)
  root.mkdir(parents=True, exist_ok=True)
  result = aggregate(root, names)
  write(root, result)
  print(markdown(result))
  print(f"wrote {root / 'ablation.json'} and {root / 'ablation.md'}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
