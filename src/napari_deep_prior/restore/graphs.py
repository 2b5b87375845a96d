"""A fit's optimisation step captured once in a CUDA graph and replayed.

On a GPU the default networks are thin (16-64 channels): one step launches a few hundred
small kernels (forward, backward, the optimiser), each far too small to fill the GPU, so a step
costs what launching them costs, not what they compute (on an H200 0.015-0.027 s a step from
128 to 1024 px, about the same at every size).  A CUDA graph records the launches of one step
once and replays them with one call, which removes that cost: replayed, the default step took
0.004 / 0.005 / 0.009 / 0.022 s at 128 / 256 / 512 / 1024 px RGB on the same GPU.

:class:`GraphedStep` runs a training step ``step(zin) -> (out, pred, loss)`` (the network's
forward pass, the loss, its backward pass and the optimiser's update) on the input
``z + noise_std * noise``:

- its first :data:`WARMUP_STEPS` calls run the step eagerly on a side stream (as CUDA graph
  capture needs: cuDNN's algorithm search, the lazy set-up of the kernels and the optimiser's
  state happen there), one at a time, waited for;
- the next call records the step in a graph (recording runs no kernel) and every call from
  then on copies the call's jitter into the graph's input buffer and replays the graph.

The returned tensors are the graph's own output buffers: the next replay overwrites them, so
what is kept beyond a step must be copied.  Everything the graph reads must stay where it is:
the network's weights and the optimiser's state are restored in place (``load_state_dict``
of a module copies in place; :func:`restore_optimiser` does so for the optimiser), never
replaced.  The optimiser must be made with ``capturable=True``.  A step that cannot be
recorded (an operation CUDA graphs do not support) is reported once as a warning and the fit
goes on eagerly, with the same arithmetic.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

__all__ = ["WARMUP_STEPS", "GraphedStep", "restore_optimiser", "wants_graph"]

#: Eager steps on a side stream before the step is recorded.
WARMUP_STEPS = 3


def wants_graph(enabled: bool, device: torch.device) -> bool:
    """Whether a fit on ``device`` records its step in a CUDA graph (``DIPParams.cuda_graph``)."""
    return bool(enabled) and device.type == "cuda" and torch.cuda.is_available()


class GraphedStep:
    """A training step recorded once in a CUDA graph and replayed (module docstring).

    Parameters
    ----------
    step : callable
        ``step(zin) -> (out, pred, loss)``: one training step on the input ``zin``, the
        optimiser's update included.
    z : Tensor
        The network's fixed input, on the CUDA device.
    noise_std : float
        The jitter's standard deviation (0: no jitter, ``z`` itself is the input).
    warmup : int
        Eager steps before the recording.
    """

    def __init__(self, step: Callable, z: torch.Tensor, noise_std: float, warmup: int = WARMUP_STEPS):
        self._step = step
        self._z = z
        self._std = float(noise_std)
        self._noise = torch.zeros_like(z) if self._std > 0 else None
        self._warmup = int(warmup)
        self._calls = 0
        self._side = torch.cuda.Stream(device=z.device)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._outputs: tuple | None = None
        #: Why the step could not be recorded (it then runs eagerly), or None.
        self.error: BaseException | None = None
        self.replayed = False  # set by release()

    @property
    def replaying(self) -> bool:
        """True once the step has been recorded: the calls replay the graph (and after
        :meth:`release`, whether they did)."""
        return self._graph is not None or self.replayed

    def release(self) -> None:
        """Drop the graph (and the memory it holds: a step's activations), the step and its inputs.

        ``replaying`` and ``error`` keep what they said; the object cannot step any more.
        """
        self.replayed = self.replayed or self._graph is not None
        self._graph = self._outputs = self._step = self._z = self._noise = None

    def _input(self) -> torch.Tensor:
        return self._z if self._noise is None else self._z + self._std * self._noise

    def __call__(self, noise: torch.Tensor | None) -> tuple:
        """One training step with the jitter ``noise`` (None when ``noise_std`` is 0)."""
        # the fit's GPU, whichever is current (a dask worker fits on "cuda:k"): the streams,
        # the recording and the replays all belong to it
        with torch.cuda.device(self._z.device):
            return self._call(noise)

    def _call(self, noise: torch.Tensor | None) -> tuple:
        if self._noise is not None:
            self._noise.copy_(noise)
        self._calls += 1
        if self._graph is None and self.error is None and self._calls > self._warmup:
            self._record()
        if self._graph is not None:
            self._graph.replay()
            return self._outputs
        if self.error is not None:  # recording failed: the same step, eagerly
            return self._step(self._input())
        main = torch.cuda.current_stream(self._z.device)
        self._side.wait_stream(main)
        with torch.cuda.stream(self._side):
            outputs = self._step(self._input())
        main.wait_stream(self._side)
        return outputs

    def _record(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            # thread-local: a napari worker records while the GUI thread may use CUDA too
            # on the warm-up's stream: the weights' gradient accumulators were made on it
            with torch.cuda.graph(graph, stream=self._side, capture_error_mode="thread_local"):
                outputs = self._step(self._input())
        except RuntimeError as err:  # an operation that cannot be recorded: go on eagerly
            self.error = err
            warnings.warn(
                f"the fit's step could not be recorded as a CUDA graph ({err}); it runs without "
                "one (slower on a GPU; DIPParams(cuda_graph=False) turns the attempt off)",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        self._graph, self._outputs = graph, outputs


def restore_optimiser(opt: torch.optim.Optimizer, state: dict) -> None:
    """Load an optimiser ``state_dict`` into ``opt`` by copying into its state tensors.

    ``opt.load_state_dict`` replaces the state tensors, which a recorded CUDA graph would no
    longer update; this keeps them and copies the saved values in (the result is the same).
    Falls back to ``load_state_dict`` when the saved state does not match ``opt``'s layout
    (a parameter without state yet, say).
    """
    params = [p for group in opt.param_groups for p in group["params"]]
    saved = state["state"]
    current = [opt.state.get(p) for p in params]
    same = len(saved) == len(params) and all(
        cur is not None
        and i in saved
        and set(saved[i]) == set(cur)
        and all(torch.is_tensor(v) and torch.is_tensor(cur[k]) and v.shape == cur[k].shape for k, v in saved[i].items())
        for i, cur in enumerate(current)
    )
    if not same:
        opt.load_state_dict(state)
        return
    with torch.no_grad():
        for i, cur in enumerate(current):
            for k, v in saved[i].items():
                cur[k].copy_(v)
