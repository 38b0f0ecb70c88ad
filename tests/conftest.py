"""Shared test set-up: no hub access, seeded torch RNG, generated data only."""

import os

# Tests never download anything: make hub lookups fail at once instead of timing out.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models: thread start-up costs more than it saves (subprocess tests choose their own).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
