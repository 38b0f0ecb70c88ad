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
* flite and festival speakers also get a **shift** factor ``a`` in [0.88, 1.14]:
  the engine's output sampled at rate ``sr`` is resampled as if it were at
  ``sr * a``, i.e. ``y(t) = x(a t)``. This scales pitch and all formants by
  ``a`` together (a shorter/longer vocal tract) and the duration by ``1/a``, so
  one voice gives several distinct speakers. espeak speakers use ``a = 1``
  (their formants are set directly).

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

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
}
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

    def words_per_second(self) -> float:
        """A rough speaking rate, used to size texts for a wanted duration."""
        if self.engine == "espeak":
            return self.rate / 60.0 * 0.98
        return 3.0 / self.rate * self.shift

    def row(self) -> dict[str, str]:
        """The speakers.tsv row (formants summarised by the vtl factor)."""
        d = dataclasses.asdict(self)
        d.pop("formants")
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

    def prepare(self, workdir: Path, speakers: list[Speaker]) -> None:
        """Build a private espeak-ng data dir holding one variant file per speaker."""
        sysdata = self._system_data()
        root = workdir / "espeak"
        data = root / "espeak-ng-data"
        (data / "voices" / "!v").mkdir(parents=True)
        for p in sysdata.iterdir():
            if p.name != "voices":
                (data / p.name).symlink_to(p)
        for p in (sysdata / "voices").iterdir():
            if p.name != "!v":
                (data / "voices" / p.name).symlink_to(p)
        for p in (sysdata / "voices" / "!v").iterdir():
            (data / "voices" / "!v" / p.name).symlink_to(p)
        for s in speakers:
            (data / "voices" / "!v" / f"lap_{s.spk}").write_text(self.variant_text(s))
        self.data_root = root
        self._check_variants_used(workdir)

    def _check_variants_used(self, workdir: Path) -> None:
        probe = workdir / "espeak_probe"
        probe.mkdir()
        (self.data_root / "espeak-ng-data" / "voices" / "!v" / "lap_probe").write_text(
            "language variant\nname lap_probe\npitch 200 260\nformant 1 130 100 100\n"
        )
        outs = []
        for v in ("en-us", "en-us+lap_probe"):
            wav = probe / f"{len(outs)}.wav"
            _run([self.binary, f"--path={self.data_root}", "-v", v, "-w", str(wav), "hello"])
            outs.append(wav.read_bytes())
        if outs[0] == outs[1]:
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
        if self.data_root is None:
            raise RuntimeError("EspeakEngine.prepare() was not called")
        out = []
        for i, u in enumerate(utts):
            wav = tmp / f"{i}.wav"
            _run([
                self.binary, f"--path={self.data_root}", "-v", f"{s.voice}+lap_{s.spk}",
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
        return Speaker(
            spk=spk, engine=self.name, voice=voice, gender=gender, pitch_hz=pitch / shift,
            pitch_range_hz=prange / 3.0 / shift, rate=_uniform(rng, STRETCH), shift=shift,
        )

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

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.binary) is not None

    def voices(self) -> list[str]:
        out = _run(
            [self.binary, "--batch", "(begin (print (voice.list)))"], timeout=60
        ).stdout.decode()
        have = set(out.replace("(", " ").replace(")", " ").split())
        return [v for v in FESTIVAL_VOICES if v in have]

    def gender(self, voice: str) -> str:
        return FESTIVAL_VOICES[voice][0]

    def synthesize(
        self, s: Speaker, utts: list[UttParams], tmp: Path
    ) -> list[tuple[np.ndarray, int]]:
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
            else:
                lines.append(f"(Parameter.set 'Duration_Stretch {u.rate:.4f})")
                lines.append(
                    f"(set! int_lr_params '((target_f0_mean {u.pitch:.2f}) "
                    f"(target_f0_std {u.pitch_range:.2f}) (model_f0_mean 170) "
                    "(model_f0_std 34)))"
                )
            text = u.text.replace("\\", " ").replace('"', " ")
            lines.append(f'(utt.save.wave (utt.synth (Utterance Text "{text}")) "{wav}" \'riff)')
        script = tmp / "synth.scm"
        script.write_text("\n".join(lines) + "\n")
        _run([self.binary, "-b", str(script)], timeout=600)
        return [_read(w) for w in wavs]


ENGINES: dict[str, type] = {
    "espeak": EspeakEngine,
    "flite": FliteEngine,
    "festival": FestivalEngine,
}


def get_engine(name: str):
    """An engine instance by name; unknown names raise ``ValueError`` listing the valid ones."""
    if name not in ENGINES:
        raise ValueError(f"unknown TTS engine {name!r}; valid: {sorted(ENGINES)}")
    return ENGINES[name]()


def synth_tmpdir(base: str | os.PathLike | None = None) -> tempfile.TemporaryDirectory:
    """A scratch dir for one batch of engine output files."""
    return tempfile.TemporaryDirectory(prefix="lap_synth_", dir=base)
