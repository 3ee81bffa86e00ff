"""cnx2rg-jax runs R2Gen's own checkpoints: parity with cuhksz-nlp/R2Gen's PyTorch code.

Runs only when env R2GEN_DIR points at a checkout of cuhksz-nlp/R2Gen and torch is installed
(skipped otherwise, with the reason). For IU X-Ray (two views) and MIMIC-CXR (one view) it
builds R2Gen's own R2GenModel with random weights at small dims (ResNet-18, d 32, 2+2 layers),
saves it as R2Gen's trainer does, converts it with `python -m cnx2rg_jax.convert.r2gen`'s code,
and checks on the same images:
- teacher-forced logits and log-probabilities equal R2Gen's within 1e-4 (on R2Gen's rows);
- beam search at beam 3 with R2Gen's settings (model.r2gen_beam_search) returns R2Gen's token
  sequences for every example whose finished scores have no near-tie in R2Gen's own search.
- the converted workdir opens as --mode=eval/predict open it (inference.trained.load), and
  `--mode=eval` on the release folder (TFDS build, grain pipeline, two views for IU X-Ray)
  writes the reports R2Gen's own test loop writes: its dataset class reading the same image
  files, its eval transform, its model's beam search and its tokenizer's decode.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import types

import numpy as np
import pytest

from tests.helpers import r2gen_harness as harness

R2GEN = harness.r2gen_dir()
pytestmark = [
    pytest.mark.skipif(R2GEN is None, reason="set R2GEN_DIR to a checkout of cuhksz-nlp/R2Gen "
                       "(with models/r2gen.py) to run the R2Gen parity tests"),
    pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                       reason="torch is not installed: R2Gen parity skipped"),
]

WORDS = ("heart", "size", "normal", "lungs", "clear", "no", "pneumothorax", "effusion",
         "pleural", "focal", "consolidation", "mediastinum", "unremarkable", "mild",
         "cardiomegaly", "opacity", "left", "right", "base", "x-ray", "degenerative", "spine",
         "changes", "stable", "silhouette", "within", "limits", "of", "the", "is", "are")
TOL = 1e-4
IMAGE = 224  # R2Gen's AvgPool2d(7) needs a 7 x 7 layer4 map
MAX_LEN = 20  # R2Gen's max_seq_length here
BATCH = 6
LONG_REPORT = ("The heart size is normal. The lungs are clear, no pleural effusion or zebra. "
               "Degenerative changes of the spine are stable within normal limits.")
# R2Gen's eos logit bias in the random models, so that beam search ends reports at varied
# lengths between 0 and MAX_LEN (measured with torch 2.13; a random model's lengths jump with it).
EOS_BIAS = {"iu_xray": 1.3, "mimic_cxr": 1.1}


def _reports(rng, n):
  out = []
  for _ in range(n):
    sents = []
    for _ in range(rng.integers(1, 4)):
      words = [WORDS[int(i)] for i in rng.integers(0, len(WORDS), rng.integers(2, 7))]
      s = " ".join(words)
      if rng.random() < 0.3:
        s = s.capitalize() + ","
      sents.append(s)
    text = ". ".join(sents) + "."
    if rng.random() < 0.2:
      text = "1. " + text + " 2. rare" + str(int(rng.integers(0, 50))) + "."
    out.append(text)
  return out


def _r2gen_images(pixels, views):
  """uint8 [B, V, H, W] gray -> R2Gen's input: RGB from the gray, ToTensor, Normalize."""
  import torch  # pylint: disable=import-outside-toplevel
  mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 1, 3, 1, 1)
  std = torch.tensor((0.229, 0.224, 0.225)).view(1, 1, 3, 1, 1)
  x = torch.from_numpy(pixels.astype(np.float32) / 255.0)[:, :, None].expand(-1, -1, 3, -1, -1)
  x = (x - mean) / std
  return x if views == 2 else x[:, 0]


def _our_images(pixels, views):
  """The same pixels as our pipeline gives them with data.normalization='imagenet'."""
  from cnx2rg_jax.data import transforms  # pylint: disable=import-outside-toplevel
  x = np.stack([np.stack([transforms.normalize(v, "imagenet") for v in p]) for p in pixels])
  return x if views == 2 else x[:, 0]


