"""R2GenCMN's own checkpoints run by cnx2rg-jax: `--config=configs/r2gen_cmn.py:iu_xray` or
`:mimic_cxr`, on a workdir written by

    python -m cnx2rg_jax.convert.r2gen_cmn --checkpoint=model_best.pth \
        --annotation=annotation.json --dataset=mimic_cxr --threshold=10 --workdir=DIR

configs/r2gen.py's variant (R2Gen's data, vocabulary, cleaning, eval transform, beam and
references: R2GenCMN shares them) with model.architecture="cmn" (models/cmn.py: 2048 memory rows
of d_model, top 32) and R2GenCMN's optimizer (main.py: lr 5e-5 / 7e-4, Adam betas (0.9, 0.98),
eps 1e-9, AMSGrad, weight decay 5e-5, StepLR 50 x 0.1, no gradient clipping). Its run scripts
train with other rates (1e-4 / 5e-4, StepLR 10 or 3 x 0.8): pass them on the command line to
fine-tune as they did. The converter prints any `--config.KEY=VALUE` a checkpoint needs beyond
these (other dims, top-k, max_seq_length, threshold, data folder).
"""

import ml_collections

from configs import r2gen

DATASETS = tuple(r2gen.DATASETS)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  if variant not in r2gen.DATASETS:
    raise ValueError(f"configs/r2gen_cmn.py needs a variant, one of {', '.join(DATASETS)} "
                     f"(--config=configs/r2gen_cmn.py:mimic_cxr); got {variant!r}")
  c = r2gen.get_config(variant)
  c.variant = f"r2gen_cmn:{variant}"
  m, tr = c.model, c.train
  m.architecture = "cmn"
  m.cmm_size, m.cmm_dim, m.cmn_topk = 2048, m.d_model, 32
  tr.lr_visual, tr.lr_rest = 5e-5, 7e-4
  tr.adam_b1, tr.adam_b2, tr.adam_eps = 0.9, 0.98, 1e-9
  tr.amsgrad, tr.weight_decay, tr.clip_value = True, 5e-5, 0.0
  tr.lr_schedule, tr.lr_step_epochs, tr.lr_gamma = "step", 50, 0.1
  return c
