"""CN-X2RG configs: `--config=configs/cnx2rg.py` (the CPU demo on the synthetic CN-CXR) or
`--config=configs/cnx2rg.py:paper` (the paper's settings on a CN-CXR release).

Every key and its default lives here (`defaults()`; a variant then changes some); code reads
`config.data.crop_size`, never a hidden default. (The model keys that only R2Gen's checkpoints
need, model.num_views and the model.r2gen_* switches, are set by configs/r2gen.py; a config
without them gets cnx2rg_jax/models/factory.py's OPTIONAL_MODEL_KEYS: one view, switches off.)
Override any key from the command line: `--config.data.num_examples=400`.
"""

import ml_collections

# `:ablation=NAME`: R2Gen alone, R2Gen plus one of the paper's additions, or all of them, at the
# demo's scale (python -m cnx2rg_jax.ablation runs them all over seeds and tabulates).
ABLATIONS = ("r2gen", "prompt", "keyword_loss", "graph_augment", "sentence_shuffle", "oversample",
             "all")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  c = defaults()
  c.variant = variant or "demo"
  if variant == "paper":
    _paper(c)
  elif variant in ("", "demo"):
    _shrink_for_cpu(c)
  elif variant.startswith("ablation="):
    _ablation(c, variant.removeprefix("ablation="))
  elif variant == "cmn":
    _paper(c)
    cmn_baseline(c)
  elif variant == "cmn_demo":
    _ablation(c, "r2gen")
    cmn_baseline(c)
  else:
    raise ValueError(f"unknown variant {variant!r} of configs/cnx2rg.py; use '' (demo), 'paper', "
                     f"'cmn', 'cmn_demo' or 'ablation=NAME' with NAME one of "
                     f"{', '.join(ABLATIONS)}")
  return c


