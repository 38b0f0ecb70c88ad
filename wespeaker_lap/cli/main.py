"""``wespeaker-lap``: embeddings, similarity and verification with a trained model directory.

    wespeaker-lap embed      --model_dir exp/lap_astp a.wav b.wav --out emb.npy
    wespeaker-lap embed      --model_dir exp/lap_astp --wav_scp data/test/wav.scp --out x.ark
    wespeaker-lap similarity --model_dir exp/lap_astp a.wav b.wav
    wespeaker-lap verify     --model_dir exp/lap_astp a.wav b.wav --threshold 0.5

A model directory is a training ``exp_dir``: ``config.yaml`` and
``avg_model.pt`` (else ``final_model.pt``, else the newest
``models/model_{epoch}.pt``); a frozen SSL model is loaded from where the
config names it. Audio at any sample rate is resampled to the model's.
Scores are cosine similarities, after subtracting ``--mean_vec`` when given
(the ``mean_vec.npy`` of the training-set embeddings, as the recipes score).

With ``--onnx FILE`` (written by ``python -m wespeaker_lap.bin.export_onnx``)
the model runs in onnxruntime on the CPU and torch is never imported; with
``--model_dir`` too, the file must have been exported from that directory.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from pathlib import Path

import numpy as np

# Only numpy-side modules at the top: the --onnx path must run without torch.
# The torch-based parts are imported on use (cli/ is the one layer allowed to).
from wespeaker_lap.checks import ConfigError, check_int
from wespeaker_lap.io.files import atomic_path, read_scp
from wespeaker_lap.io.xvectors import load_mean_vec, save_npy, write_xvectors
from wespeaker_lap.scoring.score import normalize_rows
from wespeaker_lap.utils.logging_utils import setup_logging

logger = logging.getLogger("wespeaker_lap.cli")


class Embedder:
    """A trained extractor ready for files: ``Embedder(model_dir)(paths) -> (N, E)``.

    Files go through the same eval loader as ``bin/extract.py`` (decode, resample
    to the model's rate, length-grouped batches); a file it cannot use is an
    error naming it.
    """

    def __init__(self, model_dir: str, device: str = "cpu", dtype: str = "float32",
                 batch_size: int = 8, ignore_frontend_mismatch: bool = False):
        from wespeaker_lap.models.inference import load_trained_extractor, resolve_model_dir

        self.batch_size = check_int("--batch_size", batch_size, lo=1)
        self.device = check_device("--device", device)
        config, weights = resolve_model_dir(model_dir)
        self.extractor = load_trained_extractor(
            config, weights, self.device, dtype,
            ignore_frontend_mismatch=ignore_frontend_mismatch,
        )
        self.sample_rate = self.extractor.frontend.sample_rate

    def __call__(self, paths: list[str]) -> np.ndarray:
        from wespeaker_lap.dataset.dataset import build_eval_loader
        from wespeaker_lap.models.inference import embed_batches

        for p in paths:
            if not Path(p).is_file():
                raise FileNotFoundError(f"no such audio file: {p}")
        entries = [{"key": str(i), "wav": p} for i, p in enumerate(paths)]
        loader = build_eval_loader(
            entries, "raw", sample_rate=self.sample_rate, batch_size=self.batch_size,
            min_duration=self.extractor.frontend.min_samples / self.sample_rate,
        )
        out = np.zeros((len(paths), self.extractor.embed_dim), dtype=np.float32)
        done = np.zeros(len(paths), dtype=bool)
        for keys, emb in embed_batches(self.extractor, loader, self.device):
            rows = [int(k) for k in keys]
            out[rows] = emb
            done[rows] = True
        if not done.all():
            bad = [paths[i] for i in np.flatnonzero(~done)]
            raise ValueError(f"cannot use {len(bad)} file(s) (unreadable, silent or too short; "
                             f"see the warnings above): {bad[:5]}")
        return out


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


def make_embedder(args: argparse.Namespace, batch_size: int = 8):
    """The PyTorch :class:`Embedder`, or with ``--onnx`` the onnxruntime one (no torch)."""
    check_int("--batch_size", batch_size, lo=1)
    if args.onnx:
        if args.device != "cpu" or args.dtype != "float32":
            raise ValueError("--onnx runs float32 on the CPU (onnxruntime); drop --device and "
                             "--dtype")
        from wespeaker_lap.export.runtime import OnnxEmbedder

        return OnnxEmbedder(args.onnx, model_dir=args.model_dir, batch_size=batch_size)
    if not args.model_dir:
        raise ValueError("give --model_dir (a trained exp_dir) or --onnx (an exported model)")
    return Embedder(args.model_dir, args.device, args.dtype, batch_size,
                    args.ignore_frontend_mismatch)


def cmd_embed(args: argparse.Namespace) -> int:
    if bool(args.wavs) == bool(args.wav_scp):
        raise ValueError("give audio files or --wav_scp, not both or neither")
    out = Path(args.out)
    if out.suffix not in (".npy", ".ark"):
        raise ValueError(f"--out must end in .npy or .ark, got {out}")
    if args.wav_scp:
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
    emb = make_embedder(args, args.batch_size)(paths)
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


def _pair_score(args: argparse.Namespace) -> float:
    load_mean_vec(args.mean_vec)  # a bad file fails before the model is loaded
    emb = make_embedder(args)([args.wav1, args.wav2])
    a, b = normalize_rows(emb, load_mean_vec(args.mean_vec, emb.shape[1]))
    return float(a @ b)


def cmd_similarity(args: argparse.Namespace) -> int:
    print(f"{_pair_score(args):.6f}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    check_finite_number("--threshold", args.threshold)
    score = _pair_score(args)
    same = score >= args.threshold
    print(f"score {score:.6f} threshold {args.threshold:g}: "
          f"{'same speaker' if same else 'different speakers'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="wespeaker-lap", description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp):
        sp.add_argument("--model_dir", help="trained exp_dir (with --onnx: the file must "
                        "have been exported from it)")
        sp.add_argument("--onnx", help="exported model (bin/export_onnx.py): run it with "
                        "onnxruntime, without torch")
        sp.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
        sp.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
        sp.add_argument("-v", "--verbose", action="store_true")
        sp.add_argument("--ignore_frontend_mismatch", action="store_true",
                        help="use the frozen SSL model found even when it differs from the "
                        "one the experiment was trained with (see frontend.json)")

    sp = sub.add_parser("embed", help="audio files -> embeddings (.npy or Kaldi .ark)")
    common(sp)
    sp.add_argument("wavs", nargs="*", help="audio files")
    sp.add_argument("--wav_scp", help="Kaldi wav.scp instead of files (keys kept)")
    sp.add_argument("--out", required=True, help="output .npy (N, E) or .ark (+ .scp)")
    sp.add_argument("--batch_size", type=int, default=8)
    sp.set_defaults(func=cmd_embed)

    for name, func, helptext in (("similarity", cmd_similarity, "cosine score of two files"),
                                 ("verify", cmd_verify, "same speaker? score vs threshold")):
        sp = sub.add_parser(name, help=helptext)
        common(sp)
        sp.add_argument("wav1")
        sp.add_argument("wav2")
        sp.add_argument("--mean_vec", help="mean_vec.npy subtracted before the cosine")
        if name == "verify":
            sp.add_argument("--threshold", type=float, required=True,
                            help="accept when score >= threshold (e.g. the EER threshold)")
        sp.set_defaults(func=func)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging("INFO" if args.verbose else "WARNING")
    if not args.verbose and not args.onnx:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar
    try:
        return args.func(args)
    except (OSError, ValueError) as e:
        print(f"wespeaker-lap {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
