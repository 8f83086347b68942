import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_committed_artifacts_match_a_fresh_compile():
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is required to compile the contracts (make install)")
    proc = subprocess.run([node, "contracts/compile.cjs", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "build matches sources" in proc.stdout
