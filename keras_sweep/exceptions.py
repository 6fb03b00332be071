"""Every error sweep raises, under one base class.

Each message names what was wrong, the bad value, and how to fix it. Lower-level
errors (YAML, pandas, Dask, TensorFlow) are translated into these where they enter
our code, so the command line can print one clear line and exit with code 2.
"""

from __future__ import annotations

__all__ = [
    "SweepError",
    "SpecError",
    "DataError",
    "ClusterError",
    "LibraryChangedError",
    "WorkersDiedError",
    "WorkerImportError",
    "FitsFailedError",
    "OutputBusyError",
    "JournalError",
    "ClusterExpired",
]


class SweepError(Exception):
    """Base class of every error raised by sweep."""

    exit_code = 2


class SpecError(SweepError, ValueError):
    """A sweep spec (YAML or keyword arguments) is invalid."""

    def __init__(self, field: str, value: object, problem: str, fix: str,
                 example: str | None = None) -> None:
        self.field, self.value, self.problem, self.fix = field, value, problem, fix
        #: a good value, where the fix gives one (a setting's: :mod:`keras_sweep.config`)
        self.example = example
        super().__init__(f"spec field '{field}': {problem} (got {value!r}).\n  Fix: {fix}")


class DataError(SweepError, ValueError):
    """The data a spec points to cannot be read or used for training."""


class ClusterError(SweepError, RuntimeError):
    """A Dask cluster could not be started, reached, or kept alive."""


class LibraryChangedError(SweepError, RuntimeError):
    """An installed library no longer has an internal sweep relies on (see
    :mod:`keras_sweep._compat`): one of the installed versions was not tested with
    this sweep. Raised before the change could alter a result silently."""


class WorkersDiedError(ClusterError):
    """Worker processes kept dying while the cluster started (exit 1: the input was fine,
    the machine or its batch system was not)."""

    exit_code = 1


class WorkerImportError(SweepError, ImportError):
    """Code a fit needs (e.g. a model builder) cannot be imported on the workers."""


class FitsFailedError(SweepError, RuntimeError):
    """Some fits of a finished sweep failed and the spec did not allow failures (exit 1).

    The results are written before it is raised: nothing of the sweep is lost.
    """

    exit_code = 1


class OutputBusyError(SweepError, RuntimeError):
    """Another sweep is writing to the same output folder (exit 2, nothing started)."""

    def __init__(self, folder: object, owner: dict[str, object]) -> None:
        who = (f"process {owner.get('pid', '?')} on {owner.get('host', '?')}, started "
               f"{owner.get('started', '?')}") if owner else "another process"
        super().__init__(
            f"output folder {str(folder)!r} is in use by another sweep ({who}).\n"
            "  Fix: wait for it to finish (a rerun then resumes from its journal), or give "
            "this run another folder with --output DIR.")


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped a sweep; the message says what was kept (exit 130).

    A ``KeyboardInterrupt``, so code that handles Ctrl-C handles it too.
    """

    def __init__(self, finished: int, total: int, journaled: bool) -> None:
        self.finished, self.total = finished, total
        kept = "finished and journaled" if journaled else "finished (no journal: not kept)"
        again = ("rerun the same command to continue" if journaled
                 else "rerun to start again")
        super().__init__(f"interrupted: {finished} of {total} fits {kept}, "
                         f"{total - finished} cancelled; {again}")


class JournalError(SweepError, RuntimeError):
    """The output folder's journal cannot be read as a sweep journal (exit 2)."""


class ClusterExpired(SweepError, RuntimeError):
    """The sweep stopped cleanly just before its cluster's end (exit 130).

    ``what`` says which end (TLS certificates expiring, an EC2 run's hours);
    ``renewable``: a new cluster cures it, and ``sweep run`` starts one itself.
    Finished fits are kept in the journal.
    """

    exit_code = 130

    def __init__(self, what: str, renewable: bool, fix: str) -> None:
        self.what, self.renewable = what, renewable
        super().__init__(f"stopped before the cluster's end: {what}.\n  Fix: {fix}")

