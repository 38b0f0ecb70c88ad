"""``load_model``: a model package, a training ``exp_dir``, an ONNX file, or a hub id.

The ONNX runtime (``runtime="onnx"``) never imports torch: the PyTorch backend
(:mod:`wespeaker_lap.api.torch_backend`) is imported only when it is used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from wespeaker_lap.api.hub import download_package
from wespeaker_lap.api.model import SpeakerModel
from wespeaker_lap.api.package import (
    CONFIG_FILE,
    ONNX_FILE,
    SSL_DIR,
    Package,
    is_package,
    read_package,
)
from wespeaker_lap.export.runtime import OnnxEmbedder
from wespeaker_lap.export.variants import PRECISIONS, variant_path
from wespeaker_lap.io.files import read_yaml
from wespeaker_lap.io.sources import split_hub_id
from wespeaker_lap.scoring.calibration import QMFCalibrator

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx")


def source_kind(source: str | os.PathLike) -> str:
    """``"package"``, ``"exp_dir"``, ``"onnx"`` or ``"hub"``; anything else is an error
    saying what was expected."""
    path = Path(os.fspath(source)).expanduser()
    if path.is_file():
        if path.suffix == ".onnx":
            return "onnx"
        raise ValueError(f"{path} is a file; a model is a package directory, a training "
                         "exp_dir, an exported .onnx file or a hub id (org/name)")
    if path.is_dir():
        if is_package(path):
            return "package"
        if (path / CONFIG_FILE).is_file():
            return "exp_dir"
        raise ValueError(f"{path} is neither a model package (package.json and manifest.json, "
                         "written by python -m wespeaker_lap.bin.package_model) nor a "
                         "training exp_dir (config.yaml and models/avg_model.pt or "
                         "models/model_*.pt)")
    if split_hub_id(os.fspath(source)) is not None:
        return "hub"
    raise FileNotFoundError(f"no such model directory or file: {source} (nor is it a hub "
                            "id org/name)")


def _ssl_frontend_args(pkg: Package, cache_dir, token) -> dict[str, Any]:
    """The package's ``frontend_args`` with the SSL model found: bundled, hub or config."""
    fa = dict(read_yaml(pkg.path(CONFIG_FILE)).get("frontend_args") or {})
    ssl = pkg.meta.get("ssl") or {}
    kind = ssl.get("source")
    if kind == "bundled":
        fa["model_name_or_path"] = str(pkg.path(SSL_DIR))
    elif kind == "hub":
        fa["model_name_or_path"] = str(download_package(ssl["hub_id"], ssl.get("revision"),
                                                        cache_dir, token))
    elif kind != "config":
        raise ValueError(f"{pkg.root}: unknown SSL model source {kind!r} in package.json")
    return fa


def _torch_backend():
    # imported on use: the ONNX path must not import torch (see tests/test_layering.py)
    from wespeaker_lap.api.torch_backend import TorchBackend

    return TorchBackend


