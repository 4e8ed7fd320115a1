"""bench/gpu_check.py: its whole code path on tiny CPU sizes (real figures, no failures), its failure reporting,
and the no-CUDA exit. Run as subprocesses: the script sets torch's thread count and sys.path for its process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT, WRAPPER = ROOT / "bench" / "gpu_check.py", ROOT / "bench" / "gpu_check.sh"
PHASES = ["peak", "build[fp32]", "extract[fp32]", "generate[fp32]", "sae[fp32]", "probe[fp32]"]


def run_check(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--small", "--dtypes", "fp32",
                           "--out", str(tmp_path / "scratch"), "--json", str(out), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    return proc, json.loads(out.read_text()) if out.exists() else {}


@pytest.mark.slow
def test_small_cpu_run_prints_every_phase_with_real_figures(tmp_path):
    proc, figures = run_check(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "FAILED" not in proc.stdout + proc.stderr and "SKIPPED" not in proc.stdout
    lines = proc.stdout.splitlines()
    for name in PHASES:  # one figures line per phase, then its row in the summary table
        assert sum(line.startswith(name + " ") for line in lines) == 2, name
    assert "no phase failed" in lines[-1]
    assert not (tmp_path / "scratch").exists()  # the scratch folder is removed
    ph = {name: figures["phases"][name] for name in PHASES}
    assert all(p["status"] == "ok" and p["seconds"] > 0 for p in ph.values())
    assert figures["phases"].keys() == set(PHASES) and figures["failed"] == []

    assert ph["peak"]["figures"]["fp32"] > 0
    ext = ph["extract[fp32]"]["figures"]
    assert ext["rows"] == 300 and ext["hookpoints"] == 4  # 6 s of audio at 50 frames/s, 4 layers
    assert all(ext[f"{k}_audio_s_per_s"] > 0 for k in ("bare", "capture", "extract", "encode"))
    assert ext["store_vs_capture_max_diff"] == 0.0  # the store holds exactly what capture saw (fp16)
    gen = ph["generate[fp32]"]["figures"]
    assert gen["frames"] == 2 * 20 and all(gen[f"{k}_frames_per_s"] > 0 for k in ("bare", "capture", "steered"))
    assert gen["tf_max_diff"]["cond"] < 1e-3 and gen["tf_max_diff"]["uncond"] < 1e-3
    assert gen["steer_upstream_max_diff"] < 1e-3 and gen["steer_edit_max_diff"] < 1e-3 and gen["check"] == "ok"
    assert gen["act_max_abs"] > 0.1  # the diffs are small against activations that are not
    sae = ph["sae[fp32]"]["figures"]
    assert sae["steps"] == 20
    assert all(sae[f"{k}_rows_per_s"] > 0 for k in ("train", "kernel", "dense", "encode", "bare_encode"))
    assert 0 < sae["encode_mean_l0"] <= 16  # TopK k=16: at most k stored latents per row
    probe = ph["probe[fp32]"]["figures"]
    assert probe["layers"] == 4 and probe["samples"] == 20 and probe["seconds"] > 0
    assert 0.0 <= probe["best_value"] <= 1.0


@pytest.mark.slow
def test_a_failing_phase_is_reported_and_the_others_still_run(tmp_path):
    # More rows per SAE batch than the store holds: the sae service refuses; probe runs after it.
    proc, figures = run_check(tmp_path, "--phases", "extract,sae,probe", "--sae-batch", "100000")
    assert proc.returncode == 1
    assert "FAILED sae[fp32]: InputError:" in proc.stderr and "Traceback" in proc.stderr
    status = {name: p["status"] for name, p in figures["phases"].items()}
    assert status == {"peak": "ok", "build[fp32]": "ok", "extract[fp32]": "ok", "sae[fp32]": "FAILED",
                      "probe[fp32]": "ok"}
    assert figures["failed"] == ["sae[fp32]"] and "FAILED: sae[fp32]" in proc.stdout.splitlines()[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.slow
def test_without_cuda_it_says_so_and_runs_nothing(tmp_path):
    proc = subprocess.run(["bash", str(WRAPPER), "--device", "cuda", "--json", str(tmp_path / "f.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["gpu_check: no CUDA device (torch.cuda.is_available() is False), so "
                                        "nothing was run"]
    assert not (tmp_path / "f.json").exists()
