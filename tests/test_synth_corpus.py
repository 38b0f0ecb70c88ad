"""Tests for the synthesized corpus (tools/synth): text, noise, RIRs, trials, and a tiny corpus.

The corpus tests run the real CLI (espeak-ng, plus flite/festival when present)
on a tiny size and skip when espeak-ng is not installed.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

SYNTH = Path(__file__).resolve().parents[1] / "tools" / "synth"
sys.path.insert(0, str(SYNTH))

import channel  # noqa: E402
import noise_rir  # noqa: E402
import synth_corpus  # noqa: E402
import text_gen  # noqa: E402
import tts_engines  # noqa: E402

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng missing")
TINY = [
    "--num_train_spk", "5", "--train_utts", "3", "--num_test_spk", "3", "--test_utts", "3",
    "--num_unseen_spk", "3", "--unseen_utts", "3", "--num_pool_spk", "3", "--pool_utts", "2",
    "--num_valid_spk", "3", "--valid_utts", "3", "--num_noise", "2", "--num_rirs", "3",
]
SPEECH_SETS = ("train", "test", "test_unseen", "pool", "valid")
has_unseen = pytest.mark.skipif(
    shutil.which("festival") is None
    or not any((Path("/usr/share/festival/voices") / lang / v).is_dir()
               for lang in ("czech", "finnish") for v in tts_engines.UNSEEN_VOICES),
    reason="the held-out festival voices (festvox-czech-*, festvox-suopuhe-*) are missing",
)


# --------------------------------------------------------------------------- text
def test_text_generator_same_seed_same_text():
    a = [text_gen.utterance_text(np.random.default_rng(3), 9) for _ in range(2)]
    rng1, rng2 = np.random.default_rng(11), np.random.default_rng(11)
    seq1 = [text_gen.utterance_text(rng1, n) for n in range(3, 15)]
    seq2 = [text_gen.utterance_text(rng2, n) for n in range(3, 15)]
    assert a[0] == a[1] and seq1 == seq2
    other = [text_gen.utterance_text(np.random.default_rng(12), n) for n in range(3, 15)]
    assert other != seq1


def test_text_generator_lengths_and_vocabulary():
    rng = np.random.default_rng(0)
    vocab = {w for ws in text_gen.WORDS.values() for w in ws} | set(text_gen.DIGITS) | {"did"}
    for n in range(3, 20):
        s = text_gen.sentence(rng, n).split()
        assert 3 <= len(s) <= n and set(s) <= vocab
        assert s[-1] not in text_gen.WORDS["det"] + text_gen.WORDS["prep"]
        d = text_gen.digit_string(rng, n).split()
        assert len(d) == n and set(d) <= set(text_gen.DIGITS)
    with pytest.raises(ValueError, match="num_words"):
        text_gen.sentence(rng, 2)


# --------------------------------------------------------------------------- RIRs, noise
@pytest.mark.parametrize("rt60", [0.2, 0.45, 0.8])
def test_rir_rt60_estimate_matches_drawn_value(rt60):
    for seed in range(3):
        rir = noise_rir.synth_rir(np.random.default_rng(seed), rt60)
        assert rir.dtype == np.float32 and abs(float(np.abs(rir).max()) - 0.9) < 1e-6
        assert noise_rir.estimate_rt60(rir) == pytest.approx(rt60, rel=0.1)


def test_rir_energy_envelope_decreases():
    rt60, sr = 0.5, 16000
    rir = noise_rir.synth_rir(np.random.default_rng(1), rt60, sr=sr).astype(np.float64)
    assert int(np.argmax(np.abs(rir))) < 0.005 * sr  # the direct path comes first
    start = int(0.05 * sr)  # after direct path and early reflections
    win = int(0.05 * sr)
    nwin = (rir.size - start) // win
    e = (rir[start : start + nwin * win] ** 2).reshape(nwin, win).sum(axis=1)
    assert np.all(np.diff(e) < 0), e
    # the window energies fall at the drawn rate: 60 dB per rt60
    slope = np.polyfit(np.arange(nwin) * win / sr, 10 * np.log10(e), 1)[0]
    assert -60.0 / slope == pytest.approx(rt60, rel=0.15)
    assert np.all(np.diff(noise_rir.schroeder_db(rir)) <= 1e-9)


def test_coloured_noise_spectral_slopes():
    n, sr = 4 * 16000, 16000
    slopes = {}
    for colour in noise_rir.NOISE_COLOURS:
        x = noise_rir.coloured_noise(np.random.default_rng(0), n, colour)
        assert x.shape == (n,) and x.dtype == np.float32
        assert float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) <= noise_rir.NOISE_RMS + 1e-4
        p = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(n, 1 / sr)
        band = (f > 100) & (f < 6000)
        slopes[colour] = np.polyfit(np.log10(f[band]), 10 * np.log10(p[band]), 1)[0]
    # dB per decade: white ~0, pink ~-10, brown ~-20
    assert slopes["white"] == pytest.approx(0.0, abs=2.0)
    assert slopes["pink"] == pytest.approx(-10.0, abs=2.0)
    assert slopes["brown"] == pytest.approx(-20.0, abs=2.0)


def test_tonal_noise_and_babble_shapes():
    rng = np.random.default_rng(0)
    for kind in noise_rir.TONE_KINDS:
        x = noise_rir.tonal_noise(rng, 16000, kind)
        assert x.shape == (16000,) and np.isfinite(x).all() and np.abs(x).max() <= 0.99
    utts = [np.sin(np.arange(n) * 0.05) for n in (3000, 5000, 7000)]
    b = noise_rir.babble(rng, 20000, utts)
    assert b.shape == (20000,) and float(np.std(b)) > 0
    with pytest.raises(ValueError, match="colour"):
        noise_rir.coloured_noise(rng, 100, "purple")


# --------------------------------------------------------------------------- trials
def test_make_trials_balanced_and_deterministic():
    utt2spk = {f"spk{s:03d}-{u:04d}": f"spk{s:03d}" for s in range(1, 5) for u in range(1, 5)}
    trials = synth_corpus.make_trials(utt2spk, seed=3)
    assert trials == synth_corpus.make_trials(utt2spk, seed=3)
    labels = [y for _, _, y in trials]
    assert labels.count(1) == labels.count(0) == 4 * 6
    assert len(set((e, t) for e, t, _ in trials)) == len(trials)
    for e, t, y in trials:
        assert (utt2spk[e] == utt2spk[t]) == bool(y) and e != t
    # non-targets are spread evenly over the 6 speaker pairs
    pair_counts = {}
    for e, t, y in trials:
        if not y:
            key = tuple(sorted((utt2spk[e], utt2spk[t])))
            pair_counts[key] = pair_counts.get(key, 0) + 1
    assert sorted(pair_counts.values()) == [4] * 6
    assert trials == sorted(trials, key=lambda x: (x[0].encode(), x[1].encode()))


def test_unknown_engine_is_a_value_error_naming_choices():
    with pytest.raises(ValueError, match="espeak"):
        tts_engines.get_engine("sam")


@needs_espeak
def test_missing_optional_engine_is_skipped_with_a_note(monkeypatch, caplog):
    monkeypatch.setattr(tts_engines.FliteEngine, "available", classmethod(lambda cls: False))
    with caplog.at_level(logging.WARNING, logger="synth_corpus"):
        engines = synth_corpus.available_engines(["espeak", "flite"])
    assert "flite" not in engines and "flite is not installed" in caplog.text
    with caplog.at_level(logging.WARNING, logger="synth_corpus"):
        sets = synth_corpus.draw_speakers(
            engines, 1, {"train": 6, "test": 2, "test_unseen": 2, "pool": 2},
            tts_engines.UNSEEN_VOICES)
    assert {s.engine for v in sets.values() for s in v} == {"espeak"}
    assert sets["test_unseen"] == [] and "no unseen-voice test set" in caplog.text



# --------------------------------------------------------------------------- engine processes
@pytest.mark.skipif(shutil.which("sox") is None, reason="sox missing")
def test_sox_pitch_through_pipes_equals_the_float_wav_file_round_trip(tmp_path):
    t = np.arange(16000) / 16000
    x = (0.4 * np.sin(2 * np.pi * 180.0 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
         ).astype(np.float32)
    x[::97] = 1.5  # clipped like the file path clips
    src, dst = tmp_path / "in.wav", tmp_path / "out.wav"
    sf.write(str(src), np.clip(x, -1, 1), 16000, subtype="FLOAT")
    subprocess.run(["sox", str(src), "-e", "floating-point", str(dst), "pitch", "-210.0"],
                   check=True, capture_output=True)
    ref = sf.read(str(dst), dtype="float32")[0]
    y = tts_engines.sox_pitch(x, 16000, -210.0)
    assert y.dtype == np.float32 and y.shape == ref.shape
    assert np.array_equal(y, ref)
    assert tts_engines.sox_pitch(x, 16000, 0.0) is x


@pytest.mark.skipif(shutil.which("festival") is None, reason="festival missing")
def test_festival_reruns_on_its_default_heap_when_the_small_one_runs_out(monkeypatch, caplog):
    eng = tts_engines.FestivalEngine()
    monkeypatch.setattr(eng, "heap", 2000)  # too small to start festival
    with caplog.at_level(logging.INFO):
        out = eng.run(["--batch", "(print (+ 40 2))"], timeout=60)
    assert out.stdout.split() == [b"42"]
    assert "ran out of its 2000-cell heap" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(RuntimeError, match="festival"):
        tts_engines.FestivalEngine().run(["--batch", "(error 'lap-test)"], timeout=60)
    assert "ran out" not in caplog.text  # other failures are not rerun


@needs_espeak
def test_espeak_language_probe_accepts_a_voice_and_refuses_a_bogus_code():
    eng = tts_engines.EspeakEngine()
    assert eng._accepts("en-us") and not eng._accepts("xx-no-such-voice")


# --------------------------------------------------------------------------- corpus
def _run_cli(out: Path, *extra: str) -> None:
    cmd = [sys.executable, str(SYNTH / "synth_corpus.py"), "--out", str(out), *TINY, *extra]
    subprocess.run(cmd, check=True, capture_output=True)


def _read_table(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines()]


def _digest(root: Path) -> dict[str, str]:
    """sha1 of every file under root, with root itself replaced in text files' contents."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.suffix != ".wav":
                data = data.replace(str(root).encode(), b"ROOT")
            out[str(p.relative_to(root))] = hashlib.sha1(data).hexdigest()
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng missing")
    out = tmp_path_factory.mktemp("corpus") / "c"
    _run_cli(out, "--seed", "5", "--nj", "2")
    return out


