"""TTS engines (espeak-ng, flite, festival) as speaker factories and synthesizers.

A *speaker* (:class:`Speaker`) is a fixed engine + voice (+ espeak variant) and
fixed traits: base pitch, pitch range, speaking rate, (espeak) amplitude and word
gap, (espeak) formant scaling, and (flite/festival) a post-hoc "shift" factor.
Each engine class draws speakers from a random generator and synthesizes one
speaker's utterances, with per-utterance pitch and rate jitter inside the
speaker's range (:class:`UttParams`).

How each engine makes many speakers:

* **espeak-ng**: every speaker gets its own voice *variant file* written into a
  private copy of espeak-ng's data dir (symlinks to the system files, passed with
  ``--path``). The file starts from a built-in variant (m1..m7, f1..f5, klatt,
  croak, ...) and replaces its ``pitch`` line (speaker base pitch and range in
  Hz) and ``formant`` lines (all formant frequencies scaled by one per-speaker
  vocal-tract factor, times a small per-formant jitter; heights jittered).
  espeak-ng 1.51 silently falls back to the plain voice when a variant is not
  found, so :meth:`EspeakEngine.prepare` checks that a written variant changes
  the audio. Per utterance: ``-p`` (pitch, 0-99 around 50) and ``-s`` (words per
  minute) are jittered; ``-a`` (amplitude) and ``-g`` (word gap) are speaker traits.
* **flite**: voices kal, kal16, awb, rms, slt. Traits ``duration_stretch`` and
  ``int_f0_target_mean``/``int_f0_target_stddev`` via ``--setf`` (rms ignores the
  f0 target). Per utterance both are jittered.
* **festival**: voices kal_diphone, ked_diphone (``Duration_Stretch`` and
  ``int_lr_params`` target f0 mean/std) and cmu_us_slt_arctic_hts (HTS ``-r``
  speed only: the festival HTS module ignores ``-fm``/``-a``). One festival
  process synthesizes all of a speaker's utterances from a Scheme script.
* festival also has voices of other languages in Debian main (Italian pc/lp,
  Catalan ona HTS, Russian nsh, Czech dita/krb/machac/ph, Finnish lj/mv): real
  people's recordings, so real timbre. They read the same English text with
  their own letter-to-sound rules. Their f0 cannot be set through the engine
  (kind "fixed" and "hts"), so the speaker's pitch is moved afterwards by a
  fixed number of cents (``sox pitch``, which keeps the formants). The Indic
  NSK voices crash on English text and are left out.
* flite and festival speakers also get a **shift** factor ``a`` in [0.88, 1.14]:
  the engine's output sampled at rate ``sr`` is resampled as if it were at
  ``sr * a``, i.e. ``y(t) = x(a t)``. This scales pitch and all formants by
  ``a`` together (a shorter/longer vocal tract) and the duration by ``1/a``, so
  one voice gives several distinct speakers. espeak speakers use ``a = 1``
  (their formants are set directly).
* every flite and festival speaker also gets a fixed **timbre filter**
  (:func:`timbre_eq`): two peaking equaliser bands (+-6 dB at random
  frequencies between 300 Hz and 5 kHz) and a spectral tilt, a stand-in for
  the formant and voice-quality differences that resampling alone leaves equal.

All engines are deterministic (the same command gives the same samples).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import lfilter

logger = logging.getLogger(__name__)

#: Language voices of espeak-ng used for speakers (English accents, so the
#: text generator's words are read as words).
ESPEAK_LANGS = (
    "en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
    "en-gb-x-gbclan", "en-gb-x-gbcwmd",
)
#: Built-in variants a speaker's variant file starts from (missing ones are skipped).
ESPEAK_BASE_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "croak", "klatt", "klatt2", "klatt3", "klatt4", "klatt6", "adam", "Andy",
    "benjamin", "david", "edward", "john", "max", "paul", "robert", "Alicia",
    "Andrea", "Annie", "linda", "steph", "belinda",
)
#: flite voices (awb_time is a limited-domain clock voice: left out).
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
#: festival voice name -> (gender, kind). kind "diphone" takes f0 targets, "hts" only speed.
FESTIVAL_VOICES = {
    "kal_diphone": ("male", "diphone"),
    "ked_diphone": ("male", "diphone"),
    "cmu_us_slt_arctic_hts": ("female", "hts"),
    "pc_diphone": ("male", "fixed"),  # Italian
    "lp_diphone": ("female", "fixed"),  # Italian
    "upc_ca_ona_hts": ("female", "hts"),  # Catalan
    "msu_ru_nsh_clunits": ("male", "fixed"),  # Russian
    "czech_dita": ("female", "fixed"),
    "czech_krb": ("male", "fixed"),  # a child's voice
    "czech_machac": ("male", "fixed"),
    "czech_ph": ("male", "fixed"),
    "suo_fi_lj_diphone": ("female", "fixed"),  # Finnish
    "hy_fi_mv_diphone": ("male", "fixed"),  # Finnish
}
#: The default held-out voice family of the unseen-voice test set: festival's Czech and
#: Finnish voices (six real people, never heard in training or pre-training).
UNSEEN_VOICES = (
    "czech_dita", "czech_krb", "czech_machac", "czech_ph", "suo_fi_lj_diphone",
    "hy_fi_mv_diphone",
)
PITCH_CENTS = (-350.0, 350.0)  # sox pitch shift of "fixed"/"hts" festival speakers
EQ_GAIN_DB = 6.0  # timbre filter: peaking bands of +-EQ_GAIN_DB
EQ_FREQ_HZ = (300.0, 5000.0)
TILT_DB_PER_OCT = 1.5  # timbre filter: spectral tilt of +-TILT_DB_PER_OCT
FLITE_GENDER = {"kal": "male", "kal16": "male", "awb": "male", "rms": "male", "slt": "female"}

# Trait ranges: (low, high) of uniform draws.
MALE_PITCH_HZ = (70.0, 120.0)
FEMALE_PITCH_HZ = (150.0, 215.0)
MALE_PITCH_RANGE_HZ = (25.0, 70.0)
FEMALE_PITCH_RANGE_HZ = (45.0, 110.0)
ESPEAK_WPM = (135.0, 205.0)
ESPEAK_VTL = (0.90, 1.10)  # one formant-frequency factor per speaker
STRETCH = (0.85, 1.2)  # flite/festival duration stretch (>1: slower)
SHIFT = (0.88, 1.14)  # flite/festival post-hoc pitch+formant factor


@dataclass(frozen=True)
class Speaker:
    """A fixed voice and its traits. Unused fields hold neutral values.

    ``rate``: espeak words per minute; flite/festival duration stretch (>1 slower).
    ``formants``: espeak only, 9 (freq%, height%, width%) triples for formants 0..8.
    """

    spk: str
    engine: str
    voice: str
    variant: str = ""
    gender: str = "male"
    pitch_hz: float = 0.0
    pitch_range_hz: float = 0.0
    rate: float = 1.0
    amplitude: int = 100
    word_gap: int = 0
    shift: float = 1.0
    vtl: float = 1.0
    formants: tuple[tuple[int, int, int], ...] = ()
    extra: str = ""  # extra variant-file lines (espeak), ';'-separated
    pitch_cents: float = 0.0  # sox pitch shift after synthesis (festival "fixed"/"hts")
    eq: tuple[tuple[float, float, float], ...] = ()  # timbre filter: (Hz, dB, Q) bands
    tilt: float = 0.0  # timbre filter: dB per octave re 1 kHz

    def words_per_second(self) -> float:
        """A rough speaking rate, used to size texts for a wanted duration."""
        if self.engine == "espeak":
            return self.rate / 60.0 * 0.98
        return 3.0 / self.rate * self.shift

    def row(self) -> dict[str, str]:
        """The speakers.tsv row (formants summarised by the vtl factor)."""
        d = dataclasses.asdict(self)
        d.pop("formants")
        d["eq"] = ";".join(f"{f:.0f}:{g:+.1f}:{q:.1f}" for f, g, q in self.eq)
        out = {}
        for k, v in d.items():
            out[k] = f"{v:.4g}" if isinstance(v, float) else (str(v) if v != "" else "-")
        return out


@dataclass(frozen=True)
class UttParams:
    """Per-utterance synthesis settings (already jittered around the speaker's)."""

    text: str
    pitch: float  # espeak: -p 0..99; flite/festival: f0 target mean in Hz
    pitch_range: float  # flite/festival: f0 std in Hz (espeak: unused)
    rate: float  # espeak: wpm; flite/festival: duration stretch


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, check=True, capture_output=True, **kw)
    except subprocess.CalledProcessError as e:
        err = e.stderr.decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"command failed ({e.returncode}): {' '.join(cmd)[:300]}\n{err}") from e


