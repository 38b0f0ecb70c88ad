"""Print a Markdown results table for one mini-recipe experiment (stage 6).

    python local/results_table.py --exp_dir exp/lap_astp --top_n 100
    python local/results_table.py --exp_dir exp/lap_astp exp/mhfa ...   # several systems

Reads each ``exp_dir``'s ``scores/metrics.json`` (written by compute_metrics),
``config.yaml`` (the backend name) and ``train_seconds`` (stage 3's wall time).
"""

import argparse
import json
from pathlib import Path

import yaml


def rows(exp_dir: Path, top_n: int):
    metrics = json.loads((exp_dir / "scores" / "metrics.json").read_text())
    model = yaml.safe_load((exp_dir / "config.yaml").read_text())["model"]
    secs = exp_dir / "train_seconds"
    train = f"{int(secs.read_text()) / 60:.1f} min" if secs.is_file() else "n/a"
    for path, m in metrics.items():
        name = Path(path).name
        scoring = f"AS-norm (top {top_n})" if f".asnorm{top_n}." in name else "cosine"
        yield (f"| {exp_dir.name} | {model} | {scoring} | {m['eer']:.2f} | "
               f"{m['min_dcf_0.01']:.3f} | {m['min_dcf_0.05']:.3f} | {train} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--exp_dir", nargs="+", required=True)
    p.add_argument("--top_n", type=int, default=100)
    args = p.parse_args()
    print("| exp | backend | scoring | EER (%) | minDCF 0.01 | minDCF 0.05 | training |")
    print("|---|---|---|---|---|---|---|")
    for d in args.exp_dir:
        for line in rows(Path(d), args.top_n):
            print(line)


if __name__ == "__main__":
    main()