@needs_espeak
def test_same_seed_gives_identical_files_whatever_nj(corpus, tmp_path):
    again = tmp_path / "again"
    _run_cli(again, "--seed", "5", "--nj", "1")
    a, b = _digest(corpus), _digest(again)
    assert any(k.endswith(".wav") for k in a)
    assert a == b
    other = tmp_path / "other"
    _run_cli(other, "--seed", "6", "--nj", "2")
    c = _digest(other)
    assert c["speakers.tsv"] != a["speakers.tsv"]
    assert c["data/train/text"] != a["data/train/text"]


@needs_espeak
def test_the_validation_set_leaves_every_other_set_byte_identical(corpus, tmp_path):
    """data/valid was added after the other sets: a corpus without it has the same bytes in
    every other file (speakers.tsv only loses the validation speakers' rows)."""
    without = tmp_path / "without"
    _run_cli(without, "--seed", "5", "--nj", "2", "--num_valid_spk", "0")
    a, b = _digest(corpus), _digest(without)
    rows = (corpus / "speakers.tsv").read_text().splitlines()
    valid_spk = [r.split("\t")[0] for r in rows if "\tvalid\t" in r]
    valid = {k for k in a if k.startswith(("data/valid/", "wav/valid/"))
             or k in {f"voices/{s}.variant" for s in valid_spk}}
    assert valid and not any(k.startswith(("data/valid/", "wav/valid/")) for k in b)
    assert {k: v for k, v in a.items() if k not in valid and k != "speakers.tsv"} == \
        {k: v for k, v in b.items() if k != "speakers.tsv"}
    assert (without / "speakers.tsv").read_text().splitlines() == \
        [r for r in rows if "\tvalid\t" not in r]
    assert (corpus / "data" / "valid" / "trials.kaldi").read_text().count(" target\n") == 3 * 3


