#!/usr/bin/env python3
"""Synthesize a small speaker-verification corpus with Debian's TTS engines.

Usage::

    python tools/synth/synth_corpus.py --out DIR --seed 7 --nj 2 [--quick] [--num_train_spk N ...]

Writes under ``DIR``::

    wav/<set>/<spk>/<utt>.wav          16 kHz mono 16-bit speech, utt = <spk>-NNNN
    wav/noise/<key>.wav, wav/rirs/<key>.wav
    data/train                         wav.scp utt2spk spk2utt utt2dur text utt2channel
    data/test                          the same: unseen speakers of the training voices
    data/test_unseen                   the same: speakers of a voice family held out of
                                       training and pre-training (--unseen_voices)
    data/pool                          wav.scp utt2dur only: the unlabeled pre-training pool
                                       (own speakers; every espeak-ng language; no labels)
    data/valid                         like data/test: more unseen speakers of the training
                                       voices, for validation during training, thresholds
                                       and calibration (disjoint from every test set)
    data/<test set>/trials.kaldi       "enroll test target|nontarget" (also data/valid)
    data/<test set>/trials.txt         "1|0 enroll test" (VoxCeleb format), same trials
    data/noise                         wav.scp utt2dur utt2type (noise|babble|music)
    data/rirs                          wav.scp utt2dur utt2rt60
    speakers.tsv                       each speaker's set, engine, voice and traits
    voices/<spk>.variant               espeak speakers' variant files

All Kaldi files are sorted in byte order (LC_ALL=C). The speakers of all sets
are disjoint (ids spk0001.. for train, then test, unseen-voice test, pool, valid). Every
utterance goes through a random channel with some probability (``channel``:
telephone band, codecs, reverberation, noise; listed in ``utt2channel``). The same ``--seed``
(and sizes) gives byte-identical wav files and lists, whatever ``--nj``: every
speaker draws from its own generator seeded by (seed, set, speaker index), and a
test speaker's traits do not depend on the number of train speakers.
See ``tts_engines`` for how speakers are made, ``noise_rir`` for noise and RIRs.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

sys.path.insert(0, str(Path(__file__).resolve().parent))

import channel  # noqa: E402
import noise_rir  # noqa: E402
import text_gen  # noqa: E402
import tts_engines  # noqa: E402

logger = logging.getLogger("synth_corpus")

SR = 16000
SET_CODES = {"train": 1, "test": 2, "noise": 3, "rirs": 4, "trials": 5, "test_unseen": 6,
             "pool": 7, "valid": 8}
#: In id order; a set added later goes last, so that the earlier sets keep their ids and bytes.
SPEECH_SETS = ("train", "test", "test_unseen", "pool", "valid")
#: The labelled sets that get trial lists.
TRIAL_SETS = ("test", "test_unseen", "valid")
#: Preset sizes; any size option given on the command line overrides the preset.
SIZES = {
    "default": {
        "num_train_spk": 600, "train_utts": 12, "num_test_spk": 36, "test_utts": 18,
        "num_unseen_spk": 36, "unseen_utts": 18, "num_pool_spk": 120, "pool_utts": 6,
        "num_valid_spk": 20, "valid_utts": 8, "num_noise": 12, "num_rirs": 40,
    },
    "quick": {
        "num_train_spk": 40, "train_utts": 6, "num_test_spk": 12, "test_utts": 6,
        "num_unseen_spk": 12, "unseen_utts": 6, "num_pool_spk": 30, "pool_utts": 4,
        "num_valid_spk": 8, "valid_utts": 4, "num_noise": 4, "num_rirs": 12,
    },
}
SIZE_HELP = {
    "num_train_spk": "train speakers",
    "train_utts": "utterances per train speaker",
    "num_test_spk": "test speakers",
    "test_utts": "utterances per test speaker",
    "num_unseen_spk": "unseen-voice test speakers (0: no such set)",
    "unseen_utts": "utterances per unseen-voice test speaker",
    "num_pool_spk": "speakers of the unlabeled pre-training pool (0: no pool)",
    "pool_utts": "utterances per pool speaker",
    "num_valid_spk": "validation speakers of the training voices (0: no such set)",
    "valid_utts": "utterances per validation speaker",
    "num_noise": "clips per noise type (noise, babble, music)",
    "num_rirs": "room impulse responses",
}
#: Share of speakers per engine (renormalised over the engines present).
ENGINE_WEIGHTS = {"espeak": 0.5, "flite": 0.2, "festival": 0.3}
MAX_ROUNDS = 2  # synthesis rounds to bring an utterance's length into range
TOLERANCE = 0.25  # relative speech-length error accepted without a redraw


# --------------------------------------------------------------------------- speakers
def available_engines(wanted: list[str]) -> dict[str, object]:
    """Engine name -> engine instance with its voice list checked, for those installed.

    espeak-ng is required; flite and festival are skipped with a log line when absent.
    """
    engines: dict[str, object] = {}
    for name in wanted:
        eng = tts_engines.get_engine(name)
        if not eng.available():
            if name == "espeak":
                raise RuntimeError(
                    "espeak-ng is required but not installed (apt install espeak-ng)"
                )
            logger.warning("%s is not installed: no %s speakers", eng.binary, name)
            continue
        try:
            voices = eng.languages() if name == "espeak" else eng.voices()
        except RuntimeError as e:
            if name == "espeak":
                raise
            logger.warning("%s unusable, no %s speakers: %s", eng.binary, name, e)
            continue
        if not voices:
            if name == "espeak":
                raise RuntimeError("espeak-ng has no usable English voice")
            logger.warning("%s has none of the known voices: no %s speakers", eng.binary, name)
            continue
        if name == "festival":
            with tempfile.TemporaryDirectory(prefix="lap_probe_") as tmp:
                voices = eng.usable(voices, Path(tmp))
        eng.voice_list = voices
        if name == "espeak":
            eng.all_langs = eng.all_languages()
            eng.variant_list = eng.base_variants()
            if not eng.variant_list:
                raise RuntimeError("espeak-ng has none of the known base variants")
        engines[name] = eng
    if "espeak" not in engines:
        raise RuntimeError("espeak must be among --engines")
    return engines


def spk_id(index: int, total: int) -> str:
    return f"spk{index + 1:0{max(4, len(str(total)))}d}"


def draw_speakers(engines: dict, seed: int, counts: dict[str, int],
                  unseen: tuple[str, ...] = ()) -> dict[str, list]:
    """Speakers of every set in :data:`SPEECH_SETS`, each drawn from (seed, set, index).

    ``unseen``: festival voices held out of train, test and pool; the
    ``test_unseen`` set draws only from them (and is empty when none is installed).
    The pool's espeak speakers read with any espeak-ng language voice.
    """
    fest = engines.get("festival")
    held = [v for v in (fest.voice_list if fest else []) if v in unseen]
    seen_fest = [v for v in (fest.voice_list if fest else []) if v not in unseen]
    names = [n for n in sorted(engines, key=list(ENGINE_WEIGHTS).index)
             if n != "festival" or seen_fest]
    w = np.array([ENGINE_WEIGHTS[n] for n in names])
    w = w / w.sum()
    total = sum(counts.values())
    out: dict[str, list] = {}
    offset = 0
    for set_name in SPEECH_SETS:
        out[set_name] = []
        count = counts.get(set_name, 0)
        if set_name == "test_unseen" and count and not held:
            logger.warning("none of the held-out voices %s is installed: no unseen-voice "
                           "test set", list(unseen))
            count = 0
        for i in range(count):
            rng = np.random.default_rng([seed, SET_CODES[set_name], i, 0])
            sid = spk_id(offset + i, total)
            if set_name == "test_unseen":
                out[set_name].append(fest.draw_speaker(rng, sid, held))
                continue
            name = names[int(rng.choice(len(names), p=w))]
            eng = engines[name]
            if name == "espeak":
                langs = eng.all_langs if set_name == "pool" else eng.voice_list
                s = eng.draw_speaker(rng, sid, langs, eng.variant_list)
            elif name == "festival":
                s = eng.draw_speaker(rng, sid, seen_fest)
            else:
                s = eng.draw_speaker(rng, sid, eng.voice_list)
            out[set_name].append(s)
        offset += count
    return out


# --------------------------------------------------------------------------- audio
def active_span(x: np.ndarray, sr: int = SR, floor_db: float = -45.0) -> tuple[int, int]:
    """[start, end) of the part above ``floor_db`` re the loudest 10 ms frame, +20 ms margins."""
    hop = sr // 100
    n = max(1, x.size // hop)
    e = np.square(x[: n * hop].astype(np.float64)).reshape(n, hop).mean(axis=1)
    if e.max() <= 0:
        return 0, 0
    on = np.flatnonzero(e >= e.max() * 10 ** (floor_db / 10.0))
    margin = sr // 50
    return max(0, on[0] * hop - margin), min(x.size, (on[-1] + 1) * hop + margin)


def to_16k(x: np.ndarray, sr: int, shift: float = 1.0) -> np.ndarray:
    """Resample to 16 kHz, treating the input as sampled at ``sr * shift`` (see tts_engines)."""
    rate_in = sr * shift
    if abs(rate_in - SR) < 1e-9:
        return x.astype(np.float32)
    return soxr.resample(x.astype(np.float32), rate_in, SR, quality="HQ")


def write_wav(path: Path, x: np.ndarray) -> int:
    """Write float audio in [-1, 1] as 16 kHz mono PCM_16; returns the number of samples."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = np.clip(np.round(np.asarray(x, dtype=np.float64) * 32767.0), -32768, 32767)
    sf.write(str(path), pcm.astype(np.int16), SR, subtype="PCM_16", format="WAV")
    return int(pcm.size)