@pytest.fixture(scope="module", params=["iu_xray", "mimic_cxr"])
def setup(request, tmp_path_factory):
  import torch  # pylint: disable=import-outside-toplevel
  dataset = request.param
  views = 2 if dataset == "iu_xray" else 1
  tmp = tmp_path_factory.mktemp(dataset)
  rng = np.random.default_rng(0 if views == 2 else 1)
  ann = str(tmp / "annotation.json")
  test = _reports(rng, 4)
  test[-1] = LONG_REPORT  # R2Gen scores it cut to max_seq_length, with <unk> for "zebra"
  harness.write_annotation(ann, _reports(rng, 200), _reports(rng, 4), test)
  r2gen = harness.import_r2gen(R2GEN)
  args = harness.r2gen_args(
      ann_path=ann, dataset_name=dataset, threshold=3, max_seq_length=MAX_LEN,
      visual_extractor="resnet18", d_vf=512, d_model=32, d_ff=48, num_heads=4, num_layers=2,
      rm_num_slots=3, rm_num_heads=2, rm_d_model=32, beam_size=3)
  model, r2gen_tok = harness.build_model(r2gen, args, seed=views)
  with torch.no_grad():  # eos likelier, so that the reports end at varied lengths < MAX_LEN
    model.encoder_decoder.logit.bias[0] = EOS_BIAS[dataset]
  ckpt = str(tmp / "model_best.pth")
  harness.save_trainer_checkpoint(model, ckpt)

  from cnx2rg_jax.convert import r2gen as conv  # pylint: disable=import-outside-toplevel
  from configs import r2gen as r2gen_configs  # pylint: disable=import-outside-toplevel
  workdir = str(tmp / "workdir")
  record = conv.convert(ckpt, ann, dataset, 3, workdir, config=r2gen_configs.get_config(dataset),
                        num_heads=4, rm_num_heads=2)
  pixels = rng.integers(0, 256, (BATCH, 2, IMAGE, IMAGE), dtype=np.uint8)
  _write_images(tmp / "images", ann, rng)
  return dict(dataset=dataset, views=views, model=model, tok=r2gen_tok, args=args, ann=ann,
              ckpt=ckpt, workdir=workdir, record=record, pixels=pixels, cache={},
              images=str(tmp / "images"), tmp=tmp)


def _write_images(folder, ann: str, rng) -> None:
  """A gray PNG for every image path of the annotation (R2Gen's layout: paths relative to
  `folder`), not 224 x 224, so that both sides resize."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  with open(ann, encoding="utf-8") as f:
    entries = [e for split in json.load(f).values() for e in split]
  for e in entries:
    for rel in e["image_path"]:
      path = folder / rel
      path.parent.mkdir(parents=True, exist_ok=True)
      Image.fromarray(rng.integers(0, 256, (96, 80), dtype=np.uint8)).save(path)


def _r2gen_eval_transform(image):
  """R2Gen's eval transform, Compose([Resize((224, 224)), ToTensor(), Normalize(ImageNet)]),
  written with PIL and torch as torchvision computes it on a PIL image (torchvision is not
  installed here): PIL's bilinear resize, /255, per-channel mean and std."""
  import torch  # pylint: disable=import-outside-toplevel
  from PIL import Image  # pylint: disable=import-outside-toplevel
  x = np.asarray(image.resize((IMAGE, IMAGE), Image.BILINEAR), np.float32) / 255.0
  x = torch.from_numpy(x).permute(2, 0, 1)
  mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
  std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
  return (x - mean) / std


def _r2gen_test_split(setup):
  """R2Gen's own test loop on the release folder: ({id: report}, {id: the reference it scores
  against}, {id: the gap between the two best finished beams})."""
  import torch  # pylint: disable=import-outside-toplevel
  datasets = importlib.import_module("modules.datasets")  # R2Gen's, on sys.path (import_r2gen)
  cls = (datasets.IuxrayMultiImageDataset if setup["views"] == 2
         else datasets.MimiccxrSingleImageDataset)
  args = types.SimpleNamespace(**{**vars(setup["args"]), "image_dir": setup["images"]})
  ds = cls(args, setup["tok"], "test", transform=_r2gen_eval_transform)
  items = [ds[i] for i in range(len(ds))]
  model = setup["model"]
  with torch.no_grad(), harness.cpu_only():
    seq = model(torch.stack([it[1] for it in items]), mode="sample")
  done = model.encoder_decoder.done_beams
  gaps = [d[0]["p"] - d[1]["p"] if len(d) > 1 else np.inf for d in done]
  texts = setup["tok"].decode_batch(seq.numpy())
  ids = [it[0] for it in items]
  # Its ground truths: the dataset's ids (bos, words, eos, cut to max_seq_length) after bos.
  refs = [setup["tok"].decode(it[2][1:]) for it in items]
  return dict(zip(ids, texts)), dict(zip(ids, refs)), dict(zip(ids, gaps))