def defaults() -> ml_collections.ConfigDict:
  """Every key at its default, before a variant changes any: R2Gen's / the paper's model,
  optimizer and decoding (get_config applies the variant; tests build their models from these)."""
  c = ml_collections.ConfigDict()
  c.variant = ""  # get_config names it
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
  # What labels a release's entries that the annotation gives no keyword labels / graph, at build
  # time (tfds_cncxr/annotate.py; given ones always win): "auto" (the rule labeler for Chinese,
  # none for English) | "labeler" | "cn_radgraph" (the extractor trained in data.cn_radgraph_dir)
  # | "none" (unlabelled: the keyword loss skips such reports)
  d.annotate = "auto"
  d.cn_radgraph_dir = ""  # data.annotate="cn_radgraph": workdir of a trained CN-RadGraph
  d.split_seed = 0  # release without splits: seed of the 7:1:2 split
  d.num_shards = 4  # array_record shards per split
  d.build_workers = 2  # processes rendering synthetic images
  d.image_size = 256  # resize (the paper, Sect. 5.1)
  # The side a release build stores its images at, resized once at build time so that training
  # never decodes a full-size radiograph: -1 = data.image_size (the training resize, exactly as
  # resizing at read time); 0 = as the files are (then every read decodes and resizes them)
  d.stored_image_size = -1
  d.crop_size = 224  # random crop for training, center crop for evaluation
  d.normalization = "zscore"  # "zscore" per image (the paper) | "imagenet"
  d.max_tokens = 100  # bos + report tokens + eos, padded
  d.num_workers = 2  # grain worker processes (0 = in the main process)
  d.read_threads = 2  # grain reader threads per process
  d.prefetch = 32  # grain per-process prefetch buffer (elements)
  d.sentence_shuffle = False  # the paper's sentence shuffling, training only
  # The paper's graph-based report augmentation, training only (cnx2rg_jax/data/graph_augment.py):
  # rephrase normal statements and reorder a sentence's statements, keeping the keyword labels.
  d.graph_augment = ml_collections.ConfigDict()
  d.graph_augment.enabled = False  # needs CN-RadGraph graphs on the training reports
  d.graph_augment.probability = 0.5  # chance that a training report is rewritten, in [0, 1]
  d.oversample = ml_collections.ConfigDict()
  d.oversample.enabled = False  # the paper's rare-keyword oversampling, training only
  d.oversample.min_count = 5000  # keywords with fewer positive reports are oversampled
  d.oversample.max_rate = 10  # to at most this many times their count
  d.oversample.max_samples = 5000  # and at most this many draws

  c.text = t = ml_collections.ConfigDict()
  t.tokenizer = "word"  # "word" (jieba + vocabulary) | "sentencepiece"
  t.min_count = 3  # word vocabulary threshold (R2Gen: 3 for IU X-Ray, 10 for MIMIC-CXR)
  t.vocab_size = 1000  # sentencepiece vocabulary size
  t.segmenter = "jieba"  # the word tokenizer's Chinese segmenter: "jieba" | "pkuseg"
  # A local spacy-pkuseg model directory (needed with segmenter="pkuseg"; nothing downloads);
  # the run keeps a copy in DIR/tokenizer/pkuseg_model.
  t.pkuseg_model = ""

  c.model = m = ml_collections.ConfigDict()  # see cnx2rg_jax/models/config.py
  m.resnet_depth = 101  # 18 | 34 | 50 | 101 (the paper and R2Gen: 101)
  m.resnet_width = 64  # stem channels; stages double it (torchvision and pretrained weights: 64)
  m.num_prompts = 0  # learnable prompt tokens (the paper's prompt training; 0 = off)
  m.prompt_feature_dim = 0  # width of frozen image-text encoder features (0 = none)
  m.prompt_encoder = ""  # converted MedCLIP dir (python -m cnx2rg_jax.convert.medclip); "" = none
  m.prompt_encoder_image_size = 224  # side the frozen encoder sees (MedCLIP: 224)
  m.d_model = 512
  m.d_ff = 512
  m.num_heads = 8
  m.num_encoder_layers = 3
  m.num_decoder_layers = 3
  m.dropout = 0.1
  m.visual_dropout = 0.5  # on the embedded visual tokens (R2Gen's drop_prob_lm)
  # "r2gen": R2Gen's relational memory + MCLN (CN-X2RG) | "cmn": R2GenCMN's cross-modal memory
  m.architecture = "r2gen"
  m.cmm_size = 2048  # "cmn": rows of the memory matrix (R2GenCMN: 2048)
  m.cmm_dim = 512  # "cmn": their width, = d_model (R2GenCMN: 512)
  m.cmn_topk = 32  # "cmn": memory rows each query attends to (R2GenCMN: 32)
  m.rm_num_slots = 3
  m.rm_num_heads = 8
  m.rm_d_model = 512
  m.dtype = "float32"  # activations: "float32" | "bfloat16"; parameters are always float32

  c.decode = dc = ml_collections.ConfigDict()
  dc.beam_size = 3  # R2Gen: 3
  dc.max_len = 100  # generated tokens, eos included (R2Gen: 60 for IU X-Ray, 100 for MIMIC-CXR)
  dc.length_penalty = 0.0  # GNMT alpha; R2Gen applies none
  dc.block_trigrams = False
  # How the report is chosen: "beam" (the beam's best, as R2Gen) | "mbr" (minimum Bayes risk: of
  # the beam's report and mbr_samples sampled ones, the one with the highest mean clinical pair
  # F1 against the samples; cnx2rg_jax/evaluation/mbr.py)
  dc.method = "beam"
  dc.mbr_samples = 16  # reports drawn per image (the evidence and candidates)
  dc.mbr_temperature = 1.0  # sampling temperature (1: the model's own distribution)
  dc.mbr_seed = 0  # sample keys are fold_in(mbr_seed, hash of the image's pixels)
  # pairs read by "labeler" (rules) | "cn_radgraph" (eval.cn_radgraph_dir)
  dc.mbr_utility = "labeler"
  # lambda: + lambda x the keyword head's log-likelihood of each candidate's keywords (0 = off;
  # > 0 needs train.keyword_weight > 0)
  dc.mbr_keyword_weight = 0.0

  c.eval = ev = ml_collections.ConfigDict()
  ev.clinical_scorer = "labeler"  # clinical P/R/F1 pairs: "labeler" (rules) | "cn_radgraph"
  ev.cn_radgraph_dir = ""  # "cn_radgraph": workdir of a trained extractor (configs/cn_radgraph.py)
  ev.batch_size = 32  # global batch of beam search in eval, predict and val during training
  ev.val_examples = 0  # val reports searched every train.eval_every steps (0 = the whole split)
  ev.meteor = True  # METEOR in --mode=eval and the final test (needs Java; never during training)
  ev.baselines = True  # score the most-frequent and nearest-neighbour baselines beside the model
  # References scored against: "report" (as written) | "r2gen" (as R2Gen's test loop: through the
  # vocabulary, <unk> for rare words, cut to data.max_tokens - 1 words; configs/r2gen.py)
  ev.references = "report"

  # The report card (cnx2rg_jax/card): an HTML page of cases, keyword spans and attention maps.
  c.card = cd = ml_collections.ConfigDict()
  cd.enabled = True  # --mode=train writes DIR/eval/test_card/index.html after the test eval
  cd.num_cases = 24  # cases on the card: a third best, a third worst (clinical F1), the rest
  # random (seed); 0 = every case of the split

  # The out-of-distribution score on predictions (cnx2rg_jax/inference/ood.py): distance of an
  # image's pooled encoder features to its k nearest training studies over the val median.
  c.ood = od = ml_collections.ConfigDict()
  od.enabled = True  # --mode=train writes DIR/ood/ (reference features, val threshold)
  od.k = 5  # nearest training studies averaged
  od.max_reference = 4096  # training studies kept as the reference (seeded subset), and val
  # studies calibrated on; float16, so 4,096 x 2,048 features (ResNet-101) are 16 MiB
  od.quantile = 0.99  # the threshold: this quantile of the val scores

  c.mesh = ms = ml_collections.ConfigDict()  # see cnx2rg_jax/sharding.py
  ms.shape = (-1,)  # devices per axis; -1 takes the rest
  ms.axes = ("data",)  # "data" (batch split) and optionally "model" (large matrices split)
  # How parameters lie on the mesh: "data" (replicated), "tensor" (Transformer matrices split on
  # "model"; on a data-only mesh that is "data"), "fsdp" (large parameters and their optimizer
  # state split on "data"), "fsdp_tensor" (both).
  ms.strategy = "tensor"
  ms.max_replicated_fraction = 0.5  # more parameter bytes left whole stops a tensor/fsdp run

  c.train = tr = ml_collections.ConfigDict()  # see cnx2rg_jax/training/
  tr.batch_size = 16  # global batch (R2Gen: 16)
  tr.num_steps = 1000
  tr.log_every = 20  # progress line, TensorBoard scalars, NaN/Inf check
  tr.checkpoint_every = 250  # 0 = only at the end
  tr.eval_every = 500  # beam search on val, saved with a checkpoint (0 = never; then the final
  # test eval uses the last step)
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
  tr.adam_b1, tr.adam_b2 = 0.9, 0.999  # torch Adam's betas (R2Gen's; R2GenCMN: 0.9, 0.98)
  tr.adam_eps = 1e-8  # torch Adam's eps (R2Gen's; R2GenCMN: 1e-9)
  tr.keyword_weight = 0.0  # lambda of the keyword BCE (the paper's auxiliary loss; 0 = off)
  # Each batch's report tokens are cut to the smallest of this many lengths (evenly up to
  # data.max_tokens) that holds its longest report: one compiled step per length (1 = off)
  tr.length_buckets = 4

  c.bench = b = ml_collections.ConfigDict()
  b.input_batches = 100  # batches timed by --mode=bench_input, after b.input_warmup
  b.input_warmup = 10
  b.train_configs = ("demo", "paper")  # what --mode=bench_train times (also "cmn_demo", "cmn")
  b.train_steps = 3  # timed steps per config, after b.train_warmup (the paper's are slow on a CPU)
  b.train_warmup = 1
  b.train_vocab_size = 2000  # a CN-CXR-sized word vocabulary
  b.memory_devices = 8  # devices of the paper-model memory table when the machine has only one
  b.train_batch_sizes = ()  # global batches bench_train times (empty: train.batch_size)
  b.peak_tflops = 0.0  # the chip's dense peak for MFU, when bench_train does not know it
  return c


