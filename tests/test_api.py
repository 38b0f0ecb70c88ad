"""The Python API (wespeaker_lap.api): embed like bin/extract, score like the recipes, decide,
enrol and identify; its inputs and their errors."""

import numpy as np
import pytest
import soundfile as sf
import torch
from data_helpers import make_tone_data_dir
from test_extract import make_exp_dir, read_xvectors

import wespeaker_lap
from wespeaker_lap.api import SpeakerModel, Speakers, load_model
from wespeaker_lap.api.model import _ToyBackend
from wespeaker_lap.bin import extract
from wespeaker_lap.io.xvectors import write_xvectors
from wespeaker_lap.scoring.score import Trials, cosine_score
from wespeaker_lap.scoring.score_norm import build_cohort, normalize_scores

SR = 16000


@pytest.fixture
def model_dir(tmp_path):
    return make_exp_dir(tmp_path / "exp")


@pytest.fixture
def data_dir(tmp_path):
    return make_tone_data_dir(tmp_path / "data")


class _Fixed:
    """A backend for scoring tests: the embedding is given in the first samples."""

    sample_rate, min_samples = 16000, 4

    def __init__(self, dim):
        self.embed_dim = dim

    def embed_waveforms(self, wavs, lengths):
        return wavs[:, : self.embed_dim].copy()


def test_load_model_is_reachable_from_the_package_root():
    assert wespeaker_lap.load_model is load_model


def test_embed_gives_bin_extracts_numbers_for_paths_arrays_and_tensors(tmp_path, model_dir,
                                                                        data_dir):
    assert extract.main(["--model_dir", str(model_dir), "--data", str(data_dir),
                         "--embed_dir", str(tmp_path / "e"), "--no_progress"]) == 0
    ref = read_xvectors(tmp_path / "e" / "xvector.scp")
    keys = sorted(ref)
    paths = [str(data_dir / "wav" / f"{k}.wav") for k in keys]
    model = load_model(model_dir, batch_size=3)
    want = np.stack([ref[k] for k in keys])
    np.testing.assert_allclose(model.embed(paths), want, atol=1e-5, rtol=0)
    wavs = [sf.read(p, dtype="float32")[0] for p in paths]
    np.testing.assert_allclose(model.embed(wavs), want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(model.embed([torch.from_numpy(w) for w in wavs]), want,
                               atol=1e-5, rtol=0)
    lengths = np.array([len(w) for w in wavs])
    batch = np.zeros((len(wavs), lengths.max()), np.float32)
    for i, w in enumerate(wavs):
        batch[i, : len(w)] = w
    np.testing.assert_allclose(model.embed(batch, lengths=lengths), want, atol=1e-5, rtol=0)


def test_documented_conversions_int16_float64_stereo_and_resampling(model_dir):
    model = load_model(model_dir)
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(16000) * 3000).astype(np.int16)
    ref = model.embed(pcm.astype(np.float32) / 32768)
    np.testing.assert_allclose(model.embed(pcm), ref, atol=1e-6)
    np.testing.assert_allclose(model.embed(pcm.astype(np.float64) / 32768), ref, atol=1e-6)
    stereo = np.stack([pcm, pcm], axis=1)  # (N, 2): the same signal twice
    np.testing.assert_allclose(model.embed(stereo), ref, atol=1e-6)
    t = np.arange(8000) / 8000
    low = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    emb8k = model.embed(low, sample_rate=8000)
    emb16k = model.embed(np.interp(np.arange(16000) / 2, np.arange(8000), low)
                         .astype(np.float32))
    assert emb8k.shape == (1, 16)
    cos = float(emb8k[0] @ emb16k[0] / np.linalg.norm(emb8k) / np.linalg.norm(emb16k))
    assert cos > 0.9  # resampled by soxr: close to a plain upsampling of the same tone


@pytest.mark.parametrize("bad,needle", [
    (np.array([0.1, np.nan] * 8000, np.float32), "item 1: 1 NaN"),
    (np.array([], np.float32), "item 1: empty"),
    (np.zeros(16000, np.float32), "item 1: silent"),
    (np.full(100, 0.1, np.float32), "item 1: too short: 100 samples"),
    (np.ones((2, 3, 4), np.float32), "item 1: an array of shape (2, 3, 4)"),
    (np.ones(16000, np.complex64), "item 1: samples of dtype complex64"),
])
def test_bad_arrays_are_errors_naming_the_item(model_dir, bad, needle):
    model = load_model(model_dir)
    good = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    if "NaN" in needle:
        needle = f"item 1: {int(np.isnan(bad).sum())} NaN"
    with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        model.embed([good, bad])


