"""Environment advice for ``mpiexec``: cores per rank, threads, MPICH's waiting policy."""

import os
from typing import Optional


def local_ranks() -> Optional[int]:
    """Ranks the launcher started on this node (from its environment), or None if unknown."""
    for name in (
        "MPI_LOCALNRANKS",
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "SLURM_NTASKS_PER_NODE",
        "PMI_SIZE",
    ):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def recommended_env(ranks: int, cores: Optional[int] = None) -> dict:
    """Environment variables for ``ranks`` processes sharing ``cores`` cores (default: ours).

    - ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS`` and
      ``NUMBA_NUM_THREADS`` = ``max(1, cores // ranks)``: ranks do not fight over cores.
    - When ranks outnumber cores: ``MPIR_CVAR_ENABLE_HEAVY_YIELD=1``.  MPICH busy-polls
      while it waits; with more ranks than cores the waiting ranks steal the CPU from the
      ranks that have work (measured: a rank computing while three others wait in a barrier
      ran 2.1-2.4x slower on 2 cores).  Heavy yield makes waiting ranks sleep briefly instead,
      at the price of latency (a 16-byte Allreduce of 4 ranks: ~50 us -> ~600 us).
      Leave it unset when every rank has its own core, and keep mpi4py's default thread
      level (``multiple``): with ``MPI4PY_RC_THREAD_LEVEL=single`` the heavy yield made a
      1 MB Allreduce take seconds (measured with MPICH 5.0).
    """
    cores = available_cores() if cores is None else cores
    threads = str(max(1, cores // max(1, ranks)))
    env = {
        name: threads
        for name in (
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "NUMBA_NUM_THREADS",
        )
    }
    if ranks > cores:
        env["MPIR_CVAR_ENABLE_HEAVY_YIELD"] = "1"
    return env
