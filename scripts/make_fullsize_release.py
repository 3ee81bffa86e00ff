"""Writes a plain release folder of full-size 16-bit radiographs for input benchmarks.

    python scripts/make_fullsize_release.py --out=/tmp/fullsize --num=300 [--height=2500 --width=2048]

Synthetic CN-CXR studies (seed 0), each rendered at 256 pixels and scaled up to height x width
with 12-bit data in a 16-bit PNG and fine detector noise (so the files compress like real ones,
~4-6 MB each), with only id, report and image_path in annotation.json (a flat list, split 7:1:2
by the build): the shape of a CN-CXR, IU X-Ray or MIMIC-CXR release. Then time it with
`python launch.py --config=configs/cnx2rg.py --mode=bench_input --config.data.name=release
--config.data.manual_dir=/tmp/fullsize --config.data.image_size=256 --config.data.crop_size=224`.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tfds_cncxr.synthetic import generate, render  # noqa: E402  (after the path)


def full_size(index: int, height: int, width: int) -> tuple[str, np.ndarray]:
  patient, findings, report, _, _ = generate.make_study(0, index)
  small = render.render_radiograph(patient, findings, 256).astype(np.float32)
  big = np.asarray(Image.fromarray(small, mode="F").resize((width, height), Image.BILINEAR))
  noise = np.random.default_rng(index).normal(0, 6, big.shape)
  return report.text, np.clip(big * 16 + 200 + noise, 0, 4095).astype(np.uint16)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", required=True)
  p.add_argument("--num", type=int, default=300)
  p.add_argument("--height", type=int, default=2500)
  p.add_argument("--width", type=int, default=2048)
  args = p.parse_args()
  root = pathlib.Path(args.out)
  (root / "images").mkdir(parents=True, exist_ok=True)
  entries = []
  for i in range(args.num):
    report, pixels = full_size(i, args.height, args.width)
    name = f"study{i:05d}.png"
    Image.fromarray(pixels).save(root / "images" / name, compress_level=1)
    entries.append({"id": f"study{i:05d}", "report": report, "image_path": [name]})
  (root / "annotation.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
  print(f"wrote {args.num} studies of {args.height}x{args.width} 16-bit PNGs to {root}")


if __name__ == "__main__":
  main()
