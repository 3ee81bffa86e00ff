"""R2Gen's own checkpoints run by cnx2rg-jax: `--config=configs/r2gen.py:iu_xray` or
`--config=configs/r2gen.py:mimic_cxr`, on a workdir written by

    python -m cnx2rg_jax.convert.r2gen --checkpoint=model_best.pth --annotation=annotation.json \
        --dataset=mimic_cxr --threshold=10 --workdir=DIR

then e.g.

    python launch.py --config=configs/r2gen.py:mimic_cxr --workdir=DIR --mode=eval \
        --config.data.manual_dir=/data/mimic_cxr
    python launch.py --config=configs/r2gen.py:mimic_cxr --workdir=DIR --mode=predict --images=A.png

Built on configs/cnx2rg.py's defaults (R2Gen's dims: ResNet-101, d 512, 3+3 layers, 8 heads, 3
memory slots, beam 3, no length penalty) with every `model.r2gen_*` switch on, and R2Gen's data
settings: English reports with its cleaning, eval images resized straight to 224 x 224 (no crop),
ImageNet normalisation (the 3-channel stem undoes the gray one exactly), max_seq_length 60 (IU
X-Ray) or 100 (MIMIC-CXR), vocabulary threshold 3 or 10. A checkpoint trained at other dims,
max_seq_length, threshold or data folder needs those on the command line: the converter prints
the `--config.KEY=VALUE` overrides (also in DIR/r2gen_conversion.json), and --mode=eval refuses
a config that does not match DIR/config.json.

IU X-Ray: R2Gen's IU model reads two views a study (model.num_views=2): the release build
stores each entry's first two images, eval feeds [B, 2, H, W, 1], and --mode=predict takes
study folders or FRONTAL.png+LATERAL.png pairs (see README, "R2Gen's own checkpoints").
Scores use R2Gen's references (eval.references="r2gen").
"""

import ml_collections

from configs import cnx2rg

DATASETS = {
    # dataset: (max_seq_length, threshold, views)
    "iu_xray": (60, 3, 2),
    "mimic_cxr": (100, 10, 1),
}


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant not in DATASETS:
    raise ValueError(f"configs/r2gen.py needs a variant, one of {', '.join(DATASETS)} "
                     f"(--config=configs/r2gen.py:mimic_cxr); got {variant!r}")
  max_len, threshold, views = DATASETS[variant]
  c = cnx2rg.get_config("paper")  # R2Gen's model dims, optimizer and decoding are the defaults
  c.variant = f"r2gen:{variant}"
  d, m, t, dc, ev = c.data, c.model, c.text, c.decode, c.eval
  d.name = "release"  # set data.manual_dir to R2Gen's data folder (annotation.json + images)
  d.language = "en"
  d.english_style = variant
  d.image_size = d.crop_size = 224  # R2Gen's eval transform: Resize((224, 224)), no crop
  d.normalization = "imagenet"
  d.max_tokens = max_len
  d.oversample.enabled = d.sentence_shuffle = d.graph_augment.enabled = False
  t.tokenizer = "word"
  t.min_count = threshold
  m.num_prompts = 0
  m.prompt_feature_dim = 0
  m.prompt_encoder = ""
  m.r2gen_layernorm = True
  m.r2gen_rgb_stem = True
  m.r2gen_beam_search = True
  m.num_views = views  # IU X-Ray: 2 (frontal + lateral), as the data and predict then read
  dc.beam_size = 3
  dc.max_len = max_len
  dc.length_penalty = 0.0
  dc.block_trigrams = False  # R2Gen's block_trigrams only acts in its greedy sampling
  ev.baselines = False
  ev.references = "r2gen"  # scored as R2Gen scores: <unk> for rare words, cut to max_seq_length
  c.train.keyword_weight = 0.0  # R2Gen has no keyword head (the converter zeroes ours)
  c.r2gen = r = ml_collections.ConfigDict()
  r.dataset = variant

  return c
