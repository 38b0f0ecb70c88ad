"""Train a speaker embedding extractor (frontend + backend + AAM head).

Single process (CPU or one GPU)::

    python -m wespeaker_lap.bin.train --config conf/lap_astp_wavlm_base_plus.yaml \\
        --exp_dir exp/lap --train_data data/vox2_dev/shard.list \\
        --train_label data/vox2_dev/utt2spk --data_type shard --num_epochs 40

One or many nodes: the same arguments after ``torchrun --nnodes N
--nproc_per_node G --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT -m
wespeaker_lap.bin.train`` (one process per GPU with NCCL; CPU processes use gloo).

``--print_config`` prints the merged config (the overrides applied, every
default filled, each key headed by a comment saying what it means) as YAML and
exits without writing or starting anything.

Every option except ``--config``, ``--device`` and ``--print_config`` is a
config override in the config's grammar (``--model_args.heads 8``,
``--num_epochs=3``); values are YAML scalars. The whole config is checked
before any work: an unknown key is an error naming it.
``--checkpoint exp/x/models/model_10.pt`` (or ``state_10.pt``, or ``latest``)
resumes after epoch 10 exactly;
``--model_init`` starts phase 2/3 from the previous phase's weights.
``latest`` skips unreadable (truncated) state files with a warning, and a
resume deletes the ``.*.tmp`` files a killed save left. Nothing is written to
``exp_dir`` until the config, the input files and the model are known to be good.

Outputs under ``exp_dir``: ``config.yaml`` (merged config; versions, command
line and derived sizes as comments; the SSL model's path made absolute),
``frontend.json`` (the SSL model's fingerprint, checked by every later load),
``train.log``, ``models/model_{epoch}.pt``
(every ``save_epoch_interval`` epochs and the last ``num_avg``),
``models/state_{epoch}.pt`` (resume, the newest ``keep_last_states``),
``models/final_model.pt``, ``train_log.jsonl`` (one JSON object per logged step and
per epoch: loss, accuracy, lr, margin, gradient norm, samples/s, peak memory,
validation EER and minDCF, layer use; see :mod:`wespeaker_lap.utils.train_log`) and
``tensorboard/`` (the same scalars).

Validation: ``--valid_data DIR --valid_trials FILE`` (a Kaldi data dir of speakers
held out of training, and its trial list) embeds and scores the set every
``valid_args.every_n_epochs`` epochs and after the last (see
:mod:`wespeaker_lap.utils.validation`); ``--keep_best K`` then keeps only the
``model_*.pt`` of the K best-validated epochs, the last ``num_avg`` and the newest.
See :mod:`wespeaker_lap.io.checkpoints` for the file contract,
:mod:`wespeaker_lap.utils.training_state` for what a resume file holds, and
:mod:`wespeaker_lap.utils.distributed` for the learning-rate scaling rule.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from wespeaker_lap.checks import ConfigError
from wespeaker_lap.io.checkpoints import CheckpointError
from wespeaker_lap.utils.config import format_config, load_config
from wespeaker_lap.utils.distributed import cleanup, env_world, init_distributed
from wespeaker_lap.utils.logging_utils import setup_logging
from wespeaker_lap.utils.trainer import train

logger = logging.getLogger("wespeaker_lap.train")


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --config CONFIG [--device {auto,cpu,cuda}] [--print_config] "
              "[--key value ...]",
        allow_abbrev=False,  # every other option is a config override, never a prefix
    )
    p.add_argument("--config", required=True, help="training config (YAML, WeSpeaker grammar)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: one GPU per process when CUDA is available, else CPU")
    p.add_argument("--print_config", action="store_true",
                   help="print the merged config (overrides applied, every default filled, "
                   "a comment per key) as YAML and exit; nothing is written or started")
    args, rest = p.parse_known_args(argv)
    return args, rest


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = parse_args(argv)
    rank = env_world()[0]
    setup_logging(rank=rank)
    try:
        cfg = load_config(args.config, overrides)  # before any work: a bad key stops here
    except (ConfigError, FileNotFoundError) as e:
        logger.error("%s", e)
        return 2
    if args.print_config:
        title = f"{args.config} with overrides {overrides}" if overrides else args.config
        sys.stdout.write(format_config(cfg, f"# merged config: {title}; every default filled\n"))
        return 0
    try:
        info = init_distributed(args.device, cfg.get("gpus"))
        train(cfg, info, argv)
    except (ConfigError, CheckpointError, OSError) as e:  # bad input, bad checkpoint, full disk
        logger.error("%s", e)
        return 2
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