def _ours(setup):
  """(CNX2RG, variables, our tokenizer, rows, config) of the converted checkpoint (once)."""
  if "ours" not in setup["cache"]:
    setup["cache"]["ours"] = _convert(setup)
  return setup["cache"]["ours"]


def _convert(setup):
  from cnx2rg_jax.convert import r2gen as conv  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.convert import r2gen_weights as weights  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.models import factory  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.models.cnx2rg import CNX2RG  # pylint: disable=import-outside-toplevel
  ann = conv.read_annotation(setup["ann"])
  tok, rows = conv.build_tokenizer([e["report"] for e in ann["train"]], setup["dataset"], 3)
  sd, _ = weights.read_checkpoint(setup["ckpt"])
  from configs import r2gen as r2gen_configs  # pylint: disable=import-outside-toplevel
  config, _ = conv.r2gen_config(r2gen_configs.get_config(setup["dataset"]),
                                weights.infer_dims(sd, 4, 2), 3)
  config.decode.max_len = config.data.max_tokens = MAX_LEN
  mcfg = factory.model_config(config.model, vocab_size=tok.vocab_size, max_len=MAX_LEN)
  variables = weights.convert_state_dict(sd, mcfg, rows)
  return CNX2RG(mcfg, image_normalization="imagenet"), variables, tok, rows, config


def test_vocabulary_is_r2gens(setup):
  r2gen_tok = setup["tok"]
  from cnx2rg_jax.convert import r2gen as conv  # pylint: disable=import-outside-toplevel
  ann = conv.read_annotation(setup["ann"])
  tok, rows = conv.build_tokenizer([e["report"] for e in ann["train"]], setup["dataset"], 3)
  assert int(rows.max()) == r2gen_tok.get_vocab_size()
  for i, t in enumerate(tok.tokens[4:], start=4):
    assert r2gen_tok.token2idx[t] == rows[i]
  assert rows[3] == r2gen_tok.token2idx["<unk>"]
  # Encoding a report: ours (after R2Gen's cleaning, as the pipeline does) maps onto R2Gen's ids.
  from cnx2rg_jax.text import english  # pylint: disable=import-outside-toplevel
  for e in ann["test"] + ann["train"][:20]:
    ours = tok.encode(english.ENGLISH_CLEANERS[setup["dataset"]](e["report"]))
    assert [int(rows[i]) for i in ours] == r2gen_tok(e["report"])[1:-1]


def test_teacher_forced_logits_match(setup):
  import jax  # pylint: disable=import-outside-toplevel
  model, variables, _, rows, _ = _ours(setup)
  views = setup["views"]
  diff_logits, diff_lp, logits = harness.teacher_forced_diffs(
      setup["model"], _r2gen_images(setup["pixels"], views),
      lambda ids: jax.jit(model.apply)(variables, _our_images(setup["pixels"], views), ids)[0],
      rows, BATCH, MAX_LEN)
  print(f"\n{setup['dataset']}: max |logit diff| {diff_logits:.2e}, max |log-prob diff| "
        f"{diff_lp:.2e}")
  assert diff_logits < TOL and diff_lp < TOL
  # The suppressed ids never get probability.
  assert np.all(np.exp(np.asarray(jax.nn.log_softmax(logits, axis=-1))[..., :2]) == 0)


def _r2gen_beams(setup):
  """(R2Gen's beam-3 sequences [B, MAX_LEN], the gap between its two best finished scores)."""
  if "beams" not in setup["cache"]:
    setup["cache"]["beams"] = _run_r2gen_beams(setup)
  return setup["cache"]["beams"]


def _run_r2gen_beams(setup):
  import torch  # pylint: disable=import-outside-toplevel
  r2gen_model = setup["model"]
  with torch.no_grad(), harness.cpu_only():
    seq = r2gen_model(_r2gen_images(setup["pixels"], setup["views"]), mode="sample")
  done = r2gen_model.encoder_decoder.done_beams
  gaps = [d[0]["p"] - d[1]["p"] if len(d) > 1 else np.inf for d in done]
  return seq.numpy(), np.asarray(gaps)


