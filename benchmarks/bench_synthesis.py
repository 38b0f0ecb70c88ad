"""Where corpus synthesis (the mini recipe's stage 1) spends its time, as Markdown tables.

Runs ``tools/synth/synth_corpus.py``'s ``main`` in a child process with ``--nj 1`` (so every
step runs under the timers) on a small deterministic slice of the ``--quick`` corpus, with
``time.perf_counter`` timers wrapped around each engine's ``synthesize``, every child process
(``subprocess.run``: espeak-ng, flite, festival, sox, ffmpeg), each effect step and the file
writes. Timers nest: a row's *self* seconds leave out the timed steps inside it, so the
rows of a run add up to its total. CPU seconds are the process's and its finished child
processes' (user + system), steadier than wall seconds on a shared machine. Work done in
helper threads (the espeak-ng language probe) counts in the step that waits for it. ::

    python benchmarks/bench_synthesis.py                       # this tree's tools/synth
    python benchmarks/bench_synthesis.py --compare ../other-checkout  # and another tree's, in turn

With ``--compare`` each tree synthesizes the same slice into its own dir (``--repeats``
times, alternating) and the script checks that the corpora are byte-identical (sha256 over
every file, the output dir's own path replaced in the lists). Times on a shared machine are
only comparable as ratios within one run of this script.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The slice: the --quick corpus with fewer speakers (every engine still gets some).
SLICE = ["--quick", "--seed", "7", "--num_train_spk", "16", "--num_test_spk", "4",
         "--num_unseen_spk", "4", "--num_pool_spk", "8", "--num_valid_spk", "4",
         "--num_noise", "2", "--num_rirs", "4"]
ENGINES = ("espeak", "flite", "festival")

# (label, module, attribute[, class]) of the timed steps; absent ones are skipped, so the
# same list times older and newer trees.
TIMED = [
    ("total", "synth_corpus", "main", None),
    ("probe engines and voices", "synth_corpus", "available_engines", None),
    ("espeak data dirs", "tts_engines", "prepare", "EspeakEngine"),
    ("speaker (text sizing, gain, padding, noise floor)", "synth_corpus", "synth_speaker", None),
    ("text generation", "text_gen", "utterance_text", None),
    ("espeak synthesize", "tts_engines", "synthesize", "EspeakEngine"),
    ("flite synthesize", "tts_engines", "synthesize", "FliteEngine"),
    ("festival synthesize", "tts_engines", "synthesize", "FestivalEngine"),
    ("read engine wav", "tts_engines", "_read", None),
    ("resample to 16 kHz (soxr)", "synth_corpus", "to_16k", None),
    ("sox pitch", "tts_engines", "sox_pitch", None),
    ("timbre filter", "tts_engines", "timbre_eq", None),
    ("active span", "synth_corpus", "active_span", None),
    ("channel", "channel", "apply_channel", None),
    ("RIR synthesis", "noise_rir", "synth_rir", None),
    ("reverb convolution", "channel", "fftconvolve", None),
    ("coloured noise", "noise_rir", "coloured_noise", None),
    ("telephone band", "channel", "telephone", None),
    ("codec round trip", "channel", "codec", None),
    ("gsm round trip", "channel", "gsm", None),
    ("write wav", "synth_corpus", "write_wav", None),
    ("noise set", "synth_corpus", "make_noise_set", None),
    ("RIR set", "synth_corpus", "make_rir_set", None),
    ("data dirs", "synth_corpus", "write_data_dir", None),
    ("trials", "synth_corpus", "make_trials", None),
    ("speakers.tsv, variants", "synth_corpus", "write_speakers", None),
]


# --------------------------------------------------------------------------- child
def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its finished children."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + ch.ru_utime + ch.ru_stime


class Timers:
    """Nested timers (perf_counter wall seconds, CPU seconds of the process and its child
    processes) keyed by the path of labels, outermost first."""

    def __init__(self) -> None:
        self.stack: list[list] = []  # [label, wall start, cpu start, children wall, children cpu]
        # path -> [calls, units, wall incl, wall self, cpu incl, cpu self]
        self.stats: dict[tuple[str, ...], list[float]] = {}
        self.speakers: dict[str, set[str]] = {}

    def wrap(self, label: str, fn, units=None):
        def timed(*args, **kwargs):
            if threading.current_thread() is not threading.main_thread():
                return fn(*args, **kwargs)  # counted in the main thread's step that waits
            self.stack.append([label, time.perf_counter(), cpu_seconds(), 0.0, 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                lab, t0, c0, inner, inner_cpu = self.stack.pop()
                dt, dc = time.perf_counter() - t0, cpu_seconds() - c0
                path = tuple(f[0] for f in self.stack) + (lab,)
                st = self.stats.setdefault(path, [0, 0, 0.0, 0.0, 0.0, 0.0])
                st[0] += 1
                st[1] += units(args) if units else 1
                st[2] += dt
                st[3] += dt - inner
                st[4] += dc
                st[5] += dc - inner_cpu
                if self.stack:
                    self.stack[-1][3] += dt
                    self.stack[-1][4] += dc
        return timed


def run_child(synth_dir: Path, out: Path, synth_args: list[str]) -> dict:
    """Synthesize with timers in this process; returns the timer tree and per-engine counts."""
    sys.path.insert(0, str(synth_dir))
    mods = {m: importlib.import_module(m)
            for m in ("synth_corpus", "tts_engines", "channel", "noise_rir", "text_gen")}
    timers = Timers()
    for label, mod, attr, cls in TIMED:
        owner = getattr(mods[mod], cls) if cls else mods[mod]
        if attr not in vars(owner):
            continue
        units = None
        if attr == "synthesize":
            engine = label.split()[0]

            def units(args, engine=engine):
                timers.speakers.setdefault(engine, set()).add(args[1].spk)
                return len(args[2])
        setattr(owner, attr, timers.wrap(label, vars(owner)[attr], units))
    real_run = subprocess.run

    def run(cmd, *args, **kwargs):
        name = Path(str(cmd[0] if isinstance(cmd, (list, tuple)) else cmd).split()[0]).name
        return timers.wrap(f"process {name}", real_run)(cmd, *args, **kwargs)

    subprocess.run = run
    mods["synth_corpus"].main(["--out", str(out), "--nj", "1", *synth_args])
    return {"stats": [[list(p), *v] for p, v in timers.stats.items()],
            "speakers": {k: len(v) for k, v in timers.speakers.items()}}


# --------------------------------------------------------------------------- parent
def corpus_digest(out: Path) -> tuple[str, int]:
    """sha256 over every file of a corpus (relative path + bytes, ``out`` replaced by a
    placeholder) and the number of files."""
    h = hashlib.sha256()
    files = sorted(p for p in out.rglob("*") if p.is_file())
    for p in files:
        h.update(str(p.relative_to(out)).encode() + b"\0")
        h.update(p.read_bytes().replace(str(out.resolve()).encode(), b"<OUT>") + b"\0")
    return h.hexdigest(), len(files)


def profile_tree(tree: Path, out: Path, synth_args: list[str]) -> dict:
    """One timed synthesis with ``tree``'s tools/synth in a fresh process."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONDONTWRITEBYTECODE="1")  # no __pycache__
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child",
           "--synth_dir", str(tree / "tools" / "synth"), "--out", str(out), "--", *synth_args]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"bench_synthesis.py: synthesis with {tree} failed:\n{r.stderr[-3000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["wall"] = wall
    res["digest"], res["files"] = corpus_digest(out)
    return res


