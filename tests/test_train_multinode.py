"""Two "nodes" on this machine: two launches of train.py with NODE_RANK 0 and 1 on localhost over gloo
(trainer=ddp_sim trainer.num_nodes=2 trainer.devices=1), as a SLURM or torchrun multi-node job runs them.
Both ranks must end with identical weights."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from conftest import REPO
from test_train_ddp import _assert_identical_ranks, _ddp_overrides


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_nodes_on_localhost_agree(tmp_path):
    port = _free_port()
    overrides = [*_ddp_overrides("qgac_stage1"), "trainer.devices=1", "trainer.num_nodes=2",
                 "+callbacks.rank_weights._target_=jpegrestore.utils.callbacks.SaveRankWeights",
                 f"+callbacks.rank_weights.dirpath={tmp_path}/ranks"]
    processes = []
    for node in (0, 1):
        out = tmp_path / f"node{node}"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "NODE_RANK": str(node)}
        command = [sys.executable, "train.py", *overrides, f"hydra.run.dir={out}", f"paths.log_dir={out}"]
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, stderr) in zip(processes, outputs):
        assert p.returncode == 0, stderr[-4000:]
    _assert_identical_ranks(tmp_path, 2, ("net.y_net.",))
