"""Mean +- std EER over seeds, per system, scoring and test set (compare_backends.sh).

    python local/compare_table.py exp/lap_astp_seed1 exp/lap_astp_seed2 ...

Reads each experiment's ``scores/metrics_ci.json`` (local/score_ci.py). Experiments
whose names differ only in the ``_seed<N>`` suffix form one system. Prints a
Markdown table: mean +- std (over seeds) of the EER, the mean of the per-seed
speaker-bootstrap 95% intervals, and mean minDCF 0.01 / 0.05.

A directory with a ``peer.txt`` is a peer system pre-trained elsewhere
(compare_backends.sh's ``resemblyzer``): its row is named by the first line of that
file, has no seeds ("pre-trained" in the seeds column, no std) and comes after the
project's systems.
"""

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    dirs = [Path(d) for d in (sys.argv[1:] if argv is None else argv)]
    if not dirs:
        raise SystemExit(__doc__)
    runs = defaultdict(list)  # (system, set, scoring) -> [metrics]
    for d in dirs:
        f = d / "scores" / "metrics_ci.json"
        if not f.is_file():
            print(f"(missing: {f})", file=sys.stderr)
            continue
        peer = d / "peer.txt"
        if peer.is_file():
            label = peer.read_text(encoding="utf-8").strip().splitlines()
            if not label:
                raise SystemExit(f"{peer}: empty; its first line names the peer's row")
            system = (True, label[0])
        else:
            system = (False, re.sub(r"_seed\d+$", "", d.name))
        for m in json.loads(f.read_text()).values():
            runs[(system, m["set"], m["scoring"])].append(m)
    print("| system | test set | scoring | seeds | EER (%) mean +- std | mean 95% CI | "
          "minDCF 0.01 | minDCF 0.05 |")
    print("| --- | --- | --- | ---: | --- | --- | ---: | ---: |")
    for ((is_peer, system), name, scoring), ms in sorted(runs.items()):
        eer = 100 * np.array([m["eer"] for m in ms])
        lo = 100 * np.mean([m["eer_ci"][0] for m in ms])
        hi = 100 * np.mean([m["eer_ci"][1] for m in ms])
        if is_peer:
            seeds, mean = "pre-trained", f"{eer.mean():.2f}"
        else:
            std = f"{eer.std(ddof=1):.2f}" if eer.size > 1 else "n/a"
            seeds, mean = eer.size, f"{eer.mean():.2f} +- {std}"
        print(f"| {system} | {name} | {scoring} | {seeds} | {mean} | "
              f"[{lo:.2f}, {hi:.2f}] | {np.mean([m['min_dcf_0.01'] for m in ms]):.3f} | "
              f"{np.mean([m['min_dcf_0.05'] for m in ms]):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
