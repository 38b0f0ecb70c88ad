"""Write a model package from a training ``exp_dir`` (``bin/package_model``).

The package (its files: :mod:`wespeaker_lap.api.package`) is written into a
temporary directory beside ``out`` and renamed into place once complete, so a
killed run leaves no half package. Scoring numbers in it (thresholds,
calibration) are computed through the same :class:`SpeakerModel` scoring that
loading it gives, so the thresholds apply to the scores users get.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import wespeaker_lap
from wespeaker_lap.api.hub import download_package
from wespeaker_lap.api.model import SpeakerModel
from wespeaker_lap.api.package import (
    CALIBRATION_FILE,
    CARD_FILE,
    COHORT_FILE,
    CONFIG_FILE,
    FINGERPRINT_FILE,
    MEAN_FILE,
    ONNX_FILE,
    OPERATING_POINTS,
    PACKAGE_FILE,
    PACKAGE_FORMAT,
    SSL_DIR,
    WEIGHTS_FILE,
    write_manifest,
)
from wespeaker_lap.export.exporter import export_extractor
from wespeaker_lap.export.identity import fingerprint as onnx_fingerprint
from wespeaker_lap.export.identity import model_metadata
from wespeaker_lap.export.variants import write_variant
from wespeaker_lap.frontend.fingerprint import (
    compare_fingerprints,
    frontend_fingerprint,
    read_fingerprint,
    resolve_frontend_args,
)
from wespeaker_lap.frontend.lora import holds_ssl_weights
from wespeaker_lap.io.checkpoints import read_weights, save_safetensors
from wespeaker_lap.io.files import read_utt2dur, read_yaml
from wespeaker_lap.io.sources import split_hub_id
from wespeaker_lap.io.xvectors import load_embeddings, load_mean_vec, save_npy
from wespeaker_lap.models.inference import load_trained_extractor, resolve_model_dir
from wespeaker_lap.scoring.calibration import QMFCalibrator, trial_features
from wespeaker_lap.scoring.metrics import compute_metrics
from wespeaker_lap.scoring.score import read_scores, read_trials, resolve_trials
from wespeaker_lap.scoring.score_norm import DEFAULT_TOP_N, CohortStats, build_cohort

logger = logging.getLogger(__name__)

#: What stands in a package for the part of a path that only the training machine knows.
TRAINING_MACHINE = "<training machine>"


@dataclass
class PackageOptions:
    """What goes into a package besides the model (see ``bin/package_model.py --help``)."""

    bundle_ssl: bool = False
    ssl_hub_id: str | None = None
    ssl_revision: str | None = None
    mean_vec: str | None = None
    cohort_embeddings: Sequence[str] | None = None
    cohort_utt2spk: str | None = None
    top_n: int = DEFAULT_TOP_N
    trials: str | None = None
    trials_name: str | None = None
    trial_embeddings: Sequence[str] | None = None
    trial_utt2dur: Sequence[str] | None = None
    calibrate: bool = False
    calibration: str | None = None
    test_scores: Sequence[tuple[str, str]] = ()
    onnx: bool = False
    onnx_precisions: Sequence[str] = ()
    overwrite: bool = False
    card: dict[str, Any] = field(default_factory=dict)


class _Dims:
    """A backend stand-in for scoring embeddings that are already computed."""

    sample_rate, min_samples = 16000, 1

    def __init__(self, dim: int):
        self.embed_dim = dim

    def embed_waveforms(self, wavs, lengths):  # pragma: no cover - never embeds audio
        raise RuntimeError("scoring only")


def _ssl_part(tmp: Path, fa: Mapping[str, Any], recorded: Mapping[str, Any] | None,
              opts: PackageOptions) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(package frontend_args, ssl metadata, fingerprint) for the three SSL sources."""
    fa = dict(fa)
    name = fa.get("model_name_or_path")
    if name is None:  # a random model from a config: the config is all it needs
        if opts.bundle_ssl or opts.ssl_hub_id:
            raise ValueError("the SSL model is a random model built from its config "
                             "(frontend_args.config): there is nothing to bundle or name on "
                             "the hub; drop --bundle_ssl / --ssl_hub_id")
        return fa, {"source": "config"}, frontend_fingerprint(fa)
    if opts.bundle_ssl and opts.ssl_hub_id:
        raise ValueError("give --bundle_ssl or --ssl_hub_id, not both")
    hub = split_hub_id(str(name))
    if opts.bundle_ssl:
        src = Path(name) if hub is None else download_package(*hub)
        files = [p for p in sorted(src.iterdir()) if p.is_file()]
        (tmp / SSL_DIR).mkdir()
        for p in files:
            shutil.copyfile(p, tmp / SSL_DIR / p.name)
        fa["model_name_or_path"] = SSL_DIR
        fp = frontend_fingerprint({**fa, "model_name_or_path": str(tmp / SSL_DIR)})
        fp["model_name_or_path"] = SSL_DIR
        return fa, {"source": "bundled", "from": str(name)}, fp
    hub_id = opts.ssl_hub_id or (hub[0] if hub else None)
    if hub_id is None:
        raise ValueError(f"the SSL model is the local directory {name}, which a package cannot "
                         "point to: pass --bundle_ssl to copy it in, or --ssl_hub_id ORG/NAME "
                         "--ssl_revision REV naming the same model on the hub")
    revision = opts.ssl_revision or (hub[1] if hub else None)
    if revision is None:
        raise ValueError(f"--ssl_revision is needed with the SSL hub id {hub_id}: a package "
                         "pins the model's revision (a commit hash or tag)")
    snapshot = download_package(hub_id, revision)
    fp = frontend_fingerprint({**fa, "model_name_or_path": str(snapshot)})
    if recorded is not None and compare_fingerprints(recorded, fp):
        raise ValueError(f"the SSL model {hub_id}@{revision} differs from the one the "
                         "experiment was trained with (its frontend.json fingerprint)")
    fa["model_name_or_path"] = fp["model_name_or_path"] = hub_id  # not this machine's cache
    return fa, {"source": "hub", "hub_id": hub_id, "revision": revision}, fp


