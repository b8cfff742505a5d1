"""benchmarks/gpu_bench.py, the GPU check's measuring script, runs its code path on CPU (``--tiny``).

No GPU here: this proves that the script a lent GPU machine runs (``bash benchmarks/gpu_check.sh``) gets through
its sections and writes its figures, including the packing levers, so that a device session is not spent on a
crash. The figures themselves (tiny model, CPU) mean nothing and are not asserted.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_bench_tiny_runs_every_section_and_the_packing_levers(tmp_path, data_dir):  # the mirror's tokenizer
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--tiny", "--rounds", "1",
                          "--encode-texts", "16", "--levers", "packing;mixed;frozen;AdamW", "--json", str(out)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    sections = {s["name"]: s for s in json.loads(out.read_text())["sections"]}
    assert not [n for n, s in sections.items() if "error" in s], sections
    for name in ("train-plain (MNRL)", "train-cached (CachedMNRL)", "encode (bf16)"):
        assert sections[name]["ratio"] > 0, name
    assert sections["lever: packing"]["padding_fraction"] == 0.0
    assert sections["lever: mixed lengths, packing"]["padding_fraction"] == 0.0
    assert sections["lever: mixed lengths, padded"]["padding_fraction"] > 0.05  # the lever has padding to remove
    assert sections["lever: frozen embedding table (upper bound)"]["kalm_tokens_per_s"] > 0
    assert sections["lever: packing"]["adamw_fused"] and not sections["lever: AdamW foreach instead of fused"]["adamw_fused"]
    assert "lever: compile" not in sections  # --levers selected
