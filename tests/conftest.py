"""Shared test set-up: offline, single-threaded, the local data mirror."""

import os
from pathlib import Path

# Set before torch/transformers import anything: nothing may wait on the network in tests.
for _k, _v in {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}.items():
    os.environ.setdefault(_k, _v)
_default_data = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "KALM_DATA_DIR" not in os.environ and _default_data.is_dir():
    os.environ["KALM_DATA_DIR"] = str(_default_data)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = os.environ.get("KALM_DATA_DIR")
    if not d or not Path(d).is_dir():
        pytest.fail("KALM_DATA_DIR must point at the shared data mirror (../shared/data)")
    return Path(d)
