"""The one device choice for everything that encodes (mining, teacher scores, evaluation, quick scores, encode):
``$KALM_DEVICE`` when set (``cpu``, ``cuda``, ``cuda:1``), else the accelerator of this process when there is one
(under ``accelerate launch`` / ``torchrun`` each process takes its own GPU, ``LOCAL_RANK``), else the CPU. Training
itself takes its device from accelerate."""

from __future__ import annotations

import os

import torch


def compute_device(override: str | torch.device | None = None) -> torch.device:
    choice = override if override is not None else os.environ.get("KALM_DEVICE")
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(torch.cuda.device_count(), 1))
    return torch.device("cpu")
