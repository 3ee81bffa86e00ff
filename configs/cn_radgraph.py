"""CN-RadGraph extractor configs: `--config=configs/cn_radgraph.py` trains on the synthetic
CN-CXR's graphs on a CPU in minutes; `:tiny` is the seconds-long run the tests use.

Train on your own annotations (the JSON format of cnx2rg_jax/radgraph/annotations.py) with
`--config.data.source=file --config.data.annotations=PATH`.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "cn_radgraph"  # tells launch.py which job this is
  c.variant = variant or "default"
  c.seed = 0

  c.data = d = ml_collections.ConfigDict()
  d.source = "synthetic"  # "synthetic" (graphs of the synthetic CN-CXR) | "file"
  d.annotations = ""  # data.source="file": the JSON file
  d.num_examples = 4000  # synthetic reports (split 7:1:2 as the synthetic CN-CXR)
  d.synthetic_seed = 0
  d.split_seed = 0  # a file without data_split: seed of its 7:1:2 split

  # every default of cnx2rg_jax/radgraph/model.py's RadGraphConfig (it has none of its own)
  c.model = m = ml_collections.ConfigDict()
  m.max_chars = 160  # characters a window; longer reports are cut at sentence ends
  m.max_entities = 48  # entities a window
  m.d_model = 128
  m.num_layers = 2
  m.num_heads = 4
  m.d_ff = 256
  m.dropout = 0.1
  m.pair_dim = 128
  m.max_distance = 64  # signed character distance between paired entities, clipped
  m.ngram_width = 3  # a convolution over this many characters before the Transformer
  m.bucket_step = 32  # batches are padded to a multiple of this many characters

  c.train = tr = ml_collections.ConfigDict()
  tr.batch_size = 32
  tr.num_steps = 600
  tr.learning_rate = 1e-3
  tr.warmup_steps = 100
  tr.final_lr_fraction = 0.01  # cosine decays to this fraction of learning_rate
  tr.weight_decay = 0.01
  tr.clip_norm = 1.0
  tr.relation_weight = 1.0  # loss = tag CE + relation_weight * pair CE
  tr.eval_every = 200

  c.eval = e = ml_collections.ConfigDict()
  e.batch_size = 64  # windows a jitted inference call

  if variant == "tiny":
    d.num_examples = 60
    m.d_model, m.d_ff, m.pair_dim, m.num_layers, m.num_heads = 32, 64, 32, 1, 2
    m.bucket_step = m.max_chars  # one compiled shape: compiling dominates a tiny run
    tr.batch_size, tr.num_steps, tr.eval_every, tr.warmup_steps = 8, 40, 20, 5
    e.batch_size = 16
  elif variant not in ("", "default"):
    raise ValueError(f"unknown variant {variant!r} of configs/cn_radgraph.py; use '' or 'tiny'")
  return c
