"""The KV cache of a batch of chats that grow turn by turn, and what a chat keeps of it between calls.

:class:`KVBatch` holds one row per active chat. Rows are left-padded: ``mask`` marks the cache
columns that hold a row's real tokens and ``lengths`` counts them (a row's next position id), so a
chunk of new tokens per row is fed in one forward pass and each row attends only to its own tokens.

Three costs dominate decoding on a CPU, and each has its remedy here:

- transformers' ``DynamicLayer`` appends each decoded token's keys and values with ``torch.cat``,
  copying the whole cache every step. In a rollout of 32 episodes over a 1,100-token prompt that copy
  was 59% of a decode step (1.07 of 1.83 s, SmolLM2-135M on 2 cores). :class:`InPlaceLayer` writes
  new tokens into spare room instead.
- A batch of chats that start with the same prompt (a rollout's system prompt and tool list) would
  hold that prompt's keys and values once per row, and a decode step would read every copy.
  :meth:`KVBatch.prefill` computes them once and keeps them once (``shared``); the model's attention
  (:data:`agents.attention.NAME`) reads them once a step for all rows.
- A caller that re-renders a conversation each turn as text (the benchmarks' protocols) would
  re-encode the whole conversation every turn. :class:`PrefixCache` keeps each row's keys and values
  after a call (:meth:`KVBatch.row`) and starts the next call's rows from the longest stored prefix
  of their tokens (:meth:`KVBatch.resume`), as a serving engine's prefix cache does, so a turn feeds
  only the tokens no stored row has.

On a GPU the cost is the host's: a decode step of a 1.7B model at batch 32 took 74 ms on an H200 with
the GPU 17-21% busy (#16), launching each of its thousands of kernels from Python. A turn's decode
steps therefore run at a fixed width (:meth:`KVBatch.fixed_width`): the same shapes every step, the
write column and mask on the device, and the step's forward pass captured once as a CUDA graph and
replayed. On the CPU the same steps run without the graph, as fast as growing the cache each step.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from agents.attention import NAME, SDPA_MASKED, SharedPrefix

log = logging.getLogger(__name__)

RowKV = list[tuple[torch.Tensor, torch.Tensor]]
"""One row's keys and values, per layer, over its real tokens only: ``(heads, tokens, head_dim)`` each."""

HOLD_ONCE_FROM = 2048
"""A shared prompt start is held once (:meth:`KVBatch.prefill`) when that saves copies of at least this many
tokens (rows - 1 times its length). Reading it apart costs a decode step some 15 more small ops a layer, which
at SmolLM2-135M's size is the price of reading about this many tokens' keys and values (2 CPU threads: batch
16 over 56 shared tokens breaks even, over 128 it is 20% faster, batch 8 over 586 twice as fast)."""

Step = Callable[[Sequence[Sequence[int]]], torch.Tensor]
"""One decode step of :meth:`KVBatch.fixed_width`: each row's token (or none) in, next-token logits out."""