@needs_espeak
def test_train_scale_adds_speakers_and_keeps_the_first_ones_and_every_test_set(corpus,
                                                                            tmp_path):
    """--train_scale 2 (the mini recipe's --scale): twice the training speakers; the first
    ones' audio and every other speech set's audio the same bytes (the speaker ids, numbered
    after the training speakers, move up)."""
    big = tmp_path / "big"
    _run_cli(big, "--seed", "5", "--nj", "2", "--train_scale", "2")
    a, b = _digest(corpus), _digest(big)

    def audio(digests, name):
        return sorted(v for k, v in digests.items() if k.startswith(f"wav/{name}/"))

    assert len((big / "data" / "train" / "spk2utt").read_text().splitlines()) == 2 * 5
    assert set(audio(a, "train")) < set(audio(b, "train"))
    for name in ("test", "test_unseen", "pool", "valid"):
        assert audio(a, name) and audio(a, name) == audio(b, name), name
    for trials in ("test", "test_unseen"):
        lines = [(corpus / "data" / trials / "trials.kaldi").read_text().splitlines(),
                 (big / "data" / trials / "trials.kaldi").read_text().splitlines()]
        assert [x.split()[2] for x in lines[0]] == [x.split()[2] for x in lines[1]]
    with pytest.raises(subprocess.CalledProcessError):
        _run_cli(tmp_path / "bad", "--train_scale", "0")


