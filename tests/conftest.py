"""Test tiers and the CUDA simulator.

Tiers, by marker (registered in pyproject.toml):

- unmarked tests: the default ``pytest -q``, a few minutes on 2 cores;
- ``mpi``, ``gpu_sim``, ``slow``: also run with ``--full`` (or ``QSGD_FULL_TESTS=1``), which
  is what the README's test command and CI run;
- ``large``: needs about 5 GiB and minutes; only with ``--large`` (or ``QSGD_LARGE_TESTS=1``).

numba reads ``NUMBA_ENABLE_CUDASIM`` once, when ``numba.cuda`` is first imported.  This file
is imported before any test module, so it switches the simulator on for the whole session
(unless ``QSGD_TEST_REAL_GPU=1`` asks for a real GPU): the ``gpu_sim`` tests run the CUDA
kernels in this process, on machines without a GPU.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

if os.environ.get("QSGD_TEST_REAL_GPU") != "1" and "numba.cuda" not in sys.modules:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

FULL_TIERS = ("mpi", "gpu_sim", "slow")


def pytest_addoption(parser):
    group = parser.getgroup("qsgd_codec tiers")
    group.addoption(
        "--full",
        action="store_true",
        help="also run the mpi, gpu_sim and slow tiers (what CI runs)",
    )
    group.addoption(
        "--large",
        action="store_true",
        help="also run the large tier (about 5 GiB of memory and minutes)",
    )


def pytest_collection_modifyitems(config, items):
    """Deselect the tiers that were not asked for (the summary line counts them)."""
    full = config.getoption("--full") or os.environ.get("QSGD_FULL_TESTS") == "1"
    large = config.getoption("--large") or os.environ.get("QSGD_LARGE_TESTS") == "1"
    keep, drop = [], []
    for item in items:
        if "large" in item.keywords:
            selected = large
        elif any(tier in item.keywords for tier in FULL_TIERS):
            selected = full
        else:
            selected = True
        (keep if selected else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_report_header(config):
    tiers = ["default"]
    if config.getoption("--full") or os.environ.get("QSGD_FULL_TESTS") == "1":
        tiers += FULL_TIERS
    if config.getoption("--large") or os.environ.get("QSGD_LARGE_TESTS") == "1":
        tiers.append("large")
    return f"qsgd_codec test tiers: {', '.join(tiers)}"
