"""The policy the evaluations run: any function from the chat so far to the next assistant message.

Keeping the interface this small lets one harness serve a scripted policy in tests and a model in
real runs. :class:`HFPolicy` is the thin adapter over a Hugging Face causal LM (the default model,
or any other, with a LoRA adapter): it renders the chat with the model's own template and decodes
one turn with ``generate``, greedy and capped at 512 new tokens by default (M3ToolEval's and
tau-bench's agent settings). Loading goes through :mod:`agents.models`, so a model is found (and a
missing one reported) exactly as in training.

Messages use the roles ``system``, ``user``, ``assistant`` and ``tool`` (an environment's
observation); :class:`HFPolicy` shows ``tool`` turns in the role that training used for them
(:class:`agents.prompting.ChatFormat`), so a trained adapter sees observations as it learned them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from eval.cli import InputError

log = logging.getLogger(__name__)

Message = dict[str, str]
Policy = Callable[[list[Message]], str]
"""The chat so far (system, user, assistant and tool turns) -> the next assistant message."""


class ContextLimitExceeded(Exception):
    """The chat no longer fits the model's context; the episode ends there (M3ToolEval's ``context_limit``)."""


def scripted(replies: Sequence[str]) -> Policy:
    """A policy that says ``replies`` in turn, one per assistant turn already in the chat, then the last again."""
    if not replies:
        raise ValueError("a scripted policy needs at least one reply")

    def policy(messages: list[Message]) -> str:
        said = sum(m["role"] == "assistant" for m in messages)
        return replies[min(said, len(replies) - 1)]

    return policy


def system_prompt(policy: str, tools: Sequence[dict[str, Any]]) -> str:
    """The domain's policy with its tools written out, as training shows them to a model whose chat
    template cannot render tools (:func:`agents.prompting.tools_in_system_prompt`), so that an
    evaluated adapter sees the prompt it was trained on."""
    from agents.prompting import tools_in_system_prompt

    return f"{policy}\n\n{tools_in_system_prompt(tools)}"


@dataclass
class HFPolicy:
    """A causal LM as a :data:`Policy`: one ``generate`` call per turn.

    ``temperature`` 0 decodes greedily (the benchmarks' agent setting); above 0 it samples (the
    held-out eval's n samples, a simulated user). With a peft model, ``use_adapter=False`` runs the
    base model under ``disable_adapter()``: :meth:`base` gives that policy on the same weights, so a
    base-vs-adapter comparison or a simulated user backed by the base model costs no second copy.
    """

    model: Any
    tokenizer: Any
    max_new_tokens: int = 512
    temperature: float = 0.0
    use_adapter: bool = True
    observation_role: str = field(init=False)

    def __post_init__(self) -> None:
        from agents.prompting import ChatFormat

        self.observation_role = ChatFormat.of(self.tokenizer).observation_role

    def base(self, **changes: Any) -> HFPolicy:
        """The same weights with the adapter switched off (and any other field changed)."""
        return replace(self, use_adapter=False, **changes)

    def _adapter_context(self) -> contextlib.AbstractContextManager[Any]:
        if not self.use_adapter and hasattr(self.model, "disable_adapter"):
            return self.model.disable_adapter()
        return contextlib.nullcontext()

    def __call__(self, messages: list[Message]) -> str:
        import torch

        chat = [{"role": self.observation_role if m["role"] == "tool" else m["role"], "content": m["content"]}
                for m in messages]
        text = self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        prompt = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").to(self.model.device)
        length = prompt["input_ids"].shape[1]
        limit = getattr(self.model.config, "max_position_embeddings", None) or length + self.max_new_tokens
        if length >= limit:
            raise ContextLimitExceeded(f"the chat takes {length} tokens; the model's context holds {limit}")
        sampling = {"do_sample": True, "temperature": self.temperature, "top_p": 1.0, "top_k": 0} \
            if self.temperature > 0 else {"do_sample": False}
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.no_grad(), self._adapter_context():
            output = self.model.generate(**prompt, max_new_tokens=min(self.max_new_tokens, limit - length),
                                         pad_token_id=pad, **sampling)
        return self.tokenizer.decode(output[0, length:], skip_special_tokens=True)


def load_hf_policy(model: str, adapter: str | None = None, device: str | None = None, **settings: Any) -> HFPolicy:
    """``model`` (the default model's name, a Hugging Face id in the local cache or a directory),
    with the LoRA ``adapter`` saved at that path when given, as an :class:`HFPolicy`.

    A model or adapter that cannot be loaded offline is an :class:`InputError` (exit code 2), with
    :mod:`agents.models`' message saying what to install or pass.
    """
    from agents.models import ModelNotFoundError, load_adapter, load_model

    try:
        loaded, tokenizer = load_model(model, device=device)
        if adapter is not None:
            loaded = load_adapter(loaded, adapter, trainable=False)
    except ModelNotFoundError as error:
        raise InputError(str(error)) from None
    loaded.eval()
    log.info("loaded %s%s on %s", model, f" with adapter {adapter}" if adapter else "", loaded.device)
    return HFPolicy(loaded, tokenizer, **settings)
