from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).parent.parent

torch.set_num_threads(2)


@pytest.fixture
def tiny_space() -> Path:
    return DATA / "tiny_space.yaml"


@pytest.fixture
def tiny_profile() -> Path:
    return DATA / "tiny_cpu.yaml"


@pytest.fixture(scope="session")
def teacher_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One results dir per test session, so the tiny teacher is trained once."""
    return tmp_path_factory.mktemp("results")