@needs_espeak
@pytest.mark.parametrize("name", ["train", "test", "test_unseen", "valid"])
def test_data_dirs_sorted_consistent_16k_mono(corpus, name):
    d = corpus / "data" / name
    if name == "test_unseen" and not d.is_dir():
        pytest.skip("no held-out festival voices installed")
    tables = {}
    for f in ("wav.scp", "utt2spk", "spk2utt", "utt2dur", "text", "utt2channel"):
        lines = (d / f).read_bytes().splitlines()
        assert lines == sorted(lines), f"{f} not in byte order"
        tables[f] = _read_table(d / f)
        keys = [k for k, _ in tables[f]]
        assert len(keys) == len(set(keys)), f"{f} has duplicate keys"
    utt2spk = dict(tables["utt2spk"])
    assert [k for k, _ in tables["wav.scp"]] == list(utt2spk) == [k for k, _ in tables["text"]]
    spk2utt = {s: us.split() for s, us in tables["spk2utt"]}
    assert {u: s for s, us in spk2utt.items() for u in us} == utt2spk
    for u, s in utt2spk.items():
        assert u.startswith(s + "-")
    n_spk, n_utt = (5, 3) if name == "train" else (3, 3)
    assert {u for u, _ in tables["utt2channel"]} == set(utt2spk)
    assert len(spk2utt) == n_spk and all(len(v) == n_utt for v in spk2utt.values())
    durs = dict(tables["utt2dur"])
    for u, w in tables["wav.scp"]:
        info = sf.info(w)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert float(durs[u]) == pytest.approx(info.frames / 16000, abs=1e-4)
        assert 2.0 - 1e-3 <= info.frames / 16000 <= 4.0 + 1e-3
        x, _ = sf.read(w)
        assert np.abs(x).max() > 0.01  # not silent


@needs_espeak
def test_speakers_of_all_sets_disjoint_and_the_pool_unlabeled(corpus):
    spk = {}
    for name in SPEECH_SETS:
        keys = [u for u, _ in _read_table(corpus / "data" / name / "wav.scp")] if (
            corpus / "data" / name).is_dir() else []
        spk[name] = {u.rsplit("-", 1)[0] for u in keys}
    assert spk["train"] and spk["test"] and spk["pool"] and spk["valid"]
    for i, a in enumerate(SPEECH_SETS):
        for b in SPEECH_SETS[i + 1 :]:
            assert not spk[a] & spk[b], (a, b)
    assert sorted(p.name for p in (corpus / "data" / "pool").iterdir()) == [
        "utt2dur", "wav.scp"]  # no speaker label can reach pre-training
    rows = (corpus / "speakers.tsv").read_text().splitlines()
    header = rows[0].split("\t")
    sets = {r.split("\t")[0]: r.split("\t")[header.index("set")] for r in rows[1:]}
    for name in SPEECH_SETS:
        assert {s for s, v in sets.items() if v == name} == spk[name]
    for row in rows[1:]:
        s, engine = row.split("\t")[0], row.split("\t")[header.index("engine")]
        assert (corpus / "voices" / f"{s}.variant").is_file() == (engine == "espeak"), s


