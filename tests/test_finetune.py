"""AST finetune stage on the CPU: exact 2:4 invariants, straight-through gradients, distillation, masked decay,
SLoRB, exact resume, non-finite stops, data helpers and the memory plan (tiny random Llama and Qwen2 models)."""

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from finetune.config import ASTConfig
from finetune.data import (
    check_disjoint,
    data_summary,
    dedup_texts,
    pack_windows,
    self_distill_texts,
    window_order,
)
from finetune.distill import distill_loss, kl_teacher_student
from finetune.masks import flips, is_exact_nm, magnitude_mask, nm_mask, nm_violations
from finetune.memory import check_fits, plan_memory, shape_from_config, shape_from_model
from finetune.optim import (
    add_masked_decay_to_grad_,
    build_optimizer,
    decay_masked_weights_,
    lr_at,
    masked_decay_at,
)
from finetune.slorb import slorb_init
from finetune.sparse_linear import SparseLinear, restore_linears, sparsify_linears
from finetune.trainer import CHECKPOINT, read_checkpoint, train_ast
from prune.masks import prune_lowest_per_group
from tests.conftest import TINY_DIMS, CharTokenizer

DIMS = dict(TINY_DIMS, initializer_range=0.2)  # larger init: the teacher's distribution is far from uniform


def teacher_student(arch: str = "llama", seed: int = 0, vocab: int = 128):
    """A dense teacher and its magnitude-2:4-pruned copy with the masks (decoder Linears, lm_head left dense)."""
    cls, config = {"llama": (LlamaForCausalLM, LlamaConfig), "qwen2": (Qwen2ForCausalLM, Qwen2Config)}[arch]
    torch.manual_seed(seed)
    teacher = cls(config(**dict(DIMS, vocab_size=vocab), num_hidden_layers=2, tie_word_embeddings=False)).eval()
    student = copy.deepcopy(teacher)
    masks = {}
    with torch.no_grad():
        for name, m in student.named_modules():
            if isinstance(m, nn.Linear) and name != "lm_head":
                masks[name] = magnitude_mask(m.weight)
                m.weight.mul_(masks[name])
    return teacher, student, masks


def windows(n: int, seqlen: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 120, (n, seqlen), generator=torch.Generator().manual_seed(seed))


def cfg(**kw) -> ASTConfig:
    base = dict(
        steps=6,
        micro_batch=2,
        seqlen=32,
        grad_accum=1,
        lr=3e-3,
        warmup_steps=0,
        masked_decay=0.05,
        masked_decay_warmup=2,
        mask_interval=2,
        checkpoint_every=0,
        gradient_checkpointing=False,
    )
    return ASTConfig(**(base | kw))


def run(teacher, student, masks, data, c, **kw):
    return train_ast(student, teacher, masks, data, c, device="cpu", state_dir=kw.pop("state_dir", None),
                     progress=False, log=lambda s: None, **kw)  # fmt: skip