@dataclass
class SpeakerJob:
    """Everything a worker needs to synthesize one speaker's utterances."""

    engine: object
    speaker: tts_engines.Speaker
    set_name: str
    index: int
    num_utts: int
    seed: int
    wav_dir: Path
    min_dur: float
    max_dur: float
    channel_prob: float = 0.0


def synth_speaker(job: SpeakerJob) -> list[tuple[str, str, int, str, str]]:
    """Synthesize one speaker -> [(utt, wav path, num samples, text, channel)] in order.

    Per utterance: a target length T ~ U(min_dur, max_dur) with 0.05-0.25 s of
    silence each side; the text is sized from the speaker's speaking rate, and
    utterances whose speech misses the wanted length by more than TOLERANCE are
    redrawn (up to MAX_ROUNDS rounds; the closest one is kept), then cropped or
    padded into range. Gain: speech RMS drawn
    in [-32, -16] dBFS, over a white noise floor at -85..-70 dBFS. flite and
    festival speakers get their pitch shift and timbre filter first; then a
    random channel (``channel.apply_channel``) with probability ``channel_prob``.
    """
    s, eng = job.speaker, job.engine
    rng = np.random.default_rng([job.seed, SET_CODES[job.set_name], job.index, 1])
    n = job.num_utts
    lead = rng.uniform(0.05, 0.25, size=n)
    trail = rng.uniform(0.05, 0.25, size=n)
    target = rng.uniform(job.min_dur, job.max_dur, size=n)
    lo = np.maximum(job.min_dur - lead - trail, 0.5)
    hi = job.max_dur - lead - trail
    want = target - lead - trail
    scale = np.ones(n)
    speech: list[np.ndarray | None] = [None] * n
    texts = [""] * n
    pending = list(range(n))
    with tempfile.TemporaryDirectory(prefix=f"lap_{s.spk}_") as tmp:
        for rnd in range(MAX_ROUNDS):
            params = []
            for u in pending:
                words = int(round(want[u] * s.words_per_second() * scale[u]))
                text = text_gen.utterance_text(rng, max(3, words))
                params.append(eng.utt_params(rng, s, text))
            rdir = Path(tmp) / f"r{rnd}"
            rdir.mkdir()
            outs = eng.synthesize(s, params, rdir)
            still = []
            for u, p, (x, sr) in zip(pending, params, outs, strict=True):
                y = to_16k(x, sr, s.shift)
                if s.pitch_cents:
                    y = tts_engines.sox_pitch(y, SR, s.pitch_cents)
                if s.eq or s.tilt:
                    y = tts_engines.timbre_eq(y, SR, s.eq, s.tilt)
                a, b = active_span(y)
                y = y[a:b]
                dur = y.size / SR
                if speech[u] is None or abs(dur - want[u]) < abs(speech[u].size / SR - want[u]):
                    speech[u], texts[u] = y, p.text
                ok = lo[u] <= dur <= hi[u] and abs(dur / want[u] - 1.0) <= TOLERANCE
                if not ok and dur > 0:
                    scale[u] *= want[u] / dur
                    still.append(u)
            pending = still
            if not pending:
                break
    results = []
    for u in range(n):
        y = speech[u].astype(np.float64)
        if y.size > hi[u] * SR:  # crop with a 20 ms fade-out
            y = y[: int(hi[u] * SR)]
            fade = min(y.size, SR // 50)
            y[-fade:] *= np.linspace(1.0, 0.0, fade)
        rms = max(float(np.sqrt(np.mean(y**2))), 1e-9)
        y = y * (10 ** (rng.uniform(-32.0, -16.0) / 20.0) / rms)
        pad_a = int(lead[u] * SR)
        pad_b = max(int(trail[u] * SR), int(job.min_dur * SR) - pad_a - y.size)
        speech_rms = float(np.sqrt(np.mean(y**2)))
        y = np.concatenate([np.zeros(pad_a), y, np.zeros(pad_b)])
        y += 10 ** (rng.uniform(-85.0, -70.0) / 20.0) * rng.standard_normal(y.size)
        tag = "clean"
        if job.channel_prob > 0:
            crng = np.random.default_rng([job.seed, SET_CODES[job.set_name], job.index, 2, u])
            y, tag = channel.apply_channel(crng, y, speech_rms, p_channel=job.channel_prob,
                                           p_reverb=job.channel_prob * 0.7,
                                           p_noise=job.channel_prob)
        peak = float(np.abs(y).max())
        if peak > 0.99:
            y *= 0.99 / peak
        utt = f"{s.spk}-{u + 1:04d}"
        path = job.wav_dir / s.spk / f"{utt}.wav"
        results.append((utt, str(path), write_wav(path, y), texts[u], tag))
    return results


def synth_speaker_or_none(job: SpeakerJob):
    """:func:`synth_speaker`, or ``None`` (with the error logged) when an engine fails, so
    one bad voice does not lose a long synthesis run."""
    try:
        return synth_speaker(job)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        logging.getLogger("synth_corpus").warning(
            "speaker %s (%s %s) failed, left out: %s", job.speaker.spk, job.speaker.engine,
            job.speaker.voice, str(e)[-300:])
        return None


# --------------------------------------------------------------------------- Kaldi files
def _c_sorted(items):
    return sorted(items, key=lambda kv: (kv[0].encode(), str(kv[1]).encode()))


def write_table(path: Path, rows: list[tuple[str, str]]) -> None:
    """Write ``key value`` lines sorted in byte order (LC_ALL=C), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{k} {v}\n" for k, v in _c_sorted(rows)))
    os.replace(tmp, path)


def write_data_dir(d: Path, utts: list[tuple[str, str, str, int, str, str]],
                   labels: bool = True) -> None:
    """A Kaldi data dir from (utt, spk, wav path, num samples, text, channel) rows.

    ``labels=False`` (the unlabeled pool) writes wav.scp and utt2dur only.
    """
    d.mkdir(parents=True, exist_ok=True)
    write_table(d / "wav.scp", [(u, w) for u, _, w, *_ in utts])
    write_table(d / "utt2dur", [(u, f"{n / SR:.4f}") for u, _, _, n, *_ in utts])
    if not labels:
        return
    write_table(d / "utt2spk", [(u, s) for u, s, *_ in utts])
    write_table(d / "text", [(u, t) for u, _, _, _, t, _ in utts])
    write_table(d / "utt2channel", [(r[0], r[5]) for r in utts])
    spk2utt: dict[str, list[str]] = {}
    for u, s, *_ in utts:
        spk2utt.setdefault(s, []).append(u)
    write_table(
        d / "spk2utt", [(s, " ".join(sorted(v, key=str.encode))) for s, v in spk2utt.items()]
    )


def make_trials(utt2spk: dict[str, str], seed: int,
                stream: int = SET_CODES["trials"]) -> list[tuple[str, str, int]]:
    """Balanced trials (enroll, test, 1|0), sorted in byte order.

    Targets: every pair of a speaker's utterances. Non-targets: as many, spread
    evenly over the unordered speaker pairs (remainders to rng-chosen pairs),
    utterance pairs drawn without repetition.
    """
    rng = np.random.default_rng([seed, stream])
    by_spk: dict[str, list[str]] = {}
    for u, s in sorted(utt2spk.items(), key=lambda kv: kv[0].encode()):
        by_spk.setdefault(s, []).append(u)
    spks = sorted(by_spk, key=str.encode)
    trials = [
        (a, b, 1) for s in spks for i, a in enumerate(by_spk[s]) for b in by_spk[s][i + 1 :]
    ]
    pairs = [(a, b) for i, a in enumerate(spks) for b in spks[i + 1 :]]
    if not pairs:
        return sorted(trials, key=lambda t: (t[0].encode(), t[1].encode()))
    quota = np.full(len(pairs), len(trials) // len(pairs))
    quota[rng.permutation(len(pairs))[: len(trials) % len(pairs)]] += 1
    for (sa, sb), q in zip(pairs, quota, strict=True):
        ua, ub = by_spk[sa], by_spk[sb]
        q = min(int(q), len(ua) * len(ub))
        for k in np.sort(rng.choice(len(ua) * len(ub), size=q, replace=False)):
            trials.append((ua[k // len(ub)], ub[k % len(ub)], 0))
    return sorted(trials, key=lambda t: (t[0].encode(), t[1].encode()))


def write_trials(d: Path, trials: list[tuple[str, str, int]]) -> None:
    kaldi = "".join(f"{e} {t} {'target' if y else 'nontarget'}\n" for e, t, y in trials)
    vox = "".join(f"{y} {e} {t}\n" for e, t, y in trials)
    for name, text in (("trials.kaldi", kaldi), ("trials.txt", vox)):
        tmp = d / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, d / name)


# --------------------------------------------------------------------------- noise, RIRs
def make_noise_set(out: Path, seed: int, num_per_kind: int, dur: float, train_wavs: list[str]):
    """``num_per_kind`` clips of each of noise/babble/music -> data/noise."""
    rng = np.random.default_rng([seed, SET_CODES["noise"]])
    n = int(dur * SR)
    rows = []
    colours, tones = list(noise_rir.NOISE_COLOURS), list(noise_rir.TONE_KINDS)
    for i in range(num_per_kind):
        c = colours[i % len(colours)]
        rows.append(("noise", f"noise-{c}-{i + 1:04d}", noise_rir.coloured_noise(rng, n, c)))
    for i in range(num_per_kind):
        k = int(rng.integers(3, 8))
        picks = rng.choice(len(train_wavs), size=min(k, len(train_wavs)), replace=False)
        utts = [sf.read(train_wavs[j], dtype="float32")[0] for j in np.sort(picks)]
        rows.append(("babble", f"babble-{k}spk-{i + 1:04d}", noise_rir.babble(rng, n, utts)))
    for i in range(num_per_kind):
        t = tones[i % len(tones)]
        rows.append(("music", f"music-{t}-{i + 1:04d}", noise_rir.tonal_noise(rng, n, t)))
    d = out / "data" / "noise"
    d.mkdir(parents=True, exist_ok=True)
    wav_rows, dur_rows, type_rows = [], [], []
    for kind, key, x in rows:
        path = out / "wav" / "noise" / f"{key}.wav"
        ns = write_wav(path, x)
        wav_rows.append((key, str(path)))
        dur_rows.append((key, f"{ns / SR:.4f}"))
        type_rows.append((key, kind))
    write_table(d / "wav.scp", wav_rows)
    write_table(d / "utt2dur", dur_rows)
    write_table(d / "utt2type", type_rows)


def make_rir_set(out: Path, seed: int, num: int) -> None:
    """``num`` synthetic RIRs with RT60 ~ U(0.2, 0.8) s -> data/rirs (utt2rt60 holds RT60)."""
    rng = np.random.default_rng([seed, SET_CODES["rirs"]])
    d = out / "data" / "rirs"
    d.mkdir(parents=True, exist_ok=True)
    wav_rows, dur_rows, rt_rows = [], [], []
    for i in range(num):
        rt60 = float(rng.uniform(*noise_rir.RT60_RANGE))
        key = f"rir-{i + 1:04d}"
        path = out / "wav" / "rirs" / f"{key}.wav"
        ns = write_wav(path, noise_rir.synth_rir(rng, rt60))
        wav_rows.append((key, str(path)))
        dur_rows.append((key, f"{ns / SR:.4f}"))
        rt_rows.append((key, f"{rt60:.4f}"))
    write_table(d / "wav.scp", wav_rows)
    write_table(d / "utt2dur", dur_rows)
    write_table(d / "utt2rt60", rt_rows)


# --------------------------------------------------------------------------- main
def write_speakers(out: Path, sets: dict[str, list[tts_engines.Speaker]], engines: dict) -> None:
    rows = [{"set": name, **s.row()} for name, spks in sets.items() for s in spks]
    cols = ["spk", "set"] + [k for k in rows[0] if k not in ("spk", "set")]
    lines = ["\t".join(cols)] + ["\t".join(r[c] for c in cols) for r in rows]
    (out / "speakers.tsv").write_text("\n".join(lines) + "\n")
    vdir = out / "voices"
    vdir.mkdir(exist_ok=True)
    for spks in sets.values():
        for s in spks:
            if s.engine == "espeak":
                (vdir / f"{s.spk}.variant").write_text(engines["espeak"].variant_text(s))


def prepare_out(out: Path) -> None:
    """Make ``out``; clear a previous corpus there, refuse a non-empty dir that is not one."""
    if out.exists() and any(out.iterdir()):
        if not (out / "speakers.tsv").is_file():
            raise SystemExit(f"{out} is not empty and holds no corpus (no speakers.tsv): refusing")
        for sub in ("wav", "data", "voices"):
            shutil.rmtree(out / sub, ignore_errors=True)
        (out / "speakers.tsv").unlink()
    out.mkdir(parents=True, exist_ok=True)


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--seed", type=int, default=7, help="random seed (same seed: same bytes)")
    p.add_argument("--nj", type=int, default=2, help="parallel synthesis processes")
    p.add_argument("--quick", action="store_true", help="small preset sizes (CI)")
    for key, what in SIZE_HELP.items():
        d, q = SIZES["default"][key], SIZES["quick"][key]
        p.add_argument(f"--{key}", type=int, help=f"{what} (default {d}, quick {q})")
    p.add_argument("--train_scale", type=int, default=1,
                   help="multiply the train speakers (after the preset and --num_train_spk) by "
                        "this factor; a set's speaker i is drawn from (seed, set, i), so a "
                        "larger corpus keeps the smaller one's speakers and every other set's "
                        "audio (the ids, numbered after the training speakers, move up)")
    p.add_argument("--min_dur", type=float, default=2.0, help="shortest utterance (s)")
    p.add_argument("--max_dur", type=float, default=4.0, help="longest utterance (s)")
    p.add_argument("--noise_dur", type=float, default=6.0, help="noise clip length (s)")
    p.add_argument("--channel_prob", type=float, default=0.3,
                   help="probability of a channel (codec/telephone) and of noise per "
                        "utterance; reverb at 0.7 times it (0: clean corpus)")
    p.add_argument(
        "--engines", default="espeak,flite,festival",
        help="comma-separated engines to use when installed (espeak is required)",
    )
    p.add_argument(
        "--unseen_voices", default=",".join(tts_engines.UNSEEN_VOICES),
        help="festival voices held out of train/test/pool for the unseen-voice test set",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    sizes = dict(SIZES["quick" if args.quick else "default"])
    for k in sizes:
        if getattr(args, k) is not None:
            sizes[k] = getattr(args, k)
    if args.train_scale < 1:
        raise SystemExit(f"--train_scale must be >= 1, got {args.train_scale}")
    sizes["num_train_spk"] *= args.train_scale
    for k, v in sizes.items():
        low = 2 if k in ("num_test_spk", "test_utts", "num_train_spk", "unseen_utts",
                         "valid_utts") else (
            0 if k in ("num_unseen_spk", "num_pool_spk", "num_valid_spk") else 1)
        if v < low or (k in ("num_unseen_spk", "num_valid_spk") and v == 1):
            raise SystemExit(f"--{k} too small: {v}")
    if not 0.5 <= args.min_dur < args.max_dur:
        raise SystemExit(f"need 0.5 <= --min_dur < --max_dur, got {args.min_dur}, {args.max_dur}")
    if not 0.0 <= args.channel_prob <= 1.0:
        raise SystemExit(f"--channel_prob must be in [0, 1], got {args.channel_prob}")
    t0 = time.time()
    engines = available_engines([e for e in args.engines.split(",") if e])
    unseen = tuple(v for v in args.unseen_voices.split(",") if v)
    unknown = sorted(set(unseen) - set(tts_engines.FESTIVAL_VOICES))
    if unknown:
        raise SystemExit(f"--unseen_voices: unknown festival voice(s) {unknown}; valid: "
                         f"{sorted(tts_engines.FESTIVAL_VOICES)}")
    counts = {"train": sizes["num_train_spk"], "test": sizes["num_test_spk"],
              "test_unseen": sizes["num_unseen_spk"], "pool": sizes["num_pool_spk"],
              "valid": sizes["num_valid_spk"]}
    utts = {"train": sizes["train_utts"], "test": sizes["test_utts"],
            "test_unseen": sizes["unseen_utts"], "pool": sizes["pool_utts"],
            "valid": sizes["valid_utts"]}
    sets = draw_speakers(engines, args.seed, counts, unseen)
    out = args.out.resolve()
    prepare_out(out)
    everyone = [s for spks in sets.values() for s in spks]
    by_engine = {n: sum(s.engine == n for s in everyone) for n in engines}
    logger.info("speakers: %s; by engine %s",
                ", ".join(f"{len(v)} {k}" for k, v in sets.items()), by_engine)
    with tempfile.TemporaryDirectory(prefix="lap_corpus_") as work:
        engines["espeak"].prepare(Path(work), [s for s in everyone if s.engine == "espeak"])
        jobs = []
        for set_name, spks in sets.items():
            for i, s in enumerate(spks):
                jobs.append(SpeakerJob(
                    engines[s.engine], s, set_name, i, utts[set_name], args.seed,
                    out / "wav" / set_name, args.min_dur, args.max_dur, args.channel_prob,
                ))
        # slow engines first, for a better balance across workers
        order = sorted(range(len(jobs)), key=lambda j: jobs[j].speaker.engine != "festival")
        results: list = [None] * len(jobs)
        if args.nj <= 1:
            for j in order:
                results[j] = synth_speaker_or_none(jobs[j])
        else:
            with ProcessPoolExecutor(args.nj, mp_context=get_context("spawn")) as pool:
                for j, r in zip(order, pool.map(synth_speaker_or_none, [jobs[j] for j in order]),
                                strict=True):
                    results[j] = r
    t1 = time.time()
    rows: dict[str, list] = {k: [] for k in sets}
    failed = {job.speaker.spk for job, res in zip(jobs, results, strict=True) if res is None}
    for job, res in zip(jobs, results, strict=True):
        if res is not None:
            rows[job.set_name] += [(u, job.speaker.spk, w, n, t, c) for u, w, n, t, c in res]
    if failed:
        logger.warning("%d speaker(s) failed and are left out: %s", len(failed), sorted(failed))
        sets = {k: [s for s in v if s.spk not in failed] for k, v in sets.items()}
        for k in ("train", "test"):
            if len(sets[k]) < 2:
                raise SystemExit(f"fewer than 2 {k} speakers left after synthesis failures")
    n_trials = {}
    for set_name, r in rows.items():
        if not r:
            continue
        write_data_dir(out / "data" / set_name, r, labels=set_name != "pool")
        if set_name in TRIAL_SETS:
            trials = make_trials({u: s for u, s, *_ in r}, args.seed,
                                 SET_CODES["trials"] * 10 + SET_CODES[set_name])
            write_trials(out / "data" / set_name, trials)
            n_trials[set_name] = len(trials)
    make_noise_set(
        out, args.seed, sizes["num_noise"], args.noise_dur, [w for _, _, w, *_ in rows["train"]]
    )
    make_rir_set(out, args.seed, sizes["num_rirs"])
    write_speakers(out, sets, engines)
    hours = sum(n for r in rows.values() for _, _, _, n, _, _ in r) / SR / 3600
    logger.info(
        "wrote %s: %s utterances (%.2f h), trials %s, speech %.1f s, total %.1f s", out,
        {k: len(v) for k, v in rows.items()}, hours, n_trials, t1 - t0, time.time() - t0,
    )
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sys.exit(main())
