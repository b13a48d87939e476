"""Entry point: ``mpiexec -n 4 python -m mpi4py -m qsgd_codec.demo <allgather|train> [options]``."""

import argparse
import sys

from . import configure_launch


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="mpiexec -n 4 python -m mpi4py -m qsgd_codec.demo",
        description="QSGD over MPI: data-parallel training and collective comparisons.",
    )
    sub = parser.add_subparsers(dest="demo", required=True)

    train = sub.add_parser("train", help="Algorithm 1 on scikit-learn's digits: 32-bit vs QSGD")
    train.add_argument("--epochs", type=int, default=20)
    train.add_argument("--batch", type=int, default=16, help="examples per rank per step")
    train.add_argument("--lr", type=float, default=0.2)
    train.add_argument(
        "--schedule",
        choices=["cosine", "constant"],
        default="cosine",
        help="learning rate per epoch: cosine decay to 0, or constant",
    )
    train.add_argument("--hidden", type=int, default=256, help="hidden units of the MLP")
    train.add_argument(
        "--min-size",
        type=int,
        default=1000,
        help="tensors with fewer elements travel as float32 (paper: 10,000 "
        "for models with millions of weights; this one has 19,210)",
    )
    train.add_argument(
        "--runs",
        default="32bit,2bit,4bit,8bit",
        help="comma-separated subset of 32bit,2bit,4bit,8bit",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--out", default="qsgd_results", help="folder for train.png and train.json (created)"
    )

    table = sub.add_parser("allgather", help="bytes, error and time split of the collectives")
    table.add_argument("--n", type=int, default=1 << 18, help="elements per rank")
    table.add_argument("--reps", type=int, default=3)
    table.add_argument("--out", default=None, help="also write the rows as JSON here")

    args = parser.parse_args(argv)
    configure_launch()  # before MPI starts
    if args.demo == "train":
        from .train import run
    else:
        from .table import run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