def state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kw, key",
    [
        (dict(method="sparsegpt"), "finetune.method"),
        (dict(steps=0), "finetune.steps"),
        (dict(steps="10"), "finetune.steps"),
        (dict(lr=0.0), "finetune.lr"),
        (dict(warmup_steps=5000, steps=100), "finetune.warmup_steps"),
        (dict(min_lr_ratio=1.5), "finetune.min_lr_ratio"),
        (dict(alpha=1.2), "finetune.alpha"),
        (dict(temperature=0.0), "finetune.temperature"),
        (dict(masked_decay=-1e-4), "finetune.masked_decay"),
        (dict(mask_score="wanda"), "finetune.mask_score"),
        (dict(masked_decay_mode="srste"), "finetune.masked_decay_mode"),
        (dict(optimizer="sgd"), "finetune.optimizer"),
        (dict(slorb_k=0), "finetune.slorb_k"),
        (dict(slorb="yes"), "finetune.slorb"),
        (dict(eval_every=-1), "finetune.eval_every"),
        (dict(seqlen=1), "finetune.seqlen"),
    ],
)
def test_config_rejects_bad_values_naming_the_key(kw, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")) as e:
        ASTConfig(**kw)
    assert "\n" not in str(e.value)


def test_config_defaults_are_the_reference_values():
    c = ASTConfig()
    assert (c.lr, c.warmup_steps, c.min_lr_ratio, c.mask_interval) == (2e-5, 500, 0.1, 10)
    assert (c.masked_decay, c.masked_decay_warmup, c.alpha, c.temperature, c.slorb_k) == (6e-5, 3000, 0.33, 2.0, 16)
    assert not c.slorb and not c.train_embeddings and c.optimizer == "adamw"


def test_adamw8bit_refused_on_cpu():
    p = nn.Parameter(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="adamw8bit.*CUDA"):
        build_optimizer([{"params": [p], "weight_decay": 0.0}], ASTConfig(optimizer="adamw8bit"), "cpu")


# ---------------------------------------------------------------- masks and the straight-through Linear


def test_nm_mask_keeps_top2_with_prune_stage_tie_break():
    torch.manual_seed(0)
    W = torch.randn(16, 64)
    W[0, :8] = 1.0  # ties: all four equal
    W[1, :4] = torch.tensor([3.0, -1.0, 3.0, 2.0])
    mask = magnitude_mask(W)
    assert is_exact_nm(mask)
    assert torch.equal(mask, prune_lowest_per_group(W.abs(), 2, 4))  # same choice as prune/masks.py
    assert mask[0, :4].tolist() == [False, False, True, True]  # lower column index pruned first
    assert mask[1, :4].tolist() == [True, False, True, False]
    top2 = W.abs().view(16, 16, 4).topk(2, dim=-1).values.sum(-1)
    assert torch.allclose((W.abs() * mask).view(16, 16, 4).sum(-1), top2)
    assert not is_exact_nm(torch.ones(4, 8, dtype=torch.bool)) and not is_exact_nm(mask.int())
    assert flips(mask, mask) == 0 and flips(mask, ~mask) == W.numel()
    with pytest.raises(ValueError, match="NaN"):
        nm_mask(torch.full((2, 4), float("nan")))


def test_sparse_linear_forward_is_masked_and_gradient_is_straight_through():
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    mask = magnitude_mask(lin.weight)
    W0 = lin.weight.detach().clone()
    sl = SparseLinear(lin, mask)
    assert sl.weight is lin.weight  # same Parameter, dense values untouched
    x = torch.randn(3, 5, 16)
    y = sl(x)
    ref = nn.Linear(16, 8)
    with torch.no_grad():
        ref.weight.copy_(W0 * mask)
        ref.bias.copy_(lin.bias)
    y_ref = ref(x)
    assert torch.equal(y, y_ref)
    (y**2).sum().backward()
    (y_ref**2).sum().backward()
    assert torch.equal(sl.weight.grad, ref.weight.grad)  # d/dW := d/d(W*M), unmasked
    assert bool((sl.weight.grad[~mask] != 0).all())  # pruned weights get gradients too
    assert torch.equal(sl.weight.detach(), W0)


def test_sparsify_rejects_a_mask_that_is_not_2of4():
    _, student, masks = teacher_student()
    name = next(iter(masks))
    bad = masks[name].clone()
    bad[0, :4] = True
    with pytest.raises(ValueError, match="not an exact 2:4"):
        sparsify_linears(student, {name: bad})
    with pytest.raises(ValueError, match="names no nn.Linear"):
        sparsify_linears(student, {"model.layers.0.nope": masks[name]})


def test_restore_gives_plain_linear_with_exact_masked_weight():
    _, student, masks = teacher_student()
    with torch.no_grad():  # dense values at pruned positions, as after some training
        for m in student.modules():
            if isinstance(m, nn.Linear):
                m.weight.add_(0.01)
    layers = sparsify_linears(student, masks)
    x = windows(2)
    with torch.no_grad():
        before = student(x).logits
        dense = {n: sl.weight.detach().clone() for n, sl in layers.items()}
    out_masks, slorb = restore_linears(student)
    assert slorb == {}
    modules = dict(student.named_modules())
    for name, mask in masks.items():
        assert type(modules[name]) is nn.Linear
        assert torch.equal(modules[name].weight, torch.where(mask, dense[name], 0.0))
        assert torch.equal(out_masks[name], mask)
    with torch.no_grad():
        assert torch.equal(student(x).logits, before)


# ---------------------------------------------------------------- distillation loss


def test_distill_loss_matches_the_reference_formula():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    T, alpha = 2.0, 0.33
    loss, ce, kl = distill_loss(s, t, ids, alpha, T)
    p_t = F.softmax(t / T, -1)
    kl_ref = (p_t * (F.log_softmax(t / T, -1) - F.log_softmax(s / T, -1))).sum(-1).mean() * T * T
    ce_ref = F.cross_entropy(s[:, :-1].reshape(-1, 11), ids[:, 1:].reshape(-1))
    assert torch.allclose(kl, kl_ref, rtol=1e-5) and torch.allclose(ce, ce_ref)
    assert torch.allclose(loss, alpha * ce_ref + (1 - alpha) * kl_ref, rtol=1e-5)
    assert kl_teacher_student(t, t, T).abs() < 1e-6


def test_vocab_mismatch_is_one_line_naming_both_sizes():
    with pytest.raises(ValueError, match="teacher logits have 12 entries, student logits 11") as e:
        distill_loss(torch.zeros(1, 3, 11), torch.zeros(1, 3, 12), torch.zeros(1, 3, dtype=torch.long), 0.5, 2.0)
    assert "\n" not in str(e.value)
    teacher, _, _ = teacher_student(vocab=136)
    _, student, masks = teacher_student()
    with pytest.raises(ValueError, match="136 entries, student logits 128") as e:
        run(teacher, student, masks, windows(2), cfg())
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- optimizer pieces


@pytest.mark.parametrize("mode", ["gradient", "decoupled"])
def test_masked_decay_shrinks_only_masked_weights(mode):
    torch.manual_seed(0)
    W = nn.Parameter(torch.randn(8, 16))
    mask = magnitude_mask(W)
    W0 = W.detach().clone()
    opt = torch.optim.AdamW([W], lr=0.01, weight_decay=0.0)
    W.grad = torch.zeros_like(W)  # no loss gradient: only the masked decay moves weights
    if mode == "gradient":
        add_masked_decay_to_grad_(W, mask, 0.1)
        assert torch.equal(W.grad[mask], torch.zeros(int(mask.sum())))
        assert torch.allclose(W.grad[~mask], 0.1 * W0[~mask])
        opt.step()
    else:
        opt.step()
        decay_masked_weights_(W, mask, lr=0.01, decay=0.1)
        assert torch.equal(W.detach()[~mask], W0[~mask] * (1 - 0.01 * 0.1))
    assert torch.equal(W.detach()[mask], W0[mask])  # kept weights: bit for bit
    step = (W.detach() - W0)[~mask]
    assert bool((step * W0[~mask].sign() < 0).all())  # every masked weight moved towards zero
    with pytest.raises(TypeError, match="bool keep-mask"):
        add_masked_decay_to_grad_(W, mask.int(), 0.1)  # the reference's int mask: ~ would be a bitwise NOT


def test_schedules_follow_the_reference():
    c = ASTConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1, masked_decay=6e-5, masked_decay_warmup=40)
    assert lr_at(0, c) == 0.0 and lr_at(5, c) == pytest.approx(5e-4) and lr_at(10, c) == pytest.approx(1e-3)
    assert lr_at(55, c) == pytest.approx(1e-4 + 0.5 * 9e-4) and lr_at(100, c) == pytest.approx(1e-4)
    assert all(lr_at(i, c) >= lr_at(i + 1, c) for i in range(10, 100))
    assert masked_decay_at(0, c) == 0.0 and masked_decay_at(20, c) == pytest.approx(3e-5)
    assert masked_decay_at(40, c) == 6e-5 and masked_decay_at(99, c) == 6e-5