def _read(path: Path) -> tuple[np.ndarray, int]:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


def _uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def _pitch_traits(rng: np.random.Generator, gender: str) -> tuple[float, float]:
    if gender == "female":
        return _uniform(rng, FEMALE_PITCH_HZ), _uniform(rng, FEMALE_PITCH_RANGE_HZ)
    return _uniform(rng, MALE_PITCH_HZ), _uniform(rng, MALE_PITCH_RANGE_HZ)


# --------------------------------------------------------------------------- espeak-ng
class EspeakEngine:
    name = "espeak"
    binary = "espeak-ng"
    #: utterance jitter: espeak -p half-width, and wpm factor half-width
    pitch_jitter = 14.0
    rate_jitter = 0.12

    def __init__(self) -> None:
        self.data_root: Path | None = None  # the private copy, set by prepare()
        self.system_data: Path | None = None

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.binary) is not None

    def _system_data(self) -> Path:
        if self.system_data is not None:
            return self.system_data
        out = _run([self.binary, "--version"]).stdout.decode()
        m = re.search(r"Data at:\s*(\S+)", out)
        if not m or not Path(m.group(1)).is_dir():
            raise RuntimeError(f"cannot find espeak-ng's data dir in: {out!r}")
        self.system_data = Path(m.group(1))
        return self.system_data

    def languages(self) -> list[str]:
        out = _run([self.binary, "--voices=en"]).stdout.decode().split("\n")
        have = {line.split()[1] for line in out[1:] if len(line.split()) > 1}
        langs = [v for v in ESPEAK_LANGS if v in have]
        if not langs:
            raise RuntimeError(f"espeak-ng has none of the English voices {ESPEAK_LANGS}")
        return langs

    def all_languages(self) -> list[str]:
        """Every language voice of espeak-ng (for the unlabeled pool: English text read with
        each language's rules; the timbre comes from the speaker's variant)."""
        out = _run([self.binary, "--voices"]).stdout.decode().split("\n")
        langs = sorted({line.split()[1] for line in out[1:] if len(line.split()) > 3
                        and "mb/" not in line.split()[3]})
        # some listed codes are not accepted by -v: keep those that are (one espeak-ng process
        # each, ~130 of them: run a few at a time)
        with ThreadPoolExecutor(self.probe_jobs) as pool:
            accepted = list(pool.map(self._accepts, langs))
        ok = [lang for lang, yes in zip(langs, accepted, strict=True) if yes]
        return ok or self.languages()

    #: espeak-ng processes at a time when probing the language voices
    probe_jobs = 4

    def _accepts(self, lang: str) -> bool:
        """Whether ``espeak-ng -v lang`` speaks without a complaint."""
        r = subprocess.run([self.binary, "-q", "-v", lang, "a"], capture_output=True)
        return r.returncode == 0 and not r.stderr

    def base_variants(self) -> list[str]:
        vdir = self._system_data() / "voices" / "!v"
        return [v for v in ESPEAK_BASE_VARIANTS if (vdir / v).is_file()]

    def draw_speaker(
        self, rng: np.random.Generator, spk: str, langs: list[str], variants: list[str]
    ) -> Speaker:
        lang = langs[int(rng.integers(len(langs)))]
        base = variants[int(rng.integers(len(variants)))]
        text = (self._system_data() / "voices" / "!v" / base).read_text(errors="replace")
        gender = "female" if re.search(r"^\s*gender\s+female", text, re.M) else "male"
        pitch, prange = _pitch_traits(rng, gender)
        vtl = _uniform(rng, ESPEAK_VTL)
        base_formants = _parse_formants(text)
        formants = []
        for k, (f, h, w) in enumerate(base_formants):
            fj = vtl * (1.0 + 0.03 * rng.standard_normal()) if k <= 5 else vtl
            hj = 1.0 + 0.12 * rng.standard_normal() if 1 <= k <= 3 else 1.0
            formants.append((int(round(f * fj)), int(round(max(20.0, h * hj))), w))
        extra = []
        if rng.random() < 0.3 and "flutter" not in text:
            extra.append(f"flutter {int(rng.integers(2, 20))}")
        if rng.random() < 0.3 and "roughness" not in text:
            extra.append(f"roughness {int(rng.integers(1, 4))}")
        return Speaker(
            spk=spk, engine=self.name, voice=lang, variant=base, gender=gender,
            pitch_hz=pitch, pitch_range_hz=prange, rate=_uniform(rng, ESPEAK_WPM),
            amplitude=int(rng.integers(80, 161)), word_gap=int(rng.integers(0, 4)),
            vtl=vtl, formants=tuple(formants), extra=";".join(extra),
        )

    def variant_text(self, s: Speaker) -> str:
        """The speaker's variant file: the base variant with pitch/formants replaced."""
        base = (self._system_data() / "voices" / "!v" / s.variant).read_text(errors="replace")
        keep = [
            line for line in base.splitlines()
            if line.split()[:1] not in (["pitch"], ["formant"], ["name"], ["language"])
            and not line.lstrip().startswith("#")
        ]
        lines = ["language variant", f"name lap_{s.spk}"]
        lines += [line for line in keep if line.strip()]
        lines.append(f"pitch {int(round(s.pitch_hz))} {int(round(s.pitch_hz + s.pitch_range_hz))}")
        lines += [f"formant {k} {f} {h} {w}" for k, (f, h, w) in enumerate(s.formants)]
        lines += [x for x in s.extra.split(";") if x]
        return "\n".join(lines) + "\n"

    #: speakers per private data dir: espeak-ng keeps a list of at most 349 voices and
    #: variants (its ~130 language voices included) and ignores the ones beyond it
    speakers_per_dir = 100

    def prepare(self, workdir: Path, speakers: list[Speaker]) -> None:
        """Build private espeak-ng data dirs holding one variant file per speaker.

        Speakers are split over several dirs of :attr:`speakers_per_dir` each, since
        espeak-ng ignores variants past its voice-list limit.
        """
        sysdata = self._system_data()
        self.roots = {}
        chunks = [speakers[i : i + self.speakers_per_dir]
                  for i in range(0, len(speakers), self.speakers_per_dir)] or [[]]
        for c, chunk in enumerate(chunks):
            root = workdir / f"espeak{c}"
            data = root / "espeak-ng-data"
            (data / "voices" / "!v").mkdir(parents=True)
            for p in sysdata.iterdir():
                if p.name != "voices":
                    (data / p.name).symlink_to(p)
            # neither the system's variants nor the mbrola voices are linked: our variant
            # files are complete, and every listed voice takes a slot of espeak-ng's list
            for p in (sysdata / "voices").iterdir():
                if p.name not in ("!v", "mb"):
                    (data / "voices" / p.name).symlink_to(p)
            for s in chunk:
                (data / "voices" / "!v" / f"lap_{s.spk}").write_text(self.variant_text(s))
                self.roots[s.spk] = root
            self.data_root = root
            self._check_variants_used(workdir, chunk[-1] if chunk else None)

    def _check_variants_used(self, workdir: Path, last: Speaker | None) -> None:
        """The data dir's variants change the audio (the last speaker's one included)."""
        probe = workdir / f"espeak_probe_{self.data_root.name}"
        probe.mkdir()
        (self.data_root / "espeak-ng-data" / "voices" / "!v" / "lap_probe").write_text(
            "language variant\nname lap_probe\npitch 200 260\nformant 1 130 100 100\n"
        )
        variants = ["en-us", "en-us+lap_probe"]
        if last is not None:
            variants.append(f"en-us+lap_{last.spk}")
        outs = []
        for v in variants:
            wav = probe / f"{len(outs)}.wav"
            _run([self.binary, f"--path={self.data_root}", "-v", v, "-w", str(wav), "hello"])
            outs.append(wav.read_bytes())
        if any(o == outs[0] for o in outs[1:]):
            raise RuntimeError(
                "espeak-ng ignores variant files in the private data dir "
                f"({self.data_root}); cannot build distinct espeak speakers"
            )

    def utt_params(self, rng: np.random.Generator, s: Speaker, text: str) -> UttParams:
        pitch = float(np.clip(50.0 + rng.uniform(-1, 1) * self.pitch_jitter, 0, 99))
        rate = s.rate * (1.0 + rng.uniform(-1, 1) * self.rate_jitter)
        return UttParams(text=text, pitch=pitch, pitch_range=0.0, rate=rate)

    def synthesize(
        self, s: Speaker, utts: list[UttParams], tmp: Path
    ) -> list[tuple[np.ndarray, int]]:
        if s.spk not in getattr(self, "roots", {}):
            raise RuntimeError(f"EspeakEngine.prepare() was not called for {s.spk}")
        out = []
        for i, u in enumerate(utts):
            wav = tmp / f"{i}.wav"
            _run([
                self.binary, f"--path={self.roots[s.spk]}", "-v", f"{s.voice}+lap_{s.spk}",
                "-p", str(int(round(u.pitch))), "-s", str(int(round(u.rate))),
                "-a", str(s.amplitude), "-g", str(s.word_gap), "-w", str(wav), "--", u.text,
            ])
            out.append(_read(wav))
        return out


