"""Audio decoding and resampling shared by every reader: numpy, soundfile and soxr, no torch.

The data pipeline (``dataset/audio.py``), the Python API (``api/audio.py``) and
the ONNX runtime (``export/runtime.py``) resample with the one :func:`resample`
and read whole files through :func:`read_channels`. It lives here, not in
``dataset/``, because importing ``wespeaker_lap.dataset.audio`` runs
``dataset/__init__``, which imports torch, and the API's ONNX path must not.

>>> resample(np.ones(8000, np.float32), 8000, 16000).shape
(16000,)
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr

#: A waveform whose absolute peak is below this is "all zero" (below 16-bit resolution).
SILENCE_PEAK = 1e-6

#: Lowest sample rate accepted (telephone speech); lower rates carry too little of the
#: speech band to upsample into anything an SSL model was trained on.
MIN_SAMPLE_RATE = 8000


def resample(wav: np.ndarray, rate_in: float, rate_out: float) -> np.ndarray:
    """(N,) float32 at ``rate_in`` -> float32 at ``rate_out``, with soxr ``HQ``; ``wav``
    itself when the rates are equal."""
    if rate_in == rate_out:
        return wav
    return soxr.resample(wav, rate_in, rate_out, quality="HQ").astype(np.float32, copy=False)


def read_channels(path: str | os.PathLike, where: str | None = None) -> tuple[np.ndarray, int]:
    """A whole audio file as libsndfile decodes it -> ``(samples (N, C) float32, rate)``.

    A file it cannot read is a ``ValueError`` naming the file (after ``where``,
    the caller's name for the item, when given) and libsndfile's reason.
    """
    try:
        data, rate = sf.read(os.fspath(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises several types
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}cannot read audio file {path}: {type(e).__name__}: {e}") \
            from None
    return data, int(rate)
