"""Export to a folder transformers recognises, with 2:4 weights in compressed-tensors `sparse-24-bitmask`.

Per 2:4 weight `<module>.weight` of shape (rows, cols) the file holds (compressed-tensors layout):
  <module>.compressed  (rows, cols/2)      the 2 kept values of every group of 4, in column order, orig dtype
  <module>.bitmask     (rows, ceil(cols/8)) uint8, numpy.packbits(keep, axis=-1, bitorder="little")
  <module>.shape       (2, 1) int64         the dense shape
A group with more than 2 zeros still keeps exactly 2 positions (its nonzeros first, then the lowest-index
zeros), so every group has exactly 2 bits set, as the compressed-tensors compressor produces.
config.json carries `quantization_config` with `sparsity_config` (compressed-tensors' Sparse24BitMaskConfig), key for
key as llm-compressor 0.10 writes it, and is read as the same model by transformers 5 and 4.x (hf_config_dict).
The folder is written under a temporary name and renamed at the end; the temporary folders of killed exports are
removed by the next export to the same name, and a full disk is one line with the temporary folder removed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from compress.checkpoint_format import config_dict
from compress.errors import UserError
from compress.load_checks import refuse_meta, refuse_not_matching, tied_targets
from compress.records import pack_bits, unpack_bits

SHARD_BYTES = 5 * 1024**3
INDEX_FILE = "model.safetensors.index.json"


# ---------------------------------------------------------------- tensor codec (pure functions)
def keep_mask_24(W: torch.Tensor) -> torch.Tensor:
    """Exactly 2 kept positions per group of 4: the nonzeros, topped up with the lowest-index zeros.

    Raises ValueError when a group has more than 2 nonzeros (the weight is not 2:4 sparse)."""
    rows, cols = W.shape
    if cols % 4:
        raise ValueError(f"in-features {cols} is not divisible by 4")
    groups = (W != 0).reshape(rows, cols // 4, 4)
    if (groups.sum(-1) > 2).any():
        raise ValueError("weight is not 2:4 sparse (a group of 4 has more than 2 nonzeros)")
    order = torch.sort((~groups).to(torch.uint8), dim=-1, stable=True).indices[..., :2]  # nonzeros first
    keep = torch.zeros_like(groups)
    keep.scatter_(-1, order, True)
    return keep.reshape(rows, cols)


def pack_bitmask(keep: torch.Tensor) -> torch.Tensor:
    return pack_bits(keep)


def unpack_bitmask(bitmask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return unpack_bits(bitmask, shape)


def check_keep_24(keep: torch.Tensor, W: torch.Tensor) -> None:
    """ValueError unless `keep` has exactly 2 of every 4 and W is zero wherever `keep` is False."""
    rows, cols = W.shape
    if tuple(keep.shape) != (rows, cols) or cols % 4:
        raise ValueError(f"keep-mask {tuple(keep.shape)} does not fit weight {(rows, cols)} (in-features % 4 == 0)")
    if not bool((keep.reshape(rows, cols // 4, 4).sum(-1) == 2).all()):
        raise ValueError("keep-mask is not 2:4 (every group of 4 must keep exactly 2)")
    if bool(((W != 0) & ~keep).any()):
        raise ValueError("weight has nonzeros outside its 2:4 keep-mask")


def compress_24(W: torch.Tensor, keep: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The compressed-tensors tensors of one 2:4 weight. `keep`: the mask the pruning stage recorded (a kept weight
    may be exactly zero); None derives it from the zeros (`keep_mask_24`: for weights read back from a file)."""
    W = W.detach().cpu()
    if keep is None:
        keep = keep_mask_24(W)
    else:
        keep = keep.cpu()
        check_keep_24(keep, W)
    rows, cols = W.shape
    return {
        "compressed": W[keep].reshape(rows, cols // 2).contiguous(),
        "bitmask": pack_bitmask(keep),
        "shape": torch.tensor([rows, cols], dtype=torch.int64).reshape(-1, 1),
    }


def decompress_24(compressed: torch.Tensor, bitmask: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    rows, cols = (int(x) for x in shape.flatten().tolist())
    if bitmask.dtype != torch.uint8 or tuple(bitmask.shape) != (rows, (cols + 7) // 8):
        raise ValueError(f"bitmask has shape {tuple(bitmask.shape)}, expected ({rows}, {(cols + 7) // 8})")
    if tuple(compressed.shape) != (rows, cols // 2):
        raise ValueError(f"compressed values have shape {tuple(compressed.shape)}, expected ({rows}, {cols // 2})")
    keep = unpack_bitmask(bitmask, (rows, cols))
    if cols % 4 or not bool((keep.reshape(rows, cols // 4, 4).sum(-1) == 2).all()):
        raise ValueError("bitmask is not a 2:4 pattern (every group of 4 must keep exactly 2)")
    W = torch.zeros(rows, cols, dtype=compressed.dtype)
    W[keep] = compressed.flatten()
    return W


# ---------------------------------------------------------------- folder I/O
def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    except OverflowError:
        return False
    return True


def remove_stale_siblings(out: Path) -> None:
    """Remove `.{name}.tmp-<pid>` and `.{name}.old-<pid>` folders of exports whose process is gone (a killed export
    leaves its temporary folder behind; hundreds of MB each). A stale `.old-` folder while `out` is missing is the
    previous checkpoint of a swap killed half-way: it is put back as `out` rather than deleted."""
    try:
        siblings = sorted(out.parent.iterdir())
    except OSError:  # no parent folder yet (nothing to clean) or not readable (the write will say so)
        return
    for kind in ("old", "tmp"):  # old first: a restored checkpoint must not be judged by its tmp sibling
        prefix = f".{out.name}.{kind}-"
        for p in siblings:
            pid = p.name.removeprefix(prefix)
            if not p.name.startswith(prefix) or not pid.isdigit() or int(pid) == os.getpid() or _pid_running(int(pid)):
                continue
            if kind == "old" and not out.exists() and p.is_dir():
                os.replace(p, out)
            elif p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Fail early, before any work, when `out` exists and may not be replaced (after clearing what killed exports
    left beside it, see `remove_stale_siblings`)."""
    remove_stale_siblings(out)
    if out.exists() and not overwrite:
        raise UserError(f"output folder {out} already exists; pass --overwrite to replace it or choose another --out")
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is not a folder; choose another --out")


def _state_dict_for_export(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers, without tied duplicates (e.g. lm_head tied to the embeddings)."""
    seen: set[int] = set()
    out = {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.numel()) if t.numel() else id(t)
        if key in seen:
            continue
        seen.add(key)
        out[name] = t
    return out


def _shards(tensors: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    shards, current, size = [], {}, 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += nbytes
    shards.append(current)
    return shards


def _zeros_fraction(model: nn.Module) -> float:
    zeros = total = 0
    for p in model.parameters():
        zeros += int((p == 0).sum())
        total += p.numel()
    return zeros / total


def sparsity_config(model: nn.Module, compressed: set[str], ignore: list[str]) -> dict:
    """compressed-tensors `quantization_config` for a 2:4 (not quantized) model, key for key as llm-compressor 0.10
    writes it (ModelCompressor.update_config): version, quant_method, sparsity_config, transform_config and nothing
    else. A top-level quantization key such as `format` makes compressed-tensors 0.14 parse a QuantizationConfig and
    refuse the folder (`config_groups Field required`)."""
    import compressed_tensors
    from compressed_tensors.config import Sparse24BitMaskConfig

    sparse = Sparse24BitMaskConfig(
        global_sparsity=_zeros_fraction(model), sparsity_structure="2:4", targets=["Linear"], ignore=sorted(ignore)
    )
    return {
        "quant_method": "compressed-tensors",
        "sparsity_config": sparse.model_dump(),
        "transform_config": {},
        "version": compressed_tensors.__version__,
    }


# transformers 4.x names of the RoPE bases of models whose transformers-5 `rope_parameters` is per layer type:
# model_type -> (key of full_attention's rope_theta, key of sliding_attention's). full_attention's scaling is 4.x's
# `rope_scaling`. Other per-layer-type models get full_attention's as `rope_theta` / `rope_scaling`.
_LAYER_TYPE_ROPE_4X = {
    "gemma3_text": ("rope_theta", "rope_local_base_freq"),
    "gemma3n_text": ("rope_theta", "rope_local_base_freq"),
    "modernbert_decoder": ("global_rope_theta", "local_rope_theta"),
}


def _rope_4x(rope: dict) -> tuple[float | None, float | None, dict | None]:
    """(rope_theta, partial_rotary_factor, rope_scaling) in transformers 4.x terms for one flat rope_parameters."""
    rest = {k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor")}
    scaling = None if set(rest) <= {"rope_type", "type"} and rest.get("rope_type", "default") == "default" else rest
    return rope.get("rope_theta"), rope.get("partial_rotary_factor"), scaling


def legacy_rope_keys(config: dict) -> dict:
    """The transformers 4.x RoPE keys for a transformers 5 config dict (`rope_theta`, `rope_scaling`, Gemma-3's
    `rope_local_base_freq`, `partial_rotary_factor`), only those absent from it. transformers 4.x ignores
    `rope_parameters` and would otherwise fall back to its defaults (rope_theta 10000, no scaling)."""
    rope = config.get("rope_parameters")
    if not isinstance(rope, dict) or not rope:
        return {}
    out: dict = {}
    layer_types = config.get("layer_types") or ()
    if any(k in layer_types for k in rope):  # per layer type (Gemma-3: local and global bases)
        full, sliding = rope.get("full_attention"), rope.get("sliding_attention")
        full_key, sliding_key = _LAYER_TYPE_ROPE_4X.get(config.get("model_type"), ("rope_theta", None))
        if isinstance(full, dict):
            theta, partial, out["rope_scaling"] = _rope_4x(full)
            out[full_key] = theta
            if partial is not None:
                out["partial_rotary_factor"] = partial
        if sliding_key and isinstance(sliding, dict) and sliding.get("rope_theta") is not None:
            out[sliding_key] = sliding["rope_theta"]
    else:
        theta, partial, out["rope_scaling"] = _rope_4x(rope)
        if theta is not None:
            out["rope_theta"] = theta
        if partial is not None:
            out["partial_rotary_factor"] = partial
    return {k: v for k, v in out.items() if k not in config and (v is not None or k == "rope_scaling")}


def _rope_of(config) -> list:
    """rope_parameters of a transformers config and of its sub-configs (e.g. Gemma-3's text_config)."""
    found = [getattr(config, "rope_parameters", None)]
    for key in getattr(config, "sub_configs", None) or {}:
        sub = getattr(config, key, None)
        if sub is not None and hasattr(sub, "to_dict"):
            found += _rope_of(sub)
    return found


def hf_config_dict(model: nn.Module) -> dict:
    """config.json for `model` (without quantization_config) that transformers 5 and 4.x read as the same model:
    `architectures` from the model class (transformers' save_pretrained does the same), `dtype` of the weights when
    the config has none, no machine-local `_name_or_path`, and transformers 4.x's RoPE keys beside `rope_parameters`
    (see legacy_rope_keys) when transformers 5 still reads them back to the same `rope_parameters`."""
    from transformers import PreTrainedModel

    config = model.config.to_dict()
    for key in ("quantization_config", "_name_or_path"):
        config.pop(key, None)
    if isinstance(model, PreTrainedModel):
        config["architectures"] = [type(model).__name__]
    if config.get("dtype") is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
        if dtype is not None:
            config["dtype"] = str(dtype).removeprefix("torch.")
    subs = [config] + [v for v in config.values() if isinstance(v, dict) and "model_type" in v]
    added = [(d, legacy_rope_keys(d)) for d in subs]
    for d, keys in added:
        d.update(keys)
    if any(keys for _, keys in added):
        try:
            same = _rope_of(type(model.config).from_dict(json.loads(json.dumps(config)))) == _rope_of(model.config)
        except Exception:  # noqa: BLE001 - a config transformers 5 cannot rebuild with them: leave them out
            same = False
        if not same:
            for d, keys in added:
                for k in keys:
                    d.pop(k)
    return config


def disk_full(e: BaseException) -> bool:
    """Whether a write failed for lack of space (OSError ENOSPC, or safetensors' error that wraps it)."""
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return True
    text = str(e)  # safetensors reports the OS error inside its own exception's text
    return isinstance(e, SafetensorError | OSError) and (
        "No space left on device" in text or "StorageFull" in text or "os error 28" in text
    )


def save_checkpoint(
    model: nn.Module,
    tokenizer,
    out: Path,
    *,
    compress_24_modules: set[str] = frozenset(),
    masks_24: dict[str, torch.Tensor] | None = None,
    ignore: list[str] = (),
    extra_files: dict[str, str] | None = None,
    overwrite: bool = False,
    quantization_config: dict | None = None,
    quant_codes: dict | None = None,
) -> Path:
    """Write config, tokenizer, generation config, safetensors weights (2:4 modules compressed) and
    `extra_files` (name -> text) into `out`, atomically. A full disk gives one line; the temporary folder is
    removed and an existing `out` is left as it was.

    2:4 modules: `masks_24` (name -> keep-mask, from the pipeline's records) is written as given; modules named only
    in `compress_24_modules` (a model read back from a file) get the mask of their zeros.
    Quantized modules: `quant_codes` (name -> quant/codes.py codes, from the records) in the format
    compress/quant_checkpoint.py picks (compressed-tensors pack-quantized, or ours); a 2:4 model that is also
    quantized keeps its zeros as codes, with the 2:4 structure in the config's metadata."""
    masks_24 = dict(masks_24 or {})
    compress_24_modules = set(compress_24_modules) | set(masks_24)
    quant_codes = dict(quant_codes or {})
    quant_config = None
    if quant_codes:
        from compress.quant_checkpoint import encode

        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        sparse = {"global_sparsity": _zeros_fraction(model), "ignore": sorted(set(linears) - compress_24_modules)}
        try:
            quant_tensors, quant_config = encode(
                quant_codes,
                dtype,
                [n for n in linears if n not in quant_codes],
                sparse if compress_24_modules else None,
            )
        except ValueError as e:
            raise UserError(f"cannot export the quantized weights: {e}") from None
        compress_24_modules = set()  # the zeros are codes; compressed-tensors cannot compose a bitmask with them
    out = Path(out)
    check_output_dir(out, overwrite)  # also removes stale temporary folders of killed exports
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tensors = {}
    for name, t in _state_dict_for_export(model).items():
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and module in quant_codes:
            continue  # written as its codes below
        if name.endswith(".weight") and module in compress_24_modules:
            try:
                encoded = compress_24(t, masks_24.get(module))
            except ValueError as e:
                raise UserError(f"{module}: {e}; refusing to export it as 2:4") from None
            for suffix, v in encoded.items():
                tensors[f"{module}.{suffix}"] = v
        else:
            tensors[name] = t.detach().cpu().contiguous()
    if quant_codes:
        tensors.update(quant_tensors)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    try:
        tmp.mkdir()
        shards = _shards(tensors)
        if len(shards) == 1:
            save_file(shards[0], tmp / "model.safetensors", metadata={"format": "pt"})
        else:
            weight_map = {}
            for i, shard in enumerate(shards, 1):
                fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, tmp / fname, metadata={"format": "pt"})
                weight_map.update({k: fname for k in shard})
            (tmp / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))

        config = hf_config_dict(model)
        if quantization_config is not None:
            config["quantization_config"] = quantization_config
        elif quant_config is not None:
            config["quantization_config"] = quant_config
        elif compress_24_modules:
            config["quantization_config"] = sparsity_config(model, compress_24_modules, list(ignore))
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for fname, text in (extra_files or {}).items():
            (tmp / fname).write_text(text)
        for f in tmp.glob("*.safetensors"):
            f.chmod(0o644)  # safetensors writes 0600; checkpoints are meant to be shared

        if out.exists():  # --overwrite: swap in the new folder, then remove the old one
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(old, out)  # the previous checkpoint stays where it was
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if disk_full(e):
            raise UserError(
                f"no space left on device writing {out} (needs about {max(1, round(total / 1e6))} MB); "
                "free space and rerun"
            ) from None
        raise
    return out


def weight_files(folder: Path) -> list[Path]:
    index = folder / INDEX_FILE
    if index.exists():
        return sorted({folder / f for f in json.loads(index.read_text())["weight_map"].values()})
    single = folder / "model.safetensors"
    if not single.exists():
        raise UserError(f"{folder} has no model.safetensors or {INDEX_FILE}; is it a checkpoint folder?")
    return [single]


def read_state_dict(folder: Path, quantization_config: dict | None = None) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder, 2:4-compressed and quantized weights (compress/quant_checkpoint.py,
    given the folder's `quantization_config`) decoded back to dense `.weight`s."""
    raw: dict[str, torch.Tensor] = {}
    for f in weight_files(folder):
        if not f.exists():
            raise UserError(f"checkpoint file {f} is missing; re-export the checkpoint")
        try:
            with safe_open(f, framework="pt") as fh:
                for key in fh.keys():
                    raw[key] = fh.get_tensor(key)
        except (SafetensorError, OSError) as e:
            raise UserError(f"checkpoint file {f} is damaged or truncated ({e}); re-export or re-download it") from None
    out = {}
    if quantization_config is not None and (
        quantization_config.get("config_groups") or quantization_config.get("quant_method") != "compressed-tensors"
    ):
        from compress.quant_checkpoint import decode

        try:
            out.update(decode(raw, quantization_config, f"checkpoint {folder}"))
        except ValueError as e:
            raise UserError(str(e)) from None
    for key in [k for k in raw if k.endswith(".compressed")]:
        module = key.removesuffix(".compressed")
        try:
            out[f"{module}.weight"] = decompress_24(
                raw.pop(key), raw.pop(f"{module}.bitmask"), raw.pop(f"{module}.shape")
            )
        except KeyError as e:
            raise UserError(f"checkpoint {folder}: {module} lacks {e.args[0]}; the file is incomplete") from None
        except ValueError as e:
            raise UserError(f"checkpoint {folder}: {module}: {e}") from None
    out.update(raw)
    return out


def read_masks_24(folder: Path) -> dict[str, torch.Tensor]:
    """The keep-mask of every `sparse-24-bitmask` Linear of a checkpoint folder (module name -> bool (rows, cols)),
    so that later stages (quantization) keep the zeros the checkpoint's pruning chose."""
    out = {}
    for f in weight_files(folder):
        with safe_open(f, framework="pt") as fh:
            for key in fh.keys():
                if key.endswith(".bitmask"):
                    module = key.removesuffix(".bitmask")
                    rows, cols = (int(x) for x in fh.get_tensor(f"{module}.shape").flatten().tolist())
                    out[module] = unpack_bitmask(fh.get_tensor(key), (rows, cols))
    return out


def read_config(folder: Path):
    """(transformers config without its `quantization_config`, that dict or None) of a checkpoint folder."""
    from transformers import AutoConfig

    config_dict(folder)  # one line for a missing or garbage config.json
    try:
        config = AutoConfig.from_pretrained(folder)
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{folder}/config.json is broken ({str(e).splitlines()[0][:160]})") from None
    qc = getattr(config, "quantization_config", None)
    if qc is not None:
        del config.quantization_config  # decoded here, not by a transformers quantizer
    return config, qc


def build_model(folder: Path, config, state: dict[str, torch.Tensor], dtype: torch.dtype | None, replace=None):
    """(model on CPU in eval mode, tokenizer): `config`'s architecture without allocating weights, `replace(model)`
    swapping in runtime modules if given, then every tensor of `state` assigned (checked against the model)."""
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype or config.dtype)
    if replace is not None:
        replace(model)
    where = f"checkpoint {folder}"
    refuse_not_matching(where, model, {k: tuple(v.shape) for k, v in state.items()})
    expected = model.state_dict().keys()
    tied = tied_targets(model)  # e.g. lm_head.weight -> model.embed_tokens.weight, stored once
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False, assign=True)
    if tied:
        model.tie_weights()
    refuse_meta(model, where)  # a tie that did not happen, or a weight the state dict cannot name
    if dtype is not None:
        model.to(dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder) if (folder / "tokenizer_config.json").exists() else None
    return model.eval(), tokenizer
