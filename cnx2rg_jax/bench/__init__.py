"""Benchmarks: each prints JSON lines and asserts no speed (timings never go in tests).

- `input`: `--mode=bench_input` (the training input pipeline, examples/s);
- `train`: `--mode=bench_train` (the jitted train step of the demo and paper dims, examples/s,
  MFU, and the paper model's state memory per sharding strategy);
- `decode`: `--mode=bench_decode` (cached and naive beam search, reports/s);
- `decode_parts`: where a cached decode step's time goes, part by part;
- `length_buckets`: what length-bucketed batches save on the synthetic set's report lengths;
- `r2gen_side_by_side`: R2Gen's own PyTorch code and ours in one run, train step and decode;
- `train_parts`: where the train step's time goes, part by part (`r2gen_side_by_side --parts`);
- `timing`: `timed`, the min/median wall and CPU seconds both of those report.
"""
