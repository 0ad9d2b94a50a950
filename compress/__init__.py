"""llm-compress: calibrate, prune, quantize, evaluate and export LLMs (orchestration lives in this package).

`import compress` gives `compress.load(...)` (compress/api.py) and registers the runtime's packed format with
transformers, so `AutoModelForCausalLM.from_pretrained(packed_folder)` builds its 2:4 layers
(compress/hf_quantizer.py). Run as a command (`python -m compress`, `llm-compress`), the CPU numerics are pinned
first, before torch loads (compress/cpu_numerics.py); imported as a library, the process is left as it is.
"""

from compress import cpu_numerics as _cpu_numerics

if _cpu_numerics.invoked_as_command():
    _cpu_numerics.pin()

from compress import hf_quantizer as _hf_quantizer  # noqa: E402
from compress.api import load  # noqa: E402

_hf_quantizer.register()

__all__ = ["load"]