def _parse_formants(text: str) -> list[tuple[int, int, int]]:
    """Formant 0..8 (freq%, height%, width%) from a variant file; 100 where unset."""
    out = [(100, 100, 100)] * 9
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 3 and f[0] == "formant" and f[1].isdigit() and int(f[1]) < 9:
            vals = [int(x) for x in f[2:5] if x.lstrip("-").isdigit()]
            vals += [100] * (3 - len(vals))
            out[int(f[1])] = tuple(vals[:3])
    return out


class _ShiftedVoiceEngine:
    """Speakers of an engine with few voices: f0 target, stretch, and a resampling shift.

    Subclasses give ``name``, ``pitch_jitter``, ``rate_jitter`` and ``gender(voice)``.
    """

    name: str
    pitch_jitter: float  # relative f0-mean jitter half-width
    rate_jitter: float  # relative stretch jitter half-width

    def gender(self, voice: str) -> str:
        raise NotImplementedError

    def draw_speaker(self, rng: np.random.Generator, spk: str, voices: list[str]) -> Speaker:
        voice = voices[int(rng.integers(len(voices)))]
        gender = self.gender(voice)
        pitch, prange = _pitch_traits(rng, gender)
        shift = _uniform(rng, SHIFT)
        # the shift multiplies f0 afterwards: draw the engine target so that the
        # heard pitch lands in the gender's range
        cents = 0.0
        if self.pitch_fixed(voice):
            cents = _uniform(rng, PITCH_CENTS)
        eq, tilt = draw_timbre(rng)
        return Speaker(
            spk=spk, engine=self.name, voice=voice, gender=gender, pitch_hz=pitch / shift,
            pitch_range_hz=prange / 3.0 / shift, rate=_uniform(rng, STRETCH), shift=shift,
            pitch_cents=cents, eq=eq, tilt=tilt,
        )

    def pitch_fixed(self, voice: str) -> bool:
        """True when the engine cannot set this voice's f0 (it is shifted by sox instead)."""
        return False

    def utt_params(self, rng: np.random.Generator, s: Speaker, text: str) -> UttParams:
        return UttParams(
            text=text,
            pitch=s.pitch_hz * (1.0 + rng.uniform(-1, 1) * self.pitch_jitter),
            pitch_range=s.pitch_range_hz * (1.0 + rng.uniform(-0.2, 0.2)),
            rate=s.rate * (1.0 + rng.uniform(-1, 1) * self.rate_jitter),
        )


