"""Two CPU ranks under mpirun, at ZeRO stage 2 and 3, train to the masters of one rank that
accumulates both ranks' shares (ranks_check.py does the work on each rank)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def test_two_cpu_ranks_equal_one():
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        pytest.skip("no mpirun (the build has no MPI)")
    script = Path(__file__).with_name("ranks_check.py")
    cmd = [mpirun, "-np", "2", "--oversubscribe", "--allow-run-as-root", "--mca", "btl", "self,vader", "--mca",
           "btl_vader_single_copy_mechanism", "none", sys.executable, str(script)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert out.count("ok") >= 2 and "ranks_check rank 0 of 2: ok" in out and "ranks_check rank 1 of 2: ok" in out, out[-4000:]
