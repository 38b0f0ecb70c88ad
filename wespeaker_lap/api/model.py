"""A loaded speaker model: embed audio, score, verify, enrol and identify.

Get one with :func:`wespeaker_lap.load_model`. Scores are the recipes' scores:
cosine after subtracting the model's mean vector, then, where the model has a
cohort, AS-norm against it (:mod:`wespeaker_lap.scoring.score_norm`), so a
package scores its test trials exactly as the recipe did.

>>> import numpy as np
>>> from wespeaker_lap.api.model import SpeakerModel
>>> model = SpeakerModel(_ToyBackend())
>>> rng = np.random.default_rng(0)
>>> a, b = rng.normal(size=(2, 16000)).astype(np.float32) * 0.1
>>> model.embed([a, b]).shape
(2, 4)
>>> result = model.verify(a, a, threshold=0.5)
>>> result.decision, round(result.score, 4)
(True, 1.0)
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import kaldiio
import numpy as np

from wespeaker_lap.api.audio import Waveform, length_batches, pad, to_waveforms
from wespeaker_lap.api.package import OPERATING_POINTS
from wespeaker_lap.checks import check_int
from wespeaker_lap.io.xvectors import write_xvectors
from wespeaker_lap.scoring.calibration import QMFCalibrator
from wespeaker_lap.scoring.score import normalize_rows, rowwise_dot
from wespeaker_lap.scoring.score_norm import DEFAULT_TOP_N, NORM_METHODS, apply_norm, cohort_stats

logger = logging.getLogger(__name__)

#: Score normalisations: ``none`` (mean-subtracted cosine) and those of :mod:`score_norm`.
NORMS = ("none", *NORM_METHODS)


class Backend(Protocol):
    """What runs the network: the PyTorch extractor or an ONNX file."""

    sample_rate: int
    min_samples: int
    embed_dim: int

    def embed_waveforms(self, wavs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """(B, N) float32 zero-padded, (B,) int64 -> (B, E) float32."""


class _ToyBackend:
    """A numpy stand-in for the docstring examples: 4 band energies of the waveform."""

    sample_rate, min_samples, embed_dim = 16000, 400, 4

    def embed_waveforms(self, wavs, lengths):
        out = np.zeros((len(wavs), 4), dtype=np.float32)
        for i, (w, n) in enumerate(zip(wavs, lengths, strict=True)):
            spec = np.abs(np.fft.rfft(w[:n]))
            out[i] = [b.mean() for b in np.array_split(spec, 4)]
        return out


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :meth:`SpeakerModel.verify`.

    ``score``: the (normalised) score; ``llr``: the calibrated natural-log
    likelihood ratio, or None when the model has no calibration; ``decision``:
    True for "same speaker"; ``threshold`` and ``threshold_source`` say what was
    compared (the score with a threshold, or the LLR with a Bayes threshold).
    """

    score: float
    llr: float | None
    decision: bool
    threshold: float
    threshold_source: str
    norm: str

    def __str__(self) -> str:
        llr = "n/a (uncalibrated)" if self.llr is None else f"{self.llr:.4f}"
        verdict = "same speaker" if self.decision else "different speakers"
        return (f"score {self.score:.6f} ({self.norm}) llr {llr} threshold "
                f"{self.threshold:g} [{self.threshold_source}]: {verdict}")


