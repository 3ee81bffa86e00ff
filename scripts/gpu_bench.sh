#!/usr/bin/env bash
# The accelerator figures of the README, on one machine with a GPU (or TPU), in about 5 minutes:
#   1. paper-config training in bfloat16 at global batch 16, 32 and 64: examples/s, model FLOP/s
#      from the analytic count (cnx2rg_jax/models/flops.py), MFU against the chip's dense
#      bfloat16 peak, peak device memory;
#   2. decode reports/s of the cached beam search (beam 3, 100 tokens, bfloat16) at batch 16,
#      64 and 256, from images;
#   3. a decode step's work part by part (cnx2rg_jax/bench/decode_parts.py) at batch 16 and 256:
#      on an accelerator each step is a chain of small kernels, so the batch is what pays off.
# Each step prints one JSON line to stdout; progress goes to stderr. Usage:
#   scripts/gpu_bench.sh [OUT_DIR]        (default: gpu_bench/; needs the requirements installed)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_bench}"
mkdir -p "$out"
py="${PYTHON:-python3}"
"$py" -c 'import jax; d = jax.devices()[0]; print(d.platform, d.device_kind, jax.device_count())' \
  | tee "$out/device.txt"
"$py" launch.py --config=configs/cnx2rg.py:paper --mode=bench_train \
  "--config.bench.train_configs=('paper',)" "--config.bench.train_batch_sizes=(16,32,64)" \
  --config.bench.train_steps=10 --config.bench.train_warmup=2 --config.model.dtype=bfloat16 \
  | tee "$out/train.json"
"$py" launch.py --config=configs/bench_decode.py:gpu --mode=bench_decode | tee "$out/decode.json"
for batch in 16 256; do
  "$py" -m cnx2rg_jax.bench.decode_parts --batch="$batch" | tee "$out/decode_parts_$batch.json"
done