# --------------------------------------------------------------------------- flite
class FliteEngine(_ShiftedVoiceEngine):
    name = "flite"
    binary = "flite"
    pitch_jitter = 0.08  # relative f0-mean jitter half-width
    rate_jitter = 0.10  # relative stretch jitter half-width

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.binary) is not None

    def voices(self) -> list[str]:
        out = _run([self.binary, "-lv"]).stdout.decode()
        have = set(out.split(":", 1)[-1].split())
        return [v for v in FLITE_VOICES if v in have]

    def gender(self, voice: str) -> str:
        return FLITE_GENDER.get(voice, "male")

    def synthesize(
        self, s: Speaker, utts: list[UttParams], tmp: Path
    ) -> list[tuple[np.ndarray, int]]:
        out = []
        for i, u in enumerate(utts):
            wav = tmp / f"{i}.wav"
            _run([
                self.binary, "-voice", s.voice,
                "--setf", f"duration_stretch={u.rate:.4f}",
                "--setf", f"int_f0_target_mean={u.pitch:.2f}",
                "--setf", f"int_f0_target_stddev={u.pitch_range:.2f}",
                "-t", u.text, "-o", str(wav),
            ])
            out.append(_read(wav))
        return out


# --------------------------------------------------------------------------- festival
class FestivalEngine(_ShiftedVoiceEngine):
    name = "festival"
    binary = "festival"
    pitch_jitter = 0.08
    rate_jitter = 0.10
    #: festival's Scheme heap in cells. Its default (10M cells) costs every festival start
    #: 0.3-1 s of allocation, most of a short run; 2M start in about 0.1 s and hold every
    #: voice of FESTIVAL_VOICES (the largest, msu_ru_nsh_clunits, runs out at 500k). The heap
    #: does not change the audio; a run that runs out of storage is repeated with the default.
    heap = 2_000_000

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.binary) is not None

    def run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        """festival with ``args`` on the :attr:`heap`; again on its default heap when the
        smaller one runs out of storage."""
        try:
            return _run([self.binary, "--heap", str(self.heap), *args], timeout=timeout)
        except RuntimeError as e:
            cause = e.__cause__
            err = getattr(cause, "stderr", None) or b""
            if b"ran out of storage" not in err:
                raise
            logger.info("festival ran out of its %d-cell heap: rerun on the default heap",
                        self.heap)
            return _run([self.binary, *args], timeout=timeout)

    def voices(self) -> list[str]:
        out = self.run(["--batch", "(begin (print (voice.list)))"], timeout=60).stdout.decode()
        have = set(out.replace("(", " ").replace(")", " ").split())
        return [v for v in FESTIVAL_VOICES if v in have]

    def gender(self, voice: str) -> str:
        return FESTIVAL_VOICES[voice][0]

    def pitch_fixed(self, voice: str) -> bool:
        return FESTIVAL_VOICES[voice][1] != "diphone"

    def usable(self, voices: list[str], workdir: Path) -> list[str]:
        """The voices that synthesize a short English sentence.

        One festival run tries them all; only when it fails is each voice tried alone.
        """
        script = workdir / "probe_all.scm"
        lines = []
        for v in voices:
            lines.append(f'(voice_{v})\n(utt.save.wave (utt.synth (Utterance Text '
                         f'"seven green boats")) "{workdir / f"all_{v}.wav"}" \'riff)')
        script.write_text("\n".join(lines) + "\n")
        try:
            self.run(["-b", str(script)], timeout=300)
            if all((workdir / f"all_{v}.wav").is_file() for v in voices):
                return list(voices)
        except (RuntimeError, subprocess.TimeoutExpired):
            pass
        ok = []
        for v in voices:
            wav = workdir / f"probe_{v}.wav"
            script = workdir / f"probe_{v}.scm"
            script.write_text(f'(voice_{v})\n(utt.save.wave (utt.synth (Utterance Text '
                              f'"seven green boats")) "{wav}" \'riff)\n')
            try:
                self.run(["-b", str(script)], timeout=120)
                if wav.is_file() and _read(wav)[0].size > 0:
                    ok.append(v)
                    continue
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                logger.warning("festival voice %s unusable: %s", v, str(e)[-200:])
                continue
            logger.warning("festival voice %s wrote no audio: left out", v)
        return ok

    def synthesize(
        self, s: Speaker, utts: list[UttParams], tmp: Path
    ) -> list[tuple[np.ndarray, int]]:
        lines, wavs = self.script(s, utts, tmp)
        script = tmp / "synth.scm"
        script.write_text("\n".join(lines) + "\n")
        self.run(["-b", str(script)], timeout=600)
        return [_read(w) for w in wavs]

    def script(self, s: Speaker, utts: list[UttParams], tmp: Path) -> tuple[list[str], list[Path]]:
        """The Scheme lines that synthesize ``utts`` into ``tmp/<i>.wav``, and those paths."""
        kind = FESTIVAL_VOICES[s.voice][1]
        lines = [f"(voice_{s.voice})"]
        if kind == "hts":
            lines.append("(set! lap_hts_base hts_engine_params)")
        wavs = []
        for i, u in enumerate(utts):
            wav = tmp / f"{i}.wav"
            wavs.append(wav)
            if kind == "hts":  # HTS speed rate: >1 is faster
                lines.append(
                    f'(set! hts_engine_params (append lap_hts_base (list (list "-r" '
                    f"{1.0 / u.rate:.4f}))))"
                )
            elif kind == "fixed":
                lines.append(f"(Parameter.set 'Duration_Stretch {u.rate:.4f})")
            else:
                lines.append(f"(Parameter.set 'Duration_Stretch {u.rate:.4f})")
                lines.append(
                    f"(set! int_lr_params '((target_f0_mean {u.pitch:.2f}) "
                    f"(target_f0_std {u.pitch_range:.2f}) (model_f0_mean 170) "
                    "(model_f0_std 34)))"
                )
            text = u.text.replace("\\", " ").replace('"', " ")
            lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{wav}" \'riff)')
        return lines, wavs