class InPlaceLayer(DynamicLayer):
    """A full-attention cache layer whose keys and values are views of a buffer with spare room
    (a quarter more than it holds, at least 64 columns), so appending a token copies nothing else.

    During a fixed-width turn (:meth:`KVBatch.fixed_width`, ``fixed`` set) it writes each step's
    token at the column a device tensor holds and returns the whole reserved width, so that every
    step of the turn has the same shapes and no host-side index.
    """

    fixed: tuple[torch.Tensor, int] | None = None
    """During a fixed-width turn: the column to write (a one-element device tensor) and the width."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fixed is not None:
            column, width = self.fixed
            self._key_buffer.index_copy_(2, column, key_states)
            self._value_buffer.index_copy_(2, column, value_states)
            return self._key_buffer[:, :, :width], self._value_buffer[:, :, :width]
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.keys.shape[-2] if self.keys.numel() else 0
        end = length + key_states.shape[-2]
        self._make_room(key_states, end, spare=max(end // 4, 64))
        self._key_buffer[:, :, length:end] = key_states
        self._value_buffer[:, :, length:end] = value_states
        self.keys, self.values = self._key_buffer[:, :, :end], self._value_buffer[:, :, :end]
        return self.keys, self.values

    def reserve(self, end: int) -> None:
        """Room for ``end`` columns (one copy now if the buffer is short, none while they fill), zeroed:
        a fixed-width step attends over all of them, masked, and masked garbage can still be NaN."""
        self._make_room(self.keys, end, spare=0)
        length = self.keys.shape[-2]
        self._key_buffer[:, :, length:end].zero_()
        self._value_buffer[:, :, length:end].zero_()

    def _make_room(self, like: torch.Tensor, end: int, spare: int) -> None:
        """A buffer shaped like ``like`` (rows, heads) with ``end`` columns at least, holding what
        the layer holds; a new one (``spare`` columns more) unless the current one fits."""
        length = self.keys.shape[-2] if self.keys.numel() else 0
        buffer = getattr(self, "_key_buffer", None)
        if (buffer is not None and buffer.shape[:2] == like.shape[:2] and buffer.shape[-2] >= end
                and not (length and self.keys.data_ptr() != buffer.data_ptr())):  # rows selected or repeated
            return
        shape = (*like.shape[:2], end + spare, like.shape[-1])
        keys, values = like.new_empty(shape), like.new_empty(shape)
        if length:
            keys[:, :, :length], values[:, :, :length] = self.keys, self.values
            self.keys, self.values = keys[:, :, :length], values[:, :, :length]
        self._key_buffer, self._value_buffer = keys, values


def _full_attention(layer: Any) -> bool:
    """Whether ``layer`` keeps every column (sliding-window layers drop old ones, so rows cannot be cut from them)."""
    return type(layer) in (DynamicLayer, InPlaceLayer)


class KVBatch:
    """The KV cache of the active rows, one chat each, grown by chunks of new tokens.

    ``mask`` marks which cache columns hold a row's real tokens (the rest is padding);
    ``lengths`` counts each row's real tokens, which are also its next position id. Where the rows
    start with a prompt held once (``shared``), the cache and ``mask`` cover what follows it and
    ``lengths`` counts it.
    """

    def __init__(self, model: PreTrainedModel, pad_id: int):
        self.model = model
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # transformers renamed ``past_key_values`` to ``cache`` during 5.x; take whichever this one has
        self.cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        self.cache: Cache = DynamicCache(config=model.config)
        self.cache.layers = [InPlaceLayer() if type(layer) is DynamicLayer else layer for layer in self.cache.layers]
        self.mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self.lengths = torch.zeros(0, dtype=torch.long, device=self.device)
        self.shared: SharedPrefix | None = None

    def prefill(self, prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """Encode the first prompts; their common prefix once, and held once where that saves enough
        copies (:data:`HOLD_ONCE_FROM`) and the model's attention can read it so
        (:data:`agents.attention.NAME`, every layer full attention), else copied into each row.
        Returns each row's next-token logits."""
        shared = shared_prefix_length(prompts)
        rows = len(prompts)
        self.mask = torch.zeros(rows, 0, dtype=torch.long, device=self.device)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=self.device)
        self.shared = None
        if rows > 1 and shared > 0:
            prefix = torch.tensor([list(prompts[0][:shared])], device=self.device)
            held_once = ((rows - 1) * shared >= HOLD_ONCE_FROM and self._in_place()
                         and getattr(self.model.config, "_attn_implementation", None) == NAME)
            cache = DynamicCache(config=self.model.config) if held_once else self.cache
            self.model(input_ids=prefix, use_cache=True, logits_to_keep=1, **{self.cache_arg: cache})
            if held_once:
                self.shared = [(layer.keys, layer.values) for layer in cache.layers]
            else:
                self.cache.batch_repeat_interleave(rows)
                self.mask = torch.ones(rows, shared, dtype=torch.long, device=self.device)
            self.lengths += shared
            prompts = [p[shared:] for p in prompts]
        return self.extend(prompts)

    def resume(self, rows: Sequence[RowKV | None]) -> None:
        """Start from stored rows (:meth:`row` of an earlier batch; ``None`` for a row with nothing
        stored), each right-aligned in the cache; then :meth:`extend` feeds each row the rest of its prompt.
        Only for full-attention models, whose rows :meth:`row` can cut out."""
        width = max((kv[0][0].shape[-2] for kv in rows if kv), default=0)
        self.mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
        self.lengths = torch.zeros(len(rows), dtype=torch.long, device=self.device)
        if not width:
            return
        for row, kv in enumerate(rows):
            if kv:
                self.mask[row, width - kv[0][0].shape[-2]:] = 1
        self.lengths = self.mask.sum(-1)
        self.shared = None
        for index, layer in enumerate(self.cache.layers):
            sample = next(kv for kv in rows if kv)[index][0]
            keys = sample.new_zeros((len(rows), *sample.shape[:-2], width, sample.shape[-1]))
            values = torch.zeros_like(keys)
            for row, kv in enumerate(rows):
                if kv:
                    stored_keys, stored_values = kv[index]
                    keys[row, :, width - stored_keys.shape[-2]:] = stored_keys
                    values[row, :, width - stored_values.shape[-2]:] = stored_values
            layer.update(keys, values)

    def extend(self, chunks: Sequence[Sequence[int]]) -> torch.Tensor:
        """Feed each row its chunk (left-padded to one width; a row may have none) and return the
        logits after each row's last token (meaningless for rows with an empty chunk)."""
        width = max(len(c) for c in chunks)
        ids = torch.full((len(chunks), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(chunks), width, dtype=torch.long)
        for row, chunk in enumerate(chunks):
            if chunk:
                ids[row, width - len(chunk):] = torch.tensor(chunk)
                mask[row, width - len(chunk):] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = self.lengths[:, None] + (mask.cumsum(-1) - 1).clamp(min=0)
        self.mask = torch.cat([self.mask, mask], dim=1)
        logits = self._forward(input_ids=ids, attention_mask=self.mask, position_ids=positions)
        self.lengths += mask.sum(-1)
        return logits

    def _in_place(self) -> bool:
        """Whether every cache layer is an :class:`InPlaceLayer` (what fixed widths and a shared start need)."""
        return all(type(layer) is InPlaceLayer for layer in self.cache.layers)

    def _forward(self, **inputs: torch.Tensor) -> torch.Tensor:
        """The model's next-token logits after ``inputs`` with this cache (and the shared prefix, if any)."""
        shared = {} if self.shared is None else {"shared_prefix": self.shared}
        out = self.model(**inputs, use_cache=True, logits_to_keep=1, **{self.cache_arg: self.cache}, **shared)
        return out.logits[:, -1]

    @contextlib.contextmanager
    def fixed_width(self, steps: int, graphs: bool = True) -> Iterator[Step]:
        """Up to ``steps`` steps of one token a row (a turn's decoding), each the same forward pass:
        every layer's room for all of them reserved at once, the mask (over the whole reserved width)
        and position ids kept on the device and updated in place. On a GPU (``graphs``) that pass is
        captured once as a CUDA graph and replayed each step: one launch instead of one per kernel,
        which is what a decode step of a small batch costs on the host. Yields ``step(chunks)``,
        :meth:`extend` for chunks of at most one token (a row may have none, and is then fed
        nothing); on leaving, the cache holds what the steps fed, as after as many :meth:`extend`.

        Models whose cache is not all :class:`InPlaceLayer` or whose attention does not take a
        prepared boolean mask (:data:`agents.attention.SDPA_MASKED`) get :meth:`extend` itself.
        """
        layers = self.cache.layers
        if (steps < 1 or not self.mask.shape[1] or not self._in_place()
                or getattr(self.model.config, "_attn_implementation", None) not in SDPA_MASKED):
            yield self.extend
            return
        rows, start = self.mask.shape
        width = -(-(start + steps) // 16) * 16  # a multiple of 16: GPU attention kernels pad other mask widths per call
        column = torch.full((1,), start, dtype=torch.long, device=self.device)
        mask = torch.zeros(rows, 1, 1, width, dtype=torch.bool, device=self.device)
        mask[:, 0, 0, :start] = self.mask.bool()
        tokens = torch.full((rows, 1), self.pad_id, dtype=torch.long, device=self.device)
        positions = self.lengths[:, None].clone()
        fed = torch.zeros(rows, steps, dtype=torch.long, device=self.device)
        for layer in layers:
            layer.reserve(width)
            layer.fixed = (column, width)

        def forward() -> torch.Tensor:
            return self._forward(input_ids=tokens, attention_mask=mask, position_ids=positions)

        replay = _replayable(forward, self.model, self.device, graphs)
        done = 0

        def step(chunks: Sequence[Sequence[int]]) -> torch.Tensor:
            nonlocal done
            host = torch.tensor([[chunk[0] if chunk else self.pad_id for chunk in chunks],
                                 [1 if chunk else 0 for chunk in chunks]])
            given = host.to(self.device)
            tokens.copy_(given[0, :, None])
            mask[:, 0, 0].index_copy_(1, column, given[1, :, None].bool())
            fed[:, done] = given[1]
            logits = replay()
            positions.add_(given[1, :, None])
            column.add_(1)
            done += 1
            return logits

        try:
            yield step
        finally:
            for layer in layers:
                layer.fixed = None
                layer.keys = layer._key_buffer[:, :, :start + done]
                layer.values = layer._value_buffer[:, :, :start + done]
            self.mask = torch.cat([self.mask, fed[:, :done]], dim=1)
            self.lengths = self.lengths + fed[:, :done].sum(-1)

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only ``rows``, in that order; drop the cache columns none of them uses."""
        if list(rows) == list(range(len(self.lengths))):
            return
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask, self.lengths = self.mask[index], self.lengths[index]
        used = self.mask.bool().any(0)
        if used.all() or not all(_full_attention(layer) for layer in self.cache.layers):
            return  # other cache layouts (sliding windows) are left as they are
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[:, :, used], layer.values[:, :, used]
        self.mask = self.mask[:, used]

    def row(self, row: int) -> RowKV | None:
        """Row ``row``'s keys and values over its real tokens (a copy), or ``None`` where the cache
        layout cannot give them (sliding windows)."""
        if not all(_full_attention(layer) for layer in self.cache.layers):
            return None
        real = self.mask[row].bool()
        own = [(layer.keys[row][:, real], layer.values[row][:, real]) for layer in self.cache.layers]
        if self.shared is None:
            return [(keys.clone(), values.clone()) for keys, values in own]
        return [(torch.cat([shared_keys[0], keys], 1), torch.cat([shared_values[0], values], 1))
                for (shared_keys, shared_values), (keys, values) in zip(self.shared, own)]


_UNCAPTURABLE: weakref.WeakSet[torch.nn.Module] = weakref.WeakSet()
"""Models whose decode step could not be captured as a CUDA graph: not tried again (nor warned of)."""


def _replayable(forward: Callable[[], torch.Tensor], model: torch.nn.Module, device: torch.device,
                graphs: bool) -> Callable[[], torch.Tensor]:
    """``forward`` as a CUDA graph's replay on a GPU (``graphs``), else ``forward`` itself; a model
    whose capture fails (a forward pass that syncs with the host) is warned of once and not tried again."""
    if not graphs or device.type != "cuda" or model in _UNCAPTURABLE:
        return forward
    try:
        return _captured(forward)
    except RuntimeError as error:
        _UNCAPTURABLE.add(model)
        log.warning("decoding %s without CUDA graphs: capturing its decode step failed (%s)",
                    type(model).__name__, error)
        return forward


def _captured(forward: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``forward`` captured as a CUDA graph (after the warm-up run capture needs, on a side stream):
    a function that replays it and returns a copy of its output."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        forward()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    before = torch.cuda.current_stream()
    try:
        with torch.cuda.graph(graph):
            output = forward()
    finally:  # a failed capture leaves torch's capture stream current (its __exit__ raises before restoring it)
        torch.cuda.set_stream(before)

    def replay() -> torch.Tensor:
        graph.replay()
        return output.clone()  # the next replay overwrites it

    return replay


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many tokens ``a`` and ``b`` share at the start."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens all prompts share at the start, leaving each at least one of its own (for its logits)."""
    shared = min(len(p) for p in prompts) - 1
    for prompt in prompts[1:]:
        shared = min(shared, common_prefix_length(prompts[0], prompt))
    return max(shared, 0)


@dataclass
class _Stored:
    ids: list[int]
    kv: RowKV


class PrefixCache:
    """The rows of a caller's last batch (their token ids and :meth:`KVBatch.row`), so that its next
    batch starts each prompt from the stored row sharing the longest prefix with it: the same chat a
    turn later, or on its first turn another chat with the same instructions. Holds one batch (its
    memory is rows x tokens x the model's KV width): :meth:`take` hands the next batch its prefixes
    and forgets the rest, :meth:`replace` stores the new rows."""

    def __init__(self) -> None:
        self._rows: list[_Stored] = []

    def lookup(self, prompt: Sequence[int]) -> tuple[int, RowKV | None]:
        """The longest stored prefix of ``prompt`` (leaving it at least one token to feed): its
        length and its keys and values, or ``(0, None)``."""
        best, found = 0, None
        for stored in self._rows:
            length = min(common_prefix_length(prompt, stored.ids), len(prompt) - 1)
            if length > best:
                best, found = length, stored
        if found is None:
            return 0, None
        return best, [(keys[:, :best], values[:, :best]) for keys, values in found.kv]

    def take(self, prompts: Sequence[Sequence[int]]) -> list[tuple[int, RowKV | None]]:
        """:meth:`lookup` for each prompt, then empty the cache: what the prompts do not use is freed
        now, and what they use once the caller has copied it into its batch."""
        found = [self.lookup(prompt) for prompt in prompts]
        self._rows = []
        return found

    def replace(self, rows: Sequence[tuple[list[int], RowKV | None]]) -> None:
        """Store these rows (token ids and their keys and values) in place of the last batch's."""
        self._rows = [_Stored(ids, kv) for ids, kv in rows if kv is not None]
