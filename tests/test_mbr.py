"""MBR choice of a report (cnx2rg_jax/evaluation/mbr.py) against brute-force re-derivations, and
the generator's MBR path against a direct call of the model's searches."""

import jax
import numpy as np
import pytest

from cnx2rg_jax.evaluation import clinical, mbr
from cnx2rg_jax.text.labeler import label_report

NORMAL = "两肺纹理清晰，未见实质性病变。心影不大。"
SHADOWS = ["右下肺野可见片状密度增高影。心影不大。", "左上肺野可见斑片状阴影。心影不大。",
           "右上肺野可见片状密度增高影。心影不大。", "左下肺野可见斑片状阴影。心影不大。"]
EFFUSION = "两侧胸腔少量积液。心影不大。"


class TextTokenizer:
  """Ids [k, pad...] decode to texts[k]: the chooser only needs `decode`."""

  def __init__(self, texts):
    self.texts = texts

  def decode(self, ids):
    return self.texts[ids[0]]


def test_pair_f1_is_the_clinical_f1_of_one_report():
  rng = np.random.default_rng(0)
  universe = [("lung", "shadow"), ("chest", "effusion"), ("heart", "enlarged"), ("rib", "fracture")]
  for _ in range(200):
    a = {p for p in universe if rng.random() < 0.4}
    b = {p for p in universe if rng.random() < 0.4}
    expected = 1.0 if not a and not b else clinical.prf(*clinical.clinical_counts(a, b))["f1"]
    assert mbr.pair_f1(a, b) == pytest.approx(expected, abs=1e-12)


def test_choose_takes_utility_then_score_then_the_earlier_candidate():
  rng = np.random.default_rng(1)
  for _ in range(300):
    n = int(rng.integers(1, 7))
    u = rng.integers(0, 3, size=n) / 2  # many ties
    s = rng.integers(-3, 0, size=n).astype(float)
    expected = sorted(range(n), key=lambda i: (-u[i], -s[i], i))[0]
    assert mbr.choose(u, s) == expected


def _brute_force(texts, beam, samples, scores):
  """The MBR pick by the definition: candidates beam + samples, evidence the samples."""
  cands = [beam] + samples
  pairs = [clinical.pairs_of(label_report, texts[c]) for c in cands]
  best = None
  for i, c in enumerate(cands):
    u = sum(mbr.pair_f1(pairs[i], pairs[j]) for j in range(1, len(cands))) / len(samples)
    key = (round(u, 9), scores[i], -i)
    if best is None or key > best[0]:
      best = (key, i)
  return best[1]


def _ids(k, length=4):
  return [k] + [0] * (length - 1)


@pytest.mark.parametrize("num_shadow", [10, 6])
def test_chooser_aggregates_wordings_where_the_mode_does_not(num_shadow):
  """16 samples: 16 - num_shadow copies of the normal report (the most frequent single text, and
  the beam's) and num_shadow shadow reports spread over four wordings. Beam search's mode keeps
  the normal report; MBR writes the shadow when most samples hold one (10 of 16), not when few
  do (6 of 16)."""
  texts = [NORMAL] + SHADOWS + [EFFUSION]
  samples = [0] * (16 - num_shadow) + [1 + i % 4 for i in range(num_shadow)]
  sample_scores = [-2.0] * (16 - num_shadow) + [-3.0 - 0.1 * (i % 4) for i in range(num_shadow)]
  chooser = mbr.Chooser(TextTokenizer(texts), label_report)
  ids, choice = chooser(np.array([_ids(0)]), np.array([-1.5]),
                        np.array([[_ids(k) for k in samples]]), np.array([sample_scores]))
  expected = _brute_force(texts, 0, samples, [-1.5] + sample_scores)
  assert choice.tolist() == [expected]
  chosen_text = texts[ids[0][0]]
  if num_shadow == 10:
    # the shadow wording with the highest score: the first shadow sample, "右下肺野..."
    assert chosen_text == SHADOWS[0] and expected == 1 + (16 - num_shadow)
  else:
    assert chosen_text == NORMAL and expected == 0  # ties with the samples go to the beam


