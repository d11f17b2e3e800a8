"""scripts/slurm/train.sbatch runs as written under a stand-in `srun` with SLURM's environment (one node, one
task, CPU): Lightning takes its ranks from SLURM, the run lands in logs/<task>/runs/slurm-<job id>, and running
the script again (a requeue) resumes from that directory's newest checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, TINY

SLURM_ENV = {
    "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "jpegrestore", "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1",
    "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_CPUS_PER_TASK": "0", "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost", "SLURM_SUBMIT_DIR": str(REPO),
}


def test_sbatch_script_runs_and_requeue_resumes(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    (bin_dir / "srun").chmod(0o755)
    env = {**os.environ, **SLURM_ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1",
           "PY": sys.executable, "MASTER_PORT": "29517"}
    cpu = ["trainer.accelerator=cpu", "trainer.strategy.process_group_backend=gloo"]
    overrides = [*[o for o in TINY if not o.startswith("trainer=")], "experiment=qgac_stage1",
                 "task_name=slurm_test", f"paths.log_dir={tmp_path}/logs", *cpu]
    script = REPO / "scripts" / "slurm" / "train.sbatch"
    first = subprocess.run(["bash", str(script), *overrides], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    run_dir = tmp_path / "logs" / "slurm_test" / "runs" / "slurm-4242"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "no checkpoint under" in first.stderr + first.stdout
    again = subprocess.run(["bash", str(script), *overrides, "trainer.max_steps=4"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in again.stderr + again.stdout
