"""onnxruntime against PyTorch on the CPU: real-time factor of the whole exported extractor.

The extractor (random SSL model + LAP_ASTP backend with its paper sizes) is
exported with ``wespeaker_lap.export.exporter.export_extractor`` and run on random
audio by both runtimes with the same number of threads. Models: a tiny WavLM
(2 x 32) and a WavLM Base+-sized one (12 x 768, the config of
``bench_frontend.py``), both with random weights.

    python benchmarks/bench_onnx.py                 # the table of benchmarks/README.md (1 thread)
    python benchmarks/bench_onnx.py --quick         # tiny model only, one length

Columns: rtf = wall seconds / seconds of audio (best of ``--repeats`` after one
warm-up; lower is faster); speed-up = PyTorch wall / onnxruntime wall;
max |diff| = largest difference between the two runtimes' embeddings.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_frontend import BASE_PLUS

from wespeaker_lap.export.exporter import export_extractor
from wespeaker_lap.export.identity import model_metadata
from wespeaker_lap.export.runtime import OnnxEmbedder
from wespeaker_lap.frontend.testing import tiny_ssl_config
from wespeaker_lap.models import build_extractor

RATE = 16000


def best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_model(name: str, ssl_config: dict, cases: list[tuple[int, float]], threads: int,
                repeats: int, workdir: Path) -> list[dict]:
    torch.manual_seed(0)
    ext = build_extractor({"frontend": "ssl", "frontend_args": {"config": ssl_config},
                           "model": "LAP_ASTP", "model_args": {}}).eval()
    meta = model_metadata(embed_dim=ext.embed_dim, sample_rate=RATE, min_samples=400,
                          fingerprint="sha256:benchmark", weights="none")
    t0 = time.perf_counter()
    path = export_extractor(ext, workdir / f"{name}.onnx", meta, verify=False)
    export_s = time.perf_counter() - t0
    run = OnnxEmbedder(path, threads=threads)
    rows = []
    rng = np.random.default_rng(0)
    for batch, seconds in cases:
        n = int(seconds * RATE)
        wavs = (0.1 * rng.standard_normal((batch, n))).astype(np.float32)
        lengths = np.full(batch, n, dtype=np.int64)
        tw, tl = torch.from_numpy(wavs), torch.from_numpy(lengths)

        def pt(tw=tw, tl=tl):
            with torch.no_grad():
                return ext(tw, tl).numpy()

        def ort(wavs=wavs, lengths=lengths):
            return run.embed_waveforms(wavs, lengths)

        diff = float(np.max(np.abs(pt() - ort())))
        t_pt, t_ort = best_of(pt, repeats), best_of(ort, repeats)
        audio = batch * seconds
        rows.append({"model": name, "batch": batch, "seconds": seconds,
                     "pt_rtf": t_pt / audio, "ort_rtf": t_ort / audio,
                     "speedup": t_pt / t_ort, "diff": diff, "export_s": export_s})
        print(f"  {name} batch {batch} x {seconds:g} s: PyTorch {t_pt:.3f} s, "
              f"onnxruntime {t_ort:.3f} s", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1,
                   help="threads of each runtime (1: stable timings on a shared machine)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny model, one length")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    models = [("tiny WavLM", tiny_ssl_config("wavlm"), [(1, 3.0), (1, 10.0), (4, 3.0)])]
    if args.quick:
        models = [("tiny WavLM", tiny_ssl_config("wavlm"), [(1, 3.0)])]
    else:
        models.append(("WavLM Base+ size", BASE_PLUS, [(1, 3.0), (1, 10.0), (4, 3.0)]))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg, cases in models:
            rows += bench_model(name, cfg, cases, args.threads, args.repeats, Path(tmp))
    print(f"\ntorch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}")
    print("| model | batch | audio/utt (s) | PyTorch RTF | onnxruntime RTF | speed-up "
          "| max abs diff | export (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {r['seconds']:g} | {r['pt_rtf']:.4f} | "
              f"{r['ort_rtf']:.4f} | {r['speedup']:.2f}x | {r['diff']:.1e} | "
              f"{r['export_s']:.0f} |")


if __name__ == "__main__":
    main()
