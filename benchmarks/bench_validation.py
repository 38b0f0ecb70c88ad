"""Validation cost as a share of training time, from experiments' ``train_log.jsonl``.

Each epoch record of ``train_log.jsonl`` carries the epoch's training time
(``train_seconds``, the epoch loop; ``train_cpu_seconds``, rank 0's process CPU
time) and, when the epoch was validated, the validation's (``valid.seconds``,
``valid.cpu_seconds``: embedding the set, gathering, scoring). This prints one
row per epoch and a total per experiment, as a Markdown table::

    bash examples/mini/run.sh --quick --workdir /tmp/mini --stop_stage 3
    python benchmarks/bench_validation.py /tmp/mini/exp_quick/lap_astp

The CPU columns are the ones to read on a shared machine: other jobs stretch wall
times, much less so a process's own CPU time. The training CPU time leaves out the
data-loader workers (``num_workers``), the validation's includes its audio decoding
(its loader runs in the training process), so the CPU share leans against validation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wespeaker_lap.io.train_log import TRAIN_LOG, read_train_log


def rows_of(exp: Path) -> list[dict]:
    """The epoch records of ``exp``'s training log."""
    records = read_train_log(exp / TRAIN_LOG)
    return [r for r in records if r.get("kind") == "epoch"]


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole > 0 else "-"


def table(exps: list[Path]) -> str:
    lines = ["| experiment | epoch | train wall (s) | valid wall (s) | wall share | "
             "train cpu (s) | valid cpu (s) | cpu share | valid utts | valid EER (%) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for exp in exps:
        tw = vw = tc = vc = 0.0
        for r in rows_of(exp):
            v = r.get("valid") or {}
            t_wall, t_cpu = float(r.get("train_seconds") or 0), float(r.get("train_cpu_seconds")
                                                                     or 0)
            v_wall, v_cpu = float(v.get("seconds") or 0), float(v.get("cpu_seconds") or 0)
            tw, vw, tc, vc = tw + t_wall, vw + v_wall, tc + t_cpu, vc + v_cpu
            eer = f"{v['eer']:.2f}" if v.get("eer") is not None else "-"
            lines.append(f"| {exp.name} | {r['epoch']} | {t_wall:.1f} | {v_wall:.1f} | "
                         f"{_pct(v_wall, t_wall)} | {t_cpu:.1f} | {v_cpu:.1f} | "
                         f"{_pct(v_cpu, t_cpu)} | {v.get('num_utts', '-')} | {eer} |")
        lines.append(f"| {exp.name} | **all** | {tw:.1f} | {vw:.1f} | **{_pct(vw, tw)}** | "
                     f"{tc:.1f} | {vc:.1f} | **{_pct(vc, tc)}** | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("exp_dirs", nargs="+", type=Path, help="experiment directories")
    args = p.parse_args(argv)
    missing = [e for e in args.exp_dirs if not (e / TRAIN_LOG).is_file()]
    if missing:
        print(f"bench_validation.py: no {TRAIN_LOG} in {', '.join(map(str, missing))}",
              file=sys.stderr)
        return 1
    print(table(args.exp_dirs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
