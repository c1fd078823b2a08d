"""How this process was launched: the world size a launcher (torchrun, MPI) set, and the one
launch that would silently run every request in one process. Read by the `sighead` model and the
wrapper command alike (neither imports the other for it)."""

from __future__ import annotations

import os

#: Where a launcher says how many processes it started: torchrun's, then MPI's (accelerate's
#: multi-CPU route runs through mpirun).
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_world_size(environ=None) -> int:
    """The number of processes a launcher started this one among (1 when not launched)."""
    environ = os.environ if environ is None else environ
    for name in WORLD_SIZE_VARIABLES:
        value = environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


def check_launch(environ=None) -> None:
    """Refuses a launch that asked for several processes but started one, which would run every
    request in that one process: `accelerate launch --cpu --num_processes N` without
    `--mpirun_hostfile` starts a single process (it sets MASTER_ADDR, no world size)."""
    environ = os.environ if environ is None else environ
    cpu = environ.get("ACCELERATE_USE_CPU", "").lower() in ("true", "1", "yes")
    if cpu and environ.get("MASTER_ADDR") and launched_world_size(environ) == 1:
        raise ValueError(
            "`accelerate launch --cpu --num_processes N` started one process (accelerate runs several "
            "CPU processes only through mpirun, with --mpirun_hostfile); for N CPU processes use "
            "`accelerate launch --multi_gpu --num_processes N` (torchrun with gloo; it works without "
            "GPUs), or leave out --num_processes to run in one process"
        )