def test_score_equals_the_recipes_cosine_and_asnorm_scoring():
    rng = np.random.default_rng(0)
    dim = 8
    emb = {f"u{i}": rng.normal(size=dim).astype(np.float32) for i in range(12)}
    mean = rng.normal(size=dim).astype(np.float32) * 0.3
    coh_emb = {f"c{i}": rng.normal(size=dim).astype(np.float32) for i in range(40)}
    utt2spk = {k: f"s{i % 10}" for i, k in enumerate(coh_emb)}
    cohort = build_cohort(coh_emb, mean, utt2spk)
    trials = Trials([f"u{i}" for i in range(6)], [f"u{i}" for i in range(6, 12)])
    kept, raw = cosine_score(emb, trials, mean)
    _, asn = normalize_scores(kept, raw, emb, cohort, mean, top_n=5)
    model = SpeakerModel(_Fixed(dim), mean_vec=mean, cohort=cohort, top_n=5)
    a = np.stack([emb[k] for k in trials.enroll])
    b = np.stack([emb[k] for k in trials.test])
    np.testing.assert_allclose(model.score(a, b, norm="none"), raw, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.score(a, b), asn, rtol=0, atol=1e-9)
    mat = model.score_matrix(a, b)
    np.testing.assert_allclose(np.diag(mat), asn, rtol=0, atol=1e-5)
    assert mat.shape == (6, 6)
    with pytest.raises(ValueError, match="choose one of"):
        model.score(a, b, norm="znorm")
    with pytest.raises(ValueError, match="needs a cohort"):
        SpeakerModel(_Fixed(dim)).score(a, b, norm="asnorm")


def _model_with_thresholds(**kw):
    thresholds = {"norm": "none", "values": {"eer": 0.5},
                  "trials": {"name": "val", "size": 10}}
    return SpeakerModel(_Fixed(4), thresholds=thresholds, **kw)


def _wav(vec, n=64):
    out = np.full(n, 0.01, np.float32)
    out[: len(vec)] = vec
    return out


def test_verify_decides_at_the_measured_threshold_and_names_its_source():
    model = _model_with_thresholds()
    a, b = _wav([1, 0, 0, 0]), _wav([1, 1, 0, 0])
    r = model.verify(a, b)
    assert r.threshold == 0.5 and "eer threshold measured on val (10 trials)" in \
        r.threshold_source
    assert r.decision == (r.score >= 0.5) and r.llr is None
    assert not model.verify(a, b, threshold=0.9).decision
    with pytest.raises(ValueError, match=r"no mindcf0.01 threshold; it has \['eer'\]"):
        model.verify(a, b, operating_point="mindcf0.01")
    with pytest.raises(ValueError, match="needs a calibrated model"):
        model.verify(a, b, p_target=0.01)
    with pytest.raises(ValueError, match="give one of"):
        model.verify(a, b, threshold=0.1, operating_point="eer")


def test_enrolled_speakers_round_trip_through_a_kaldi_ark(tmp_path):
    model = SpeakerModel(_Fixed(4))
    spk = model.enroll({"a": [_wav([1, 0, 0, 0]), _wav([1, 0.1, 0, 0])],
                        "b": _wav([0, 0, 1, 0])})
    np.testing.assert_allclose(np.linalg.norm(spk.vectors[1]), 1.0, rtol=1e-5)
    ark = spk.save(tmp_path / "spk.ark")
    back = Speakers.load(ark, 4)
    assert back.names == ["a", "b"]
    np.testing.assert_allclose(back.vectors, spk.vectors)
    with pytest.raises(ValueError, match="4 dimensions, this model's embeddings have 8"):
        Speakers.load(ark, 8)
    write_xvectors(tmp_path, {"x": np.ones(3, np.float32)}, name="other")
    with pytest.raises(ValueError, match="3 dimensions"):
        Speakers.load(tmp_path / "other.ark", 4)


def test_identify_ranks_and_rejects_an_unknown_voice_at_the_threshold():
    model = _model_with_thresholds()
    spk = model.enroll({"a": [_wav([1, 0, 0, 0])], "b": [_wav([0, 0, 1, 0])]})
    res = model.identify(_wav([0.9, 0.1, 0, 0]), spk, top_k=2)
    assert [n for n, _ in res.ranking] == ["a", "b"] and res.speaker == "a"
    unknown = model.identify(_wav([0, 0, 0, 1]), spk)
    assert unknown.speaker is None and unknown.threshold == 0.5
    with pytest.raises(ValueError, match="needs enrolled speakers"):
        model.identify(_wav([1, 0, 0, 0]), Speakers([], np.zeros((0, 4), np.float32)))


def test_toy_backend_of_the_docstrings_is_what_they_say():
    assert SpeakerModel(_ToyBackend()).embed_dim == 4


def test_load_model_on_a_directory_that_is_no_model_says_what_it_expected(tmp_path):
    with pytest.raises(ValueError, match="neither a model package .* nor a training exp_dir"):
        load_model(tmp_path)