# ---------------------------------------------------------------- training


def test_2of4_exact_after_every_step_and_at_the_end():
    teacher, student, masks = teacher_student()
    seen = []

    def check(step, model):
        layers = {n: m for n, m in model.named_modules() if isinstance(m, SparseLinear)}
        assert set(layers) == set(masks)
        for sl in layers.values():
            assert is_exact_nm(sl.mask)
            assert nm_violations(sl.weight.detach() * sl.mask) == 0
        seen.append(step)

    given = {n: m.clone() for n, m in masks.items()}
    result = run(teacher, student, masks, windows(5), cfg(steps=6, grad_accum=2), on_step=check)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert all(torch.equal(masks[n], given[n]) for n in masks)  # the caller's masks are not modified
    modules = dict(student.named_modules())
    assert not any(isinstance(m, SparseLinear) for m in modules.values()) and not student.training
    for name, mask in result.masks.items():
        W = modules[name].weight
        assert type(modules[name]) is nn.Linear and is_exact_nm(mask)
        assert nm_violations(W) == 0 and bool((W[~mask] == 0).all())
    m = result.metrics
    assert [f["step"] for f in m["mask_flips"]] == [2, 4, 6]
    assert any(f["flip_rate"] > 0 for f in m["mask_flips"])  # the mask does move (AST's adaptive masks)
    assert m["train_tokens"] == 6 * 2 * 2 * 32 and len(m["loss_history"]) == 6
    assert set(m["loss_history"][0]) >= {"loss", "ce", "kl"}


