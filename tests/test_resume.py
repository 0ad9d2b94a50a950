"""An interrupted layer-wise run resumes from its checkpoint and ends bit-identical to an uninterrupted one."""

import pytest
import torch
from safetensors.torch import save_file

from compress import resume
from compress.errors import Interrupted, UserError
from compress.layerwise import run_layerwise
from compress.resume import LayerwiseCheckpoint
from prune import WandaConfig, make_stats, prune_weight
from prune.config import NM
from tests.conftest import tiny_llama

METHOD = WandaConfig(NM(2, 4))


def _step(idx, linears, stats):
    for name, lin in linears.items():
        lin.weight.data.copy_(prune_weight(METHOD, lin.weight.data, stats[name])[0])
    return {name: {"layer": idx} for name in linears}


def _run(model, batches, step, checkpoint=None):
    return run_layerwise(
        model,
        batches,
        step,
        device=torch.device("cpu"),
        progress=False,
        checkpoint=checkpoint,
        make_stats=lambda n, lin: make_stats(METHOD, lin.in_features, "cpu"),
    )


def test_resume_is_bit_identical(tmp_path):
    batches = list(torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0)).split(2))
    ref = tiny_llama(layers=3)
    expected = _run(ref, batches, _step)

    def interrupted(idx, linears, stats):
        if idx == 2:
            raise KeyboardInterrupt
        return _step(idx, linears, stats)

    with pytest.raises(Interrupted, match="layers 0-1 of 3 are saved"):
        _run(tiny_llama(layers=3), batches, interrupted, LayerwiseCheckpoint(tmp_path / "w", "key", every_s=1e9))

    fresh = tiny_llama(layers=3)  # a new process starts from the dense model again
    checkpoint = LayerwiseCheckpoint(tmp_path / "w", "key", every_s=0)
    assert checkpoint.resumed and checkpoint.next_layer == 2
    calls = []
    result = _run(fresh, batches, lambda i, lin, st: calls.append(i) or _step(i, lin, st), checkpoint)
    assert calls == [2]
    for k, v in ref.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    for a, b in zip(result.hidden, expected.hidden, strict=True):
        assert torch.equal(a, b)
    assert result.metrics.keys() == expected.metrics.keys()


def test_ctrl_c_before_any_layer_finished_keeps_nothing(tmp_path):
    batches = [torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))]

    def interrupted(idx, linears, stats):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tiny_llama(layers=2), batches, interrupted, LayerwiseCheckpoint(tmp_path / "w", "key", every_s=1e9))
    assert not LayerwiseCheckpoint(tmp_path / "w", "key").resumed


def test_kill_between_hidden_and_state_writes_resumes_right(tmp_path, monkeypatch):
    """A kill after the hidden states of layer 2 are written but before the checkpoint is committed must resume
    from the previous checkpoint (layer 1) with *its* hidden states: the same model as an uninterrupted run
    (the old layout resumed layer 1 on layer 2's inputs and silently gave another model)."""
    batches = list(torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0)).split(2))
    ref = tiny_llama(layers=3)
    _run(ref, batches, _step)

    real_write = resume._write_json

    def killed(path, value):
        if value.get("next_layer") == 2:
            raise SystemExit("killed")  # the process dies here: nothing after this line runs
        real_write(path, value)

    monkeypatch.setattr(resume, "_write_json", killed)
    with pytest.raises(SystemExit):
        _run(tiny_llama(layers=3), batches, _step, LayerwiseCheckpoint(tmp_path / "w", "key", every_s=0))
    monkeypatch.setattr(resume, "_write_json", real_write)

    checkpoint = LayerwiseCheckpoint(tmp_path / "w", "key", every_s=1e9)
    assert checkpoint.resumed and checkpoint.next_layer == 1
    fresh = tiny_llama(layers=3)
    _run(fresh, batches, _step, checkpoint)
    for k, v in ref.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_hidden_states_of_another_layer_are_refused(tmp_path):
    ckpt = LayerwiseCheckpoint(tmp_path / "w", "key", every_s=0)
    ckpt.save(2, [torch.zeros(2)], {}, {0: {"w": torch.ones(2)}, 1: {"w": torch.ones(2)}})
    # a stray hidden-state file recorded for layer 1 dropped into the layer-2 checkpoint
    stray = tmp_path / "w" / "step-0002" / "hidden.safetensors"
    save_file({"h0": torch.ones(2)}, stray, {"key": "key", "next_layer": "1"})
    with pytest.raises(UserError, match="belongs to another layer"):
        LayerwiseCheckpoint(tmp_path / "w", "key")


def test_disk_full_while_checkpointing_keeps_the_previous_one(tmp_path, monkeypatch):
    ckpt = LayerwiseCheckpoint(tmp_path / "w", "key", every_s=0)
    ckpt.save(1, [torch.zeros(2)], {}, {0: {"w": torch.ones(2)}})

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(resume, "save_file", full)
    with pytest.raises(UserError, match="no space left on device writing the resume checkpoint"):
        ckpt.save(2, [torch.zeros(2)], {}, {1: {"w": torch.ones(2)}})
    monkeypatch.undo()
    again = LayerwiseCheckpoint(tmp_path / "w", "key")
    assert again.next_layer == 1 and not list((tmp_path / "w").glob(".step-*"))


def test_checkpoint_of_another_run_is_discarded(tmp_path):
    first = LayerwiseCheckpoint(tmp_path / "w", "key-a", every_s=0)
    first.save(1, [torch.zeros(2)], {}, {0: {"w": torch.ones(2)}})
    other = LayerwiseCheckpoint(tmp_path / "w", "key-b", every_s=0)
    assert not other.resumed and other.next_layer == 0 and not (tmp_path / "w").exists()