def _recipe_dir(exp_dir: Path, recorded: Any) -> Path:
    """The directory a training run's relative paths start from (its recipe directory).

    ``recorded`` is the config's ``exp_dir`` as training wrote it: a relative one
    (``./exp/lap_astp``) is taken off the end of ``exp_dir``; otherwise the folder
    above ``exp/`` (WeSpeaker's ``<recipe>/exp/<name>``), else ``exp_dir``'s parent.
    """
    here = exp_dir.resolve()
    if isinstance(recorded, str) and recorded and not os.path.isabs(recorded):
        rel = Path(os.path.normpath(recorded)).parts
        if rel and ".." not in rel and here.parts[-len(rel):] == rel:
            return Path(*here.parts[:-len(rel)])
    return here.parent.parent if here.parent.name == "exp" else here.parent


def _shareable(value: Any, recipe: Path) -> Any:
    """``value`` (a path, or a config holding paths) with no absolute path of this machine.

    An absolute path under ``recipe`` becomes relative to it (``./corpus/data/train/raw.list``,
    as a recipe writes its paths); any other becomes ``<training machine>/.../<dir>/<name>``,
    which names the file without the machine's layout. Relative paths, hub ids and
    other values stay.
    """
    if isinstance(value, Mapping):
        return {k: _shareable(v, recipe) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shareable(v, recipe) for v in value]
    if not (isinstance(value, str) and os.path.isabs(value)):
        return value
    path = Path(os.path.normpath(value))
    for candidate in (path, path.resolve()):
        if candidate.is_relative_to(recipe):
            rel = candidate.relative_to(recipe).as_posix()
            return "." if rel == "." else f"./{rel}"
    return "/".join([TRAINING_MACHINE, "...", *path.parts[1:][-2:]])