def _shrink_for_cpu(c: ml_collections.ConfigDict) -> None:
  """The demo: the paper's model and code paths at sizes a 2-core CPU trains in about 8 minutes.
  One line says why each value; docs/demo_history.md keeps the measurements and their dates."""
  d, m, tr, dc, ev = c.data, c.model, c.train, c.decode, c.eval
  d.image_size = 72  # CPU speed: ResNet-101 at 224 pixels and 3+3 layers of d 512 took ~7 s a step
  d.crop_size = 64  # CPU speed: 64-pixel crops (0.24 s a step with the dims below)
  d.max_tokens = 64  # CPU speed: 64 tokens (the 0.24 s step)
  m.resnet_depth = 18  # CPU speed: ResNet-18
  m.resnet_width = 16  # CPU speed: a quarter of torchvision's width
  m.d_model = m.d_ff = m.rm_d_model = 128  # CPU speed: d 128
  m.num_heads = m.rm_num_heads = 4  # heads that divide d 128 (not tuned)
  m.num_encoder_layers = m.num_decoder_layers = 1  # beat 3+3 at equal time (val F1 0.64 vs 0.61)
  m.visual_dropout = 0.1  # lowered from R2Gen's 0.5 (not ablated separately)
  dc.max_len = 64  # data.max_tokens, the decoder's positions
  tr.num_steps = 2000  # the decoder starts following the image between steps 1,000 and 2,000
  tr.eval_every = 2000  # val once at the end: the 15-minute budget (500: a curve, ~25 s a point)
  tr.checkpoint_every = 1000  # one mid-run checkpoint besides the final one
  tr.lr_visual = 1e-3  # from scratch, not fine-tuning: test clinical F1 0.89 against 0.82 at half
  tr.lr_rest = 2e-3  # (the same measurement)
  tr.lr_schedule = "cosine"  # with warmup, for the larger rates
  tr.warmup_steps = 100  # (with the cosine schedule)
  tr.keyword_weight = 3.0  # the paper's keyword loss (off: test F1 0.639); 3 beat 1 on val with MBR
  d.oversample.enabled = True  # the paper's rare-keyword oversampling: test F1 0.892 -> 0.907
  d.oversample.min_count = 400  # CN-CXR's 5,000 (of 32,410 training reports) scaled to 2,800
  d.oversample.max_rate = 3  # cut from 10 (1,000 / 10 / 1,000 did worse on val: 0.858 vs 0.887)
  d.oversample.max_samples = 400  # CN-CXR's 5,000 scaled to 2,800 reports
  dc.method = "mbr"  # the beam drops half-believed findings: val clinical F1 0.916 against 0.886
  dc.mbr_samples = 8  # 16 samples gave only 0.919 on val against 0.916
  dc.mbr_keyword_weight = 1.0  # the keyword head's say (head weights 0.2-1.0 within 0.003 on val)
  ev.val_examples = 200  # half the val split (400): MBR val costs ~25 s a point