def test_kl_to_the_teacher_falls_on_a_fixed_batch():
    teacher, student, masks = teacher_student()
    batch = windows(2)  # micro_batch 2: every step sees these two windows
    result = run(teacher, student, masks, batch, cfg(steps=20, mask_interval=10, masked_decay=6e-5))
    kl = [h["kl"] for h in result.metrics["loss_history"]]
    assert kl[0] > 0.5 and kl[-1] < 0.75 * kl[0]
    with torch.no_grad():  # and the returned (restored) model really is closer to the teacher
        assert kl_teacher_student(student(batch).logits, teacher(batch).logits, 2.0) < 0.75 * kl[0]


def test_gradient_checkpointing_changes_nothing_but_memory():
    teacher, s1, masks = teacher_student()
    s2 = copy.deepcopy(s1)
    calls = []
    mlp = s2.model.layers[0].mlp  # inside the checkpointed layer forward (module hooks do not rerun there)
    forward = mlp.forward
    mlp.forward = lambda x: calls.append(1) or forward(x)
    run(teacher, s1, masks, windows(4), cfg(steps=3))
    run(teacher, s2, masks, windows(4), cfg(steps=3, gradient_checkpointing=True))
    del mlp.forward
    assert len(calls) == 2 * 3  # each layer forward runs again in the backward
    for (k, a), b in zip(s1.state_dict().items(), s2.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k


def test_resume_ends_with_exactly_the_uninterrupted_weights(tmp_path):
    c = cfg(steps=6, grad_accum=2, checkpoint_every=3, slorb=True, warmup_steps=2, masked_decay_warmup=4)
    data = windows(5)
    teacher, s_full, masks = teacher_student()
    s_crash, s_resume = copy.deepcopy(s_full), copy.deepcopy(s_full)
    full = run(teacher, s_full, masks, data, c)

    class Crash(Exception):
        pass

    def crash(step, model):
        if step == 3:
            raise Crash

    with pytest.raises(Crash):
        run(teacher, s_crash, masks, data, c, state_dir=tmp_path, on_step=crash)
    assert read_checkpoint(tmp_path)[1]["step"] == 3
    resumed = run(teacher, s_resume, masks, data, c, state_dir=tmp_path)
    assert resumed.metrics["resumed_from"] == 3
    a, b = state(s_full), state(s_resume)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for name in masks:
        assert torch.equal(full.masks[name], resumed.masks[name])
        assert torch.equal(full.slorb[name], resumed.slorb[name])
    assert full.metrics["loss_history"] == resumed.metrics["loss_history"]
    assert full.metrics["mask_flips"] == resumed.metrics["mask_flips"]
    with pytest.raises(ValueError, match="lr: 0.003 -> 0.001"):  # other settings refuse to resume
        run(teacher, copy.deepcopy(s_full), masks, data, dataclasses.replace(c, lr=1e-3), state_dir=tmp_path)
    with pytest.raises(ValueError, match="trained on other windows"):  # other data refuses to resume
        run(teacher, copy.deepcopy(s_full), masks, windows(5, seed=1), c, state_dir=tmp_path)


def test_nonfinite_loss_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    teacher, student, masks = teacher_student()
    calls = []

    def poison(module, args, output):
        calls.append(1)
        if len(calls) == 3:  # the teacher's third forward: step 3
            output.logits.fill_(float("nan"))
        return output

    hook = teacher.register_forward_hook(poison)
    c = cfg(steps=6, checkpoint_every=1)
    expected = r"non-finite loss .* at step 3; last good checkpoint: .* \(step 2\)"
    with pytest.raises(FloatingPointError, match=expected) as e:
        run(teacher, student, masks, windows(4), c, state_dir=tmp_path)
    hook.remove()
    assert "\n" not in str(e.value)
    tensors, meta = read_checkpoint(tmp_path)
    assert meta["step"] == 2 and (tmp_path / CHECKPOINT / "tensors.safetensors").is_file()
    assert all(bool(torch.isfinite(t).all()) for k, t in tensors.items() if t.is_floating_point())
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind
    _, fresh, _ = teacher_student()
    resumed = run(teacher, fresh, masks, windows(4), c, state_dir=tmp_path)
    assert resumed.metrics["resumed_from"] == 2 and math.isfinite(resumed.metrics["final_loss"])


def test_evaluate_curve_and_frozen_embeddings():
    teacher, student, masks = teacher_student()
    emb0 = student.get_input_embeddings().weight.detach().clone()
    head0 = student.get_output_embeddings().weight.detach().clone()
    modes = []

    def evaluate(model):
        modes.append(model.training)
        return {"ppl": 1.0}

    result = run(teacher, student, masks, windows(4), cfg(steps=4, eval_every=2), evaluate=evaluate)
    assert [t for t, _ in result.metrics["curve"]] == [2 * 64, 4 * 64] and modes == [False, False]
    assert torch.equal(student.get_input_embeddings().weight, emb0)
    assert torch.equal(student.get_output_embeddings().weight, head0)


def test_second_architecture_qwen2_with_biases():
    teacher, student, masks = teacher_student("qwen2")
    q = "model.layers.0.self_attn.q_proj"
    assert student.get_submodule(q).bias is not None
    result = run(teacher, student, masks, windows(4), cfg(steps=4))
    lin = student.get_submodule(q)
    assert type(lin) is nn.Linear and lin.bias is not None and not torch.equal(lin.bias, teacher.get_submodule(q).bias)
    for name, mask in result.masks.items():
        assert nm_violations(student.get_submodule(name).weight) == 0 and is_exact_nm(mask)


# ---------------------------------------------------------------- SLoRB


def test_slorb_init_is_the_mean_of_pruned_weights_per_group():
    torch.manual_seed(0)
    W = torch.randn(6, 32)
    mask = magnitude_mask(W)
    S = slorb_init(W, mask, 16)
    assert S.shape == (6, 2)
    for i in range(6):
        for g in range(2):
            cols = range(16 * g, 16 * g + 16)
            pruned = [W[i, j] for j in cols if not mask[i, j]]
            assert len(pruned) == 8
            assert torch.allclose(S[i, g], sum(pruned) / 16)  # mean over the k entries, kept ones as zero


def test_training_with_slorb_keeps_W_2of4_and_returns_S():
    teacher, student, masks = teacher_student()
    snap = {}

    def capture(step, model):
        if step == 4:
            with torch.no_grad():
                model.eval()
                snap["logits"] = model(windows(2, seed=9)).logits
                model.train()

    result = run(teacher, student, masks, windows(4), cfg(steps=4, slorb=True), on_step=capture)
    dense = dict(teacher.named_modules())
    for name, mask in result.masks.items():
        W = student.get_submodule(name).weight
        assert nm_violations(W) == 0 and bool((W[~mask] == 0).all())
        S = result.slorb[name]
        assert S.shape == (W.shape[0], W.shape[1] // 16)
        assert not torch.equal(S, slorb_init(dense[name].weight, masks[name], 16))  # trained
    assert not any("slorb" in k for k in student.state_dict())  # S stays out of the model's weights
    with torch.no_grad():
        assert torch.equal(student(windows(2, seed=9)).logits, snap["logits"])  # hooks add the trained term
        for h in student._slorb_hooks:
            h.remove()
        assert not torch.equal(student(windows(2, seed=9)).logits, snap["logits"])
    with pytest.raises(ValueError, match="slorb_k=48 does not divide the 64 inputs"):
        t2, s2, m2 = teacher_student()
        run(t2, s2, m2, windows(4), cfg(steps=1, slorb=True, slorb_k=48))


# ---------------------------------------------------------------- data


def test_pack_windows_is_seeded_and_counts_tokens():
    src = {
        "web": [torch.arange(i * 100, i * 100 + 50) for i in range(4)],
        "code": [torch.arange(10_000, 10_070)],
    }
    a, b = pack_windows(src, 16, seed=1), pack_windows(src, 16, seed=1)
    assert torch.equal(a.windows, b.windows) and torch.equal(a.source, b.source)
    assert not torch.equal(a.windows, pack_windows(src, 16, seed=2).windows)
    assert a.windows.shape == (12 + 4, 16) and a.tokens_per_source() == {"web": 12 * 16, "code": 4 * 16}
    code = a.windows[a.source == 1]
    assert sorted(int(w[0]) for w in code) == [10_000, 10_016, 10_032, 10_048]
    assert all(torch.equal(w, torch.arange(int(w[0]), int(w[0]) + 16)) for w in code)
    summary = data_summary(a, steps=4, micro_batch=2, grad_accum=4, seed=0)
    assert summary["train_tokens"] == 32 * 16 and summary["sources"]["web"]["epochs"] == pytest.approx(2.0)
    order = window_order(16, 40, seed=0)
    assert sorted(order[:16].tolist()) == list(range(16)) and sorted(order[16:32].tolist()) == list(range(16))


def test_check_disjoint_catches_a_32_token_overlap():
    train = windows(8, seqlen=128, seed=0)
    wiki = torch.randint(0, 120, (3000,), generator=torch.Generator().manual_seed(5))
    check_disjoint(train, {"wikitext2": wiki})  # random streams share no 32-gram
    leaked = wiki.clone()
    leaked[1000:1032] = train[6, 40:72]
    with pytest.raises(ValueError, match="evaluation set 'wikitext2'.*training window 6 \\(offset 40\\)") as e:
        check_disjoint(train, {"c4": wiki[:500], "wikitext2": leaked})
    assert "\n" not in str(e.value)
    near = wiki.clone()
    near[1000:1031] = train[6, 40:71]  # 31 tokens: below the n-gram
    check_disjoint(train, {"wikitext2": near})
    rows = torch.stack([wiki[:200], leaked[990:1190]])  # (texts, L) input works too
    with pytest.raises(ValueError, match="text 1 \\(offset 10\\)"):
        check_disjoint(train, {"piqa": rows})


class DecodingTokenizer(CharTokenizer):
    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(97 + i % 26) for i in ids if not (skip_special_tokens and i == self.eos_token_id))


def test_self_distill_texts_are_seeded_and_leave_the_global_rng():
    teacher, _, _ = teacher_student()
    tok = DecodingTokenizer()
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    kw = dict(n_texts=5, max_new_tokens=12, device="cpu", batch_size=2)
    a = self_distill_texts(teacher, tok, seed=0, **kw)
    assert torch.equal(torch.get_rng_state(), rng)
    assert a == self_distill_texts(teacher, tok, seed=0, **kw) != self_distill_texts(teacher, tok, seed=1, **kw)
    assert len(a) == 5 and len(set(a)) == 5
    calls = []
    real = teacher.generate
    teacher.generate = lambda **k: calls.append(k["input_ids"].shape) or real(**k)
    p = self_distill_texts(teacher, tok, seed=0, prompts=["hello", "hi", "greetings"], prompt_tokens=4, **kw)
    del teacher.generate
    assert len(p) == 5 and all(len(t) > 2 for t in p)
    assert calls == [(2, 4), (2, 4), (1, 4)]  # prompts of different lengths, cut to one: full batches ("hi" skipped)
    with pytest.raises(ValueError, match="no prompt has 4 tokens"):
        self_distill_texts(teacher, tok, seed=0, prompts=["hi"], prompt_tokens=4, **kw)
    assert dedup_texts(["x", "y", "x", "z", "y"]) == (["x", "y", "z"], 2)


# ---------------------------------------------------------------- memory


LLAMA2_7B = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
    max_position_embeddings=4096,
)


