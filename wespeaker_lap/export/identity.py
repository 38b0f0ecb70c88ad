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
import re
from collections.abc import Mapping
from pathlib import Path

#: Version of the exported graph's interface (inputs, outputs, metadata keys). Version 2
#: adds the window outputs (``frames``, ``frame_lengths``) and the pooling graph beside it.
FORMAT_VERSION = "2"
#: The versions this code reads (a version-1 file embeds long audio in one pass).
READABLE_VERSIONS = ("1", "2")

#: Metadata keys (all prefixed, so they never clash with other tools' entries).
PREFIX = "wespeaker_lap."
REQUIRED_KEYS = ("format_version", "embed_dim", "sample_rate", "min_samples", "fingerprint",
                 "weights")

#: Graph input and output names.
INPUT_WAVS, INPUT_LENGTHS, OUTPUT_EMBEDDINGS = "wavs", "lengths", "embeddings"
#: The whole graph's window outputs, which are also the pooling graph's inputs.
OUTPUT_FRAMES, OUTPUT_FRAME_LENGTHS = "frames", "frame_lengths"

#: What a training exp_dir loads, in order of preference (the torch-free twin of
#: ``models.inference.MODEL_CANDIDATES``; tests/test_export_onnx.py ties the two), then
#: the newest ``models/model_<epoch>.pt``; a model package loads ``model.safetensors``.
MODEL_CANDIDATES = ("models/avg_model.pt", "avg_model.pt", "models/final_model.pt",
                    "final_model.pt")
PACKAGE_MARKER, PACKAGE_WEIGHTS = "package.json", "model.safetensors"
_EPOCH_RE = re.compile(r"^model_(\d+)\.pt$")


def pool_graph_path(onnx_path: str | os.PathLike) -> Path:
    """The pooling graph written beside an exported file: ``x.onnx`` -> ``x.pool.onnx``."""
    p = Path(onnx_path)
    return p.with_name(p.name[: -len(".onnx")] + ".pool.onnx" if p.name.endswith(".onnx")
                       else p.name + ".pool.onnx")


def sha256_of(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of one file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def weights_loaded_from(model_dir: str | os.PathLike) -> str | None:
    """The weights file (relative POSIX path) that loading ``model_dir`` would use now.

    A model package: ``model.safetensors``. A training exp_dir: the first of
    :data:`MODEL_CANDIDATES` that exists, else the newest ``models/model_<epoch>.pt``
    (as ``models.inference.resolve_model_dir`` picks). ``None`` when there is none.
    """
    d = Path(model_dir)
    if (d / PACKAGE_MARKER).is_file():
        return PACKAGE_WEIGHTS if (d / PACKAGE_WEIGHTS).is_file() else None
    for name in MODEL_CANDIDATES:
        if (d / name).is_file():
            return name
    epochs = []
    if (d / "models").is_dir():
        for p in (d / "models").iterdir():
            m = _EPOCH_RE.match(p.name)
            if m and p.is_file():
                epochs.append((int(m.group(1)), p.name))
    return f"models/{max(epochs)[1]}" if epochs else None


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
    if ours["format_version"] not in READABLE_VERSIONS:
        raise ValueError(f"{source} has export format version {ours['format_version']!r}; "
                         f"this version of wespeaker_lap reads {list(READABLE_VERSIONS)}: "
                         "re-export it")
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

    Compares with what loading ``model_dir`` would use today
    (:func:`weights_loaded_from`): the same weights file as the one exported,
    and the same bytes of it and of ``config.yaml``. So an export made while
    ``model_dir`` held only ``final_model.pt`` is refused once an ``avg_model.pt``
    appears there, even though ``final_model.pt`` is unchanged.
    """
    d = Path(model_dir)
    config = d / "config.yaml"
    if not config.is_file():
        raise ValueError(f"{source} was exported from another model: {d} has no config.yaml")
    loads = weights_loaded_from(d)
    if loads is None:
        raise ValueError(f"{source} was exported from another model: {d} has no weights "
                         f"(the exported model's were {identity['weights']})")
    if loads != str(identity["weights"]):
        raise ValueError(
            f"{source} was exported from another model: {d} now loads {loads}, the file was "
            f"exported from {identity['weights']}; re-export it from {d}")
    weights = d / loads
    here = fingerprint(config, weights)
    if here != identity["fingerprint"]:
        raise ValueError(
            f"{source} was exported from another model: its fingerprint "
            f"{str(identity['fingerprint'])[:19]}... differs from {d}'s {here[:19]}... "
            f"(config.yaml + {identity['weights']}); re-export it from {d}"
        )
