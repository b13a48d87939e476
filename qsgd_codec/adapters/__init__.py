"""Adapters: QSGD inside other tools.

- :mod:`.mpi` -- reference MPI collectives (mpi4py): Algorithm 1's allgather, a requantizing
  allreduce, a parameter server, and the float32 baseline;
- :mod:`.torch_ddp` -- a PyTorch DDP communication hook;
- :mod:`.numcodecs_codec` -- a numcodecs codec and a Zarr v3 array-to-bytes codec.

Each is imported on its own (``qsgd_codec.mpi``, ``qsgd_codec.torch_ddp`` and
``qsgd_codec.numcodecs_codec`` are the same modules under their short names); importing
``qsgd_codec`` imports none of them or their frameworks.
"""
