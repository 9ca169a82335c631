"""CPU against GPU: identical integer counts on every device that this machine has.

Runs on machines with CUDA or MPS; elsewhere the tests are skipped with that reason (the
torch backend itself is tested on the CPU in test_engine.py, against NumPy).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import segeval

torch = pytest.importorskip("torch")
DEVICES = [d for d, ok in (("cuda", torch.cuda.is_available()),
                           ("mps", torch.backends.mps.is_available())) if ok]
needs_gpu = pytest.mark.skipif(not DEVICES, reason="no CUDA or MPS device on this machine")
SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def comparable(report):
    data = report.to_dict()
    data.pop("run")
    return data


@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("folder", ["nifti3d", "png2d"])
def test_files_on_gpu_equal_cpu(device, folder):
    cpu = segeval.evaluate(SAMPLE / folder / "pred", SAMPLE / folder / "gt", device="cpu")
    gpu = segeval.evaluate(SAMPLE / folder / "pred", SAMPLE / folder / "gt", device=device)
    assert comparable(gpu) == comparable(cpu)
    assert gpu.run["device"] == device


@needs_gpu
@pytest.mark.parametrize("device", DEVICES)
def test_tensors_on_gpu_are_counted_there(device):
    rng = np.random.default_rng(3)
    reference = rng.integers(0, 6, size=(40, 30, 20))
    probabilities = rng.random((6, 40, 30, 20)).astype(np.float32)
    cpu = segeval.evaluate(probabilities, reference, channel_axis=0, device="cpu")
    tensors = (torch.from_numpy(probabilities).to(device), torch.from_numpy(reference).to(device))
    gpu = segeval.evaluate(*tensors, channel_axis=0)  # auto: the tensors' device
    assert gpu.run["device"].startswith(device)
    assert comparable(gpu) == comparable(cpu)


def test_gpu_benchmark_script_runs_and_checks_counts_on_the_cpu(tmp_path):
    """benchmarks/gpu.py is what a session with a GPU runs for issue 4's throughput target;
    here it runs on the CPU so that it cannot rot, and its counts must equal NumPy's."""
    import json
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
    out = tmp_path / "gpu.json"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())["rows"]
    assert [(r["shape"], r["classes"]) for r in rows] == [
        ("64×64×40", 4), ("64×64×40", 16), ("96×96×64", 4), ("96×96×64", 16)]
    assert all(r["agrees_with_numpy"] and r["count_s"] > 0 for r in rows)
    assert all(r["voxels"] == int(np.prod([int(s) for s in r["shape"].split("×")]))
               for r in rows)
    assert "| 96×96×64 | 16 |" in done.stdout