def test_memory_plan_for_llama2_7b():
    config = LlamaConfig(**LLAMA2_7B)
    shape = shape_from_config(config)
    assert shape.total == 6_738_415_616  # LLaMA-2-7B's parameter count
    c = ASTConfig(micro_batch=1, seqlen=4096, optimizer="adamw8bit", gradient_checkpointing=True)
    plan = plan_memory(config, c, "cuda", torch.bfloat16)
    g = plan.gib()
    # 12.55 teacher + 25.10 fp32 student + 24.13 grads + 12.06 8-bit state + 6.03 masks + 2.87 acts + 3.42 logits
    assert g["teacher_weights"] == pytest.approx(12.55, abs=0.01) and g["optimizer_state"] == pytest.approx(12.06, 0.01)
    assert 85 < g["total"] < 100
    full = plan_memory(config, dataclasses.replace(c, optimizer="adamw", gradient_checkpointing=False), "cuda")
    assert full.optimizer_state == 4 * plan.optimizer_state and full.activations > 9 * plan.activations
    check_fits(plan, 140 * 2**30)
    with pytest.raises(ValueError, match=r"needs about 91\.\d+ GiB .* but 80\.0 GiB is available; lower") as e:
        check_fits(plan, 80 * 2**30)
    assert "\n" not in str(e.value)


