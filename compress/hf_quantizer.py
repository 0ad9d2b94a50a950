"""transformers integration: after `import compress`, `AutoModelForCausalLM.from_pretrained(packed_folder)` builds
the runtime's Sparse24Linear layers directly from a packed (`llm-compress-2of4`, compress/runtime/pack.py) folder.

Registered through transformers' own quantizer registry (`register_quantization_config`, `register_quantizer`,
the mechanism transformers documents for third-party methods). Before the weights load, every module the config
lists is replaced, on the meta device, by a Sparse24Linear whose buffers (`meta`, `values` | `qweight` + `scales`,
`bias`) have the stored names, shapes and dtypes; transformers then fills them from the safetensors files as it
does any parameter. transformers only *warns* about a missing tensor and initialises it (a silently wrong
layer), so before anything loads the files' headers are checked against the model: missing, unexpected or
mis-shaped tensors and integer buffers of another dtype are refused with one line naming them; after loading,
nothing may be left on the meta device and every weight must be finite (compress/load_checks.py). On CUDA the
layers are then prepared for our kernels (compress/runtime/model.py `prepare`). No dense weight is ever built.

Without `import compress`, transformers warns "Unknown quantization type, got llm-compress-2of4 ... we will skip
the quantization" (naming this package: `pip install llm-compress`, then `import compress`) and the load then
stops with its size-mismatch error on the empty guard tensors pack.py writes, instead of building random Linears.
"""

from __future__ import annotations

import torch
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.utils.quantization_config import QuantizationConfigMixin

from compress.checkpoint_format import PACKED_24
from compress.errors import UserError

_KNOWN_KEYS = {"quant_method", "version", "sparsity", "bf16_modules", "int4_modules", "int4", "layout"}


class Packed24Config(QuantizationConfigMixin):
    """config.json's `quantization_config` of a packed folder (written by compress/runtime/pack.py)."""

    def __init__(self, version=1, sparsity="2:4", bf16_modules=(), int4_modules=(), int4=None, layout=None, **extra):
        unknown = sorted(set(extra) - _KNOWN_KEYS)
        if unknown:
            raise ValueError(f"{PACKED_24} quantization_config has unknown keys {unknown}; re-pack the checkpoint")
        if version not in (1, 2):
            raise ValueError(f"{PACKED_24} version {version} is not supported by this llm-compress; re-pack it")
        if sparsity != "2:4":
            raise ValueError(f"{PACKED_24} sparsity {sparsity!r} is not supported (only 2:4)")
        lists = (bf16_modules, int4_modules)
        if not all(isinstance(x, list | tuple) and all(isinstance(n, str) for n in x) for x in lists):
            raise ValueError(f"{PACKED_24} needs bf16_modules and int4_modules lists of module names; re-pack it")
        self.quant_method = PACKED_24
        self.version, self.sparsity = version, sparsity
        self.bf16_modules, self.int4_modules = list(bf16_modules), list(int4_modules)
        self.int4, self.layout = int4, layout


class Packed24Quantizer(HfQuantizer):
    """Loads packed 2:4 folders (pre-quantized only: packing happens in `python -m compress pack`)."""

    requires_calibration = True  # transformers: only pre-quantized checkpoints, never quantize on load

    def _process_model_before_weight_loading(self, model, checkpoint_files=None, **kwargs):
        from compress.runtime import format24
        from compress.runtime.linear import Sparse24Linear
        from compress.runtime.pack import add_guard

        cfg = self.quantization_config
        for name, int4 in [(n, False) for n in cfg.bf16_modules] + [(n, True) for n in cfg.int4_modules]:
            try:
                lin = model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"packed module {name} is not in the model of this config; re-pack it") from None
            if not isinstance(lin, torch.nn.Linear):
                raise ValueError(f"packed module {name} is a {type(lin).__name__}, not a Linear; re-pack it")
            n, k, dtype = lin.out_features, lin.in_features, lin.weight.dtype
            int_buffers = {"meta", "qweight"}  # bit patterns (format24.LAYOUT); the others in the weights' dtype
            buffers = {
                b: torch.empty(shape, dtype=torch.int32 if b in int_buffers else dtype, device="meta")
                for b, shape in format24.packed_shapes(n, k, int4).items()
            }
            if lin.bias is not None:
                buffers["bias"] = torch.empty(n, dtype=lin.bias.dtype, device="meta")
            parent, _, child = name.rpartition(".")
            layer = Sparse24Linear(k, n, **buffers)
            if cfg.version >= 2:
                add_guard(layer)  # the empty `weight` the file holds (compress/runtime/pack.py)
            setattr(model.get_submodule(parent) if parent else model, child, layer)
        refuse_files_not_matching(model, checkpoint_files or [])

    def _process_model_after_weight_loading(self, model, **kwargs):
        from compress.load_checks import refuse_meta, refuse_non_finite
        from compress.runtime.model import prepare

        where = f"packed checkpoint {getattr(model.config, '_name_or_path', '')}".strip()
        refuse_meta(model, where)
        refuse_non_finite(model, where)
        prepare(model)  # CUDA layers: the one resident form (cuSPARSELt's), the kernel; nothing on the CPU
        return model

    def is_serializable(self, safe_serialization=None):
        return False  # prepared layers hold derived GPU forms; re-pack with `python -m compress pack` instead

    @property
    def is_trainable(self) -> bool:
        return False


def refuse_files_not_matching(model, files) -> None:
    """One line (UserError) when the safetensors files do not hold exactly the model's tensors: names (tied and
    computed buffers excepted), shapes, and dtypes of integer buffers (positions, int4 codes are bit patterns)."""
    from safetensors import safe_open

    from compress.load_checks import refuse_not_matching

    stored: dict[str, tuple[tuple, str]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as fh:
            for key in fh.keys():
                sl = fh.get_slice(key)
                stored[key] = (tuple(sl.get_shape()), sl.get_dtype())
    where = f"packed checkpoint {getattr(model.config, '_name_or_path', '')}".strip()
    refuse_not_matching(where, model, {k: shape for k, (shape, _) in stored.items()})
    expected = model.state_dict()
    ints = {k for k, t in expected.items() if t.dtype == torch.int32}
    wrong = sorted(f"{k} {d}" for k, (_, d) in stored.items() if k in ints and d != "I32")
    if wrong:
        raise UserError(f"{where}: int32 buffers stored as another dtype ({', '.join(wrong[:3])}); re-pack it")


def register() -> None:
    """Register with transformers (idempotent: a second import of this module does nothing)."""
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING

    if PACKED_24 not in AUTO_QUANTIZATION_CONFIG_MAPPING:
        register_quantization_config(PACKED_24)(Packed24Config)
    if PACKED_24 not in AUTO_QUANTIZER_MAPPING:
        register_quantizer(PACKED_24)(Packed24Quantizer)
