"""tools/slurm: the sbatch script and its per-node launcher, on loopback with a faked Slurm."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import REPO, child_env, kill_tree, make_corpus, tiny_config, write_config

from wespeaker_lap.io.checkpoints import checkpoint_path

SLURM = REPO / "tools" / "slurm"

# srun as Slurm runs it inside an allocation: the command once per node, each with
# its node id; here every "node" is a background process on this machine.
FAKE_SRUN = """#!/usr/bin/env bash
echo "$@" > "$FAKE_SLURM_DIR/srun.args"
while [ $# -gt 0 ] && [[ $1 == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_JOB_NUM_NODES; i++)); do
  SLURM_NODEID=$i SLURM_PROCID=$i SLURM_LOCALID=0 SLURM_NNODES=$SLURM_JOB_NUM_NODES \\
    SLURM_STEP_NODELIST=$SLURM_JOB_NODELIST "$@" > "$FAKE_SLURM_DIR/node$i.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
"""

# every "node" of the fake allocation is this machine
FAKE_SCONTROL = """#!/usr/bin/env bash
echo "$@" > "$FAKE_SLURM_DIR/scontrol.args"
[ "$1 $2" = "show hostnames" ] || exit 2
for ((i = 0; i < SLURM_JOB_NUM_NODES; i++)); do echo localhost; done
"""


def _fake_bin(tmp_path: Path, scontrol: bool) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = {"srun": FAKE_SRUN, **({"scontrol": FAKE_SCONTROL} if scontrol else {})}
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def _slurm_env(tmp_path: Path, bin_dir: Path, **slurm: str) -> dict[str, str]:
    env = child_env()
    for k in [k for k in env if k.startswith(("SLURM_", "RDZV_"))] + ["CUDA_VISIBLE_DEVICES"]:
        env.pop(k, None)
    path = [str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")]
    env.update(PATH=os.pathsep.join(path), FAKE_SLURM_DIR=str(tmp_path), **slurm)
    return env


def _job_id_with_free_port() -> int:
    """A job id whose derived rendezvous port (20000 + id % 10000) is free here."""
    rng = random.Random()
    for _ in range(100):
        job = rng.randrange(100_000, 10_000_000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", 20000 + job % 10000))
            except OSError:
                continue
        return job
    raise RuntimeError("no free port in 20000-29999")


def _dry_run(tmp_path, **slurm) -> tuple[str, str]:
    env = _slurm_env(tmp_path, tmp_path, **slurm)  # no fake scontrol: the built-in parser
    proc = subprocess.run(["bash", str(SLURM / "launch.sh"), "--dry_run", "tools/train.sh",
                           "--config", "c.yaml"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


@pytest.mark.parametrize(("nodelist", "head"), [
    ("gpu[07-08,11],cpu1", "gpu07"), ("n1,n2", "n1"), ("node5", "node5"),
    ("rack[2-3]-n[1-4],x", "rack2-n1"), ("a-[001-3]", "a-001"),
])
def test_launcher_without_scontrol_takes_the_first_host_of_the_nodelist(tmp_path, nodelist,
                                                                         head):
    out, _ = _dry_run(tmp_path, SLURM_JOB_ID="4321987", SLURM_JOB_NUM_NODES="3",
                      SLURM_JOB_NODELIST=nodelist, SLURM_GPUS_ON_NODE="4")
    assert f"--HOST_NODE_ADDR {head}:21987 " in out
    assert "--num_nodes 3 " in out and r"--gpus \[0\,1\,2\,3\] " in out
    assert out.rstrip().endswith("--config c.yaml")


def test_launcher_port_and_run_id_differ_between_jobs_and_honour_overrides(tmp_path):
    a, err = _dry_run(tmp_path, SLURM_JOB_ID="1000", SLURM_NNODES="2",
                      SLURM_JOB_NODELIST="n[1-2]")
    b, _ = _dry_run(tmp_path, SLURM_JOB_ID="1001", SLURM_NNODES="2",
                    SLURM_JOB_NODELIST="n[1-2]")
    assert "n1:21000 " in a and "n1:21001 " in b
    assert "(id slurm-1000)" in err and "--gpus '' " in a  # no GPU: one CPU process
    c, err = _dry_run(tmp_path, SLURM_JOB_ID="1000", SLURM_NNODES="2",
                      SLURM_JOB_NODELIST="n[1-2]", RDZV_PORT="29999", RDZV_ID="mine",
                      CUDA_VISIBLE_DEVICES="2,5")
    assert "n1:29999 " in c and "(id mine)" in err and r"--gpus \[0\,1\] " in c


def test_launcher_errors_name_what_is_missing(tmp_path):
    env = _slurm_env(tmp_path, tmp_path, SLURM_JOB_ID="5", SLURM_JOB_NUM_NODES="2")
    proc = subprocess.run(["bash", str(SLURM / "launch.sh"), "tools/train.sh"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "2 nodes but no SLURM_JOB_NODELIST" in proc.stderr
    proc = subprocess.run(["bash", str(SLURM / "launch.sh"), "no/such/run.sh"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "no such script: no/such/run.sh" in proc.stderr


def test_two_fake_slurm_nodes_train_one_model_through_sbatch_script(tmp_path):
    raw, label = make_corpus(tmp_path / "corpus", num_spk=4, num_utt=4, seconds=0.5)
    cfg = tiny_config(tmp_path / "exp", raw, label, num_epochs=1)
    config = write_config(tmp_path / "c.yaml", cfg)
    job = _job_id_with_free_port()
    env = _slurm_env(tmp_path, _fake_bin(tmp_path, scontrol=True), SLURM_JOB_ID=str(job),
                     SLURM_JOB_NUM_NODES="2", SLURM_JOB_NODELIST="loop[1-2]",
                     SLURM_CPUS_PER_TASK="1")
    proc = subprocess.Popen(
        ["bash", str(SLURM / "train.sbatch"), "tools/train.sh", "--config", str(config),
         "--exp_dir", str(tmp_path / "exp")],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = proc.communicate(timeout=150)[0]
    finally:
        if proc.poll() is None:  # nothing may outlive a failure
            kill_tree(proc.pid)
            proc.wait()
    logs = [(tmp_path / f"node{i}.log").read_text() for i in range(2)]
    assert proc.returncode == 0, out + "\n".join(log[-3000:] for log in logs)
    srun_args = (tmp_path / "srun.args").read_text()
    assert "--ntasks-per-node=1" in srun_args and "--cpus-per-task=1" in srun_args
    assert (tmp_path / "scontrol.args").read_text().split() == ["show", "hostnames",
                                                               "loop[1-2]"]
    port = 20000 + job % 10000
    for i, log in enumerate(logs):  # each node joined the same rendezvous ...
        assert f"node {i} of 2, rendezvous localhost:{port} (id slurm-{job})" in log
    # ... and trained as one of two ranks: 16 utterances / 2 ranks / batch 4 = 2 steps
    assert "steps/epoch of 2 x 4 x 1" in "".join(logs)
    derived = (tmp_path / "exp" / "config.yaml").read_text().splitlines()[2]
    assert "world_size=2" in derived
    assert checkpoint_path(tmp_path / "exp" / "models", 1).is_file()
    assert (tmp_path / "exp" / "models" / "final_model.pt").exists()


def test_slurm_scripts_pass_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed")
    r = subprocess.run(["shellcheck", "-x", "-s", "bash", "launch.sh", "train.sbatch"],
                       cwd=SLURM, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
