"""Shared test fixtures: tiny random SSL configs and generated audio, no downloads."""

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)
    yield
