"""The model package on disk: its file names, ``package.json``, and the sha256 manifest.

numpy and the standard library only, so that a package is read (and its
manifest checked) without torch. A package directory holds:

=====================  ==================================================================
``package.json``        what the package is: sizes, rate, the SSL model's source, the
                        score normalisation, the operating thresholds and the list they
                        were measured on, the calibration's score
``manifest.json``       ``{file: sha256}`` of every other file; checked on every load
``config.yaml``         the training config (``frontend_args.model_name_or_path``: ``ssl``
                        when bundled, else the hub id; other paths relative to the
                        training recipe's directory, or ``<training machine>/.../dir/name``:
                        a package holds no absolute path of the machine that wrote it)
``frontend.json``       the SSL model's fingerprint, checked when it is loaded
``model.safetensors``   backend and training-head weights (no pickle)
``mean_vec.npy``        the training-set mean embedding, subtracted before every cosine
``cohort.npy``          the AS-norm cohort: speaker means, mean-subtracted, unit length
``calibration.json``    the QMF calibration, when one was fitted
``model.onnx``          the whole extractor for onnxruntime (optional)
``ssl/``                the SSL model's ``save_pretrained`` files (with ``--bundle_ssl``)
``README.md``           the model card
=====================  ==================================================================
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE_FORMAT = "wespeaker_lap.model_package.v1"
PACKAGE_FILE = "package.json"
MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = "wespeaker_lap.manifest.v1"
CONFIG_FILE = "config.yaml"
FINGERPRINT_FILE = "frontend.json"  # frontend.fingerprint.FINGERPRINT_FILE (a test ties them)
WEIGHTS_FILE = "model.safetensors"
MEAN_FILE = "mean_vec.npy"
COHORT_FILE = "cohort.npy"
CALIBRATION_FILE = "calibration.json"
ONNX_FILE = "model.onnx"
SSL_DIR = "ssl"
CARD_FILE = "README.md"

#: Operating point name -> the p_target of its minDCF (None: the EER threshold).
OPERATING_POINTS = {"eer": None, "mindcf0.01": 0.01, "mindcf0.05": 0.05}

_CHUNK = 1 << 22


class PackageError(ValueError):
    """A package that is incomplete, altered or not a package."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _listed_files(root: Path) -> list[str]:
    """Every file under ``root`` except the manifest and hidden files, POSIX-relative."""
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and rel.as_posix() != MANIFEST_FILE \
                and not any(part.startswith(".") for part in rel.parts):
            out.append(rel.as_posix())
    return out


def write_manifest(root: str | os.PathLike) -> Path:
    """Write ``root/manifest.json``: the sha256 of every other file in the package."""
    root = Path(root)
    files = {rel: sha256_file(root / rel) for rel in _listed_files(root)}
    path = root / MANIFEST_FILE
    path.write_text(json.dumps({"format": MANIFEST_FORMAT, "files": files}, indent=2,
                               sort_keys=True) + "\n", encoding="utf-8")
    return path


def verify_manifest(root: str | os.PathLike) -> dict[str, str]:
    """Check every file the manifest lists; a missing or altered one is a :class:`PackageError`.

    The error names each bad file with its expected and actual sha256. Files
    not listed (a hub repository's ``.gitattributes``) are ignored.
    """
    root = Path(root)
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise PackageError(f"{root}: no {MANIFEST_FILE}; a model package lists the sha256 of "
                           "every file in it (written by python -m wespeaker_lap.bin."
                           "package_model)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise PackageError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT \
            or not isinstance(manifest.get("files"), dict):
        raise PackageError(f"{path}: not a package manifest ({MANIFEST_FORMAT})")
    problems = []
    for rel, expected in sorted(manifest["files"].items()):
        f = root / rel
        if not f.is_file():
            problems.append(f"{rel}: missing (expected sha256 {expected})")
            continue
        actual = sha256_file(f)
        if actual != expected:
            problems.append(f"{rel}: altered (expected sha256 {expected}, actual {actual})")
    if problems:
        raise PackageError(f"model package {root} fails its manifest: " + "; ".join(problems))
    return dict(manifest["files"])


def is_package(path: str | os.PathLike) -> bool:
    return (Path(path) / PACKAGE_FILE).is_file()


def _load_npy(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise PackageError(f"{path}: not a readable {what} ({e})") from None


@dataclass
class Package:
    """A package read from disk (manifest checked): its metadata and numpy parts."""

    root: Path
    meta: dict[str, Any]
    mean_vec: np.ndarray | None
    cohort: np.ndarray | None

    @property
    def embed_dim(self) -> int:
        return int(self.meta["embed_dim"])

    @property
    def thresholds(self) -> dict[str, Any] | None:
        return self.meta.get("thresholds")

    @property
    def calibration_path(self) -> Path | None:
        cal = self.meta.get("calibration")
        return self.root / cal["file"] if cal else None

    def path(self, name: str) -> Path:
        return self.root / name


def read_package(root: str | os.PathLike, verify: bool = True) -> Package:
    """Read ``package.json``, the mean vector and the cohort; check the manifest first."""
    root = Path(root)
    if verify:
        verify_manifest(root)
    path = root / PACKAGE_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise PackageError(f"{path}: not readable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != PACKAGE_FORMAT:
        raise PackageError(f"{path}: not a model package ({PACKAGE_FORMAT}), format "
                           f"{meta.get('format') if isinstance(meta, dict) else None!r}")
    dim = int(meta["embed_dim"])
    mean = cohort = None
    if meta.get("mean_vec"):
        mean = _load_npy(root / meta["mean_vec"], "mean vector")
        if mean.shape != (dim,):
            raise PackageError(f"{root / meta['mean_vec']}: shape {mean.shape}, expected ({dim},)")
    norm = meta.get("score_norm") or {}
    if norm.get("cohort"):
        cohort = _load_npy(root / norm["cohort"], "cohort")
        if cohort.ndim != 2 or cohort.shape[1] != dim:
            raise PackageError(f"{root / norm['cohort']}: shape {cohort.shape}, expected "
                               f"(speakers, {dim})")
    return Package(root, meta, mean, cohort)