def test_beam_search_matches(setup):
  import jax  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.models import search  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.models.cnx2rg import CNX2RG  # pylint: disable=import-outside-toplevel
  model, variables, _, rows, _ = _ours(setup)
  r2gen_seq, gaps = _r2gen_beams(setup)

  def run(m):
    memory, _ = m.apply(variables, _our_images(setup["pixels"], setup["views"]),
                        method=CNX2RG.encode)
    return search.search_reports(m, variables, memory, beam_size=3, max_len=MAX_LEN)[0]
  ids = np.asarray(jax.jit(run, static_argnums=0)(model))
  ours = rows[ids]  # our eos and pad -> R2Gen's 0
  clear = gaps > 1e-4  # no near-tie between R2Gen's two best finished beams
  same = (ours == r2gen_seq).all(axis=1)
  lengths = [int(np.argmax(r == 0)) if (r == 0).any() else MAX_LEN for r in r2gen_seq]
  print(f"\n{setup['dataset']}: beam 3 sequences equal on {int(same[clear].sum())}/"
        f"{int(clear.sum())} tie-free examples (R2Gen report lengths {lengths})")
  assert clear.sum() >= BATCH - 1
  assert same[clear].all(), (ours[~same], r2gen_seq[~same])
  assert any(0 < n < MAX_LEN for n in lengths), "no report ended before max_len: eos untested"


def test_workdir_opens_for_eval(setup):
  """--mode=eval/predict's loader opens the converted workdir (IU X-Ray's two views too), and its
  generator writes R2Gen's reports."""
  from configs import r2gen as r2gen_configs  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.inference import trained  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  config = r2gen_configs.get_config(setup["dataset"])
  harness.apply_overrides(config, setup["record"]["config_overrides"])
  config.data.max_tokens = config.decode.max_len = MAX_LEN
  config.eval.batch_size = 2
  assert isinstance(config, ml_collections.ConfigDict)
  run = trained.load(config, setup["workdir"], log=lambda _: None)
  model, variables, _, rows, _ = _ours(setup)
  import jax  # pylint: disable=import-outside-toplevel
  for a, b in zip(jax.tree.leaves(run.variables), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  images = _our_images(setup["pixels"][:2], setup["views"])
  out = run.generator.run_batch(run.variables, images, np.arange(2))
  texts = [run.tokenizer.decode(r) for r in out[1]]
  r2gen_seq, _ = _r2gen_beams(setup)
  assert texts == setup["tok"].decode_batch(r2gen_seq[:2])


def test_eval_mode_writes_r2gens_test_reports(setup):
  """--mode=eval's whole path (release folder -> TFDS build -> grain pipeline -> beam search ->
  reports) against R2Gen's test loop on the same folder and checkpoint."""
  from configs import r2gen as r2gen_configs  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax import run as run_lib  # pylint: disable=import-outside-toplevel
  config = r2gen_configs.get_config(setup["dataset"])
  harness.apply_overrides(config, setup["record"]["config_overrides"])
  config.data.max_tokens = config.decode.max_len = MAX_LEN
  config.data.data_dir = str(setup["tmp"] / "tfds")
  config.data.num_workers = 0
  config.eval.batch_size = 2
  config.card.num_cases = 1
  run_lib.evaluate_run(config, setup["workdir"], "test")
  with open(f"{setup['workdir']}/eval/test_reports.jsonl", encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  ours = {r["id"]: r["prediction"] for r in rows}
  theirs, refs, gaps = _r2gen_test_split(setup)
  # eval.references="r2gen": scored against exactly R2Gen's references (<unk>, cut).
  assert {r["id"]: r["reference"] for r in rows} == refs
  from cnx2rg_jax.text import english  # pylint: disable=import-outside-toplevel
  with open(setup["ann"], encoding="utf-8") as f:
    written = {e["id"]: english.ENGLISH_CLEANERS[setup["dataset"]](e["report"])
               for e in json.load(f)["test"]}
  assert any(refs[i] != written[i] for i in refs), "no reference was cut or had <unk>: untested"
  assert sorted(ours) == sorted(theirs)
  clear = [i for i in theirs if gaps[i] > 1e-4]
  print(f"\n{setup['dataset']}: --mode=eval equals R2Gen's test loop on "
        f"{sum(ours[i] == theirs[i] for i in clear)}/{len(clear)} tie-free studies")
  assert len(clear) >= len(theirs) - 1
  assert {i: ours[i] for i in clear} == {i: theirs[i] for i in clear}
