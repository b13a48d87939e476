"""mpiexec demos of qsgd_codec.mpi.

    mpiexec -n 4 python -m mpi4py -m qsgd_codec.demo train       # Algorithm 1 on digits
    mpiexec -n 4 python -m mpi4py -m qsgd_codec.demo allgather   # bytes, error, time split

``train`` runs data-parallel SGD (the paper's Algorithm 1) on scikit-learn's bundled digits
data set (no download) with 32-bit gradients and with QSGD 2-bit/bucket 128, 4-bit/512 and
8-bit/512, prints test accuracy and bytes communicated, and writes a PNG plot.
``allgather`` prints, for several codec settings, the bytes each rank sends against a
float32 Allreduce, the relative error of the mean and where the time goes, for the three
compressed collectives.  Both need ``pip install 'qsgd_codec[demo]'`` (mpi4py, the mpich
wheel, scikit-learn, matplotlib).  Every rank prints nothing; rank 0 prints the report.
"""

import os


def configure_launch():
    """Set thread counts and MPICH's waiting mode for this node, before MPI starts.

    Reads how many ranks the launcher put on this node and applies
    :func:`qsgd_codec.mpi.recommended_env` as defaults (variables you set win).  Must run
    before ``mpi4py.MPI`` is imported; thread pools already loaded are limited too.
    """
    from qsgd_codec import mpi as qm

    ranks = qm.local_ranks() or 1
    for name, value in qm.recommended_env(ranks).items():
        os.environ.setdefault(name, value)
    threads = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    try:  # NumPy's BLAS was loaded before this ran: limit it in place
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass
    import sys

    if "numba" in sys.modules:
        try:
            import numba

            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        except (ImportError, ValueError, AttributeError):
            pass
    return ranks


def warm_codec(comm, shapes, codecs):
    """Rank 0 compiles the codec kernels first; the other ranks then load them from Numba's
    on-disk cache, instead of every rank compiling the same kernels at once on shared cores.
    Cheap once the cache is warm."""
    import numpy as np

    import qsgd_codec

    def touch():
        for shape in shapes:
            x = np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
            for kw in codecs:
                qsgd_codec.decode(qsgd_codec.encode(x, **kw))

    if comm.Get_rank() == 0:
        touch()
    comm.Barrier()
    if comm.Get_rank() != 0:
        touch()