def _paper(c: ml_collections.ConfigDict) -> None:
  """The paper's CN-X2RG on a CN-CXR release (README: "The paper configuration" gives each
  value's source). Defaults above already hold R2Gen's model, optimizer and decoding."""
  d, m, t, tr, dc, ev = c.data, c.model, c.text, c.train, c.decode, c.eval
  d.name = "release"  # set data.manual_dir to the release folder
  d.oversample.enabled = True  # 5,000 / 10x / 5,000, as Sect. 5.1 states
  d.sentence_shuffle = True
  d.graph_augment.enabled = True  # probability 0.5: not stated
  t.min_count = 10  # not stated: R2Gen's threshold for its large set (MIMIC-CXR)
  m.num_prompts = 16  # not stated
  m.prompt_feature_dim = 512  # MedCLIP's embedding; used once model.prompt_encoder is set
  tr.keyword_weight = 1.0  # not stated
  # Not stated: R2Gen's MIMIC-CXR schedule (StepLR 1 epoch x 0.8) for 30 epochs of the 32,410
  # training images at batch 16 (2,025 steps an epoch), validated and saved every epoch. The
  # StepLR decay counts epochs of the oversampled set (longer), as the loop computes them.
  tr.lr_step_epochs, tr.lr_gamma = 1, 0.8
  tr.num_steps = 30 * 2025
  tr.eval_every = tr.checkpoint_every = 2025
  dc.max_len = 100  # not stated: R2Gen's MIMIC-CXR length (data.max_tokens is 100 too)
  ev.val_examples = 0


