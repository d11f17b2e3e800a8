"""scripts/slurm/train.sbatch runs as written under a stand-in `srun` with SLURM's environment (one node, one
task, CPU): Lightning takes its ranks from SLURM, the run lands in logs/<task>/runs/slurm-<job id>, and running
the script again (a requeue) resumes from that directory's newest checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

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


def test_sigusr1_requeue_checkpoint_resumes_at_its_step_with_its_weights(tmp_path, monkeypatch):
    """Lightning's SLURM auto-requeue, in process: SIGUSR1 at step 3 (after last.ckpt was written at step 2)
    saves hpc_ckpt_1.ckpt into the run directory and calls `scontrol requeue <job id>` (a stand-in records it);
    the job is then killed (nothing else saved). The requeued job, with the same job id and ckpt_path=last,
    resumes from hpc_ckpt_1.ckpt: at step 3, with its weights and optimizer moments, and ends on the weights of
    a job that was never requeued. Its metrics.csv keeps the rows logged before the requeue."""
    import signal

    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import OnExceptionCheckpoint

    from conftest import compose_train
    from jpegrestore.tasks.runner import build, resolve_ckpt_path

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol.log\n')
    (bin_dir / "scontrol").chmod(0o755)
    for key, value in SLURM_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    logs = tmp_path / "logs"
    run_dir = logs / "slurm_test" / "runs" / "slurm-4242"  # what train.sbatch's hydra.run.dir gives

    def header_index(column, lines):
        return lines[0].split(",").index(column)

    class Killed(BaseException):
        """SLURM ending the requeued job."""

    class RequeueAt(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGUSR1)  # Lightning's handler runs before the next bytecode
                raise Killed

    class StartState(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            self.step = trainer.global_step
            self.weights = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            self.moments = [s["exp_avg"].clone() for s in trainer.optimizers[0].state.values()]

    def job(*extra):
        cfg = compose_train([*TINY, "experiment=qgac_stage1", "task_name=slurm_test", f"paths.log_dir={logs}",
                             "trainer.max_steps=6", "ckpt_path=last", *extra])
        cfg.paths.output_dir = str(run_dir)
        ckpt_path = resolve_ckpt_path(cfg)
        datamodule, model, trainer = build(cfg)
        return ckpt_path, datamodule, model, trainer

    ckpt_path, datamodule, model, trainer = job()
    assert ckpt_path is None
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, OnExceptionCheckpoint)] + [RequeueAt()]
    try:
        trainer.fit(model, datamodule=datamodule)
        raise AssertionError("the job was not killed")
    except Killed:
        pass
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    hpc = run_dir / "hpc_ckpt_1.ckpt"
    saved = torch.load(hpc, weights_only=False)
    assert saved["global_step"] == 3
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2

    metrics_csv = run_dir / "csv" / "metrics.csv"
    before = metrics_csv.read_text().splitlines()  # flushed by Lightning's handler before it saved
    logged_steps = {row.split(",")[header_index("step", before)] for row in before[1:]}
    assert len(before) > 1

    ckpt_path, datamodule, model, trainer = job()
    assert ckpt_path == str(hpc)
    start = StartState()
    trainer.callbacks.append(start)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    assert start.step == 3 and trainer.global_step == 6
    after = metrics_csv.read_text().splitlines()  # the requeued job continued the run's metrics.csv
    assert logged_steps <= {row.split(",")[header_index("step", after)] for row in after[1:]}
    assert len(after) > len(before)
    assert saved["state_dict"].keys() == start.weights.keys()
    assert all(torch.equal(v, start.weights[k]) for k, v in saved["state_dict"].items())
    expected = [s["exp_avg"] for s in saved["optimizer_states"][0]["state"].values()]
    assert len(expected) == len(start.moments) > 0
    assert all(torch.equal(a, b) for a, b in zip(expected, start.moments))
    # and it ends where a job that was never requeued ends (the data position was saved too)
    cfg = compose_train([*TINY, "experiment=qgac_stage1", "trainer.max_steps=6"], tmp_path / "uninterrupted")
    datamodule, reference, trainer = build(cfg)
    trainer.fit(reference, datamodule=datamodule)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in reference.state_dict().items())
