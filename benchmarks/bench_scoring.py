"""Benchmark of the scoring back end: AS-norm and EER/minDCF at VoxCeleb scale.

Cases (each in its own child process, so its peak memory is its own):

* ``asnorm_files``: ``normalize_score_files`` end to end: read a 50,000-utterance
  ``xvector.scp`` and a 6,000-utterance cohort scp, read a 600,000-trial score
  file, AS-norm (top 300), write the normalised score file.
* ``asnorm_core``: the same normalisation on data already in memory.
* ``asnorm_loop``: the same formula one trial at a time (cohort scores of both
  sides, ``np.partition`` top-N, mean/std), timed on a subset of trials and
  extrapolated linearly to all trials (said so in the table).
* ``metrics_core``: EER + minDCF(0.01, 0.05) of 1,000,000 scores in memory.
* ``metrics_files``: the same from a 1,000,000-line score file (parse included).

Embeddings are random 256-d vectors. Peak memory is the child's peak RSS
(``ru_maxrss``), in total and above what it held before the timed call.

Usage::

    python benchmarks/bench_scoring.py          # full size: ~200 MB of files in $TMPDIR, ~1 GB RAM
    python benchmarks/bench_scoring.py --quick  # 1/10 scale, checks that it runs
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {
    "full": {"utts": 50_000, "cohort": 6_000, "trials": 600_000, "metric_trials": 1_000_000},
    "quick": {"utts": 5_000, "cohort": 600, "trials": 60_000, "metric_trials": 100_000},
}
DIM = 256
TOP_N = 300
# WeSpeaker's scripts on the project's 2-core machine, measured on other days (the machine's
# speed varies between sessions: compare with a side-by-side run, benchmarks/README.md)
REFERENCE = {
    "asnorm_files": "full-scale reference: WeSpeaker score_norm.py 20.6 s, 2.8 GB (2026-11-30)",
    "metrics_files": "full-scale reference: WeSpeaker compute_metrics.py 3.6 s (600k trials)",
}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _keys(n: int) -> list[str]:
    return [f"id{i // 50:05d}/v{(i // 10) % 5:010d}/{i % 10:05d}.wav" for i in range(n)]


def prepare(workdir: Path, size: dict, seed: int = 0) -> None:
    """Write the embeddings, cohort and score files the cases read."""
    import kaldiio

    rng = np.random.default_rng(seed)
    keys = _keys(size["utts"])
    for name, n, prefix in (("eval", size["utts"], ""), ("cohort", size["cohort"], "cohort_")):
        mat = rng.normal(size=(n, DIM)).astype(np.float32)
        with kaldiio.WriteHelper(f"ark,scp:{workdir / name}.ark,{workdir / name}.scp") as w:
            for i in range(n):
                w(prefix + keys[i] if prefix else keys[i], mat[i])
    np.save(workdir / "mean_vec.npy", rng.normal(size=DIM).astype(np.float32) * 0.1)
    n = size["trials"]
    e = rng.integers(0, size["utts"], n)
    t = rng.integers(0, size["utts"], n)
    s = rng.normal(0, 0.1, n)
    lab = np.where(rng.random(n) < 0.01, "target", "nontarget")
    with open(workdir / "trials.score", "w") as f:
        f.writelines(
            f"{keys[a]} {keys[b]} {c:.6f} {d}\n" for a, b, c, d in zip(e, t, s, lab, strict=True)
        )
    n = size["metric_trials"]
    y = rng.random(n) < 0.01
    s = rng.normal(size=n) + 3.0 * y
    e = rng.integers(0, size["utts"], n)
    t = rng.integers(0, size["utts"], n)
    np.save(workdir / "metrics_scores.npy", s)
    np.save(workdir / "metrics_labels.npy", y)
    with open(workdir / "metrics.score", "w") as f:
        f.writelines(
            f"{keys[a]} {keys[b]} {c:.6f} {'target' if d else 'nontarget'}\n"
            for a, b, c, d in zip(e, t, s, y, strict=True)
        )


def _loop_asnorm(scores, idx_e, idx_t, emb, cohort, top_n):
    """AS-norm one trial at a time (the formula without any batching)."""
    out = np.empty(len(scores))
    for i in range(len(scores)):
        stats = []
        for row in (idx_e[i], idx_t[i]):
            cs = cohort @ emb[row]
            top = np.partition(cs, -top_n)[-top_n:]
            stats.append((top.mean(), top.std()))
        (me, se), (mt, st) = stats
        out[i] = 0.5 * ((scores[i] - me) / se + (scores[i] - mt) / st)
    return out


def run_case(case: str, workdir: Path, loop_trials: int) -> dict:
    """Run one case in this process; returns timings and memory."""
    from wespeaker_lap.io.xvectors import load_embeddings, load_mean_vec
    from wespeaker_lap.scoring.metrics import compute_metrics
    from wespeaker_lap.scoring.score import read_scores
    from wespeaker_lap.scoring.score_norm import (
        build_cohort,
        normalize_score_files,
        normalize_scores,
    )

    result = {"case": case}
    if case == "asnorm_files":
        before = _peak_mb()
        t0 = time.perf_counter()
        normalize_score_files(
            [workdir / "trials.score"], workdir / "eval.scp", workdir / "cohort.scp",
            workdir / "mean_vec.npy", top_n=TOP_N, output_dir=workdir / "out",
        )
        result["seconds"] = time.perf_counter() - t0
    elif case == "asnorm_core":
        table = load_embeddings(workdir / "eval.scp")
        mean = load_mean_vec(workdir / "mean_vec.npy", table.dim)
        cohort = build_cohort(workdir / "cohort.scp", mean)
        trials, scores = read_scores(workdir / "trials.score")
        before = _peak_mb()
        t0 = time.perf_counter()
        normalize_scores(trials, scores, table, cohort, mean, top_n=TOP_N)
        result["seconds"] = time.perf_counter() - t0
    elif case == "asnorm_loop":
        table = load_embeddings(workdir / "eval.scp")
        mean = load_mean_vec(workdir / "mean_vec.npy", table.dim)
        cohort = build_cohort(workdir / "cohort.scp", mean).astype(np.float64)
        trials, scores = read_scores(workdir / "trials.score")
        emb = table.matrix.astype(np.float64) - mean
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        n = min(loop_trials, len(trials))
        idx_e = [table.index[k] for k in trials.enroll[:n]]
        idx_t = [table.index[k] for k in trials.test[:n]]
        before = _peak_mb()
        t0 = time.perf_counter()
        _loop_asnorm(scores[:n], idx_e, idx_t, emb, cohort, TOP_N)
        measured = time.perf_counter() - t0
        result["seconds"] = measured * len(trials) / n
        result["note"] = f"extrapolated from {n} trials ({measured:.2f} s)"
    elif case == "metrics_core":
        s = np.load(workdir / "metrics_scores.npy")
        y = np.load(workdir / "metrics_labels.npy")
        before = _peak_mb()
        t0 = time.perf_counter()
        compute_metrics(s, y)
        result["seconds"] = time.perf_counter() - t0
    elif case == "metrics_files":
        before = _peak_mb()
        t0 = time.perf_counter()
        trials, scores = read_scores(workdir / "metrics.score", require_labels=True)
        compute_metrics(scores, trials.labels)
        result["seconds"] = time.perf_counter() - t0
    else:
        raise ValueError(f"unknown case {case!r}")
    after = _peak_mb()
    result["peak_mb"] = after
    result["added_mb"] = max(0.0, after - before)
    return result


CASES = ("asnorm_files", "asnorm_core", "asnorm_loop", "metrics_core", "metrics_files")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1/10 scale, to check that it runs")
    p.add_argument("--loop-trials", type=int, default=2000,
                   help="trials the per-trial loop is timed on before extrapolating")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--workdir", default=None, help="where to write the data (default: a temp dir)")
    p.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.case:  # child process
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(run_case(args.case, Path(args.workdir), args.loop_trials)))
        return 0

    size = SIZES["quick" if args.quick else "full"]
    tmp = tempfile.TemporaryDirectory(prefix="bench_scoring.") if args.workdir is None else None
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prepare(workdir, size)
    print(f"data: {size} dim {DIM}, written in {time.perf_counter() - t0:.1f} s to {workdir}",
          flush=True)
    rows = []
    for case in CASES:
        cmd = [sys.executable, __file__, "--case", case, "--workdir", str(workdir),
               "--loop-trials", str(args.loop_trials)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {case}: {rows[-1]['seconds']:.2f} s", flush=True)
    print()
    trials = f"{size['trials']:,} trials, {size['utts']:,} utts, cohort {size['cohort']:,}"
    what = {
        "asnorm_files": f"AS-norm top {TOP_N}, files in/out ({trials})",
        "asnorm_core": f"AS-norm top {TOP_N}, in memory ({trials})",
        "asnorm_loop": f"AS-norm per-trial loop ({trials})",
        "metrics_core": f"EER+minDCF, in memory ({size['metric_trials']:,} trials)",
        "metrics_files": f"EER+minDCF, score file in ({size['metric_trials']:,} trials)",
    }
    print("| case | wall s | peak RSS MB | added MB | note |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        note = "; ".join(x for x in (r.get("note"), REFERENCE.get(r["case"])) if x)
        print(f"| {what[r['case']]} | {r['seconds']:.2f} | {r['peak_mb']:.0f} | "
              f"{r['added_mb']:.0f} | {note} |")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