ENGINES: dict[str, type] = {
    "espeak": EspeakEngine,
    "flite": FliteEngine,
    "festival": FestivalEngine,
}


def draw_timbre(rng: np.random.Generator) -> tuple[tuple[tuple[float, float, float], ...], float]:
    """A speaker's timbre filter: two peaking bands (Hz, dB, Q) and a tilt in dB/octave."""
    lo, hi = np.log(EQ_FREQ_HZ[0]), np.log(EQ_FREQ_HZ[1])
    bands = tuple(
        (float(np.exp(rng.uniform(lo, hi))), float(rng.uniform(-EQ_GAIN_DB, EQ_GAIN_DB)),
         float(rng.uniform(0.7, 2.5)))
        for _ in range(2)
    )
    return bands, float(rng.uniform(-TILT_DB_PER_OCT, TILT_DB_PER_OCT))


def timbre_eq(x: np.ndarray, sr: int, bands, tilt: float) -> np.ndarray:
    """Apply peaking bands (RBJ cookbook biquads) and a spectral tilt re 1 kHz: (N,) -> (N,).

    The tilt is a gain of ``tilt`` dB per octave, applied in the frequency domain.
    """
    y = np.asarray(x, dtype=np.float64)
    for f0, gain_db, q in bands:
        a = 10 ** (gain_db / 40.0)
        w0 = 2 * np.pi * min(f0, 0.45 * sr) / sr
        alpha = np.sin(w0) / (2 * q)
        b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
        den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
        y = lfilter(b / den[0], den / den[0], y)
    if tilt:
        spec = np.fft.rfft(y)
        f = np.maximum(np.fft.rfftfreq(y.size, 1.0 / sr), 50.0)
        spec *= 10 ** (tilt * np.log2(f / 1000.0) / 20.0)
        y = np.fft.irfft(spec, n=y.size)
    return y.astype(np.float32)