def merge(runs: list[dict]) -> dict:
    """Runs of one tree -> path -> [calls, units, wall, wall self, cpu, cpu self] per run."""
    acc: dict[tuple, list[float]] = {}
    for r in runs:
        for path, *v in r["stats"]:
            a = acc.setdefault(tuple(path), [0.0] * 6)
            for i, x in enumerate(v):
                a[i] += x / len(runs)
    return acc


def by_engine(stats: dict, speakers: dict) -> list[tuple]:
    """(engine, speakers, synthesize calls, utterances, processes, wall s, cpu s) rows."""
    rows = []
    for eng in ENGINES:
        label = f"{eng} synthesize"
        calls = utts = wall = cpu = procs = 0.0
        for path, (c, u, w, _, cp, _) in stats.items():
            if path[-1] == label:
                calls, utts, wall, cpu = calls + c, utts + u, wall + w, cpu + cp
            elif label in path and path[-1].startswith("process "):
                procs += c
        if calls:
            rows.append((eng, speakers.get(eng, 0), calls, utts, procs, wall, cpu))
    return rows


def by_step(stats: dict) -> dict[str, list[float]]:
    """Label -> [calls, wall self, cpu self] summed over the label's places in the tree;
    processes are named with the step that started them."""
    out: dict[str, list[float]] = {}
    for path, (c, _, _, ws, _, cs) in stats.items():
        label = path[-1]
        if label.startswith("process ") and len(path) > 1:
            label = f"{path[-2]}: {label}"
        o = out.setdefault(label, [0.0, 0.0, 0.0])
        o[0] += c
        o[1] += ws
        o[2] += cs
    return out


