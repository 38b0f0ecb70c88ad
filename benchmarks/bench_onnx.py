"""PyTorch fp32 / bf16 against onnxruntime fp32 / int8 on the CPU: speed, EER, long-audio memory.

Models:

* ``mini``: a mini recipe's trained LAP_ASTP model (``--mini_exp``: the default
  run's ``examples/mini/exp/lap_astp``, or a ``--quick`` one), exported with
  ``bin/export_onnx --quantize int8`` (and ``int8_static`` with ``--calib_wav_scp``);
* ``Base+ size``: a WavLM Base+-sized random model (12 x 768, transformers'
  WavLMConfig sizes of ``bench_frontend.BASE_PLUS``) + LAP_ASTP with the paper's
  sizes, random weights (so its EER means nothing: speed only).

For each model and each variant (PyTorch fp32, PyTorch bf16 SSL forward,
onnxruntime fp32, onnxruntime int8): utterances/s and RTF embedding
``--utts`` random utterances of ``--seconds`` one at a time (best of
``--repeats`` after a warm-up), same thread count for both runtimes. For the
mini model also the EER (cosine, no mean subtraction or normalisation) of each
variant on both mini test sets, with its speaker-bootstrap 95 % interval, and
its change against PyTorch fp32 with a *paired* speaker-bootstrap interval (every
replicate draws one set of speakers and weighs every variant's trials with it, so
the interval is that of the change, not of either EER); and the peak RSS of
onnxruntime embedding one long random input (``--long_minutes``, in a fresh
process each) to show that memory grows linearly with the length (windows of 20 s).

    python benchmarks/bench_onnx.py --mini_exp examples/mini/exp/lap_astp \\
        --mini_data examples/mini/corpus/data \\
        --calib_wav_scp examples/mini/corpus/data/train/wav.scp --long_minutes
    python benchmarks/bench_onnx.py --quick        # tiny random model only, smoke check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_frontend import BASE_PLUS

from wespeaker_lap.bin import export_onnx
from wespeaker_lap.export.exporter import export_extractor
from wespeaker_lap.export.identity import model_metadata
from wespeaker_lap.export.runtime import OnnxEmbedder, read_audio
from wespeaker_lap.export.variants import write_variant
from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.io.files import read_scp, read_table
from wespeaker_lap.models import build_extractor
from wespeaker_lap.models.inference import load_trained_extractor, resolve_model_dir
from wespeaker_lap.scoring.bootstrap import bootstrap_metrics, eer_from_rates, weighted_rates
from wespeaker_lap.scoring.score import read_trials

RATE = 16000
VARIANTS = ("PyTorch fp32", "PyTorch bf16", "ORT fp32", "ORT int8", "ORT int8 static")


def embedders(ext_fp32, ext_bf16, onnx_fp32: Path, onnx_int8: Path, threads: int,
              onnx_static: Path | None = None) -> dict:
    """Variant name -> function (wav (N,) float32) -> (E,) embedding."""
    def pt(ext):
        def f(wav):
            with torch.no_grad():
                return ext.embed(torch.from_numpy(wav[None])).float().numpy()[0]
        return f

    def ort(path):
        run = OnnxEmbedder(path, threads=threads)
        return lambda wav: run.embed_waveforms(wav[None], np.array([len(wav)]))[0]

    out = {"PyTorch fp32": pt(ext_fp32), "PyTorch bf16": pt(ext_bf16),
           "ORT fp32": ort(onnx_fp32), "ORT int8": ort(onnx_int8)}
    if onnx_static is not None:
        out["ORT int8 static"] = ort(onnx_static)
    return out


def speed(fns: dict, utts: int, seconds: float, repeats: int) -> dict:
    """utt/s and RTF of each variant: best of ``repeats`` rounds after a warm-up of each.

    The rounds are interleaved (every variant once per round, in turn), so a change
    of the machine's load during the run hits all variants alike instead of the
    ones that happened to run then (on a shared machine that drift had moved the
    PyTorch-to-onnxruntime ratios of two sequential runs apart by 3x).
    """
    rng = np.random.default_rng(0)
    wavs = [(0.1 * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
            for _ in range(utts)]
    for fn in fns.values():
        [fn(w) for w in wavs]  # warm-up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            [fn(w) for w in wavs]
            best[name] = min(best[name], time.perf_counter() - t0)
    out = {}
    for name, t in best.items():
        out[name] = {"utt_per_s": utts / t, "rtf": t / (utts * seconds)}
        print(f"    {name}: {utts / t:.2f} utt/s, RTF {t / (utts * seconds):.4f}", flush=True)
    return out


def paired_eer_changes(scores: dict, labels: np.ndarray, enroll_spk, test_spk, ref: str,
                       num_boot: int = 1000, seed: int = 0) -> dict:
    """Variant -> (EER change against ``ref`` in points, 95 % interval lo, hi) by a paired
    speaker bootstrap: replicate ``i`` weighs every variant's trials with the same draw of
    speakers (as :func:`wespeaker_lap.scoring.bootstrap.bootstrap_metrics` weighs them)."""
    lab = np.asarray(labels).astype(bool)
    spks, inv = np.unique(np.concatenate([enroll_spk, test_spk]), return_inverse=True)
    ie, it = inv[: lab.size], inv[lab.size :]
    rng = np.random.default_rng(seed)
    weights = []
    while len(weights) < num_boot:
        m = np.bincount(rng.integers(0, spks.size, spks.size), minlength=spks.size)
        w = np.where(lab, m[ie], m[ie] * m[it]).astype(np.float64)
        if w[lab].sum() > 0 and w[~lab].sum() > 0:
            weights.append(w)

    def replicates(s: np.ndarray) -> np.ndarray:
        order = np.argsort(s, kind="stable")
        so = s[order]
        last = np.flatnonzero(np.append(so[1:] != so[:-1], True))
        return np.array([eer_from_rates(*weighted_rates(lab[order], w[order], last))
                         for w in [np.ones(lab.size), *weights]])

    reps = {name: replicates(np.asarray(s, dtype=np.float64)) for name, s in scores.items()}
    out = {}
    for name, r in reps.items():
        d = 100.0 * (r - reps[ref])
        lo, hi = np.quantile(d[1:], [0.025, 0.975])
        out[name] = (round(float(d[0]), 6) + 0.0, float(lo), float(hi))  # no "-0.000"
    return out


def eer_on(fns: dict, data: Path, test_set: str, num_boot: int = 1000) -> dict:
    """Variant -> {eer, eer_ci, change, change_ci} (points) of cosine scores on a test set."""
    d = data / test_set
    trials = read_trials(next(p for p in (d / "trials.kaldi", d / "trials") if p.is_file()))
    table = read_scp(d / "wav.scp")
    utt2spk = dict(read_table(d / "utt2spk"))
    keys = sorted(set(trials.enroll) | set(trials.test))
    wavs = [read_audio(table[k], RATE, 400) for k in keys]
    row = {k: i for i, k in enumerate(keys)}
    e_spk = [utt2spk[k] for k in trials.enroll]
    t_spk = [utt2spk[k] for k in trials.test]
    scores = {}
    for name, fn in fns.items():
        emb = np.stack([fn(w) for w in wavs])
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        scores[name] = (emb[[row[k] for k in trials.enroll]]
                        * emb[[row[k] for k in trials.test]]).sum(1)
    changes = paired_eer_changes(scores, trials.labels, e_spk, t_spk, "PyTorch fp32", num_boot)
    out = {}
    for name, s in scores.items():
        r = bootstrap_metrics(s, trials.labels, e_spk, t_spk, num_boot=num_boot)
        c, lo, hi = changes[name]
        out[name] = {"eer": 100.0 * r["eer"], "eer_ci": [100.0 * v for v in r["eer_ci"]],
                     "change": c, "change_ci": [lo, hi]}
        print(f"    {test_set} {name}: EER {out[name]['eer']:.3f} % "
              f"[{out[name]['eer_ci'][0]:.2f}, {out[name]['eer_ci'][1]:.2f}], "
              f"{c:+.3f} points [{lo:+.3f}, {hi:+.3f}] against PyTorch fp32", flush=True)
    return out


def peak_rss_mb(onnx_path: Path, minutes: float, threads: int) -> float:
    """Peak RSS (MB) of a fresh process embedding ``minutes`` of random audio with ORT."""
    code = ("import resource, numpy as np\n"
            "from wespeaker_lap.export.runtime import OnnxEmbedder\n"
            f"run = OnnxEmbedder({str(onnx_path)!r}, threads={threads})\n"
            f"n = int({minutes} * 60 * {RATE})\n"
            "wav = np.random.default_rng(0).standard_normal(n, dtype=np.float32)\n"
            "wav *= 0.1\n"
            "e = run.embed_waveforms(wav[None], np.array([n]))\n"
            "assert np.isfinite(e).all()\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ})
    return float(res.stdout.strip().splitlines()[-1])


def random_model(ssl_config: dict, workdir: Path, name: str):
    torch.manual_seed(0)
    cfg = {"frontend": "ssl", "frontend_args": {"config": ssl_config},
           "model": "LAP_ASTP", "model_args": {}}
    ext = build_extractor(cfg).eval()
    cfg_bf16 = {**cfg, "frontend_args": {"config": ssl_config, "dtype": "bfloat16"}}
    torch.manual_seed(0)
    ext_bf16 = build_extractor(cfg_bf16).eval()
    ext_bf16.backend.load_state_dict(ext.backend.state_dict())
    meta = model_metadata(embed_dim=ext.embed_dim, sample_rate=RATE, min_samples=400,
                          fingerprint="sha256:benchmark", weights="none")
    path = export_extractor(ext, workdir / f"{name}.onnx", meta, verify=False)
    return ext, ext_bf16, path, write_variant(path, "int8"), None


def mini_model(exp: Path, workdir: Path, calib_wav_scp: Path | None = None):
    config, weights = resolve_model_dir(exp)
    out = workdir / "mini.onnx"
    assert export_onnx.main(["--model_dir", str(exp), "--out", str(out),
                             "--quantize", "int8"]) == 0
    static = None
    if calib_wav_scp is not None:
        calib = export_onnx.calibration_audio(out, str(calib_wav_scp), 16, 6.0)
        static = write_variant(out, "int8_static", calibration=calib)
    return (load_trained_extractor(config, weights, "cpu", "float32"),
            load_trained_extractor(config, weights, "cpu", "bfloat16"), out,
            out.with_name("mini.int8.onnx"), static)


def cpu_flags() -> list[str]:
    """The AVX2 / AVX-512 flags of this CPU (what ``lscpu | grep -o 'avx512...|avx2'`` lists)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])
    return sorted(f for f in set(flags) if f == "avx2" or f.startswith("avx512"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1,
                   help="threads of each runtime (1: steadier timings on a shared machine)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--utts", type=int, default=6)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--mini_exp", type=Path, help="the mini recipe's exp dir (LAP_ASTP)")
    p.add_argument("--mini_data", type=Path, help="the mini corpus's data dir")
    p.add_argument("--test_sets", nargs="+", default=["test", "test_unseen"])
    p.add_argument("--long_minutes", type=float, nargs="*", default=[1.0, 10.0, 60.0])
    p.add_argument("--no_base_plus", action="store_true")
    p.add_argument("--calib_wav_scp", type=Path,
                   help="mini model: also static int8, calibrated on 16 utterances of this list")
    p.add_argument("--quick", action="store_true", help="tiny random model only")
    p.add_argument("--num_boot", type=int, default=1000,
                   help="speaker-bootstrap replicates of the EER intervals")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    results: dict = {"models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = []
        if args.quick:
            models.append(("tiny WavLM", lambda: random_model(tiny_ssl_config("wavlm"), work,
                                                              "tiny")))
        else:
            if args.mini_exp:
                models.append(("mini", lambda: mini_model(args.mini_exp, work,
                                                          args.calib_wav_scp)))
            if not args.no_base_plus:
                models.append(("Base+ size", lambda: random_model(BASE_PLUS, work, "base")))
        for name, build in models:
            print(f"{name}:", flush=True)
            ext, ext_bf16, fp32, int8, static = build()
            fns = embedders(ext, ext_bf16, fp32, int8, args.threads, static)
            r = {"speed": speed(fns, args.utts, args.seconds, args.repeats),
                 "onnx_mb": fp32.stat().st_size / 2**20, "int8_mb": int8.stat().st_size / 2**20}
            if name == "mini" and args.mini_data:
                r["eer"] = {s: eer_on(fns, args.mini_data, s, args.num_boot)
                            for s in args.test_sets}
            if name in ("mini", "tiny WavLM"):
                r["rss_mb"] = {m: peak_rss_mb(fp32, m, args.threads) for m in args.long_minutes}
                for m, v in r["rss_mb"].items():
                    print(f"    ORT fp32 {m:g} min: peak RSS {v:.0f} MB", flush=True)
            results["models"][name] = r
    results["env"] = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                      "threads": args.threads, "cpu": platform.processor() or platform.machine(),
                      "cpu_flags": cpu_flags(),
                      "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
                      "maxrss_mb_parent": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      / 1024}
    print(f"\ntorch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{args.threads} thread(s), {args.utts} utterances x {args.seconds:g} s, one at a time; "
          f"CPU flags {' '.join(results['env']['cpu_flags'])}; "
          f"OPENBLAS_CORETYPE={results['env']['OPENBLAS_CORETYPE']}")
    print("| model | variant | utt/s | RTF | x PyTorch fp32 |")
    print("|---|---|---|---|---|")
    for name, r in results["models"].items():
        base = r["speed"]["PyTorch fp32"]["utt_per_s"]
        for v in [v for v in VARIANTS if v in r["speed"]]:
            s = r["speed"][v]
            print(f"| {name} | {v} | {s['utt_per_s']:.2f} | {s['rtf']:.4f} | "
                  f"{s['utt_per_s'] / base:.2f}x |")
    for r in results["models"].values():
        if "eer" in r:
            print("\n| variant | " + " | ".join(f"EER {s} (%) [95% CI] | change {s} (points) "
                                                "[paired 95% CI]" for s in r["eer"]) + " |")
            print("|---|" + "---|---|" * len(r["eer"]))
            for v in [v for v in VARIANTS if v in r["speed"]]:
                cells = []
                for s in r["eer"]:
                    e = r["eer"][s][v]
                    cells.append(f"{e['eer']:.2f} [{e['eer_ci'][0]:.2f}, {e['eer_ci'][1]:.2f}] | "
                                 f"{e['change']:+.2f} [{e['change_ci'][0]:+.2f}, "
                                 f"{e['change_ci'][1]:+.2f}]")
                print(f"| {v} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
