"""The `paper` variant resolves to the values the paper and R2Gen state, and every ablation
variant differs from R2Gen alone in its own switch only."""

from configs import cnx2rg
from cnx2rg_jax import config_checks
from cnx2rg_jax.models import factory

# (key, value, source): what the README's table of the paper configuration says.
PAPER = [
    ("data.name", "release", "a CN-CXR release folder"),
    ("data.image_size", 256, "paper 5.1: resize to 256"),
    ("data.crop_size", 224, "paper 5.1: crop 224"),
    ("data.normalization", "zscore", "paper 5.1: z-score"),
    ("data.oversample.enabled", True, "paper 5.1"),
    ("data.oversample.min_count", 5000, "paper 5.1"),
    ("data.oversample.max_rate", 10, "paper 5.1"),
    ("data.oversample.max_samples", 5000, "paper 5.1"),
    ("data.sentence_shuffle", True, "paper: sentence shuffling"),
    ("text.tokenizer", "word", "paper 5.1: jieba words"),
    ("text.min_count", 10, "R2Gen MIMIC-CXR threshold (chosen)"),
    ("model.resnet_depth", 101, "R2Gen"),
    ("model.resnet_width", 64, "torchvision ResNet-101"),
    ("model.d_model", 512, "R2Gen"),
    ("model.d_ff", 512, "R2Gen"),
    ("model.num_heads", 8, "R2Gen"),
    ("model.num_encoder_layers", 3, "R2Gen"),
    ("model.num_decoder_layers", 3, "R2Gen"),
    ("model.rm_num_slots", 3, "R2Gen"),
    ("model.rm_d_model", 512, "R2Gen"),
    ("model.dropout", 0.1, "R2Gen"),
    ("model.visual_dropout", 0.5, "R2Gen"),
    ("model.prompt_feature_dim", 512, "MedCLIP embedding width"),
    ("train.batch_size", 16, "R2Gen"),
    ("train.lr_visual", 5e-5, "R2Gen"),
    ("train.lr_rest", 1e-4, "R2Gen"),
    ("train.amsgrad", True, "R2Gen"),
    ("train.weight_decay", 5e-5, "R2Gen"),
    ("train.clip_value", 0.1, "R2Gen"),
    ("train.lr_schedule", "step", "R2Gen StepLR"),
    ("train.keyword_weight", 1.0, "chosen"),
    ("decode.beam_size", 3, "R2Gen"),
    ("decode.length_penalty", 0.0, "R2Gen"),
    ("decode.max_len", 100, "R2Gen MIMIC-CXR (chosen)"),
    ("data.max_tokens", 100, "R2Gen MIMIC-CXR (chosen)"),
]


def _get(config, key):
  for part in key.split("."):
    config = config[part]
  return config


def test_paper_variant_resolves_to_the_stated_values():
  c = cnx2rg.get_config("paper")
  for key, value, source in PAPER:
    assert _get(c, key) == value, f"{key} ({source})"
  assert c.data.graph_augment.enabled and c.data.graph_augment.probability == 0.5
  assert c.model.num_prompts > 0 and c.model.prompt_encoder == ""  # set to converted MedCLIP
  # The model it builds is R2Gen's size: ResNet-101's 2048-wide patch features.
  assert factory.model_config(c.model, vocab_size=100, max_len=100).d_vf == 2048
  c.data.manual_dir = "/somewhere"
  config_checks.check(c)


def _flat(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


# What each ablation switches on, against R2Gen alone.
SWITCHES = {
    "prompt": {"model.num_prompts": 16},
    "keyword_loss": {"train.keyword_weight": 1.0},
    "graph_augment": {"data.graph_augment.enabled": True},
    "sentence_shuffle": {"data.sentence_shuffle": True},
    "oversample": {"data.oversample.enabled": True},
}


def test_each_ablation_differs_from_r2gen_in_its_switch_only():
  base = _flat(cnx2rg.get_config("ablation=r2gen").to_dict())
  assert base["train.keyword_weight"] == 0.0 and not base["data.oversample.enabled"]
  assert not base["data.sentence_shuffle"] and not base["data.graph_augment.enabled"]
  assert base["model.num_prompts"] == 0
  demo = _flat(cnx2rg.get_config().to_dict())
  for key in ("model.d_model", "model.resnet_depth", "train.num_steps", "data.crop_size"):
    assert base[key] == demo[key]  # the demo's scale
  everything = {}
  for name, switch in SWITCHES.items():
    other = _flat(cnx2rg.get_config(f"ablation={name}").to_dict())
    diff = {k: other[k] for k in base if other[k] != base[k] and k != "variant"}
    assert diff == switch, name
    everything.update(switch)
  other = _flat(cnx2rg.get_config("ablation=all").to_dict())
  assert {k: other[k] for k in base if other[k] != base[k] and k != "variant"} == everything
  assert set(SWITCHES) | {"r2gen", "all"} == set(cnx2rg.ABLATIONS)
