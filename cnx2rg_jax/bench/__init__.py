"""Benchmarks: each prints JSON lines and asserts no speed (timings never go in tests).

- `decode`: `--mode=bench_decode` (cached and naive beam search, reports/s);
- `r2gen_side_by_side`: R2Gen's own PyTorch code and ours in one run, train step and decode;
- `train_parts`: where the train step's time goes, part by part (`r2gen_side_by_side --parts`).
"""
