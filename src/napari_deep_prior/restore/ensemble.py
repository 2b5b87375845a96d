"""Seed ensembles: K independently initialised networks trained as one batched network.

``DIPParams.ensemble = K`` fits K :class:`~napari_deep_prior.nets.SkipNet` members side by
side, each from its own seed (:func:`member_seeds`), and the fit follows the mean of their
outputs.  :class:`MemberStack` holds the members' weights stacked along a leading axis and
evaluates all of them in one forward pass: on a GPU ``torch.func.vmap`` over
``functional_call`` of one template network (the model-ensembling recipe of ``torch.func``),
under which the convolutions of the K members become one grouped convolution, so the members
run side by side; on the CPU, where grouped convolutions are slower than plain ones, the
members' forward passes run one after the other inside the same step.

Batch normalisation: a DIP network is always in training mode, so its BatchNorm layers
normalise with the statistics of the current batch and their running statistics are never
read.  The members' copies drop the running statistics
(``torch.func.replace_all_batch_norm_modules_``; updating them in place is not possible
under ``vmap``); their outputs are unchanged.  A one-member fit (K = 1) does not use this
module at all.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from ..arrays import derive_seed
from ..nets import SkipNet

__all__ = ["MemberStack", "member_seeds"]


def member_seeds(seed: int, k: int) -> list[int]:
    """The seeds of the ``k`` members of a seed ensemble run with ``seed``.

    Member 0 uses ``seed`` itself (so it is the one-network fit of the same seed); member
    ``j >= 1`` uses ``derive_seed(seed, j)``, a SeedSequence-derived seed, so the members of
    runs with neighbouring seeds do not overlap (``seed + j`` would share members between
    seed 0 and seed 1).  Each member seeds its weights, its input z and its jitter exactly
    as a one-network :class:`~.fit.DIPFit` with that seed does.

    Examples
    --------
    >>> member_seeds(7, 3)[0]
    7
    >>> len(set(member_seeds(7, 3)))
    3
    """
    return [seed if j == 0 else derive_seed(seed, j) for j in range(k)]


class MemberStack(nn.Module):
    """K networks of one architecture evaluated in one batched forward pass.

    Parameters
    ----------
    nets : sequence of SkipNet
        The members (at least one), already initialised; they are copied, not modified.
    batched : bool, optional
        Evaluate the members with ``vmap`` (True) or one after the other (False); None
        (default): ``vmap`` except on the CPU.  Both give the same outputs and gradients.

    Notes
    -----
    ``forward(z)`` takes the members' inputs stacked, shape (K, C, H, W), and returns their
    outputs, shape (K, C_out, H, W): member ``k``'s output is ``nets[k](z[k:k+1])[0]`` (the
    network in training mode, to float rounding).  The weights are parameters of shape
    (K, ...) (one Adam over them updates every member as its own Adam would: Adam works
    element by element).  :meth:`state_dict` maps the members' parameter names
    (``"down.0.0.weight"``, ...) to these stacked tensors: ``{n: t[k] for n, t in
    state.items()}`` are member ``k``'s weights (load them into a ``SkipNet`` with
    ``strict=False``: the BatchNorm running statistics are not kept).
    """

    def __init__(self, nets: Sequence[SkipNet], batched: bool | None = None):
        super().__init__()
        self.batched = batched
        from torch.func import replace_all_batch_norm_modules_, stack_module_state

        if not nets:
            raise ValueError("MemberStack needs at least one network")
        members = [replace_all_batch_norm_modules_(copy.deepcopy(n)) for n in nets]
        params, buffers = stack_module_state(members)
        if buffers:  # the architecture gained a buffer: it must be stacked and passed too
            raise TypeError(f"MemberStack supports networks without buffers, got {sorted(buffers)}")
        self.names = tuple(params)
        self.stacked = nn.ParameterList(nn.Parameter(params[n].detach().clone()) for n in self.names)
        # the template whose weights functional_call replaces: on the meta device (no memory),
        # kept in a tuple so that it is not a submodule (its weights are not parameters here)
        self._template = (copy.deepcopy(members[0]).to("meta"),)

    @property
    def size(self) -> int:
        """Number of members K."""
        return int(self.stacked[0].shape[0])

    def _member(self, params: dict, z: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self._template[0], params, (z[None],))[0]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        params = dict(zip(self.names, self.stacked, strict=True))
        batched = self.batched if self.batched is not None else z.device.type != "cpu"
        if not batched:
            # One member after the other, each with its slice of the stacked weights (the same
            # arithmetic): on the CPU the grouped convolutions vmap makes of the K members'
            # convolutions are slower than K plain ones (a 20->16-channel 3x3 convolution at
            # 128 px, forward and backward: 44-56 ms as 2 groups, about 14 ms as two).
            return torch.stack([self._member({n: p[k] for n, p in params.items()}, z[k]) for k in range(self.size)])
        return torch.func.vmap(self._member, randomness="error")(params, z)

    def state_dict(self, *args, **kwargs) -> OrderedDict:  # noqa: ARG002 - nn.Module's signature
        """The stacked weights by the members' parameter names (detached, not copied)."""
        return OrderedDict((n, p.detach()) for n, p in zip(self.names, self.stacked, strict=True))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # noqa: ARG002
        """Copy stacked weights (a :meth:`state_dict` of a stack of the same size) in place."""
        missing = [n for n in self.names if n not in state_dict]
        if missing:
            raise ValueError(f"the state has no weights for {missing[:3]}; give the state_dict of a MemberStack")
        with torch.no_grad():
            for n, p in zip(self.names, self.stacked, strict=True):
                value = state_dict[n]
                if tuple(value.shape) != tuple(p.shape):
                    raise ValueError(
                        f"weights {n!r} have shape {tuple(value.shape)} but this {self.size}-member "
                        f"ensemble needs {tuple(p.shape)}; give the state of an ensemble of the same size"
                    )
                p.copy_(value)
        return None