#: sox's raw 32-bit little-endian float stream, mono (its reading and writing of float
#: samples is the one of 32-bit float WAV files, without the header)
_SOX_F32 = ["-t", "raw", "-e", "floating-point", "-b", "32", "-L", "-c", "1"]


def sox_pitch(x: np.ndarray, sr: int, cents: float) -> np.ndarray:
    """Shift the pitch by ``cents`` keeping duration and formants (``sox pitch``): (N,) -> (N,)
    float32.

    The samples go through sox's stdin and stdout: the same float32 samples as a round
    trip through float WAV files, without writing any.
    """
    if abs(cents) < 1e-6:
        return x
    raw = np.clip(x, -1, 1).astype("<f4").tobytes()
    out = _run(["sox", *_SOX_F32, "-r", str(sr), "-", *_SOX_F32, "-", "pitch", f"{cents:.1f}"],
               input=raw).stdout
    return np.frombuffer(out, dtype="<f4").astype(np.float32)


def get_engine(name: str):
    """An engine instance by name; unknown names raise ``ValueError`` listing the valid ones."""
    if name not in ENGINES:
        raise ValueError(f"unknown TTS engine {name!r}; valid: {sorted(ENGINES)}")
    return ENGINES[name]()


def synth_tmpdir(base: str | os.PathLike | None = None) -> tempfile.TemporaryDirectory:
    """A scratch dir for one batch of engine output files."""
    return tempfile.TemporaryDirectory(prefix="lap_synth_", dir=base)
