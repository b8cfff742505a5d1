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
    """The data mirror. Without one a test that needs it skips with the reason, except where KALM_REQUIRE_DATA=1
    (.ci/run sets it): there a missing mirror fails, so CI can never pass by skipping."""
    d = os.environ.get("KALM_DATA_DIR")
    if not d or not Path(d).is_dir():
        msg = ("this test reads the data mirror's own files, and there is none: "
               + (f"KALM_DATA_DIR={d} is not a folder" if d else "KALM_DATA_DIR is unset")
               + " (set it to a copy of the mirror, laid out as ../shared/data; README, 'Where data comes from')")
        if os.environ.get("KALM_REQUIRE_DATA") == "1":
            pytest.fail(msg + "; KALM_REQUIRE_DATA=1 makes this an error")
        pytest.skip(msg)
    return Path(d)
