"""Thread count and deterministic kernels, as scoped settings that are always restored.

mechmem's models are tiny: a training step is a few hundred small kernels, so a second
intra-op thread mostly adds synchronisation (on a shared 2-core machine, torch's default of
one thread per core made ``mechmem train recall`` ~20x slower). ``DEFAULT_THREADS`` is
therefore 1; ``benchmarks/threads.py`` measures the choice. Sweep workers use one thread each.

Whatever the thread count, training gives the same bits: TransformerLens's ``Embed`` computes
``W_E[tokens]``, whose backward (``index_put_`` with accumulation) sums in a thread-dependent
order, and ``torch.use_deterministic_algorithms(True)`` makes it sum in a fixed order (the
1-thread order) at no measurable cost. :func:`deterministic` scopes that setting.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

#: Threads used when a config does not say (see the module docstring).
DEFAULT_THREADS = 1


def check_threads(threads, name: str = "threads") -> int | None:
    """``threads`` if it is ``None`` or a positive int, else a ``ValueError`` naming ``name``."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"{name} must be a positive integer (or None: leave torch's setting), got {threads!r}")
    return threads


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def cap_threads(threads: int | None, name: str = "threads") -> tuple[int | None, str | None]:
    """``threads`` at most :func:`available_cpus` (torch crashes on absurd counts: ``--threads 100000``
    segfaulted), and a note saying so when it was capped (else ``None``)."""
    check_threads(threads, name)
    cpus = available_cpus()
    if threads is None or threads <= cpus:
        return threads, None
    return cpus, f"{name} {threads} is more than the {cpus} CPU(s) this process may use: using {cpus}"


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)`` (``None``: unchanged; capped at the CPUs this
    process may use, with a warning), then restore it."""
    import torch

    threads, note = cap_threads(threads)
    if note:
        warnings.warn(note, stacklevel=3)
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def deterministic() -> Iterator[None]:
    """Run the body with ``torch.use_deterministic_algorithms(True)``, then restore the previous mode.

    On CUDA this also needs ``CUBLAS_WORKSPACE_CONFIG`` (set here if the caller has not set it;
    it must be in place before the first cuBLAS call of the process to take effect).
    """
    import torch

    previous = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


def limit_worker_threads() -> None:
    """One intra-op thread in a worker process (set before torch is imported there, if it is not yet)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
