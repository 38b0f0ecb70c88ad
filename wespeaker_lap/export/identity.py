"""The identity of an exported model: what its ONNX metadata holds and how it is checked.

An exported file carries, in its ONNX ``metadata_props`` (string key -> string
value), the embedding size, the sample rate, the shortest usable input and a
fingerprint of the experiment it came from: the SHA-256 of ``config.yaml`` and
of the weights file. A file whose metadata lacks these keys was not written by
``wespeaker_lap.bin.export_onnx``; a file whose fingerprint differs from a
model directory's was exported from another model (or the model changed since).
Standard library only: the ONNX runtime path imports this without torch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

#: Version of the exported graph's interface (inputs, outputs, metadata keys).
FORMAT_VERSION = "1"

#: Metadata keys (all prefixed, so they never clash with other tools' entries).
PREFIX = "wespeaker_lap."
REQUIRED_KEYS = ("format_version", "embed_dim", "sample_rate", "min_samples", "fingerprint",
                 "weights")

#: Graph input and output names.
INPUT_WAVS, INPUT_LENGTHS, OUTPUT_EMBEDDINGS = "wavs", "lengths", "embeddings"


def fingerprint(config: str | os.PathLike, weights: str | os.PathLike) -> str:
    """``sha256:<hex>`` over the bytes of ``config.yaml`` and of the weights file.

    Each file's size is hashed before its bytes, so no two pairs of files share
    a digest by moving bytes from one to the other.
    """
    h = hashlib.sha256()
    for path in (Path(config), Path(weights)):
        if not path.is_file():
            raise FileNotFoundError(f"cannot fingerprint the model: no file {path}")
        h.update(f"{path.stat().st_size}\n".encode())
        with open(path, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def model_metadata(*, embed_dim: int, sample_rate: int, min_samples: int, fingerprint: str,
                   weights: str, model: str = "", frontend: str = "",
                   long_audio_window: float = 0.0) -> dict[str, str]:
    """The ``metadata_props`` an exported file carries (keys prefixed with :data:`PREFIX`).

    ``weights``: the weights file's path relative to the model directory, so a
    later check hashes the same file. ``long_audio_window``: the length (s) beyond
    which the PyTorch extractor runs the SSL model in windows (0: never); the
    graph always runs the whole utterance in one pass.
    """
    meta = {"format_version": FORMAT_VERSION, "embed_dim": str(int(embed_dim)),
            "sample_rate": str(int(sample_rate)), "min_samples": str(int(min_samples)),
            "fingerprint": fingerprint, "weights": weights, "model": model,
            "frontend": frontend, "long_audio_window": f"{float(long_audio_window):g}"}
    return {PREFIX + k: v for k, v in meta.items()}


def parse_metadata(props: Mapping[str, str], source: str) -> dict[str, str | int]:
    """The identity read back from a file's ``metadata_props``; an error names ``source``.

    Returns ``embed_dim``, ``sample_rate``, ``min_samples`` as ints and the
    other keys as strings (prefix removed).
    """
    ours = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
    missing = [k for k in REQUIRED_KEYS if k not in ours]
    if missing:
        raise ValueError(
            f"{source} was not exported by wespeaker_lap.bin.export_onnx: its ONNX metadata "
            f"lacks {[PREFIX + k for k in missing]}; export the model with "
            "python -m wespeaker_lap.bin.export_onnx --model_dir EXP --out FILE"
        )
    if ours["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{source} has export format version {ours['format_version']!r}; "
                         f"this version of wespeaker_lap reads {FORMAT_VERSION!r}: re-export it")
    out: dict[str, str | int] = dict(ours)
    for key in ("embed_dim", "sample_rate", "min_samples"):
        try:
            out[key] = int(ours[key])
        except ValueError:
            raise ValueError(f"{source}: metadata {PREFIX}{key}={ours[key]!r} is not an "
                             "integer") from None
    return out


def check_matches_model_dir(identity: Mapping[str, str | int], model_dir: str | os.PathLike,
                            source: str) -> None:
    """Raise ``ValueError`` unless ``source`` was exported from ``model_dir`` as it is now.

    Hashes ``model_dir/config.yaml`` and the weights file named in the metadata.
    """
    d = Path(model_dir)
    config, weights = d / "config.yaml", d / str(identity["weights"])
    for path in (config, weights):
        if not path.is_file():
            raise ValueError(f"{source} was exported from another model: {d} has no "
                             f"{path.relative_to(d)} (the exported model's files are "
                             f"config.yaml and {identity['weights']})")
    here = fingerprint(config, weights)
    if here != identity["fingerprint"]:
        raise ValueError(
            f"{source} was exported from another model: its fingerprint "
            f"{str(identity['fingerprint'])[:19]}... differs from {d}'s {here[:19]}... "
            f"(config.yaml + {identity['weights']}); re-export it from {d}"
        )