@dataclass
class Speakers:
    """Enrolled speakers: ``names`` and their models ``vectors`` (S, E) float32.

    A speaker's model is the mean of its utterances' length-normalised,
    mean-subtracted embeddings (already in the scoring space: the mean is not
    subtracted again). Saved and loaded as a Kaldi ark (kaldiio) + scp.
    """

    names: list[str]
    vectors: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (``.ark``) and the ``.scp`` beside it, atomically; returns the ark."""
        path = Path(path)
        if path.suffix != ".ark":
            raise ValueError(f"speaker models are written as a Kaldi .ark, got {path}")
        ark, _ = write_xvectors(path.parent, dict(zip(self.names, self.vectors, strict=True)),
                                name=path.stem)
        return ark

    @classmethod
    def load(cls, path: str | os.PathLike, embed_dim: int | None = None) -> Speakers:
        """Read a Kaldi ark of speaker models; another embedding size than ``embed_dim``
        is an error naming both."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such speaker-model ark: {path}")
        names, vecs = [], []
        try:
            for key, vec in kaldiio.load_ark(str(path)):
                names.append(key)
                vecs.append(np.asarray(vec, dtype=np.float32).reshape(-1))
        except Exception as e:  # kaldiio raises several types on a bad file
            raise ValueError(f"{path}: not a readable Kaldi ark ({type(e).__name__}: {e})") \
                from None
        if not names:
            raise ValueError(f"{path}: no speaker models in it")
        dims = {v.shape[0] for v in vecs}
        if len(dims) != 1:
            raise ValueError(f"{path}: speaker models of several sizes {sorted(dims)}")
        dim = dims.pop()
        if embed_dim is not None and dim != embed_dim:
            raise ValueError(f"{path}: speaker models have {dim} dimensions, this model's "
                             f"embeddings have {embed_dim}; enrol again with this model")
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: a speaker appears twice")
        return cls(names, np.stack(vecs))


@dataclass(frozen=True)
class Identification:
    """The outcome of :meth:`SpeakerModel.identify`.

    ``ranking``: ``(speaker, score)`` best first, at most ``top_k``;
    ``speaker``: the best speaker when its score passes ``threshold``, else
    None (open-set rejection: someone not enrolled).
    """

    ranking: list[tuple[str, float]]
    speaker: str | None
    threshold: float | None
    threshold_source: str


