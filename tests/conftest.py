"""Fixtures for the whole suite."""

import os

# One intra-op thread for the whole suite, set before torch starts: bit-equality between runs that meet
# units in another order (tests/restore) holds at one thread; with two, oneDNN's bf16 kernels gave
# 1-grey-level differences in 51 of 4,096 pixels of one PNG on this CPU. Say OMP_NUM_THREADS to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest (and steadiest on a shared machine) on one thread; restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The pseudonym key (meddiff.io.phi): fixed for the suite, so no test writes ~/.config/meddiff/pseudonym-key.
os.environ.setdefault("MEDDIFF_PSEUDONYM_KEY", "meddiff-test-suite-key")