def _thresholds(model: SpeakerModel, opts: PackageOptions, dim: int,
                cohort_stats_top: int | None
                ) -> tuple[dict | None, QMFCalibrator | None, set[str]]:
    """Operating thresholds (and QMF calibration) measured on the named trial list, and
    that list's utterance keys."""
    if opts.trials is None:
        if opts.calibrate:
            raise ValueError("--calibrate needs --trials (the list it is fitted on)")
        return None, None, set()
    if not opts.trial_embeddings:
        raise ValueError("--trials needs --trial_embeddings (xvector.scp of its utterances)")
    trials = read_trials(opts.trials)
    if trials.labels is None:
        raise ValueError(f"{opts.trials}: thresholds need a labelled trial list")
    table = load_embeddings(list(opts.trial_embeddings))
    if table.dim != dim:
        raise ValueError(f"{opts.trial_embeddings}: embeddings of dim {table.dim}, the model's "
                         f"are {dim}")
    trials, idx_e, idx_t, _ = resolve_trials(table, trials)
    norm = model.default_norm
    scores = model.score(table.matrix[idx_e], table.matrix[idx_t], norm=norm)
    m = compute_metrics(scores, trials.labels)
    values = {"eer": m["eer_threshold"]}
    for op, p in OPERATING_POINTS.items():
        if p is not None:
            values[op] = m[f"min_dcf_{p:g}_threshold"]
    name = opts.trials_name or Path(opts.trials).parent.name or Path(opts.trials).name
    info = {"name": name, "file": Path(opts.trials).name, "size": len(trials),
            "n_target": m["n_target"], "n_nontarget": m["n_nontarget"], "eer": m["eer"],
            "min_dcf_0.01": m["min_dcf_0.01"], "min_dcf_0.05": m["min_dcf_0.05"]}
    thresholds = {"norm": norm, "values": values, "trials": info}
    cal = None
    if opts.calibrate:
        features = ["score", "norm_enroll", "norm_test"]
        stats = None
        if model.cohort is not None:
            features += ["cohort_mean_enroll", "cohort_mean_test"]
            stats = CohortStats(table, model.cohort, model.mean_vec, cohort_stats_top)
        durations = None
        if opts.trial_utt2dur:
            features += ["log_dur_enroll", "log_dur_test"]
            durations = {}
            for p in opts.trial_utt2dur:
                durations.update(read_utt2dur(p))
        kept, x = trial_features(trials, scores, features, table, durations, stats)
        cal = QMFCalibrator.fit(x, kept.labels, features, top_n=cohort_stats_top)
        cal.info["fit_on"] = name
    return thresholds, cal, set(trials.enroll) | set(trials.test)


def _external_calibration(path: str, model: SpeakerModel, thresholds: dict | None,
                          top_n: int) -> QMFCalibrator:
    """A QMF model fitted elsewhere (a recipe's ``tools/calibrate.sh``), checked against the
    package: its cohort features and top-N must be the package's."""
    cal = QMFCalibrator.load(path)
    uses_cohort = any(f.startswith("cohort_mean") for f in cal.features)
    norm = thresholds["norm"] if thresholds else model.default_norm
    if (uses_cohort or norm != "none") and model.cohort is None:
        raise ValueError(f"--calibration {path}: its features {cal.features} (or the {norm} "
                         "scores it calibrates) need a cohort; give --cohort_embeddings")
    if model.cohort is not None and cal.top_n is not None and cal.top_n != top_n:
        raise ValueError(f"--calibration {path} was fitted with cohort top_n {cal.top_n}, the "
                         f"package's is --top_n {top_n}: give the same top-N")
    # the list it was fitted on, by name (a package holds no paths of the machine it was built on)
    cal.info["fit_on"] = Path(str(cal.info.get("fit_on") or path)).name
    return cal


