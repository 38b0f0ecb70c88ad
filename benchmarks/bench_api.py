"""The Python API's speed on the mini test set: embedding from arrays, from files and
through ``bin/extract``; the API's overhead over the bare extractor; ``load_model`` time.

    python benchmarks/bench_api.py                    # examples/mini's package and test set
    python benchmarks/bench_api.py --workdir /tmp/q   # a `run.sh --quick --workdir /tmp/q` run

Rows (same batch size; one warm-up each, then ``--repeats`` rounds running every path in
turn; the best wall and the best process-CPU time of each; utterances per second from the
wall time):

* ``bare extractor``: the trained extractor's forward on the same length-grouped,
  padded batches the API makes, the audio already decoded and checked: the floor;
* ``API, arrays``: ``model.embed(list of float32 arrays)`` (checks, batching,
  padding, the forward, the finiteness check);
* ``API, files``: ``model.embed(list of paths)`` (plus decoding the files);
* ``bin/extract``: ``wespeaker_lap.bin.extract.main`` in this process on the data
  dir (plus loading the model and writing the ark/scp and mean vector);
* ``API's own work``: what ``embed(arrays)`` does besides the forward (checks,
  length batching, padding), timed alone: the overhead without the forward's noise.

``overhead`` = API arrays time / bare time - 1 (target: at most 5 %); on a machine
shared with other work the CPU column is the steadier one. ``load_model``:
*cold* in a fresh interpreter (imports, manifest check, SSL model and weights; the
files are in the OS page cache), *warm* again in the same process.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from wespeaker_lap.api import load_model
from wespeaker_lap.api.audio import length_batches, pad
from wespeaker_lap.bin import extract

ROOT = Path(__file__).resolve().parents[1]
MINI = ROOT / "examples" / "mini"


def interleaved(fns: dict, repeats: int) -> dict[str, tuple[float, float]]:
    """{name: (best wall s, best process CPU s)}: one warm-up each, then ``repeats`` rounds
    that run every function in turn, so that load from other work falls on all alike."""
    for fn in fns.values():
        fn()
    best = {name: (float("inf"), float("inf")) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            w, c = time.perf_counter() - w0, time.process_time() - c0
            best[name] = (min(best[name][0], w), min(best[name][1], c))
    return best


def paths_of(workdir: Path) -> tuple[Path, Path, Path]:
    """(package, exp_dir, test data dir) of a default run, else of a --quick one."""
    for tag in ("", "_quick"):
        exp = workdir / f"exp{tag}" / "lap_astp"
        if (exp / "package" / "package.json").is_file():
            return exp / "package", exp, workdir / f"corpus{tag}" / "data" / "test"
    raise SystemExit(f"no exp/lap_astp/package or exp_quick/lap_astp/package under {workdir}: "
                     "run examples/mini/run.sh (stage 7 writes it) first")


def cold_load_seconds(package: Path) -> float:
    code = ("import time; t0 = time.perf_counter(); import wespeaker_lap; "
            f"wespeaker_lap.load_model({str(package)!r}); print(time.perf_counter() - t0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, env=None)
    return float(r.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=MINI, help="the mini recipe's --workdir")
    p.add_argument("--limit", type=int, default=0, help="first N test utterances (0: all)")
    p.add_argument("--batch_size", type=int, default=16, help="for every path (bin/extract's "
                   "default)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    package, exp_dir, data = paths_of(args.workdir)
    scp = [line.split(maxsplit=1) for line in (data / "wav.scp").read_text().splitlines()]
    if args.limit:
        scp = scp[:args.limit]
    keys, files = [k for k, _ in scp], [f.strip() for _, f in scp]
    arrays = [sf.read(f, dtype="float32")[0] for f in files]
    seconds = sum(len(a) for a in arrays) / 16000
    print(f"{len(keys)} utterances, {seconds:.1f} s of audio, from {data}; package {package}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}")

    t0 = time.perf_counter()
    model = load_model(package, batch_size=args.batch_size)
    warm_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_model(package, batch_size=args.batch_size)
    warm = time.perf_counter() - t0
    cold = min(cold_load_seconds(package) for _ in range(2))

    ext = model.backend.extractor
    waves = model.waveforms(arrays)
    batches = [pad([waves[i] for i in rows]) for rows in
               length_batches(waves, model.batch_size, model.sample_rate,
                              model.max_batch_seconds)]

    def bare():
        with torch.inference_mode():
            for wavs, lengths in batches:
                ext(torch.from_numpy(wavs), torch.from_numpy(lengths)).numpy()

    def api_arrays():
        return model.embed(arrays)

    def api_own_work():  # what embed(arrays) does besides the extractor's forward
        w = model.waveforms(arrays)
        for rows in length_batches(w, model.batch_size, model.sample_rate,
                                   model.max_batch_seconds):
            pad([w[i] for i in rows])

    def api_files():
        return model.embed(files)

    tmp = Path(tempfile.mkdtemp(prefix="bench_api_"))
    subset = data
    if args.limit:  # a data dir of the first N utterances
        subset = tmp / "data"
        subset.mkdir()
        for name in ("wav.scp", "utt2spk", "utt2dur"):
            src = data / name
            if src.is_file():
                lines = [ln for ln in src.read_text().splitlines() if ln.split()[0] in keys]
                (subset / name).write_text("\n".join(lines) + "\n")

    def bin_extract():
        assert extract.main(["--model_dir", str(exp_dir), "--data", str(subset), "--embed_dir",
                             str(tmp / "emb"), "--batch_size", str(args.batch_size),
                             "--no_progress"]) == 0

    t = interleaved({"bare extractor": bare, "API, arrays": api_arrays, "API, files": api_files,
                     "bin/extract": bin_extract, "API's own work": api_own_work}, args.repeats)
    diff = float(np.abs(api_arrays() - api_files()).max())
    bare_w, bare_c = t["bare extractor"]
    print()
    print("| path | wall (s) | utterances / s | wall vs bare | CPU (s) | CPU vs bare |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, (w, c) in t.items():
        print(f"| {name} | {w:.3f} | {len(keys) / w:.2f} | {100 * (w / bare_w - 1):+.1f} % | "
              f"{c:.3f} | {100 * (c / bare_c - 1):+.1f} % |")
    print()
    w, c = t["API, arrays"]
    print(f"API overhead over the bare extractor (arrays): wall {100 * (w / bare_w - 1):+.1f} %, "
          f"CPU {100 * (c / bare_c - 1):+.1f} % (target <= 5 %)")
    w, c = t["API's own work"]
    print(f"  measured directly (checks, length batching, padding; no forward): {w:.4f} s wall "
          f"= {100 * w / bare_w:.2f} % of the bare extractor's")
    print(f"load_model: cold (fresh process, imports included) {cold:.2f} s; first in this "
          f"process {warm_first:.2f} s; warm {warm:.2f} s")
    print(f"max |arrays - files| embedding difference: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