@needs_espeak
def test_trial_lists_both_formats_balanced(corpus):
    d = corpus / "data" / "test"
    kaldi = [line.split() for line in (d / "trials.kaldi").read_text().splitlines()]
    vox = [line.split() for line in (d / "trials.txt").read_text().splitlines()]
    assert [(e, t, "target" if y == "1" else "nontarget") for y, e, t in vox] == [
        tuple(x) for x in kaldi
    ]
    utt2spk = dict(_read_table(d / "utt2spk"))
    labels = [x[2] for x in kaldi]
    assert labels.count("target") == labels.count("nontarget") == 3 * 3  # 3 spk x C(3,2)
    for e, t, lab in kaldi:
        assert (utt2spk[e] == utt2spk[t]) == (lab == "target")


@needs_espeak
@has_unseen
def test_unseen_voices_are_held_out_of_every_other_set(corpus):
    rows = [r.split("\t") for r in (corpus / "speakers.tsv").read_text().splitlines()]
    h = rows[0]
    voice = {r[0]: (r[h.index("set")], r[h.index("voice")]) for r in rows[1:]}
    unseen = set(tts_engines.UNSEEN_VOICES)
    assert {v for s, v in voice.values() if s == "test_unseen"} <= unseen
    assert not {v for s, v in voice.values() if s != "test_unseen"} & unseen
    kaldi = (corpus / "data" / "test_unseen" / "trials.kaldi").read_text().split()
    assert kaldi.count("target") == kaldi.count("nontarget") == 3 * 3


def test_timbre_filter_gain_at_its_band_centre():
    sr, f0 = 16000, 1000.0
    t = np.arange(sr) / sr
    x = np.sin(2 * np.pi * f0 * t)
    y = tts_engines.timbre_eq(x, sr, ((f0, 6.0, 1.0),), 0.0)
    gain = 20 * np.log10(np.std(y[4000:]) / np.std(x[4000:]))
    assert gain == pytest.approx(6.0, abs=0.3)
    y = tts_engines.timbre_eq(np.sin(2 * np.pi * 2000.0 * t), sr, (), 1.5)  # +1.5 dB/octave
    assert 20 * np.log10(np.std(y) / np.std(x)) == pytest.approx(1.5, abs=0.2)


def test_channels_keep_the_length_and_the_telephone_band_cuts_high_tones():
    sr = 16000
    t = np.arange(sr) / sr
    hi = 0.3 * np.sin(2 * np.pi * 6000.0 * t)
    assert np.std(channel.telephone(hi)[2000:]) < 0.01 * np.std(hi)
    speech_like = 0.1 * np.random.default_rng(0).standard_normal(sr)
    for kind in ("mp3", "vorbis", "opus"):
        assert channel.codec(speech_like, kind, 0.9).shape == (sr,)
    a = channel.apply_channel(np.random.default_rng(3), speech_like, 0.1, 1.0, 1.0, 1.0, 0.0)
    b = channel.apply_channel(np.random.default_rng(3), speech_like, 0.1, 1.0, 1.0, 1.0, 0.0)
    assert a[1] == b[1] and np.array_equal(a[0], b[0]) and a[0].shape == (sr,)
    assert a[1].startswith("reverb+") and a[1].count("+") == 2


@needs_espeak
def test_noise_and_rir_sets(corpus):
    noise = corpus / "data" / "noise"
    types = dict(_read_table(noise / "utt2type"))
    assert sorted(types.values()) == ["babble"] * 2 + ["music"] * 2 + ["noise"] * 2
    for key, kind in types.items():
        assert key.startswith(kind + "-")
    for _, w in _read_table(noise / "wav.scp"):
        info = sf.info(w)
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 6 * 16000)
    rirs = corpus / "data" / "rirs"
    rt = {k: float(v) for k, v in _read_table(rirs / "utt2rt60")}
    assert len(rt) == 3 and all(0.2 <= v <= 0.8 for v in rt.values())
    for k, w in _read_table(rirs / "wav.scp"):
        x, sr = sf.read(w)
        assert sr == 16000 and x.ndim == 1
        assert noise_rir.estimate_rt60(x, sr) == pytest.approx(rt[k], rel=0.15)