def _error_rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(P_miss, P_fa) of deciding ``score >= threshold``, as fractions."""
    labels = labels.astype(bool)
    return (float(np.mean(scores[labels] < threshold)),
            float(np.mean(scores[~labels] >= threshold)))


def _test_sets(opts: PackageOptions, thresholds: dict | None,
               threshold_keys: set[str]) -> list[dict[str, Any]]:
    """Where the package's thresholds land on each test set (``--test_scores NAME FILE``).

    Each labelled score file must be scored as the package scores (its norm, mean and
    cohort: the recipe's AS-norm file) and share no utterance with the threshold list.
    Returns per set: trial counts, its own EER / minDCF thresholds, and at each of the
    package's thresholds the miss and false-alarm rates it gives there.
    """
    if not opts.test_scores:
        return []
    if thresholds is None:
        raise ValueError("--test_scores needs --trials: the package's thresholds to carry over")
    out = []
    for name, path in opts.test_scores:
        trials, scores = read_scores(path, require_labels=True)
        shared = threshold_keys & (set(trials.enroll) | set(trials.test))
        if shared:
            raise ValueError(f"--test_scores {name} {path}: {len(shared)} utterances are also in "
                             f"the threshold list {opts.trials}, e.g. {sorted(shared)[0]}; the "
                             "list the thresholds are measured on must be disjoint from the test "
                             "lists")
        m = compute_metrics(scores, trials.labels)
        own = {"eer": m["eer_threshold"]}
        for op, p in OPERATING_POINTS.items():
            if p is not None:
                own[op] = m[f"min_dcf_{p:g}_threshold"]
        at = {}
        for op, thr in thresholds["values"].items():
            miss, fa = _error_rates(scores, trials.labels, thr)
            at[op] = {"threshold": thr, "own_threshold": own.get(op), "p_miss": miss,
                      "p_fa": fa}
        out.append({"name": name, "scores": Path(path).name, "size": len(trials),
                    "n_target": m["n_target"], "n_nontarget": m["n_nontarget"],
                    "eer": m["eer"], "at_package_thresholds": at})
    return out


def _test_set_lines(sets: Sequence[Mapping[str, Any]], norm: str) -> list[str]:
    lines = ["## The thresholds on the test sets", "",
             "Each test set has its own EER (and minDCF) threshold; a user gets the package's, "
             f"chosen on the validation list. Here is where it lands on each test set's {norm} "
             "scores, and the miss and false-alarm rates it gives there: the figures to expect "
             "on new data of the same kind.", "",
             "| test set (score file) | trials | EER (%) | operating point | package threshold "
             "| test set's own threshold | miss (%) | false alarm (%) |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    for t in sets:
        for op, a in t["at_package_thresholds"].items():
            lines.append(f"| {t['name']} (`{t['scores']}`) | {t['size']} | {t['eer']:.2f} | {op} "
                         f"| {a['threshold']:.4f} | {a['own_threshold']:.4f} | "
                         f"{100 * a['p_miss']:.2f} | {100 * a['p_fa']:.2f} |")
    return lines + [""]


def _json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float as the string ``"inf"``, ``"-inf"`` or ``"nan"``:
    plain JSON has no such numbers (a minDCF threshold that rejects every trial is +inf),
    and ``float()`` reads the strings back."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _card(meta: Mapping[str, Any], cfg: Mapping[str, Any], opts: PackageOptions) -> str:
    card = opts.card
    name = card.get("name") or "wespeaker-lap speaker model"
    front = {"license": card.get("license", "apache-2.0"), "library_name": "wespeaker-lap",
             "tags": ["speaker-verification", "speaker-embedding", "wespeaker-lap"],
             "pipeline_tag": "audio-classification"}
    if meta["ssl"].get("source") == "hub":
        front["base_model"] = meta["ssl"]["hub_id"]
    if card.get("datasets"):
        front["datasets"] = list(card["datasets"])
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {name}", ""]
    lines += [card.get("description") or (
        f"A {cfg.get('model')} speaker-embedding model ({meta['embed_dim']}-dimensional, "
        f"{meta['sample_rate']} Hz) on a frozen self-supervised speech model, trained with "
        "[wespeaker-lap](https://github.com/). "), ""]
    lines += ["## Use it", "", "```python", "import wespeaker_lap",
              f"model = wespeaker_lap.load_model({card.get('repo_id', 'PATH_OR_ORG/NAME')!r})",
              'print(model.verify("a.wav", "b.wav"))', "```", "",
              "or `wespeaker-lap verify --model PATH_OR_ORG/NAME a.wav b.wav`.", ""]
    ssl = meta["ssl"]
    lines += ["## Model", "", f"- backend: `{cfg.get('model')}` with `{cfg.get('model_args')}`",
              f"- SSL model: {ssl.get('source')}"
              + (f" `{ssl.get('hub_id')}` at revision `{ssl.get('revision')}`"
                 if ssl.get("source") == "hub" else "")
              + f" (fingerprint: config sha256 {meta['ssl_fingerprint']['config_sha256'][:16]}, "
              f"weights sha256 {meta['ssl_fingerprint']['weights_sha256'][:16]})",
              f"- training data: `{cfg.get('train_data')}` (the full training config is "
              "`config.yaml`)"]
    norm = meta.get("score_norm") or {}
    if norm:
        lines.append(f"- scores: cosine after the training mean, AS-norm against "
                     f"{norm['cohort_size']} cohort speaker means, top {norm['top_n']}")
    lines.append("")
    if card.get("results"):
        lines += ["## Results", "", Path(card["results"]).read_text(encoding="utf-8").strip(),
                  ""]
    th = meta.get("thresholds")
    if th:
        t = th["trials"]
        lines += ["## Operating thresholds", "",
                  f"Measured on `{t['name']}` ({t['size']} trials: {t['n_target']} target, "
                  f"{t['n_nontarget']} nontarget; EER {t['eer']:.3f} %), a list disjoint "
                  "from the test lists above. On other data the error rates at these "
                  "thresholds differ; the results section says by how much on the test sets.",
                  "", "| operating point | threshold |", "| --- | --- |"]
        lines += [f"| {op} | {v:.6f} |" for op, v in th["values"].items()]
        lines.append("")
        endless = [op for op, v in th["values"].items() if not np.isfinite(v)]
        if endless:
            lines += [f"An infinite threshold ({', '.join(endless)}) rejects every trial: on "
                      f"this list's {t['n_target']} targets the lowest detection cost at that "
                      "prior is to accept nothing; a larger list is needed to place it.", ""]
    if meta.get("test_sets"):
        lines += _test_set_lines(meta["test_sets"], th["norm"])
    if meta.get("calibration"):
        fit_on = meta["calibration"].get("fit_on")
        lines += ["Scores are calibrated to log-likelihood ratios by a QMF logistic regression "
                  + (f"fitted on `{fit_on}`" if fit_on else "fitted on the same list")
                  + " (`calibration.json`).", ""]
    lines += ["Every file's sha256 is in `manifest.json`; loading checks them.", ""]
    return "\n".join(lines)


def build_package(exp_dir: str | os.PathLike, out: str | os.PathLike,
                  opts: PackageOptions | None = None) -> Path:
    """Package the trained model of ``exp_dir`` into the directory ``out``; returns ``out``."""
    opts = opts or PackageOptions()
    exp_dir, out = Path(exp_dir), Path(out)
    if out.exists() and not opts.overwrite:
        raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
    config, weights = resolve_model_dir(exp_dir)
    cfg = read_yaml(config)
    fa = resolve_frontend_args(cfg.get("frontend_args") or {}, exp_dir, where=str(config))
    sd = read_weights(weights)
    extractor = load_trained_extractor(config, weights, "cpu", "float32")
    dim = int(extractor.embed_dim)
    fe = extractor.frontend
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        save_safetensors(sd, tmp / WEIGHTS_FILE, {"format": "pt", "source": weights.name})
        recorded = read_fingerprint(exp_dir)
        pkg_fa, ssl_meta, fp = _ssl_part(tmp, fa, None if holds_ssl_weights(sd) else recorded,
                                         opts)
        # a shared package holds no absolute path of this machine (the data, the SSL copy)
        recipe = _recipe_dir(exp_dir, cfg.get("exp_dir"))
        cfg = _shareable({**cfg, "frontend_args": pkg_fa}, recipe)
        ssl_meta = _shareable(ssl_meta, recipe)
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        (tmp / FINGERPRINT_FILE).write_text(json.dumps(fp, indent=2, sort_keys=True) + "\n",
                                            encoding="utf-8")
        meta: dict[str, Any] = {
            "format": PACKAGE_FORMAT, "wespeaker_lap_version": wespeaker_lap.__version__,
            "embed_dim": dim, "sample_rate": int(fe.sample_rate),
            "min_samples": int(fe.min_samples), "model": cfg.get("model"),
            "weights": WEIGHTS_FILE, "trained_from": weights.name, "ssl": ssl_meta,
            "ssl_fingerprint": {k: fp[k] for k in ("config_sha256", "weights_sha256")},
            "mean_vec": None, "score_norm": None, "thresholds": None, "calibration": None,
        }
        mean = None
        if opts.mean_vec:
            mean = load_mean_vec(opts.mean_vec, dim)
            save_npy(tmp / MEAN_FILE, mean.astype(np.float32))
            meta["mean_vec"] = MEAN_FILE
        cohort = None
        if opts.cohort_embeddings:
            cohort = build_cohort(list(opts.cohort_embeddings), mean, opts.cohort_utt2spk)
            save_npy(tmp / COHORT_FILE, cohort.astype(np.float32))
            meta["score_norm"] = {"method": "asnorm", "cohort": COHORT_FILE,
                                  "top_n": int(opts.top_n), "cohort_size": int(len(cohort))}
        model = SpeakerModel(_Dims(dim), mean_vec=mean, cohort=cohort, top_n=opts.top_n)
        if opts.calibrate and opts.calibration:
            raise ValueError("give --calibrate (fit on --trials) or --calibration FILE (fitted "
                             "elsewhere), not both")
        thresholds, cal, keys = _thresholds(model, opts, dim, opts.top_n if cohort is not None
                                            else None)
        meta["thresholds"] = thresholds
        meta["test_sets"] = _test_sets(opts, thresholds, keys)
        if opts.calibration:
            cal = _external_calibration(opts.calibration, model, thresholds, opts.top_n)
        if cal is not None:
            cal.save(tmp / CALIBRATION_FILE)
            meta["calibration"] = {"file": CALIBRATION_FILE,
                                   "norm": thresholds["norm"] if thresholds
                                   else model.default_norm,
                                   "features": cal.features, "fit_on": cal.info.get("fit_on")}
        if opts.onnx:
            export_extractor(extractor, tmp / ONNX_FILE, model_metadata(
                embed_dim=dim, sample_rate=int(fe.sample_rate), min_samples=int(fe.min_samples),
                fingerprint=onnx_fingerprint(tmp / CONFIG_FILE, tmp / WEIGHTS_FILE),
                weights=WEIGHTS_FILE, model=str(cfg.get("model"))))
            meta["onnx"] = ONNX_FILE
            meta["onnx_variants"] = {
                p: {"file": write_variant(tmp / ONNX_FILE, p).name}
                for p in opts.onnx_precisions}
        elif opts.onnx_precisions:
            raise ValueError("--onnx_precision needs --onnx")
        meta["card"] = {k: v for k, v in opts.card.items() if k in ("name", "license",
                                                                      "repo_id")}
        (tmp / PACKAGE_FILE).write_text(json.dumps(_json_safe(meta), indent=2, allow_nan=False)
                                         + "\n", encoding="utf-8")
        (tmp / CARD_FILE).write_text(_card(meta, cfg, opts), encoding="utf-8")
        write_manifest(tmp)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote model package %s", out)
    return out