def test_chooser_matches_brute_force_on_random_batches():
  texts = [NORMAL] + SHADOWS + [EFFUSION, SHADOWS[0].replace("心影不大", "心影增大")]
  rng = np.random.default_rng(2)
  n, s = 12, 5
  beam = rng.integers(0, len(texts), size=n)
  samples = rng.integers(0, len(texts), size=(n, s))
  beam_scores = rng.integers(-4, 0, size=n).astype(float)
  sample_scores = rng.integers(-4, 0, size=(n, s)).astype(float)
  chooser = mbr.Chooser(TextTokenizer(texts), label_report)
  ids, choice = chooser(np.array([_ids(k) for k in beam]), beam_scores,
                        np.array([[_ids(k) for k in row] for row in samples]), sample_scores)
  for i in range(n):
    expected = _brute_force(texts, int(beam[i]), samples[i].tolist(),
                            [beam_scores[i]] + sample_scores[i].tolist())
    assert choice[i] == expected
    picked = beam[i] if expected == 0 else samples[i][expected - 1]
    assert ids[i].tolist() == _ids(int(picked))


def test_keyword_targets_read_positive_and_uncertain_mentions():
  from cnx2rg_jax.text import keywords as kw  # pylint: disable=import-outside-toplevel
  lung, shadow = kw.KEYWORD_KEYS.index("lung"), kw.KEYWORD_KEYS.index("shadow")
  y, w = mbr.keyword_targets(label_report(NORMAL).keywords)
  assert not y.any() and w.all()
  y, w = mbr.keyword_targets(label_report(SHADOWS[0]).keywords)
  assert set(np.flatnonzero(y)) == {lung, shadow} and w.all()
  y, w = mbr.keyword_targets(label_report("两肺纹理清晰，右下肺野可疑片状密度增高影。").keywords)
  # "可疑", suspected: uncertain
  assert not y.any() and set(np.flatnonzero(w == 0)) == {lung, shadow}


def test_head_log_likelihood_is_the_weighted_bernoulli_log_pmf():
  rng = np.random.default_rng(3)
  for _ in range(50):
    p = rng.uniform(0, 1, 48)
    p[:3] = (0.0, 1.0, 0.5)  # clipped, not -inf
    y = (rng.random(48) < 0.3).astype(float)
    w = (rng.random(48) < 0.9).astype(float)
    pc = np.clip(p, mbr.PROB_EPS, 1 - mbr.PROB_EPS)
    expected = sum(np.log(pc[k] if y[k] else 1 - pc[k]) for k in range(48) if w[k])
    assert mbr.head_log_likelihood(y, w, p) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shadow_prob", [0.9, 0.1])
def test_the_keyword_head_tips_a_borderline_choice(shadow_prob):
  """6 of 16 samples state a shadow: plain MBR keeps the normal beam report. With lambda 1, a
  head that sees a shadow (p 0.9) makes the choice a shadow report; one that does not (p 0.1)
  keeps the normal one. Checked against the definition computed here."""
  from cnx2rg_jax.text import keywords as kw  # pylint: disable=import-outside-toplevel
  texts = [NORMAL] + SHADOWS + [EFFUSION]
  samples = [0] * 10 + [1 + i % 4 for i in range(6)]
  sample_scores = [-2.0] * 10 + [-3.0 - 0.1 * (i % 4) for i in range(6)]
  probs = np.full((1, 48), 0.05)
  probs[0, kw.KEYWORD_KEYS.index("shadow")] = probs[0, kw.KEYWORD_KEYS.index("lung")] = shadow_prob
  chooser = mbr.Chooser(TextTokenizer(texts), label_report, keyword_weight=1.0)
  args = (np.array([_ids(0)]), np.array([-1.5]), np.array([[_ids(k) for k in samples]]),
          np.array([sample_scores]))
  _, choice = chooser(*args, keyword_probs=probs)
  cands = [0] + samples
  pairs = [clinical.pairs_of(label_report, texts[c]) for c in cands]
  total = []
  for i, c in enumerate(cands):
    u = np.mean([mbr.pair_f1(pairs[i], pairs[j]) for j in range(1, 17)])
    y = np.array([label_report(texts[c]).keywords.get(k) == kw.POSITIVE for k in kw.KEYWORD_KEYS])
    total.append(u + np.sum(np.log(np.where(y, probs[0], 1 - probs[0]))))
  scores = [-1.5] + sample_scores
  expected = max(range(17), key=lambda i: (round(total[i], 9), scores[i], -i))
  assert choice.tolist() == [expected]
  assert texts[cands[expected]] == (SHADOWS[0] if shadow_prob == 0.9 else NORMAL)
  with pytest.raises(ValueError, match="keyword head's probabilities"):
    chooser(*args)


