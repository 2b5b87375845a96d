"""Run a restoration's fits on a dask.distributed cluster (optional extra ``distributed``).

A :class:`~.job.DIPJob` is a list of independent units (:meth:`~.job.DIPJob.units`): one fit
per plane of a stack, or per tile (region) of a plane.  :func:`run_on_client` sends each unit
to the cluster as a pure task (its own data, the job's parameters and seed), and hands the
results back to the job, which blends and assembles them exactly as it does after its own
fits (:meth:`~.job.DIPJob.assemble`): for the same seed the output is the in-process one, bit
for bit on CPUs running the same number of threads per fit.

On a worker, fits run one at a time, each on as many torch threads as the worker has
(``--nthreads``; a :class:`~distributed.LocalCluster` started by :func:`start_client` gives
each of its N workers ``cores / N``); small fits and the tiles of tiled planes keep the
one-thread policy of :func:`~napari_deep_prior.device.fit_threads`.  ``device="auto"`` on a
worker uses its GPU (:func:`~napari_deep_prior.device.resolve_device`: CUDA_VISIBLE_DEVICES as
dask-cuda sets it, else one GPU per numbered worker).  The memory planner inside a worker sees its
``memory_limit`` (:func:`~napari_deep_prior.device.cpu_memory_limit`), and
:func:`worker_memory_cap` lets the client plan tiles for the smallest worker.

A unit whose task raises is retried once (``retries=1``) and then reported by its plane and
tile; a unit lost with its worker (killed, restarted) is recomputed by the scheduler on
another worker (dask's ``allowed-failures``), so nothing is silently lost.

References
----------
dask.distributed: https://distributed.dask.org ; for clusters, dask-jobqueue (SLURM, PBS, LSF)
and dask-cuda (one worker per GPU).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, replace

from ..arrays import drive
from .fit import FIT_LOCK, FitResult
from .job import DIPJob, DIPOutput

__all__ = [
    "ClusterJob",
    "DistributedError",
    "UnitsProgress",
    "cluster_workers",
    "run_on_client",
    "start_client",
    "worker_memory_cap",
]

#: Retries of a unit whose task raised, before its job is reported failed.
RETRIES = 1

#: Units whose data are larger than this are scattered to the cluster before their task.
SCATTER_BYTES = 1 << 20


class DistributedError(RuntimeError):
    """A unit of a restoration failed on the cluster after its retry (or the cluster went away)."""


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:  # the optional extra
        raise ImportError(
            "running on a dask cluster needs dask.distributed: "
            'pip install "dask[distributed]>=2024.8" (the project\'s distributed extra)'
        ) from exc
    return distributed


@dataclass
class UnitsProgress:
    """Progress of a job's units on a cluster (what a progress bar shows).

    Attributes
    ----------
    done, total : int
        Units finished, and in all.
    plane, tile : int
        The plane and tile (0 for whole planes) of the unit just finished.
    n_planes, n_tiles : int
    iterations_run : int
        Steps run by that unit.
    elapsed : float
        Seconds since the job was submitted.
    """

    done: int
    total: int
    plane: int
    tile: int
    n_planes: int
    n_tiles: int
    iterations_run: int
    elapsed: float

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0


def _worker_threads() -> int:
    """The worker's thread count (its cores), or torch's current setting outside a worker."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        import torch

        return torch.get_num_threads()


def fit_unit(kwargs: dict, device: str, keep_state: bool) -> FitResult:
    """Run one unit's fit here (on a worker) and return its result, moved to the CPU.

    ``kwargs``: :meth:`~.job.DIPJob.unit_args`; ``device``: as given to the job ("auto"
    resolves on the worker); ``keep_state``: return the network's weights (a warm start's source).
    """
    import torch

    from ..device import resolve_device, tune_cpu_allocator
    from .fit import DIPFit

    dev = resolve_device(device)
    if dev.type == "cpu":
        tune_cpu_allocator()
    with FIT_LOCK:  # one fit at a time per worker process, on all of its threads
        threads = torch.get_num_threads()
        torch.set_num_threads(_worker_threads())
        try:
            fit = DIPFit(device=dev, **kwargs)
            res = drive(fit.steps())
        finally:
            torch.set_num_threads(threads)
    state = None
    if keep_state and res.state_dict is not None:
        state = {k: v.detach().cpu() if hasattr(v, "detach") else v for k, v in res.state_dict.items()}
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return replace(res, state_dict=state)


