"""Writes the synthetic CN-CXR's graphs as a CN-RadGraph annotation file (see `annotations`).

    python -m cnx2rg_jax.radgraph.export_synthetic --output=F.json [--num_examples=4000] [--seed=0]

The reports, ids and 7:1:2 splits are those of the `cncxr/synthetic` TFDS build with the same
size and seed. Prints one line, "wrote N reports (train a, val b, test c) to F.json". Exit codes:
0 on success; 2 for bad flags or a file that cannot be written, with a one-line message on stderr.
"""

from __future__ import annotations

import argparse
import collections
import sys

from cnx2rg_jax.radgraph import annotation_writer

DEFAULT_NUM_EXAMPLES = 4000  # tfds_cncxr.cncxr.DEFAULT_SYNTHETIC_EXAMPLES


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="python -m cnx2rg_jax.radgraph.export_synthetic",
      description="Writes the synthetic CN-CXR's reports and graphs as CN-RadGraph annotations.")
  p.add_argument("--output", required=True, help="the annotation file to write (JSON)")
  p.add_argument("--num_examples", type=int, default=DEFAULT_NUM_EXAMPLES,
                 help="studies in the synthetic set (default %(default)s)")
  p.add_argument("--seed", type=int, default=0, help="the synthetic set's seed (default 0)")
  return p


def main(argv: list[str] | None = None) -> int:
  """Runs the CLI on `argv` (default sys.argv[1:]); returns the exit code (0 or 2)."""
  parser = _parser()
  args = parser.parse_args(argv)  # exits with 2 on bad flags
  if args.num_examples < 1:
    parser.error(f"--num_examples={args.num_examples}: need at least 1")
  reports = annotation_writer.synthetic_reports(args.num_examples, args.seed)
  try:
    annotation_writer.write_annotations(args.output, reports)
  except OSError as e:
    print(f"error: cannot write {args.output}: {e.strerror or e}", file=sys.stderr)
    return 2
  counts = collections.Counter(r.split for r in reports)
  print(f"wrote {len(reports)} reports (train {counts['train']}, val {counts['val']}, "
        f"test {counts['test']}) to {args.output}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