def test_expected_utility_needs_evidence():
  with pytest.raises(ValueError, match="at least one sampled report"):
    mbr.expected_utility([set()], [])


# --- The generator's MBR path on a small random-weight model --------------------------------


@pytest.fixture(scope="module")
def small_generator():
  from cnx2rg_jax import sharding  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.models import factory  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.models.cnx2rg import CNX2RG  # pylint: disable=import-outside-toplevel
  from configs import cnx2rg  # pylint: disable=import-outside-toplevel
  config = cnx2rg.get_config("")
  config.data.crop_size, config.decode.max_len, config.data.max_tokens = 32, 12, 12
  config.model.d_model = config.model.d_ff = config.model.rm_d_model = 32
  config.decode.method, config.decode.mbr_samples, config.decode.mbr_seed = "mbr", 4, 7
  config.decode.mbr_temperature, config.decode.mbr_keyword_weight = 1.5, 0.0
  config.eval.batch_size = 4
  vocab = 30
  model = CNX2RG(factory.model_config(config.model, vocab_size=vocab, max_len=12))
  variables = factory.random_variables(model, config.data.crop_size, 0)
  texts = [NORMAL, SHADOWS[0], SHADOWS[1], EFFUSION]
  tok = TokenText(texts)
  mesh = sharding.mesh_from_config(config.mesh)
  from cnx2rg_jax.inference import generate  # pylint: disable=import-outside-toplevel
  return config, model, variables, tok, generate.ReportGenerator.from_config(model, mesh, config,
                                                                              tok)


class TokenText:
  """A tokenizer for random-weight models: a report is texts[number of tokens before eos % 4],
  so different sampled sequences give different findings."""

  def __init__(self, texts):
    self.texts = texts

  def decode(self, ids):
    from cnx2rg_jax.text import tokenizer as tl  # pylint: disable=import-outside-toplevel
    n = ids.index(tl.EOS_ID) if tl.EOS_ID in ids else len(ids)
    return self.texts[n % len(self.texts)]


def _pixel_hash(image: np.ndarray) -> int:
  """image_keys' hash by integer arithmetic: sum of bits(x_i) * (2654435761 i + 1) mod 2**32."""
  bits = image.astype(np.float32).reshape(-1).view(np.uint32).astype(np.uint64)
  weights = (np.arange(bits.size, dtype=np.uint64) * 2654435761 + 1) % 2**32
  return int(np.sum((bits * weights) % 2**32) % 2**32)