def load_model(source: str | os.PathLike, *, device: str = "cpu", dtype: str = "float32",
               runtime: str = "torch", revision: str | None = None,
               cache_dir: str | os.PathLike | None = None, token: str | bool | None = None,
               onnx: str | os.PathLike | None = None, batch_size: int = 8,
               ignore_frontend_mismatch: bool = False, precision: str | None = None,
               providers: str | None = None, threads: int | None = None) -> SpeakerModel:
    """Load a speaker model for :meth:`~SpeakerModel.embed`, scoring and decisions.

    ``source`` is one of:

    * a model package directory (``bin/package_model``): its manifest is checked,
      and it brings its mean vector, cohort, calibration and thresholds;
    * a training ``exp_dir``: the weights ``bin/extract`` uses, no mean vector;
    * an exported ``.onnx`` file (``runtime="onnx"`` implied);
    * a hub id ``org/name`` (optionally ``org/name@revision``, or ``revision=``):
      a package fetched with ``huggingface_hub.snapshot_download`` into
      ``cache_dir`` (default: the Hugging Face cache), offline when
      ``HF_HUB_OFFLINE=1``, with ``token`` (default: ``HF_TOKEN`` / the saved login).

    ``runtime="onnx"`` runs onnxruntime on the CPU without importing torch: a
    package's ``model.onnx``, or with an ``exp_dir`` the file given as ``onnx``
    (which must have been exported from it). ``dtype`` is the SSL forward
    precision of the PyTorch runtime (``float32``, ``bfloat16``, ``float16``, ``auto``).
    With ``runtime="onnx"``: ``precision`` picks an exported variant (``int8``,
    ``fp16``: ``x.int8.onnx`` beside ``x.onnx``, or the package's), ``providers``
    the onnxruntime providers (``"cuda,cpu"``; default the CPU), ``threads`` its
    intra-op threads.
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    onnx_opts = {"batch_size": batch_size, "providers": providers, "threads": threads}
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)} (None: float32), "
                         f"got {precision!r}")
    kind = source_kind(source)
    if kind == "hub":
        repo, rev = split_hub_id(os.fspath(source))
        if rev and revision and rev != revision:
            raise ValueError(f"{source}: revision {rev!r} in the id and revision={revision!r}")
        root = download_package(repo, revision or rev, cache_dir, token)
        if not is_package(root):
            raise ValueError(f"hub model {repo!r} is not a wespeaker-lap model package (no "
                             "package.json in it)")
        where = f"hub:{repo}@{revision or rev or 'main'}"
        return _load_package(root, device, dtype, runtime, cache_dir, token, batch_size,
                             ignore_frontend_mismatch, source=where, precision=precision,
                             onnx_opts=onnx_opts)
    if revision is not None:
        raise ValueError(f"revision= is for hub ids; {source} is a local {kind}")
    if runtime == "onnx" or kind == "onnx":
        _check_onnx_options(device, dtype)
    elif precision is not None or providers is not None or threads is not None:
        raise ValueError("precision, providers and threads are options of runtime='onnx'")
    if kind == "onnx":
        path = variant_path(source, precision) if precision else source
        return SpeakerModel(OnnxEmbedder(path, **onnx_opts),
                            info={"source": os.fspath(source), "runtime": "onnx"},
                            batch_size=batch_size)
    if kind == "package":
        if onnx is not None:
            raise ValueError("onnx= goes with an exp_dir; a package brings its own model.onnx")
        return _load_package(Path(source), device, dtype, runtime, cache_dir, token,
                             batch_size, ignore_frontend_mismatch, source=os.fspath(source),
                             precision=precision, onnx_opts=onnx_opts)
    # an exp_dir
    if runtime == "onnx":
        if onnx is None:
            raise ValueError(f"runtime='onnx' with the exp_dir {source} needs onnx= (the file "
                             "bin/export_onnx wrote from it)")
        path = variant_path(onnx, precision) if precision else onnx
        backend = OnnxEmbedder(path, model_dir=source, **onnx_opts)
    else:
        backend = _torch_backend().from_exp_dir(source, device, dtype, ignore_frontend_mismatch)
    return SpeakerModel(backend, info={"source": os.fspath(source), "runtime": runtime},
                        batch_size=batch_size)


def _check_onnx_options(device: str, dtype: str) -> None:
    if device != "cpu" or dtype != "float32":
        raise ValueError("the ONNX runtime runs float32 on the CPU (onnxruntime); drop "
                         "device and dtype")


def _load_package(root: Path, device, dtype, runtime, cache_dir, token, batch_size,
                  ignore_frontend_mismatch, source: str, precision: str | None = None,
                  onnx_opts: dict[str, Any] | None = None) -> SpeakerModel:
    pkg = read_package(root)
    if runtime == "onnx":
        path = pkg.path(ONNX_FILE)
        if not path.is_file():
            raise ValueError(f"package {root} has no {ONNX_FILE}; build it with "
                             "package_model --onnx, or use runtime='torch'")
        if precision is not None:
            variants = pkg.meta.get("onnx_variants") or {}
            if precision not in variants:
                raise ValueError(f"package {root} has no {precision} ONNX variant (it has "
                                 f"{sorted(variants) or 'none'}); build it with package_model "
                                 f"--onnx --onnx_precision {precision}")
            path = pkg.path(variants[precision]["file"])
        backend = OnnxEmbedder(path, model_dir=root,
                               **(onnx_opts or {"batch_size": batch_size}))
    else:
        fa = _ssl_frontend_args(pkg, cache_dir, token)
        backend = _torch_backend().from_package(root, fa, device, dtype,
                                                ignore_frontend_mismatch)
    if backend.embed_dim != pkg.embed_dim:
        raise ValueError(f"package {root}: package.json says embed_dim {pkg.embed_dim}, the "
                         f"model gives {backend.embed_dim}")
    norm = pkg.meta.get("score_norm") or {}
    cal_meta = pkg.meta.get("calibration")
    calibration = QMFCalibrator.load(pkg.calibration_path) if cal_meta else None
    return SpeakerModel(
        backend, mean_vec=pkg.mean_vec, cohort=pkg.cohort, top_n=norm.get("top_n"),
        calibration=calibration,
        calibration_norm=cal_meta.get("norm", "none") if cal_meta else "none",
        thresholds=pkg.thresholds, info={"source": source, "runtime": runtime,
                                         **pkg.meta.get("card", {})},
        batch_size=batch_size)
