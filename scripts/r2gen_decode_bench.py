"""R2Gen's own beam search against ours (kept for the old command line): a thin wrapper of
`python -m cnx2rg_jax.bench.r2gen_side_by_side --only=decode`.

    R2GEN_DIR=/path/to/R2Gen python scripts/r2gen_decode_bench.py [--max_len=60] [--batch=16]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cnx2rg_jax.bench import r2gen_side_by_side  # noqa: E402  pylint: disable=wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--max_len", type=int, default=60, help="R2Gen's max_seq_length (IU 60)")
  p.add_argument("--batch", type=int, default=16)
  p.add_argument("--beam", type=int, default=3)
  p.add_argument("--vocab", type=int, default=760, help="R2Gen's vocab_size (IU X-Ray: 760)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--small", action="store_true", help="ResNet-18, d 32: a smoke run")
  args = p.parse_args(argv)
  return r2gen_side_by_side.main(
      [f"--settings={args.vocab}:{args.max_len}", f"--batch={args.batch}", f"--beam={args.beam}",
       f"--repeats={args.repeats}", "--only=decode", f"--dims={'tiny' if args.small else 'r2gen'}"])


if __name__ == "__main__":
  sys.exit(main())
