"""Package a trained model for use and sharing: weights, SSL model, mean, cohort, thresholds.

    python -m wespeaker_lap.bin.package_model --exp_dir exp/lap_astp --out exp/lap_astp/package \\
        --mean_vec exp/lap_astp/embeddings/train/mean_vec.npy \\
        --cohort_embeddings exp/lap_astp/embeddings/train/xvector.scp \\
        --cohort_utt2spk data/train/utt2spk \\
        --trials data/val/trials --trial_embeddings exp/lap_astp/embeddings/val/xvector.scp \\
        --calibrate [--bundle_ssl | --ssl_hub_id ORG/NAME --ssl_revision REV] [--onnx] \\
        [--results exp/lap_astp/results_ci.md] \\
        [--test_scores test exp/lap_astp/scores/trials.kaldi.asnorm300.score] \\
        [--push_to_hub ORG/NAME]

The package (``docs/python_api.md``; files in :mod:`wespeaker_lap.api.package`)
holds the backend and head weights as safetensors, the training config, the SSL
model (bundled, or a hub id + revision; its fingerprint either way), the
training mean vector, the AS-norm cohort (speaker means) and its top-N, the
operating thresholds (EER, minDCF at p_target 0.01 and 0.05) measured on the
named ``--trials`` list, a QMF calibration fitted on it (``--calibrate``) or
elsewhere (``--calibration qmf.json``, e.g. the VoxCeleb recipe's stage 7),
optionally ``model.onnx``, a model card ``README.md`` and a sha256 manifest.

The ``--trials`` list must be disjoint from every test list the card reports
(a validation set of held-out training-voice speakers): its thresholds and
calibration are what users get. ``--test_scores`` (checked disjoint from it)
puts on the card, per test set, how far the package's thresholds land from the
test set's own and the miss / false-alarm rates they give there.
"""

from __future__ import annotations

import argparse
import sys

from wespeaker_lap.api.hub import push_package
from wespeaker_lap.api.packaging import PackageOptions, build_package
from wespeaker_lap.bin.common import add_log_level, run
from wespeaker_lap.scoring.score_norm import DEFAULT_TOP_N


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m wespeaker_lap.bin.package_model",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp_dir", required=True, help="trained exp_dir")
    p.add_argument("--out", required=True, help="package directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    ssl = p.add_argument_group("SSL model")
    ssl.add_argument("--bundle_ssl", action="store_true",
                     help="copy the SSL model's files into the package (ssl/)")
    ssl.add_argument("--ssl_hub_id", help="the SSL model's hub id (when training used a local "
                     "copy of it); its fingerprint must match")
    ssl.add_argument("--ssl_revision", help="the SSL model's hub revision (commit or tag)")
    sc = p.add_argument_group("scoring")
    sc.add_argument("--mean_vec", help="training-set mean_vec.npy")
    sc.add_argument("--cohort_embeddings", nargs="+", help="xvector.scp of the cohort")
    sc.add_argument("--cohort_utt2spk", help="utt2spk of the cohort (one mean per speaker)")
    sc.add_argument("--top_n", type=int, default=DEFAULT_TOP_N,
                    help=f"AS-norm top-N (default {DEFAULT_TOP_N})")
    sc.add_argument("--trials", help="labelled validation trial list for the thresholds")
    sc.add_argument("--trials_name", help="its name on the card (default: its directory)")
    sc.add_argument("--trial_embeddings", nargs="+", help="xvector.scp of its utterances")
    sc.add_argument("--calibrate", action="store_true",
                    help="fit a QMF calibration on --trials")
    sc.add_argument("--trial_utt2dur", nargs="+", help="utt2dur of its utterances (adds "
                    "log-duration features to the calibration)")
    sc.add_argument("--calibration", metavar="QMF_JSON",
                    help="instead of --calibrate: a QMF model fitted elsewhere (a recipe's "
                    "tools/calibrate.sh, e.g. scores/qmf.asnorm300.json) on the package's "
                    "scores: same mean, cohort and top-N")
    p.add_argument("--onnx", action="store_true", help="add model.onnx (needs onnx)")
    p.add_argument("--onnx_precision", action="append", choices=["int8", "fp16"], default=[],
                   help="with --onnx, also add model.int8.onnx / model.fp16.onnx (repeatable); "
                        "load_model(..., runtime='onnx', precision='int8') picks one")
    card = p.add_argument_group("model card")
    card.add_argument("--name", help="model name on the card")
    card.add_argument("--license", default="apache-2.0", help="license id (default apache-2.0)")
    card.add_argument("--description", help="what the model is (a paragraph)")
    card.add_argument("--results", help="a Markdown file with the results table to include "
                      "(the mini recipe's results_ci.md: EER with speaker-bootstrap intervals)")
    card.add_argument("--test_scores", nargs=2, action="append", default=[],
                      metavar=("NAME", "SCORES"),
                      help="a test set's labelled score file, scored as the package scores "
                      "(the recipe's AS-norm file); the card shows its own EER threshold "
                      "against the package's and the miss / false-alarm rates the package's "
                      "thresholds give on it (repeatable)")
    card.add_argument("--datasets", nargs="+", help="training data set ids for the card")
    p.add_argument("--push_to_hub", metavar="ORG/NAME", help="upload the package there")
    p.add_argument("--private", action="store_true", help="with --push_to_hub: a private repo")
    add_log_level(p)
    return p


def _body(args: argparse.Namespace) -> int:
    if args.top_n < 2:
        raise ValueError(f"--top_n must be >= 2, got {args.top_n}")
    card = {k: v for k, v in (("name", args.name), ("license", args.license),
                              ("description", args.description), ("results", args.results),
                              ("datasets", args.datasets), ("repo_id", args.push_to_hub))
            if v is not None}
    opts = PackageOptions(
        bundle_ssl=args.bundle_ssl, ssl_hub_id=args.ssl_hub_id, ssl_revision=args.ssl_revision,
        mean_vec=args.mean_vec, cohort_embeddings=args.cohort_embeddings,
        cohort_utt2spk=args.cohort_utt2spk, top_n=args.top_n, trials=args.trials,
        trials_name=args.trials_name, trial_embeddings=args.trial_embeddings,
        trial_utt2dur=args.trial_utt2dur, calibrate=args.calibrate,
        calibration=args.calibration, test_scores=[tuple(t) for t in args.test_scores],
        onnx=args.onnx, onnx_precisions=tuple(args.onnx_precision),
        overwrite=args.overwrite, card=card)
    out = build_package(args.exp_dir, args.out, opts)
    print(f"wrote {out}")
    if args.push_to_hub:
        print(f"uploaded: {push_package(out, args.push_to_hub, private=args.private)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(_body, get_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
