"""CN-X2RG configs: `--config=configs/cnx2rg.py` (the CPU demo on the synthetic CN-CXR) or
`--config=configs/cnx2rg.py:paper` (the paper's settings on a CN-CXR release).

Every key and its default lives here; code reads `config.data.crop_size`, never a hidden default.
Override any key from the command line: `--config.data.num_examples=400`.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.variant = variant or "demo"
  c.seed = 0

  c.data = d = ml_collections.ConfigDict()
  d.name = "synthetic"  # "synthetic" (embedded default) | "release" (a folder, data.manual_dir)
  d.manual_dir = ""  # release folder: annotation.json + images, R2Gen layout
  d.data_dir = ""  # TFDS builds; "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
  d.num_examples = 4000  # synthetic studies (split 7:1:2)
  d.synthetic_seed = 0
  d.synthetic_image_size = 256  # stored radiograph side, pixels
  d.language = "zh"  # release reports: "zh" | "en" (R2Gen-format IU X-Ray / MIMIC-CXR)
  d.english_style = "mimic_cxr"  # R2Gen's English cleaning: "iu_xray" | "mimic_cxr"
  d.skip_bad_examples = False  # release: skip broken entries (recorded) instead of failing
  d.split_seed = 0  # release without splits: seed of the 7:1:2 split
  d.num_shards = 4  # array_record shards per split
  d.build_workers = 2  # processes rendering synthetic images
  d.image_size = 256  # resize (the paper, Sect. 5.1)
  d.crop_size = 224  # random crop for training, center crop for evaluation
  d.normalization = "zscore"  # "zscore" per image (the paper) | "imagenet"
  d.max_tokens = 100  # bos + report tokens + eos, padded
  d.num_workers = 2  # grain worker processes (0 = in the main process)
  d.read_threads = 2  # grain reader threads per process
  d.prefetch = 32  # grain per-process prefetch buffer (elements)
  d.sentence_shuffle = False  # the paper's sentence shuffling, training only
  d.oversample = ml_collections.ConfigDict()
  d.oversample.enabled = False  # the paper's rare-keyword oversampling, training only
  d.oversample.min_count = 5000  # keywords with fewer positive reports are oversampled
  d.oversample.max_rate = 10  # to at most this many times their count
  d.oversample.max_samples = 5000  # and at most this many draws

  c.text = t = ml_collections.ConfigDict()
  t.tokenizer = "word"  # "word" (jieba + vocabulary) | "sentencepiece"
  t.min_count = 3  # word vocabulary threshold (R2Gen: 3 for IU X-Ray, 10 for MIMIC-CXR)
  t.vocab_size = 1000  # sentencepiece vocabulary size

  c.model = m = ml_collections.ConfigDict()  # see cnx2rg_jax/models/config.py
  m.resnet_depth = 101  # 18 | 34 | 50 | 101 (the paper and R2Gen: 101)
  m.num_prompts = 0  # learnable prompt tokens (the paper's prompt training; 0 = off)
  m.prompt_feature_dim = 0  # width of frozen image-text encoder features (0 = none)
  m.d_model = 512
  m.d_ff = 512
  m.num_heads = 8
  m.num_encoder_layers = 3
  m.num_decoder_layers = 3
  m.dropout = 0.1
  m.rm_num_slots = 3
  m.rm_num_heads = 8
  m.rm_d_model = 512
  m.dtype = "float32"  # activations: "float32" | "bfloat16"; parameters are always float32

  c.decode = dc = ml_collections.ConfigDict()
  dc.beam_size = 3  # R2Gen: 3
  dc.max_len = 100  # generated tokens, eos included (R2Gen: 60 for IU X-Ray, 100 for MIMIC-CXR)
  dc.length_penalty = 0.0  # GNMT alpha; R2Gen applies none
  dc.block_trigrams = False

  c.eval = ev = ml_collections.ConfigDict()
  ev.clinical_scorer = "labeler"  # clinical P/R/F1 pairs: "labeler" (rules) | "cn_radgraph"
  ev.cn_radgraph_dir = ""  # "cn_radgraph": workdir of a trained extractor (configs/cn_radgraph.py)

  c.mesh = ms = ml_collections.ConfigDict()  # see cnx2rg_jax/sharding.py
  ms.shape = (-1,)  # devices per axis; -1 takes the rest
  ms.axes = ("data",)  # "data" (batch split) and optionally "model" (large matrices split)

  c.train = tr = ml_collections.ConfigDict()  # see cnx2rg_jax/training/
  tr.batch_size = 16  # global batch (R2Gen: 16)
  tr.num_steps = 1000
  tr.log_every = 20  # progress line, TensorBoard scalars, NaN/Inf check
  tr.checkpoint_every = 250  # 0 = only at the end
  tr.eval_every = 500  # beam search on val (arrives with the eval mode)
  tr.keep_last = 2  # checkpoints kept besides the best by val BLEU-4
  tr.keep_best = 1
  tr.lr_visual = 5e-5  # R2Gen: 5e-5 for the visual extractor
  tr.lr_rest = 1e-4  # R2Gen: 1e-4 for the rest
  tr.lr_schedule = "step"  # "step" (R2Gen's StepLR) | "cosine" | "constant"
  tr.lr_step_epochs = 50  # StepLR step size in epochs (R2Gen IU X-Ray: 50; MIMIC-CXR: 1)
  tr.lr_gamma = 0.1  # StepLR factor (IU X-Ray: 0.1; MIMIC-CXR: 0.8)
  tr.lr_end_fraction = 0.0  # cosine: final lr as a fraction of the peak
  tr.warmup_steps = 0  # linear warmup from 0 before any schedule
  tr.weight_decay = 5e-5  # torch Adam's L2 weight decay
  tr.clip_value = 0.1  # gradient clip by value (0 = off)
  tr.amsgrad = True
  tr.keyword_weight = 0.0  # lambda of the keyword BCE (the paper's auxiliary loss; 0 = off)

  c.bench = b = ml_collections.ConfigDict()
  b.input_batches = 100  # batches timed by --mode=bench_input, after b.input_warmup
  b.input_warmup = 10

  if variant == "paper":
    d.name = "release"
    d.oversample.enabled = True
    d.sentence_shuffle = True
  elif variant not in ("", "demo"):
    raise ValueError(f"unknown variant {variant!r} of configs/cnx2rg.py; use '' (demo) or 'paper'")
  return c
