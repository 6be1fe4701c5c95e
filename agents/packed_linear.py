"""Linear layers that a CPU decoding a few rows at a time reads at nearer its memory's pace.

A decode step multiplies a few rows (one token per chat) by every weight matrix, so what it costs is
reading the weights. In fp32 torch hands that product to MKL's ``sgemm``, which for more than a couple
of rows repacks the whole weight on every call and so reads it twice: on a 2-core Xeon (one thread),
8 rows through 150 of SmolLM2-135M's 1536 x 576 matrices took 92 ms, one row 40 ms. oneDNN multiplies
by a weight packed once ahead of time (what torch's inductor does to a frozen model): 53 ms for the 8
rows. A decode step of the default model over short chats, at batch 8, 16 and 32: 118, 125 and 168
ms unpacked, 85, 106 and 151 ms packed on one thread; 64, 72 and 94 against 56, 70 and 94 ms on two.
A web-browsing rollout (batch 8, 3 turns) took 16.2 -> 12.7 s on one thread, 8.8 -> 8.2 s on two.

:class:`PackedLinear` is an ``nn.Linear`` (the same weight and bias, the same state dict) that takes
that path in fp32 on the CPU with autograd off (the packed op has no backward pass) for
:data:`ROWS` rows: one to three rows are as fast unpacked, and past 32 the product is bound by
arithmetic more than by reading (at 64 rows MKL on two threads is the faster). Its packed copy, as
large as the weight, is made on the first such call and again whenever the weight changes (another
tensor, new data, an in-place update): decoding holds the weights twice (SmolLM2-135M: 0.5 GB more).
Results agree with ``F.linear`` to fp32 rounding (the two libraries add in different orders), so a
row's greedy tokens can differ at a near-tie between a packed and an unpacked run; each is deterministic.
"""

from __future__ import annotations

import functools
import logging
import weakref

import torch

log = logging.getLogger(__name__)

ROWS = range(4, 33)
"""How many rows (tokens) a call takes the packed path for."""


@functools.cache
def available() -> bool:
    """Whether this torch can pack a weight for oneDNN and multiply by it (not every build has oneDNN)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(torch.ones(2, 2), None)
        torch.ops.mkldnn._linear_pointwise(torch.ones(4, 2), packed, None, "none", [], "")
    except (AttributeError, RuntimeError) as error:
        log.info("linear layers unpacked: this torch cannot pack weights for oneDNN (%s)", error)
        return False
    return True


class PackedLinear(torch.nn.Linear):
    """``nn.Linear`` that multiplies a few rows by a packed copy of its weight; see the module docstring."""

    _packed: tuple[weakref.ref[torch.Tensor], tuple[int, int], torch.Tensor] | None = None
    """What the packed weight was packed from (the weight, its data's address and version), and the packed weight."""

    @classmethod
    def of(cls, linear: torch.nn.Linear) -> PackedLinear:
        """A packed layer holding ``linear``'s own weight and bias (tied weights stay tied)."""
        packed = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        packed.weight, packed.bias = linear.weight, linear.bias
        return packed.train(linear.training)

    def __getstate__(self) -> dict[str, object]:
        """State without the packed weight (an opaque tensor that cannot be copied or saved): a copy packs anew."""
        return {**super().__getstate__(), "_packed": None}

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        rows = input.numel() // self.in_features
        if (rows not in ROWS or input.shape[-1] != self.in_features or torch.is_grad_enabled()
                or input.device.type != "cpu" or input.dtype != torch.float32 or self.weight.dtype != torch.float32):
            return super().forward(input)
        out = torch.ops.mkldnn._linear_pointwise(input.reshape(rows, self.in_features), self._packed_weight(),
                                                 self.bias, "none", [], "")
        return out.view(*input.shape[:-1], self.out_features)

    def _packed_weight(self) -> torch.Tensor:
        weight = self.weight
        stamp = (weight.data_ptr(), weight._version)
        if self._packed is None or self._packed[0]() is not weight or self._packed[1] != stamp:
            self._packed = (weakref.ref(weight), stamp, torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None))
        return self._packed[2]


def pack_linears(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with each of its ``nn.Linear`` layers a :class:`PackedLinear` (where torch has oneDNN)."""
    if not available():
        return model
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is torch.nn.Linear:
                setattr(parent, name, PackedLinear.of(child))
    return model