def _describe(job: DIPJob, unit) -> str:
    i, k = unit
    where = f"plane {i}" if job.n_planes > 1 else "the image"
    if k is not None:
        where += f", {'region' if job.regions else 'tile'} {k + 1} of {job.n_tiles}"
    return where


class ClusterJob:
    """One job's units on a cluster: submit them, take their results as they come, assemble.

    Several ClusterJobs can share a cluster and one ``as_completed`` (the batch command line
    runs a few files at once); :func:`run_on_client` runs one.

    Parameters
    ----------
    job : DIPJob
    client : distributed.Client
    device : str, optional
        As for :func:`run_on_client`.
    """

    def __init__(self, job: DIPJob, client, device: str | None = None):
        self.job = job
        self.client = client
        self.device = job.device.type if device is None else device
        self.units = job.units()
        self.results: dict = {}
        self.futures: dict = {}  # future -> unit, while it runs
        self._tag = uuid.uuid4().hex[:8]
        self._pending: list = []  # units waiting for the warm start's weights
        self.t0 = time.perf_counter()

    @property
    def finished(self) -> bool:
        return len(self.results) == len(self.units)

    def _submit(self, unit, init_state=None, keep_state=False):
        i, k = unit
        key = f"napari-deep-prior-{self.job.task}-{self._tag}-p{i}" + ("" if k is None else f"-t{k}")
        kwargs = self.job.unit_args(i, k, init_state)
        if kwargs["target"].nbytes > SCATTER_BYTES:  # large data travel once, not inside the task
            kwargs["target"] = self.client.scatter(kwargs["target"], direct=False)
        fut = self.client.submit(fit_unit, kwargs, self.device, keep_state, key=key, pure=False, retries=RETRIES)
        self.futures[fut] = unit
        return fut

    def start(self) -> list:
        """Submit the units (with a warm start, the first one only: the others need its weights)."""
        self.t0 = time.perf_counter()
        if not self.units:
            return []
        if self.job.warm_start:
            self._pending = list(self.units[1:])
            return [self._submit(self.units[0], keep_state=True)]
        return [self._submit(u) for u in self.units]

    def take(self, fut) -> tuple[UnitsProgress, list]:
        """Record a finished future's result; return the progress and any futures submitted now.

        Raises
        ------
        DistributedError
            The unit's task failed after its retry (or was lost with workers too often).
        """
        unit = self.futures.pop(fut)
        try:
            res = fut.result()
        except Exception as exc:  # the task's own error, after its retry, or KilledWorker
            raise DistributedError(
                f"the fit of {_describe(self.job, unit)} failed on the cluster "
                f"after {RETRIES + 1} attempts: {type(exc).__name__}: {exc}"
            ) from exc
        self.results[unit] = res
        new = []
        if self._pending:  # the warm start's source is here: every other unit starts from it
            state = res.state_dict
            if state is not None:
                state = self.client.scatter(state, broadcast=False)
            new = [self._submit(u, init_state=state) for u in self._pending]
            self._pending = []
        i, k = unit
        progress = UnitsProgress(
            done=len(self.results),
            total=len(self.units),
            plane=i,
            tile=0 if k is None else k,
            n_planes=self.job.n_planes,
            n_tiles=self.job.n_tiles,
            iterations_run=int(res.iterations_run),
            elapsed=time.perf_counter() - self.t0,
        )
        return progress, new

    def output(self) -> DIPOutput:
        """The job's output, once every unit is in (:meth:`~.job.DIPJob.assemble`)."""
        return self.job.assemble(self.results)

    def cancel(self) -> None:
        """Free the cluster of this job's tasks that still run (after a failure or a cancel)."""
        if self.futures:
            self.client.cancel(list(self.futures), force=True)
            self.futures.clear()
        self._pending = []