def _ratio(new: float, old: float) -> str:
    return f"{new / old:.2f}" if old > 0.005 else "-"


def tables(names: list[str], results: dict[str, list[dict]]) -> str:
    """The per-engine table of each tree, then one table of the steps of all trees (with
    the last tree's ratio to the first when there are two)."""
    lines = []
    for name in names:
        runs = results[name]
        lines += [f"**{name}** (mean of {len(runs)} run(s))", "",
                  "| engine | speakers | synthesize calls | utterances | processes | wall s | "
                  "cpu s | wall s / utterance | cpu s / utterance |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for eng, spk, calls, utts, procs, wall, cpu in by_engine(merge(runs), runs[0]["speakers"]):
            lines.append(f"| {eng} | {spk} | {calls:.0f} | {utts:.0f} | {procs:.0f} | "
                         f"{wall:.2f} | {cpu:.2f} | {wall / utts:.3f} | {cpu / utts:.3f} |")
        lines.append("")
    steps = {n: by_step(merge(results[n])) for n in names}
    total = {n: [1, sum(v[1] for v in steps[n].values()), sum(v[2] for v in steps[n].values())]
             for n in names}
    pair = len(names) == 2
    head = "| step (self seconds) | " + " | ".join(
        f"{n}: calls | wall s | cpu s | cpu share" for n in names)
    head += " | wall ratio | cpu ratio |" if pair else " |"
    lines += [head, "|---|" + "---:|" * (4 * len(names) + 2 * pair)]
    labels: list[str] = []
    for n in names:
        labels += [k for k in steps[n] if k not in labels]
    labels.sort(key=lambda k: -max(steps[n].get(k, [0, 0.0, 0.0])[2] for n in names))
    for k in labels + ["**total**"]:
        vals = [total[n] if k == "**total**" else steps[n].get(k, [0, 0.0, 0.0]) for n in names]
        cells = [f"{c:.0f} | {w:.2f} | {cp:.2f} | {100 * cp / max(total[n][2], 1e-9):.1f} %"
                 for n, (c, w, cp) in zip(names, vals, strict=True)]
        row = f"| {k} | " + " | ".join(cells)
        if pair:
            row += f" | {_ratio(vals[1][1], vals[0][1])} | {_ratio(vals[1][2], vals[0][2])}"
        lines.append(row + " |")
    lines += ["", "| tree | runs | child wall (s), each | files | sha256 |",
              "|---|---:|---|---:|---|"]
    for n in names:
        runs = results[n]
        walls = ", ".join(f"{r['wall']:.1f}" for r in runs)
        lines.append(f"| {n} | {len(runs)} | {walls} | {runs[0]['files']} | "
                     f"{runs[0]['digest'][:16]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--compare", type=Path, action="append", default=[],
                   help="another tree (repository root) to profile the same way (repeatable)")
    p.add_argument("--repeats", type=int, default=1, help="runs per tree, alternating")
    p.add_argument("--workdir", type=Path, help="where the corpora go (default: a temp dir)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--synth_dir", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("synth_args", nargs="*",
                   help=f"synth_corpus.py options after '--' (default: {' '.join(SLICE)})")
    args = p.parse_args(argv)
    synth_args = args.synth_args or SLICE
    if args.child:
        print(json.dumps(run_child(args.synth_dir, args.out, synth_args)))
        return 0
    trees = {"this tree": ROOT}
    for i, t in enumerate(args.compare):
        if not (t / "tools" / "synth" / "synth_corpus.py").is_file():
            raise SystemExit(f"bench_synthesis.py: --compare {t}: no tools/synth/synth_corpus.py")
        trees[f"{t}" if t.name else f"tree{i + 2}"] = t
    names = list(trees)
    if len(names) == 2:  # the other tree is the baseline: first column
        names = names[::-1]
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench_synth_", dir=args.workdir) as work:
        for rep in range(args.repeats):
            for k, n in enumerate(names):
                out = Path(work) / f"corpus{k}"
                results[n].append(profile_tree(trees[n], out, synth_args))
                print(f"# {n} run {rep + 1}: {results[n][-1]['wall']:.1f} s", file=sys.stderr)
    print(f"Slice: synth_corpus.py --nj 1 {' '.join(synth_args)}\n")
    print(tables(names, results))
    digests = {results[n][0]["digest"] for n in names}
    if len(digests) > 1:
        print("\n**The corpora differ** (sha256 above).")
        return 1
    if len(names) > 1:
        print("\nThe corpora are byte-identical.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
