"""A corrupt message left uncaught: under ``python -m mpi4py`` the job must end, not hang.

Run as ``mpiexec -n K python -m mpi4py tests/mpi/abort.py``; tests/test_mpi.py expects a
non-zero exit status and a ChecksumError in the output, within its timeout.
"""

import numpy as np
from mpi4py import MPI

from qsgd_codec import mpi as qm
from qsgd_codec.adapters.mpi import agreement

comm = MPI.COMM_WORLD
original = agreement._encode_message


def corrupting(arr, params, seed):
    msg = bytearray(original(arr, params, seed))
    msg[len(msg) // 2] ^= 0x01
    return bytes(msg)


if comm.Get_rank() == comm.Get_size() - 1:
    agreement._encode_message = corrupting
x = np.linspace(-1.0, 1.0, 4096, dtype=np.float32)
qm.allgather(x, bits=4)
print("not reached", flush=True)
