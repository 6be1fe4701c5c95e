"""A text space that holds any string, and its shared-memory support for ``AsyncVectorEnv``.

Gymnasium's ``Text`` accepts only its charset (letters and digits by default), so JSON tool calls
fall outside it, and its shared-memory buffers store character indices, which cannot hold arbitrary
text. :class:`AnyText` accepts every ``str`` up to ``max_length`` characters; its shared memory
holds UTF-8 bytes (a lone surrogate, which a JSON escape like ``"\\ud800"`` makes, passes through as its
three bytes) and is read lazily, so ``gym.make_vec(…, vectorization_mode="async")`` works with
the default ``shared_memory=True`` as it does for arrays, and the batch it hands out is in the vector
env's observation space, ``copy=False`` or not.
"""

from __future__ import annotations

import multiprocessing as mp
import string
import struct
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector.utils import batch_space, create_shared_memory, read_from_shared_memory, write_to_shared_memory


class AnyText(spaces.Text):
    """Any string of at most ``max_length`` characters."""

    def __init__(self, max_length: int = 65536, seed: int | np.random.Generator | None = None):
        super().__init__(max_length=max_length, min_length=0, charset=string.printable, seed=seed)

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"AnyText({self.max_length})"

    def fit(self, text: str) -> str:
        """``text`` as an observation of this space: valid Unicode, and cut past ``max_length`` with a note.
        A lone surrogate (a tool echoing a JSON escape such as ``"\\ud800"`` from the agent's call) comes
        back as that escape, since tokenizers and UTF-8 files refuse it."""
        if not text.isascii():  # (a flag Python keeps on each str: free for the common case)
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        if len(text) <= self.max_length:
            return text
        note = "\n[output truncated]"
        if len(note) >= self.max_length:  # no room for the note
            return text[:self.max_length]
        return text[:self.max_length - len(note)] + note

    @property
    def slot_bytes(self) -> int:
        """Bytes one observation takes in shared memory: a length and the UTF-8 text."""
        return 4 + 4 * self.max_length


class SharedTexts(Sequence[str]):
    """The batch of texts in a shared buffer, decoded when read (so it is never stale)."""

    def __init__(self, space: AnyText, buffer: Any, n: int):
        self._space, self._buffer, self._n = space, buffer, n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(self._n)[index])
        if not -self._n <= index < self._n:
            raise IndexError(index)
        start = (index % self._n) * self._space.slot_bytes
        view = memoryview(self._buffer.get_obj()).cast("B")
        (size,) = struct.unpack_from("<I", view, start)
        return bytes(view[start + 4:start + 4 + size]).decode("utf-8", "surrogatepass")

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(self._n))

    def __deepcopy__(self, memo: dict[int, Any]) -> tuple[str, ...]:
        return tuple(self)

    def __repr__(self) -> str:
        return f"SharedTexts({tuple(self)!r})"


class TextBatch(spaces.Tuple):
    """A vector env's batch of texts: a tuple, or the :class:`SharedTexts` an async env with
    ``copy=False`` hands out (Gymnasium's ``Tuple`` takes only tuples, lists and arrays)."""

    def contains(self, x: Any) -> bool:
        return super().contains(tuple(x) if isinstance(x, SharedTexts) else x)


@batch_space.register(AnyText)
def _batch(space: AnyText, n: int = 1) -> TextBatch:
    batched = batch_space.dispatch(spaces.Text)(space, n)  # Gymnasium's own, seeds and all
    return TextBatch(batched.spaces, seed=batched.np_random)


@create_shared_memory.register(AnyText)
def _create(space: AnyText, n: int = 1, ctx: Any = mp) -> Any:
    return ctx.Array("B", n * space.slot_bytes)


@read_from_shared_memory.register(AnyText)
def _read(space: AnyText, shared_memory: Any, n: int = 1) -> SharedTexts:
    return SharedTexts(space, shared_memory, n)


@write_to_shared_memory.register(AnyText)
def _write(space: AnyText, index: int, value: str, shared_memory: Any) -> None:
    if not space.contains(value):  # it would spill into the next env's slot
        raise ValueError(f"the observation is not in {space!r}: {type(value).__name__} of "
                         f"{len(value) if isinstance(value, str) else '?'} characters")
    data = value.encode("utf-8", "surrogatepass")
    start = index * space.slot_bytes
    view = memoryview(shared_memory.get_obj()).cast("B")
    struct.pack_into("<I", view, start, len(data))
    view[start + 4:start + 4 + len(data)] = data