def test_shape_from_model_counts_the_real_parameters():
    _, student, masks = teacher_student()
    shape = shape_from_model(student, set(masks))
    assert shape.total == sum(p.numel() for p in student.parameters())
    assert shape.linear_params == sum(m.numel() for m in masks.values())
    assert shape_from_config(student.config).total == shape.total


# ---------------------------------------------------------------- QuEST QAT (finetune.qat: quest)


def test_qat_config_keys():
    assert cfg(qat="quest").qat_spec.bits == 4 and cfg(qat="quest").qat_spec.hadamard_block == 0
    assert cfg().qat_spec is None
    with pytest.raises(ValueError, match="finetune.qat 'gptq' is unknown"):
        cfg(qat="gptq")
    with pytest.raises(ValueError, match="finetune.qat_bits"):
        cfg(qat="quest", qat_bits=5)
    with pytest.raises(ValueError, match="slorb with finetune.qat"):
        cfg(qat="quest", slorb=True)


def test_qat_forward_is_quest_of_the_kept_weights_and_gradient_is_trust_times_ste():
    from quant.quest import QuestSpec, quest_quantize, quest_weight, trust_mask

    torch.manual_seed(0)
    lin = nn.Linear(32, 8)
    with torch.no_grad():
        lin.weight[0, 0] = 5.0  # an outlier far outside the clip range: no gradient through it
    mask = magnitude_mask(lin.weight)
    spec = QuestSpec(bits=4, hadamard_block=0)
    sl = SparseLinear(lin, mask, spec)
    x = torch.randn(3, 32)
    y = sl(x)
    W_hat = quest_weight(lin.weight.detach(), spec, mask).W_hat
    assert torch.equal(y, F.linear(x, W_hat, lin.bias))
    g = torch.randn_like(y)
    y.backward(g)
    Wk = lin.weight.detach() * mask
    xq, _, scale = quest_quantize(Wk, 4, mask)
    band = trust_mask(Wk, xq, scale, 4)
    expect = (g.t() @ x) * band  # d/d(W ⊙ M) through the trust estimator, handed to W unmasked
    assert torch.allclose(lin.weight.grad, expect, atol=1e-6)
    assert lin.weight.grad[0, 0] == 0  # the clipped outlier
    assert bool((lin.weight.grad[~mask] != 0).any())  # pruned weights still learn (band holds at exact zeros)


def test_qat_training_ends_on_the_quest_grid_with_exact_2of4_and_codes():
    teacher, student, masks = teacher_student()
    curve = []
    result = run(teacher, student, masks, windows(5), cfg(steps=4, qat="quest"),
                 evaluate=lambda m: curve.append(1) or {"ok": 1.0})  # fmt: skip
    assert result.codes is not None and set(result.codes) == set(masks)
    modules = dict(student.named_modules())
    for name, keep in result.masks.items():
        W = modules[name].weight.detach()
        assert type(modules[name]) is nn.Linear and bool((W[~keep] == 0).all()) and nm_violations(W) == 0
        assert torch.equal(result.codes[name].decode(), W)  # what the export writes is the trained model
        assert result.codes[name].keep_bits is not None and result.codes[name].block == 0
    assert curve  # the final evaluation ran on the quantized model


def test_qat_on_qwen2_with_biases():
    teacher, student, masks = teacher_student("qwen2")
    result = run(teacher, student, masks, windows(4), cfg(steps=2, qat="quest", qat_bits=3))
    modules = dict(student.named_modules())
    assert all(torch.equal(result.codes[n].decode(), modules[n].weight.detach()) for n in masks)