def test_generator_mbr_equals_a_direct_rederivation(small_generator):
  """run_batch's MBR reports equal: the beam search and sample_reports called directly with
  `image_keys`, then the brute-force MBR pick; a row's report does not depend on the batch it is
  in or its position, and the same pixels give the same report."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.inference import generate  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.models import search  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.models.cnx2rg import CNX2RG  # pylint: disable=import-outside-toplevel
  config, model, variables, tok, gen = small_generator
  d = config.decode
  images = np.random.default_rng(0).normal(size=(6, 32, 32, 1)).astype(np.float32)
  images[5] = images[1]  # the same pixels in another batch, at another position
  index = np.array([3, 11, 5, 0, 8, 2])
  got = {}
  for rows in (slice(0, 4), slice(4, 6)):
    idx, ids, _, _ = gen.run_batch(variables, images[rows], index[rows])
    got.update({int(i): row.tolist() for i, row in zip(idx, ids)})
  memory, _ = model.apply(variables, jnp.asarray(images), method=CNX2RG.encode)
  beam_ids, beam_scores = search.search_reports(model, variables, memory, beam_size=d.beam_size,
                                                max_len=d.max_len)
  keys = generate.image_keys(d.mbr_seed, jnp.asarray(images))
  hashes = [_pixel_hash(image) for image in images]
  assert len(set(hashes[:5])) == 5 and hashes[5] == hashes[1]
  for r, h in enumerate(hashes):
    np.testing.assert_array_equal(
        np.asarray(keys[r]), np.asarray(jax.random.fold_in(jax.random.PRNGKey(d.mbr_seed), h)))
  s_ids, s_scores = search.sample_reports(model, variables, memory, keys, num_samples=4,
                                          max_len=d.max_len, temperature=d.mbr_temperature)
  beam_ids, beam_scores, s_ids, s_scores = map(np.asarray, (beam_ids, beam_scores, s_ids,
                                                            s_scores))
  chosen_kinds = set()
  for r, i in enumerate(index):
    cands = [beam_ids[r].tolist()] + [row.tolist() for row in s_ids[r]]
    texts = [tok.decode(c) for c in cands]
    pairs = [clinical.pairs_of(label_report, t) for t in texts]
    scores = [beam_scores[r]] + s_scores[r].tolist()
    util = [np.mean([mbr.pair_f1(p, q) for q in pairs[1:]]) for p in pairs]
    best = max(range(5), key=lambda k: (round(util[k], 9), round(float(scores[k]), 4), -k))
    assert got[int(i)] == cands[best], i
    chosen_kinds.add(best == 0)
  assert chosen_kinds == {True, False}  # some rows keep the beam's report, some take a sample
  assert got[int(index[5])] == got[int(index[1])]  # same pixels, same report
  # Swapping the batch's rows does not change any row's report.
  perm = [2, 0, 3, 1]
  idx, ids, _, _ = gen.run_batch(variables, images[:4][perm], index[:4][perm])
  for i, row in zip(idx, ids):
    assert row.tolist() == got[int(i)]


def test_mbr_config_errors():
  from cnx2rg_jax import config_checks  # pylint: disable=import-outside-toplevel
  from configs import cnx2rg  # pylint: disable=import-outside-toplevel
  for key, value, words in (("method", "sampling", "decode.method"),
                            ("mbr_samples", 0, "decode.mbr_samples"),
                            ("mbr_temperature", 0.0, "decode.mbr_temperature"),
                            ("mbr_utility", "cn_radgraph", "decode.mbr_utility"),
                            ("mbr_keyword_weight", -1.0, "decode.mbr_keyword_weight")):
    config = cnx2rg.get_config("")
    config.decode[key] = value
    with pytest.raises(config_checks.ConfigError, match=words.replace(".", r"\.")):
      config_checks.check(config)
  config = cnx2rg.get_config("")  # a head weight needs a trained head
  config.decode.mbr_keyword_weight, config.train.keyword_weight = 1.0, 0.0
  with pytest.raises(config_checks.ConfigError, match="keyword head is trained"):
    config_checks.check(config)


def test_describe_names_the_method():
  from configs import cnx2rg  # pylint: disable=import-outside-toplevel
  from cnx2rg_jax.inference import generate  # pylint: disable=import-outside-toplevel
  config = cnx2rg.get_config("paper")
  assert generate.describe(config.decode) == "beam 3"
  config.decode.method, config.decode.mbr_samples = "mbr", 16
  assert generate.describe(config.decode) == "MBR over 16 samples (T 1) and beam 3"
  config.decode.mbr_keyword_weight = 0.5
  assert generate.describe(config.decode) == ("MBR over 16 samples (T 1), keyword head weight 0.5"
                                              " and beam 3")
