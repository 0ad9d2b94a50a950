"""`compress.load` and transformers' own `from_pretrained` on our folders (issue 13, item 3).

After `import compress`, from_pretrained on a packed (`llm-compress-2of4`) folder must build the runtime's
Sparse24Linear layers holding exactly the stored tensors and compute what our own loader's model computes; a
folder whose files do not match its config is refused with one line (transformers alone would initialise the
missing tensor and only warn); without `import compress` transformers refuses the folder, naming the format."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM

import compress
from compress.cpu_numerics import invoked_as_command
from compress.errors import UserError
from compress.export import save_checkpoint
from compress.runtime.convert import pack
from compress.runtime.linear import Sparse24Linear
from prune.config import NM
from prune.magnitude import magnitude_mask
from tests.conftest import TINY_DIMS, tiny_llama

ROOT = Path(__file__).resolve().parent.parent


def _tiny(arch: str):
    if arch == "llama":
        return tiny_llama(hidden=128)
    torch.manual_seed(0)
    dims = dict(TINY_DIMS, hidden_size=128, intermediate_size=256, head_dim=32)
    return Qwen3ForCausalLM(Qwen3Config(**dims, num_hidden_layers=2, tie_word_embeddings=True)).eval()


def _exported(tmp_path: Path, arch: str) -> Path:
    model = _tiny(arch)
    names = set()
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and ".layers." in f".{name}":
            m.weight.data *= magnitude_mask(m.weight.data, NM(2, 4))
            names.add(name)
    return save_checkpoint(model, None, tmp_path / f"{arch}-2of4", compress_24_modules=names)


def _ids():
    return torch.randint(0, 128, (2, 9), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
@pytest.mark.parametrize("int4", [False, True])
def test_from_pretrained_on_a_packed_folder_builds_the_runtime_layers(tmp_path, arch, int4):
    packed = pack(_exported(tmp_path, arch), tmp_path / "packed", int4=int4)
    model = AutoModelForCausalLM.from_pretrained(packed)
    ours = compress.load(packed, runtime=True)
    layers = [n for n, m in model.named_modules() if isinstance(m, Sparse24Linear)]
    assert len(layers) == 14 and all(model.get_submodule(n).int4 == int4 for n in layers)
    stored = load_file(packed / "model.safetensors")
    state = model.state_dict()
    for key, t in stored.items():  # every stored tensor, bit for bit, in its stored dtype
        assert state[key].dtype == t.dtype and torch.equal(state[key], t), key
    assert not any(isinstance(model.get_submodule(n), torch.nn.Linear) for n in layers)
    with torch.no_grad():
        assert torch.equal(model(_ids()).logits, ours(_ids()).logits)


def _damage(packed: Path, edit) -> None:
    tensors = load_file(packed / "model.safetensors")
    edit(tensors)
    save_file(tensors, packed / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda t: t.pop("model.layers.0.mlp.up_proj.values"), r"missing tensors 1: model.layers.0.mlp.up_proj.values"),
        (lambda t: t.update(extra=torch.zeros(3)), r"unexpected tensors 1: extra"),
        (
            lambda t: t.update({"model.layers.1.self_attn.q_proj.meta": torch.zeros(128, 2, dtype=torch.int32)}),
            r"shape-mismatched .*q_proj.meta \(128, 2\) vs \(128, 4\)",
        ),
        (
            lambda t: t.update({"model.layers.1.self_attn.q_proj.meta": torch.zeros(128, 4, dtype=torch.int64)}),
            r"int32 buffers stored as another dtype \(model.layers.1.self_attn.q_proj.meta I64\)",
        ),
        (lambda t: t["model.layers.1.mlp.down_proj.values"].view(-1)[5].fill_(float("nan")), r"NaN|non-finite"),
    ],
)
def test_from_pretrained_refuses_a_packed_folder_that_does_not_match(tmp_path, edit, message):
    packed = pack(_exported(tmp_path, "llama"), tmp_path / "packed")
    _damage(packed, edit)
    with pytest.raises(UserError, match=message):
        AutoModelForCausalLM.from_pretrained(packed)


def test_compress_load_gives_plain_or_runtime_layers_with_the_stored_weights(tmp_path):
    folder = _exported(tmp_path, "qwen3")
    plain = compress.load(folder)
    fast = compress.load(folder, runtime=True)
    from compress.export import read_state_dict

    stored = read_state_dict(folder)
    for name, m in plain.named_modules():
        if name + ".weight" in stored and isinstance(m, torch.nn.Linear):
            assert torch.equal(m.weight, stored[name + ".weight"]), name
    assert sum(isinstance(m, Sparse24Linear) for m in fast.modules()) == 14
    with torch.no_grad():
        assert torch.equal(plain(_ids()).logits, fast(_ids()).logits)
    dense = save_checkpoint(_tiny("llama"), None, tmp_path / "dense")
    with pytest.raises(UserError, match="holds no 2:4 weights, so runtime=True"):
        compress.load(dense, runtime=True)
    with pytest.raises(UserError, match="unknown device"):
        compress.load(folder, device="gpu")


def test_without_import_compress_transformers_stops_naming_the_format_and_a_library_import_keeps_the_cpu(tmp_path):
    """transformers alone skips an unknown quantization and would load random Linears: the guard tensors make that
    load fail, after its warning that names llm-compress-2of4."""
    packed = pack(_exported(tmp_path, "llama"), tmp_path / "packed")
    code = (
        "import os, sys\n"
        "from transformers import AutoModelForCausalLM\n"
        "try:\n"
        f"    AutoModelForCausalLM.from_pretrained({str(packed)!r})\n"
        "    print('loaded')\n"
        "except RuntimeError as e:\n"
        "    print('refused:', str(e)[:80])\n"
        "import compress\n"
        "print('pinned:', os.environ.get('MKL_CBWR'), os.environ.get('ATEN_CPU_CAPABILITY'))\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert "refused: You set `ignore_mismatched_sizes` to `False`" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "Unknown quantization type, got llm-compress-2of4" in out.stderr
    assert "pinned: None None" in out.stdout
    assert (
        json.loads((packed / "config.json").read_text())["quantization_config"]["quant_method"] == "llm-compress-2of4"
    )


@pytest.mark.parametrize(
    "argv,command",
    [
        (["/v/bin/python3", "/v/bin/llm-compress", "run"], True),
        (["python", "-m", "compress", "run"], True),
        (["python", "-mcompress"], True),
        (["python", "script.py", "-m", "x"], False),
        (["python", "-c", "import compress"], False),
        (["pytest", "tests/"], False),
    ],
)
def test_only_the_commands_pin_cpu_numerics(argv, command):
    assert invoked_as_command(argv) is command


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (and nvcc)")
@pytest.mark.parametrize("int4", [False, True])
def test_from_pretrained_on_cuda_gives_prepared_layers_computing_like_compress_load(tmp_path, int4):
    model = _tiny("llama").to(torch.bfloat16)
    names = set()
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and ".layers." in f".{name}":
            m.weight.data *= magnitude_mask(m.weight.data.float(), NM(2, 4)).to(m.weight.dtype)
            names.add(name)
    folder = save_checkpoint(model, None, tmp_path / "bf16-2of4", compress_24_modules=names)
    packed = pack(folder, tmp_path / "packed", int4=int4)
    theirs = AutoModelForCausalLM.from_pretrained(packed, device_map="cuda")
    ours = compress.load(packed, device="cuda", runtime=True)
    layers = [m for m in theirs.modules() if isinstance(m, Sparse24Linear)]
    assert len(layers) == 14 and all(m.meta.is_cuda and m.cslt is not None for m in layers)
    ids = _ids().cuda()
    with torch.no_grad():
        a, b = theirs(ids).logits, ours(ids).logits
        dense = compress.load(packed, device="cuda")(ids).logits  # plain Linears holding the weight the layers use
    assert torch.equal(a, b)
    assert (a.float() - dense.float()).abs().max() < 0.05 * dense.float().abs().max()
