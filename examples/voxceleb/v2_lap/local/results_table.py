"""Markdown results table of one or more experiments: a row per system and scoring,
EER (%) / minDCF(0.01) per trial list.

    python local/results_table.py exp/lap_astp_wavlm_base_plus exp/lap_astp_wavlm_base_plus_phase2

Reads every ``<exp_dir>/scores/metrics*.json`` (written by compute_metrics through
tools/score.sh and tools/calibrate.sh). A score file ``<trials>[.asnorm<N>][.qmf].score``
gives the trial list (column) and the scoring (row).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

SCORE_NAME = re.compile(
    r"^(?P<trials>.+?)(?:\.kaldi)?(?P<norm>\.asnorm\d+)?(?P<qmf>\.qmf)?\.score$"
)


def scoring_name(norm: str | None, qmf: str | None) -> str:
    name = f"AS-norm (top {norm[len('.asnorm'):]})" if norm else "cosine"
    return name + " + QMF" if qmf else name


def collect(exp_dir: Path) -> dict[str, dict[str, dict]]:
    """``{scoring: {trial list: metrics}}`` of one experiment."""
    out: dict[str, dict[str, dict]] = {}
    for path in sorted((exp_dir / "scores").glob("metrics*.json")):
        for score_file, m in json.loads(path.read_text()).items():
            match = SCORE_NAME.match(Path(score_file).name)
            if match is None:
                continue
            scoring = scoring_name(match["norm"], match["qmf"])
            out.setdefault(scoring, {})[match["trials"]] = m
    return out


def table(exp_dirs: list[Path]) -> list[str]:
    rows = {d.name: collect(d) for d in exp_dirs}
    lists = sorted({t for r in rows.values() for s in r.values() for t in s})
    head = "| system | scoring | " + " | ".join(f"{t} EER (%) / minDCF 0.01" for t in lists) + " |"
    lines = [head, "|---|---|" + "---|" * len(lists)]
    for name, systems in rows.items():
        for scoring, per_list in systems.items():
            cells = []
            for t in lists:
                m = per_list.get(t)
                cells.append(f"{m['eer']:.3f} / {m['min_dcf_0.01']:.4f}" if m else "")
            lines.append(f"| {name} | {scoring} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("exp_dir", nargs="+", type=Path)
    args = p.parse_args()
    print("\n".join(table(args.exp_dir)))


if __name__ == "__main__":
    main()
