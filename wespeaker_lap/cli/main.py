"""``wespeaker-lap``: embeddings, scores, calibrated decisions, enrolment and identification.

    wespeaker-lap embed      --model exp/lap_astp/package a.wav b.wav --out emb.npy
    wespeaker-lap embed      --model exp/lap_astp --wav_scp data/test/wav.scp --out x.ark
    wespeaker-lap similarity --model exp/lap_astp/package a.wav b.wav
    wespeaker-lap verify     --model exp/lap_astp/package a.wav b.wav
    wespeaker-lap verify     --model org/name a.wav b.wav --operating_point mindcf0.01
    wespeaker-lap enroll     --model PKG --speaker alice a1.wav a2.wav --speaker bob b.wav \
                             --out speakers.ark
    wespeaker-lap identify   --model PKG --speakers speakers.ark x.wav --top_k 3

``--model`` is a model package (``python -m wespeaker_lap.bin.package_model``),
a training ``exp_dir``, or a hub id ``org/name[@revision]`` (fetched into the
Hugging Face cache; ``HF_HUB_OFFLINE=1`` uses the cache only). ``--model_dir``
(an ``exp_dir``) works as before. This command is a thin shell over the Python
API (``wespeaker_lap.load_model``; see ``docs/python_api.md``).

A package brings its mean vector, AS-norm cohort, calibration and measured
thresholds: ``verify`` prints the score, the calibrated log-likelihood ratio and
the decision, by default at the package's EER threshold; ``--operating_point``
picks another measured threshold, ``--p_target P`` the Bayes decision on the
LLR, ``--threshold T`` a raw threshold of yours. An ``exp_dir`` has none of
these: its scores are cosines (after ``--mean_vec`` when given) and ``verify``
needs ``--threshold``.

Audio at any sample rate is resampled to the model's. An ``.ark`` holds one
embedding per key, so the same file given twice is refused there; a ``.npy``
has one row per file given, in order.

With ``--onnx FILE`` (written by ``python -m wespeaker_lap.bin.export_onnx``)
the model runs in onnxruntime on the CPU and torch is never imported; with
``--model_dir`` too, the file must have been exported from that directory.
``--runtime onnx`` runs a package's own ``model.onnx``; ``--precision int8`` one of
its variants (``export_onnx --quantize``), ``--providers cuda,cpu`` and ``--threads N``
choose where and how onnxruntime runs it.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from pathlib import Path

# Only light modules at the top: the --onnx path must run without torch, and --help fast.
# The API is imported on use (cli/ is a layer allowed to).
from wespeaker_lap.checks import ConfigError, check_int
from wespeaker_lap.io.files import atomic_path, read_scp
from wespeaker_lap.io.xvectors import load_mean_vec, save_npy, write_xvectors
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger("wespeaker_lap.cli")

#: Operating points a package may carry (wespeaker_lap.api.package.OPERATING_POINTS).
OPERATING_POINTS = ("eer", "mindcf0.01", "mindcf0.05")
NORMS = ("none", "asnorm", "snorm")


_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_device(where: str, device: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N`` that this machine has; else ConfigError naming the option."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise ConfigError(f"{where}: expected cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{where}: {device!r} asked for, but CUDA is not available in "
                              f"this torch build ({torch.__version__}) or on this machine; "
                              "use --device cpu")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"{where}: {device!r} asked for, but this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def check_finite_number(where: str, value: float) -> float:
    """A finite float (argparse's ``float`` accepts ``nan`` and ``inf``)."""
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return value


def load(args: argparse.Namespace, batch_size: int = 8):
    """The :class:`~wespeaker_lap.api.SpeakerModel` the options name (``--model``,
    ``--model_dir``, ``--onnx``), with ``--mean_vec`` applied."""
    from wespeaker_lap.api import load_model

    check_int("--batch_size", batch_size, lo=1)
    if args.model and args.model_dir:
        raise ValueError("give --model or --model_dir, not both")
    source = args.model or args.model_dir
    for opt in ("onnx", "mean_vec"):
        value = getattr(args, opt, None)
        if value and Path(value).is_dir():
            raise ValueError(f"--{opt} {value} is a directory; give the file"
                             + (" (an exported .onnx)" if opt == "onnx" else ""))
    onnx = args.onnx or args.runtime == "onnx"
    if onnx and (args.device != "cpu" or args.dtype != "float32"):
        raise ValueError("--onnx runs float32 on the CPU (onnxruntime); drop --device and "
                         "--dtype")
    if not onnx:
        check_device("--device", args.device)
        for opt in ("precision", "providers", "threads"):
            if getattr(args, opt) is not None:
                raise ValueError(f"--{opt} is an option of the ONNX runtime (--onnx, "
                                 "--runtime onnx)")
    if args.threads is not None:
        check_int("--threads", args.threads, lo=1)
    ort = {"precision": args.precision, "providers": args.providers, "threads": args.threads}
    mean_vec = load_mean_vec(getattr(args, "mean_vec", None))  # a bad file fails first
    if source is None and not args.onnx:
        raise ValueError("give --model_dir (a trained exp_dir), --model (a model package, "
                         "exp_dir or hub id) or --onnx (an exported model)")
    if source is None:
        model = load_model(args.onnx, batch_size=batch_size, **ort)
    else:
        model = load_model(source, device=args.device, dtype=args.dtype,
                           runtime="onnx" if onnx else "torch", onnx=args.onnx,
                           revision=args.revision, batch_size=batch_size,
                           ignore_frontend_mismatch=args.ignore_frontend_mismatch,
                           **(ort if onnx else {}))
    if mean_vec is not None:
        if model.mean_vec is not None:
            raise ValueError("--mean_vec: this model package has its own mean vector")
        model.mean_vec = load_mean_vec(args.mean_vec, model.embed_dim)
    return model


def cmd_embed(args: argparse.Namespace) -> int:
    if bool(args.wavs) == bool(args.wav_scp):
        raise ValueError("give audio files or --wav_scp, not both or neither")
    out = Path(args.out)
    if out.suffix not in (".npy", ".ark"):
        raise ValueError(f"--out must end in .npy or .ark, got {out}")
    if args.wav_scp:
        segments = Path(args.wav_scp).parent / "segments"
        if segments.is_file():  # wav.scp keyed by recording: embedding it would ignore the cuts
            raise ValueError(f"{segments}: embed --wav_scp does not read Kaldi segments; use "
                             "python -m wespeaker_lap.bin.extract --data "
                             f"{Path(args.wav_scp).parent}")
        table = read_scp(args.wav_scp)
        keys, paths = list(table), list(table.values())
    else:
        paths = args.wavs
        keys = [Path(p).stem for p in paths]
        if len(set(keys)) != len(keys):
            keys = paths  # stems collide: key by the path itself
    if out.suffix == ".ark" and len(set(keys)) != len(keys):
        # an ark holds one embedding per key: a file given twice would be written once
        seen: set[str] = set()
        dup = next(k for k in keys if k in seen or seen.add(k))
        raise ValueError(f"{dup} is given twice; an .ark holds one embedding per key "
                         "(give each file once, or write a .npy, whose rows follow the input)")
    piped = [i for i, p in enumerate(paths) if str(p).rstrip().endswith("|")]
    if piped and not args.allow_pipes:
        raise ValueError(f"{args.wav_scp or 'input'}: {keys[piped[0]]!r}: piped wav.scp entries "
                         f"('cmd |') need --allow_pipes ({len(piped)} such)")
    model = load(args, args.batch_size)
    emb = _embed_with_pipes(model, keys, paths, piped) if piped else model.embed(paths)
    if out.suffix == ".npy":
        save_npy(out, emb)
        with atomic_path(out.with_suffix(".keys")) as tmp:
            tmp.write_text("".join(f"{k}\n" for k in keys), encoding="utf-8")
        print(f"wrote {emb.shape[0]} x {emb.shape[1]} embeddings to {out} "
              f"(row order in {out.with_suffix('.keys')})")
    elif out.suffix == ".ark":
        ark, scp = write_xvectors(out.parent, dict(zip(keys, emb, strict=True)), name=out.stem)
        print(f"wrote {len(keys)} embeddings to {ark} and {scp}")
    return 0


def _embed_with_pipes(model, keys: list[str], paths: list[str], piped: list[int]):
    """Embed files as usual and run each piped entry (``cmd |``) with a shell, as Kaldi does."""
    import numpy as np

    from wespeaker_lap.dataset.audio import BadAudio, decode_bytes, read_bytes

    rows: list = [None] * len(paths)
    files = [i for i in range(len(paths)) if i not in set(piped)]
    if files:
        for i, e in zip(files, model.embed([paths[i] for i in files]), strict=True):
            rows[i] = e
    for i in piped:
        try:
            wav, rate = decode_bytes(read_bytes(paths[i], allow_pipes=True), paths[i])
        except BadAudio as e:
            raise ValueError(f"{keys[i]!r}: {e}") from None
        rows[i] = model.embed(wav, sample_rate=rate)[0]
    return np.stack(rows)


def cmd_similarity(args: argparse.Namespace) -> int:
    model = load(args)
    emb = model.embed([args.wav1, args.wav2])
    print(f"{float(model.score(emb[0], emb[1], norm=args.norm)[0]):.6f}")
    return 0


def _decision_options(args: argparse.Namespace) -> dict:
    given = [f"--{n}" for n in ("threshold", "p_target", "operating_point")
             if getattr(args, n, None) is not None]
    if len(given) > 1:
        raise ValueError(f"give one of --threshold, --p_target and --operating_point, not "
                         f"{' and '.join(given)}")
    if args.threshold is not None:
        check_finite_number("--threshold", args.threshold)
    if getattr(args, "p_target", None) is not None and not 0.0 < args.p_target < 1.0:
        raise ConfigError(f"--p_target: expected a prior in (0, 1), got {args.p_target!r}")
    return {"threshold": args.threshold, "operating_point": args.operating_point}


def check_cosine_threshold(threshold: float | None, norm: str) -> None:
    """A threshold on a raw cosine (no score normalisation) lies in [-1, 1]."""
    if threshold is not None and norm == "none" and not -1.0 <= threshold <= 1.0:
        raise ConfigError(f"--threshold: {threshold:g} can never be met or always is: the "
                          "scores are cosines (--norm none), in [-1, 1]")


def cmd_verify(args: argparse.Namespace) -> int:
    opts = _decision_options(args)
    if args.norm is not None:
        check_cosine_threshold(args.threshold, args.norm)  # before the model loads
    model = load(args)
    check_cosine_threshold(args.threshold, model.default_norm if args.norm is None else args.norm)
    try:
        result = model.verify(args.wav1, args.wav2, p_target=args.p_target, norm=args.norm,
                              **opts)
    except ValueError as e:
        if "no measured thresholds" in str(e) or "no eer threshold" in str(e):
            raise ValueError(f"{e} (--threshold T on the command line)") from None
        raise
    print(result)
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".ark":
        raise ValueError(f"--out must end in .ark (Kaldi ark + scp), got {out}")
    speakers: dict[str, list[str]] = {}
    for name, *wavs in args.speaker:
        if not wavs:
            raise ValueError(f"--speaker {name}: give its audio files after the name")
        if name in speakers:
            raise ValueError(f"--speaker {name} is given twice")
        speakers[name] = wavs
    model = load(args, args.batch_size)
    enrolled = model.enroll(speakers)
    ark = enrolled.save(out)
    print(f"enrolled {len(enrolled)} speaker(s) into {ark} and {ark.with_suffix('.scp')}")
    return 0


def cmd_identify(args: argparse.Namespace) -> int:
    from wespeaker_lap.api import Speakers

    opts = _decision_options(args)
    check_int("--top_k", args.top_k, lo=1)
    if args.norm is not None:
        check_cosine_threshold(args.threshold, args.norm)
    model = load(args)
    check_cosine_threshold(args.threshold, model.default_norm if args.norm is None else args.norm)
    speakers = Speakers.load(args.speakers, model.embed_dim)
    result = model.identify(args.wav, speakers, top_k=args.top_k, norm=args.norm, **opts)
    for rank, (name, score) in enumerate(result.ranking, 1):
        print(f"{rank} {name} {score:.6f}")
    verdict = result.speaker if result.speaker is not None else "unknown (no enrolled " \
        "speaker passes the threshold)"
    thr = "" if result.threshold is None else f" threshold {result.threshold:g}"
    print(f"decision: {verdict}{thr} [{result.threshold_source}]")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wespeaker-lap", description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--model", help="model package, training exp_dir, or hub id "
                        "org/name[@revision]")
        sp.add_argument("--model_dir", help="trained exp_dir (with --onnx: the file must "
                        "have been exported from it)")
        sp.add_argument("--revision", help="hub revision (branch, tag or commit) of --model")
        sp.add_argument("--onnx", help="exported model (bin/export_onnx.py): run it with "
                        "onnxruntime, without torch")
        sp.add_argument("--runtime", choices=["torch", "onnx"], default="torch",
                        help="onnx: run a package's model.onnx with onnxruntime")
        sp.add_argument("--precision", default=None,
                        help="ONNX runtime: the package's variant to run (e.g. int8, fp16; "
                             "default: float32)")
        sp.add_argument("--providers", default=None,
                        help="ONNX runtime: execution providers in order, e.g. cuda,cpu "
                             "(default: cpu)")
        sp.add_argument("--threads", type=int, default=None,
                        help="ONNX runtime: CPU threads (default: onnxruntime's)")
        sp.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
        sp.add_argument("--dtype", default="float32",
                        choices=["float32", "bfloat16", "float16", "auto"],
                        help="SSL forward precision; auto picks the fastest on this device")
        sp.add_argument("-v", "--verbose", action="store_true")
        sp.add_argument("--ignore_frontend_mismatch", action="store_true",
                        help="use the frozen SSL model found even when it differs from the "
                        "one the experiment was trained with (see frontend.json)")

    def scoring(sp, decisions: bool):
        sp.add_argument("--norm", choices=NORMS, default=None,
                        help="score normalisation (default: the package's, AS-norm against "
                        "its cohort; none for an exp_dir)")
        if decisions:
            sp.add_argument("--operating_point", choices=OPERATING_POINTS, default=None,
                            help="a threshold measured on the package's validation trials "
                            "(default: eer when the package has it)")
            sp.add_argument("--threshold", type=float, default=None,
                            help="accept when score >= threshold (a raw threshold of yours)")

    sp = sub.add_parser("embed", help="audio files -> embeddings (.npy or Kaldi .ark)")
    common(sp)
    sp.add_argument("wavs", nargs="*", help="audio files")
    sp.add_argument("--wav_scp", help="Kaldi wav.scp instead of files (keys kept)")
    sp.add_argument("--out", required=True, help="output .npy (N, E) or .ark (+ .scp)")
    sp.add_argument("--batch_size", type=int, default=8)
    sp.add_argument("--allow_pipes", action="store_true",
                    help="run Kaldi piped wav.scp entries ('cmd |') with a shell, as Kaldi does")
    sp.set_defaults(func=cmd_embed)

    for name, func, helptext in (("similarity", cmd_similarity, "score of two files"),
                                 ("verify", cmd_verify, "same speaker? score, LLR, decision")):
        sp = sub.add_parser(name, help=helptext)
        common(sp)
        sp.add_argument("wav1")
        sp.add_argument("wav2")
        sp.add_argument("--mean_vec", help="mean_vec.npy subtracted before the cosine (an "
                        "exp_dir; a package has its own)")
        scoring(sp, decisions=name == "verify")
        if name == "verify":
            sp.add_argument("--p_target", type=float, default=None,
                            help="Bayes decision on the calibrated LLR at this target prior")
        sp.set_defaults(func=func)

    sp = sub.add_parser("enroll", help="speaker models from their audio -> Kaldi .ark")
    common(sp)
    sp.add_argument("--speaker", nargs="+", action="append", required=True,
                    metavar=("NAME", "WAV"), help="a speaker's name then its audio files "
                    "(repeat for each speaker)")
    sp.add_argument("--out", required=True, help="output .ark (+ .scp)")
    sp.add_argument("--batch_size", type=int, default=8)
    sp.set_defaults(func=cmd_enroll, mean_vec=None)

    sp = sub.add_parser("identify", help="rank enrolled speakers for one recording "
                        "(open set: unknown below the threshold)")
    common(sp)
    sp.add_argument("wav")
    sp.add_argument("--speakers", required=True, help="speaker models (.ark from enroll)")
    sp.add_argument("--top_k", type=int, default=5)
    scoring(sp, decisions=True)
    sp.set_defaults(func=cmd_identify, mean_vec=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("INFO" if args.verbose else "WARNING")
    if not args.verbose and not args.onnx and args.runtime != "onnx":
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar
    try:
        return args.func(args)
    except (OSError, ValueError) as e:
        print(f"wespeaker-lap {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