def run_on_client(job: DIPJob, client, *, device: str | None = None) -> Generator[UnitsProgress, None, DIPOutput]:
    """Run ``job``'s units as tasks of ``client``'s cluster; yield progress; return its output.

    Parameters
    ----------
    job : DIPJob
        A prepared job (:func:`~.api.prepare`); it is not run here, only assembled.
    client : distributed.Client
    device : str, optional
        The device the workers use ("auto", "cpu", "cuda"...; default: the type of the job's
        device: "cuda" and "mps" jobs stay on that kind of device, on each worker's own).

    Yields
    ------
    UnitsProgress
        After each unit finishes.

    Returns
    -------
    DIPOutput
        What ``drive(job.steps())`` returns for the same job.

    Raises
    ------
    DistributedError
        A unit failed twice (its error named), or was lost with workers too often.
    """
    distributed = _import_distributed()
    run = ClusterJob(job, client, device)
    try:
        done = distributed.as_completed(run.start(), loop=client.loop)  # client: not necessarily the default
        for fut in done:
            progress, new = run.take(fut)
            done.update(new)
            yield progress
    finally:
        run.cancel()  # nothing left after a normal end; after an error or a cancel, the rest
    return run.output()


def cluster_workers(client) -> dict:
    """Every worker of ``client``'s cluster: address -> its scheduler record (nthreads, memory_limit...)."""
    try:
        info = client.scheduler_info(n_workers=-1)  # newer distributed lists only a few by default
    except TypeError:  # older distributed: no such argument, every worker listed
        info = client.scheduler_info()
    return info.get("workers", {})


def worker_memory_cap(client):
    """The smallest ``memory_limit`` of ``client``'s workers, for :func:`~..device.memory_cap`.

    None when the workers have no limit (or there are none yet).
    """
    from ..device import MemoryLimit

    limits = [w.get("memory_limit") for w in cluster_workers(client).values() if w.get("memory_limit")]
    if not limits:
        return None
    smallest = int(min(limits))
    # a worker's own code and data take a share: plan with 80 % (dask pauses a worker at 80 %)
    return MemoryLimit(int(0.8 * smallest), "dask", smallest)


def start_client(workers: int | None = None, scheduler: str | None = None, *, threads: int | None = None):
    """A client of a new LocalCluster of ``workers`` processes, or of the scheduler at ``scheduler``.

    Parameters
    ----------
    workers : int, optional
        Worker processes of a new local cluster; each gets ``threads`` threads (default: this
        machine's cores divided among them, at least 1) and an equal share of the memory.
    scheduler : str, optional
        Address of a running scheduler ("tcp://host:8786", or a scheduler file's path ending
        in .json) to join instead.
    threads : int, optional

    Returns
    -------
    distributed.Client
        Close it (``client.close()``; a local cluster's ``client.cluster.close()``) when done.
    """
    distributed = _import_distributed()
    if (workers is None) == (scheduler is None):
        raise ValueError("give the number of workers of a new local cluster or a scheduler's address, not both")
    if scheduler is not None:
        if str(scheduler).endswith(".json"):
            return distributed.Client(scheduler_file=str(scheduler))
        return distributed.Client(scheduler)
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    cores = os.cpu_count() or 1
    per = max(1, cores // int(workers)) if threads is None else int(threads)
    cluster = distributed.LocalCluster(
        n_workers=int(workers),
        threads_per_worker=per,
        processes=True,
        dashboard_address=":0",
        silence_logs=40,  # logging.ERROR: the workers' own chatter stays out of the CLI's output
    )
    return distributed.Client(cluster)