class SpeakerModel:
    """A speaker-embedding model with its scoring back end.

    Args:
        backend: what runs the network (:class:`Backend`).
        mean_vec: (E,) subtracted before every cosine (None: nothing).
        cohort: (C, E) AS-norm cohort, mean-subtracted and unit-length
            (:func:`~wespeaker_lap.scoring.score_norm.build_cohort`).
        top_n: the cohort's top-N.
        calibration: a fitted QMF model; ``calibration_norm`` names the score it
            was fitted on.
        thresholds: measured operating thresholds (see ``package.json``).
        info: what the model is (shown by ``repr``).
        batch_size: utterances per forward pass.
    """

    def __init__(self, backend: Backend, *, mean_vec: np.ndarray | None = None,
                 cohort: np.ndarray | None = None, top_n: int | None = DEFAULT_TOP_N,
                 calibration: QMFCalibrator | None = None, calibration_norm: str = "none",
                 thresholds: Mapping[str, Any] | None = None,
                 info: Mapping[str, Any] | None = None, batch_size: int = 8,
                 max_batch_seconds: float | None = 240.0):
        self.backend = backend
        self.embed_dim = int(backend.embed_dim)
        self.sample_rate = int(backend.sample_rate)
        self.min_samples = int(backend.min_samples)
        self.mean_vec = None if mean_vec is None else \
            np.asarray(mean_vec, dtype=np.float32).reshape(-1)
        if self.mean_vec is not None and self.mean_vec.shape[0] != self.embed_dim:
            raise ValueError(f"mean vector has {self.mean_vec.shape[0]} dimensions, the "
                             f"model's embeddings {self.embed_dim}")
        self.cohort = cohort
        self.top_n = top_n
        self.calibration = calibration
        if calibration_norm not in NORMS:
            raise ValueError(f"calibration_norm {calibration_norm!r}: choose one of {NORMS}")
        self.calibration_norm = calibration_norm
        self.thresholds = dict(thresholds) if thresholds else None
        self.info = dict(info or {})
        self.batch_size = check_int("batch_size", batch_size, lo=1)
        self.max_batch_seconds = max_batch_seconds

    def __repr__(self) -> str:
        parts = [f"embed_dim={self.embed_dim}", f"sample_rate={self.sample_rate}",
                 f"norm={self.default_norm!r}"]
        if self.calibration is not None:
            parts.append("calibrated")
        if self.thresholds:
            parts.append(f"operating_points={self.operating_points}")
        src = self.info.get("source")
        return f"SpeakerModel({src!r}, {', '.join(parts)})" if src else \
            f"SpeakerModel({', '.join(parts)})"

    # ---------------------------------------------------------------- embedding
    def waveforms(self, x, sample_rate: int | None = None, lengths=None) -> list[Waveform]:
        """The checked waveforms of ``x`` at the model's rate (see :mod:`~.api.audio`)."""
        return to_waveforms(x, sample_rate, self.sample_rate, self.min_samples, lengths)

    def embed_waveforms(self, waves: Sequence[Waveform]) -> np.ndarray:
        """Embeddings (N, E) float32 of checked waveforms, in length-grouped batches."""
        out = np.zeros((len(waves), self.embed_dim), dtype=np.float32)
        for rows in length_batches(waves, self.batch_size, self.sample_rate,
                                   self.max_batch_seconds):
            wavs, lengths = pad([waves[i] for i in rows])
            out[rows] = self.backend.embed_waveforms(wavs, lengths)
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            names = [waves[i].source for i in np.flatnonzero(bad)]
            raise FloatingPointError(f"non-finite embeddings for {names[:5]}")
        return out

    def embed(self, x, sample_rate: int | None = None, lengths=None) -> np.ndarray:
        """Speaker embeddings ``(N, E)`` float32, one row per item of ``x``, in order.

        ``x``: a path, a 1-D array or tensor, a list of those (any lengths), or a
        2-D ``(B, N)`` batch with ``lengths`` ``(B,)``; ``sample_rate``: the rate of
        arrays (None: the model's). Audio is resampled to the model's rate, and
        batched by length (each embedding does not depend on its batch). See
        :mod:`wespeaker_lap.api.audio` for the conversions made and the errors.

        >>> import numpy as np
        >>> model = SpeakerModel(_ToyBackend())
        >>> wav16 = (np.sin(np.arange(8000) / 5.0) * 8000).astype(np.int16)  # 8 kHz, int16
        >>> model.embed(wav16, sample_rate=8000).shape
        (1, 4)
        >>> model.embed(np.zeros(100, dtype=np.float32))
        Traceback (most recent call last):
        ...
        ValueError: item 0: silent audio (all samples ~0)
        """
        return self.embed_waveforms(self.waveforms(x, sample_rate, lengths))

    # ------------------------------------------------------------------ scoring
    @property
    def default_norm(self) -> str:
        """The normalisation the thresholds were measured with; else AS-norm when the model
        has a cohort; else none."""
        if self.thresholds and self.thresholds.get("norm"):
            return self.thresholds["norm"]
        return "asnorm" if self.cohort is not None else "none"

    def _check_norm(self, norm: str | None) -> str:
        norm = self.default_norm if norm is None else norm
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {list(NORMS)}")
        if norm != "none" and self.cohort is None:
            raise ValueError(f"norm {norm!r} needs a cohort, and this model has none (a model "
                             "package built with --cohort_embeddings has one); use norm='none'")
        return norm

    def _unit(self, emb: np.ndarray, centred: bool = False) -> np.ndarray:
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim == 1:
            emb = emb[None, :]
        if emb.ndim != 2 or emb.shape[1] != self.embed_dim:
            raise ValueError(f"embeddings of shape {emb.shape}; this model's are "
                             f"(N, {self.embed_dim})")
        if not np.isfinite(emb).all():
            raise ValueError("embeddings hold NaN or inf")
        return normalize_rows(emb, None if centred else self.mean_vec)

    def _stats(self, unit: np.ndarray, norm: str) -> tuple[np.ndarray, np.ndarray]:
        top = self.top_n if NORM_METHODS[norm] else None
        return cohort_stats(unit, self.cohort, top)

    def score(self, a: np.ndarray, b: np.ndarray, norm: str | None = None) -> np.ndarray:
        """Scores of embedding pairs: rows of ``a`` (N, E) with rows of ``b`` (N, E) -> (N,).

        Cosine after subtracting the mean vector; then ``norm`` (default:
        :attr:`default_norm`): ``"asnorm"`` (top-N cohort), ``"snorm"`` (all the
        cohort) or ``"none"``. The same arithmetic as the recipes' scoring
        (``bin/score`` then ``bin/score_norm``). A 1-D ``(E,)`` side is one row.

        >>> import numpy as np
        >>> model = SpeakerModel(_ToyBackend(), mean_vec=np.zeros(4))
        >>> round(float(model.score(np.array([1.0, 0, 0, 0]), np.array([1.0, 1, 0, 0]))[0]), 4)
        0.7071
        """
        norm = self._check_norm(norm)
        ua, ub = self._unit(a), self._unit(b)
        if ua.shape != ub.shape:
            raise ValueError(f"score pairs rows: a has {ua.shape[0]} rows, b {ub.shape[0]} "
                             "(use score_matrix for all pairs)")
        idx = np.arange(ua.shape[0])
        raw = rowwise_dot(ua, ub, idx, idx)
        if norm == "none":
            return raw
        (ma, sa), (mb, sb) = self._stats(ua, norm), self._stats(ub, norm)
        return apply_norm(raw, ma, sa, mb, sb)

    def _score_matrix_units(self, ua: np.ndarray, ub: np.ndarray, norm: str) -> np.ndarray:
        raw = (ua.astype(np.float64) @ ub.astype(np.float64).T)
        if norm == "none":
            return raw
        (ma, sa), (mb, sb) = self._stats(ua, norm), self._stats(ub, norm)
        return apply_norm(raw, ma[:, None], sa[:, None], mb[None, :], sb[None, :])

    def score_matrix(self, a: np.ndarray, b: np.ndarray, norm: str | None = None) -> np.ndarray:
        """All pairs: ``a`` (N, E) x ``b`` (M, E) -> (N, M) scores, as :meth:`score`."""
        norm = self._check_norm(norm)
        return self._score_matrix_units(self._unit(a), self._unit(b), norm)

    # --------------------------------------------------------------- decisions
    @property
    def operating_points(self) -> list[str]:
        """The measured thresholds this model has (``eer``, ``mindcf0.01``, ...)."""
        if not self.thresholds:
            return []
        return [op for op in OPERATING_POINTS if op in self.thresholds.get("values", {})]

    def _measured(self, operating_point: str, norm: str) -> tuple[float, str]:
        if operating_point not in OPERATING_POINTS:
            raise ValueError(f"unknown operating point {operating_point!r}; choose one of "
                             f"{list(OPERATING_POINTS)}")
        have = self.operating_points
        if operating_point not in have:
            raise ValueError(f"this model has no {operating_point} threshold; it has "
                             f"{have or 'none (not a package with measured thresholds)'}")
        if norm != self.thresholds["norm"]:
            raise ValueError(f"the thresholds were measured on {self.thresholds['norm']} "
                             f"scores; norm={norm!r} scores cannot use them")
        trials = self.thresholds.get("trials", {})
        source = (f"{operating_point} threshold measured on {trials.get('name', '?')} "
                  f"({trials.get('size', '?')} trials)")
        return float(self.thresholds["values"][operating_point]), source

    def _llr(self, ua: np.ndarray, ub: np.ndarray, durations: tuple[np.ndarray, np.ndarray],
             raw_norms: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Calibrated LLRs of row pairs (unit embeddings, seconds, raw embedding norms)."""
        cal = self.calibration
        idx = np.arange(ua.shape[0])
        score = rowwise_dot(ua, ub, idx, idx)
        stats = None
        if self.calibration_norm != "none" or any(f.startswith("cohort_mean") for f in
                                                  cal.features):
            top = cal.top_n if cal.top_n is not None else self.top_n
            stats = [cohort_stats(u, self.cohort, top) for u in (ua, ub)]
        if self.calibration_norm != "none":
            (ma, sa), (mb, sb) = stats
            score = apply_norm(score, ma, sa, mb, sb)
        sides = {"enroll": 0, "test": 1}
        cols = []
        for f in cal.features:
            if f == "score":
                cols.append(score)
                continue
            measure, side = f.rsplit("_", 1)
            s = sides[side]
            if measure == "log_dur":
                cols.append(np.log(durations[s]))
            elif measure == "norm":
                cols.append(raw_norms[s])
            else:
                cols.append(stats[s][0])
        return cal.llr(np.stack(cols, axis=1))

    def verify(self, a, b, *, sample_rate: int | None = None, operating_point: str | None = None,
               p_target: float | None = None, threshold: float | None = None,
               norm: str | None = None) -> VerifyResult:
        """Same speaker in ``a`` and ``b`` (one recording each: a path, an array, a tensor)?

        The decision, by the first given of:

        * ``threshold``: ``score >= threshold`` (a raw threshold, as you choose);
        * ``p_target``: the Bayes decision ``llr >= log((1 - p) / p)`` (equal costs),
          which needs a calibrated model;
        * ``operating_point``: ``"eer"``, ``"mindcf0.01"`` or ``"mindcf0.05"``, a
          threshold measured on the package's validation trial list (default
          ``"eer"`` when the model has it).

        >>> import numpy as np
        >>> model = SpeakerModel(_ToyBackend())
        >>> wav = np.sin(np.arange(16000) / 3.0).astype(np.float32)
        >>> r = model.verify(wav, wav[::-1].copy(), threshold=0.9)
        >>> r.decision, r.threshold_source
        (True, 'given threshold')
        >>> model.verify(wav, wav, operating_point="mindcf0.01")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: this model has no mindcf0.01 threshold; it has none (...)
        """
        given = [n for n, v in (("threshold", threshold), ("p_target", p_target),
                                ("operating_point", operating_point)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give one of threshold, p_target and operating_point, not {given}")
        norm = self._check_norm(norm)
        if threshold is not None and not math.isfinite(threshold):
            raise ValueError(f"threshold must be a finite number, got {threshold!r}")
        if p_target is not None:
            if not 0.0 < p_target < 1.0:
                raise ValueError(f"p_target must lie in (0, 1), got {p_target!r}")
            if self.calibration is None:
                raise ValueError("p_target needs a calibrated model (a package with "
                                 "calibration.json); give threshold= or operating_point=")
        if not given:
            if "eer" not in self.operating_points:
                raise ValueError("this model has no measured thresholds (a package built with "
                                 "--trials has): give threshold= (or p_target= with a "
                                 "calibrated package)")
            operating_point = "eer"
        if operating_point is not None:
            threshold, source = self._measured(operating_point, norm)
        waves = self.waveforms([a, b], sample_rate)
        emb = self.embed_waveforms(waves)
        ua, ub = self._unit(emb[:1]), self._unit(emb[1:])
        score = float(self._score_matrix_units(ua, ub, norm)[0, 0]) if norm != "none" \
            else float(rowwise_dot(ua, ub, np.arange(1), np.arange(1))[0])
        llr = None
        if self.calibration is not None:
            durs = tuple(np.array([w.num_samples / self.sample_rate]) for w in waves)
            norms = tuple(np.linalg.norm(emb[i:i + 1].astype(np.float64), axis=1)
                          for i in (0, 1))
            llr = float(self._llr(ua, ub, durs, norms)[0])
        if p_target is not None:
            threshold = math.log((1.0 - p_target) / p_target)
            return VerifyResult(score, llr, llr >= threshold, threshold,
                                f"Bayes decision at p_target {p_target:g} on the LLR", norm)
        if operating_point is None:
            source = "given threshold"
        return VerifyResult(score, llr, score >= threshold, float(threshold), source, norm)

    # ------------------------------------------------------ enrol and identify
    def enroll(self, speakers: Mapping[str, Sequence], sample_rate: int | None = None) -> Speakers:
        """Speaker models from ``{speaker: [audio, ...]}``: the mean of each speaker's
        mean-subtracted, length-normalised embeddings.

        >>> import numpy as np
        >>> model = SpeakerModel(_ToyBackend())
        >>> t = np.arange(16000) / 16000
        >>> spk = model.enroll({"low": [np.sin(2 * np.pi * 150 * t)],
        ...                     "high": [np.sin(2 * np.pi * 5000 * t)]})
        >>> spk.names, spk.vectors.shape
        (['low', 'high'], (2, 4))
        """
        if not isinstance(speakers, Mapping) or not speakers:
            raise ValueError("enroll takes {speaker: [audio, ...]} with at least one speaker")
        names, vecs, counts = [], [], {}
        for name, items in speakers.items():
            if isinstance(items, str | os.PathLike) or not isinstance(items, list | tuple):
                items = [items]
            if not items:
                raise ValueError(f"speaker {name!r}: no audio")
            try:
                emb = self.embed(list(items), sample_rate)
            except (ValueError, FileNotFoundError) as e:
                raise type(e)(f"speaker {name!r}: {e}") from None
            names.append(str(name))
            vecs.append(self._unit(emb).mean(axis=0))
            counts[str(name)] = len(items)
        return Speakers(names, np.stack(vecs).astype(np.float32), counts)

    def identify(self, audio, speakers: Speakers, *, top_k: int = 5,
                 sample_rate: int | None = None, operating_point: str | None = None,
                 threshold: float | None = None, norm: str | None = None) -> Identification:
        """Rank ``speakers`` for one recording; open-set: the best is kept only when its
        score passes the threshold (``threshold``, else the ``operating_point``
        threshold, default ``eer`` where the model has it; with neither, closed set).

        >>> import numpy as np
        >>> model = SpeakerModel(_ToyBackend())
        >>> t = np.arange(16000) / 16000
        >>> spk = model.enroll({"low": [np.sin(2 * np.pi * 150 * t)],
        ...                     "high": [np.sin(2 * np.pi * 5000 * t)]})
        >>> model.identify(np.sin(2 * np.pi * 140 * t), spk, top_k=1, threshold=0.5).speaker
        'low'
        """
        if not isinstance(speakers, Speakers) or len(speakers) == 0:
            raise ValueError("identify needs enrolled speakers (SpeakerModel.enroll or "
                             "Speakers.load); none were given")
        if speakers.vectors.shape[1] != self.embed_dim:
            raise ValueError(f"the speaker models have {speakers.vectors.shape[1]} dimensions, "
                             f"this model's embeddings {self.embed_dim}")
        check_int("top_k", top_k, lo=1)
        norm = self._check_norm(norm)
        source = "closed set (no threshold)"
        if threshold is not None:
            source = "given threshold"
        elif operating_point is not None or "eer" in self.operating_points:
            threshold, source = self._measured(operating_point or "eer", norm)
        emb = self.embed([audio] if not isinstance(audio, list | tuple) else audio, sample_rate)
        if emb.shape[0] != 1:
            raise ValueError(f"identify takes one recording, got {emb.shape[0]}")
        scores = self._score_matrix_units(self._unit(emb), self._unit(speakers.vectors,
                                                                       centred=True), norm)[0]
        order = np.argsort(-scores, kind="stable")[:top_k]
        ranking = [(speakers.names[i], float(scores[i])) for i in order]
        best = ranking[0]
        accepted = threshold is None or best[1] >= threshold
        return Identification(ranking, best[0] if accepted else None,
                              None if threshold is None else float(threshold), source)