def _ablation(c: ml_collections.ConfigDict, name: str) -> None:
  """The demo's model and schedule with every addition off, then `name`'s switched on."""
  if name not in ABLATIONS:
    raise ValueError(f"unknown ablation {name!r} of configs/cnx2rg.py; use one of "
                     f"{', '.join(ABLATIONS)}")
  _shrink_for_cpu(c)
  d, m, tr = c.data, c.model, c.train
  d.oversample.enabled = d.sentence_shuffle = d.graph_augment.enabled = False
  m.num_prompts = 0
  tr.keyword_weight = 0.0
  # R2Gen's beam, as the recorded ablation ran (results/ablation.json), not the demo's MBR
  c.decode.method, c.decode.mbr_keyword_weight = "beam", 0.0
  c.eval.baselines = False
  on = ABLATIONS[1:-1] if name == "all" else (name,)
  if "prompt" in on:
    m.num_prompts = 16  # learnable prompts (no MedCLIP weights are shipped; see the README)
  if "keyword_loss" in on:
    tr.keyword_weight = 1.0
  if "graph_augment" in on:
    d.graph_augment.enabled = True
  if "sentence_shuffle" in on:
    d.sentence_shuffle = True
  if "oversample" in on:
    d.oversample.enabled = True


def cmn_baseline(c: ml_collections.ConfigDict) -> None:
  """R2GenCMN (model.architecture="cmn") on the config's data and scale, with the paper's
  additions off: `:cmn` at the paper's dims on a release, `:cmn_demo` at the ablation's demo
  dims (beside `:ablation=r2gen` in `python -m cnx2rg_jax.ablation --compare`). The memory is
  R2GenCMN's (2048 x d_model rows, top 32) and so is the optimizer of its main.py: Adam betas
  (0.9, 0.98), eps 1e-9, AMSGrad, no gradient clipping; at the paper scale also its lr 5e-5 /
  7e-4 and StepLR 50 epochs x 0.1. The demo keeps the demo's learning rates and schedule, so that
  only the model and Adam's betas/eps differ from `:ablation=r2gen`. The keyword head stays
  switchable: --config.train.keyword_weight=1."""
  d, m, tr = c.data, c.model, c.train
  m.architecture = "cmn"
  m.cmm_dim = m.d_model
  m.num_prompts = m.prompt_feature_dim = 0
  m.prompt_encoder = ""
  d.oversample.enabled = d.sentence_shuffle = d.graph_augment.enabled = False
  tr.keyword_weight = 0.0
  c.decode.method, c.decode.mbr_keyword_weight = "beam", 0.0
  tr.adam_b1, tr.adam_b2, tr.adam_eps = 0.9, 0.98, 1e-9
  tr.amsgrad, tr.clip_value = True, 0.0
  if c.variant == "cmn":
    tr.lr_visual, tr.lr_rest = 5e-5, 7e-4
    tr.lr_step_epochs, tr.lr_gamma = 50, 0.1
