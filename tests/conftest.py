"""Hypothesis profiles: ``ci`` (the default) is deterministic; ``dev`` explores more.
Shared fixtures: ``one_torch_thread``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=30,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=200)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread for a whole module (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``): tiny models run fastest on one thread,
    and CI shares its 2 cores between workers. torch is imported only here, when used."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
