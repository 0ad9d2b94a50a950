"""Every bad input is one `error:` line on stderr and exit code 2: no traceback, nothing written, no model loaded.

Ctrl-C is one `interrupted:` line and exit code 130. The tests run in an empty folder and fail if anything is
left in it or if a model starts to load (the bad input must be caught before that, in a second).
"""

from pathlib import Path

import pytest
import torch

import compress.models
import compress.pipeline
import compress.sources
import eval.evaluate
from compress.cli import main
from compress.config import load_recipe
from compress.errors import Interrupted, UserError
from eval.evaluate import Evaluated

SKIP_EVAL = ["--task-source", "embedded", "--ppl", ""]


@pytest.fixture(autouse=True)
def workdir(tmp_path, monkeypatch):
    """An empty working folder, and no model may load."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model started to load: the bad input was not caught before it")

    monkeypatch.chdir(tmp_path)
    for target in (compress.models, compress.pipeline, eval.evaluate):
        monkeypatch.setattr(target, "load_model", refuse)
    return tmp_path


@pytest.fixture
def fake_evaluate(monkeypatch):
    """`evaluate` without a model: every asked task scores 0.5 (lets eval/compare reach the table)."""

    def evaluate(name, model, *, tasks, **kwargs):
        return Evaluated(name=name, model=model, fingerprint="f", zeroshot={t: {"acc": 0.5} for t in tasks})

    monkeypatch.setattr(eval.evaluate, "evaluate", evaluate)


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*"))


def _main(argv: list[str]) -> int:
    try:
        return main(argv)
    except KeyboardInterrupt:  # would otherwise stop the whole pytest session
        pytest.fail("KeyboardInterrupt escaped compress.cli.main")


def one_line(capsys, workdir: Path, argv: list[str], *words: str, code: int = 2, prefix: str = "error: ") -> str:
    """Run the CLI; assert the exit code, exactly one stderr line starting with `prefix` containing `words`,
    and that nothing was written."""
    before = _files(workdir)
    rc = _main(argv)
    err = capsys.readouterr().err
    assert rc == code, err
    assert err.startswith(prefix) and err.endswith("\n") and err.count("\n") == 1, err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    assert _files(workdir) == before, "something was left on disk"
    return err


def _recipe(folder: Path, text: str) -> str:
    f = folder / "recipe.yaml"
    f.write_text(text)
    return str(f)


def _run(workdir: Path, recipe_text: str, *extra: str) -> list[str]:
    return ["run", "--recipe", _recipe(workdir, recipe_text), "--out", "out", *extra]


CALIBRATION = "calibration: {{dataset: {}, nsamples: 2, seqlen: 16}}\nprune: {{method: wanda, pattern: '2:4'}}\n"


# 1. calibration file that is not UTF-8 text


@pytest.mark.parametrize(
    "name,content,words",
    [
        ("latin1.txt", "first line\n\ncaf\xe9 au lait\n".encode("latin-1"), ["line 3", "iconv"]),
        ("latin1.jsonl", '{"text": "caf\xe9"}\n'.encode("latin-1"), ["line 1", "iconv"]),
        ("junk.txt", bytes(range(256)) * 8, ["NUL", ".jsonl"]),
        ("junk.jsonl", bytes(range(128, 256)) * 8, ["line 1", "iconv"]),
    ],
)
def test_calibration_file_not_utf8(workdir, capsys, name, content, words):
    (workdir / name).write_bytes(content)
    one_line(capsys, workdir, _run(workdir, CALIBRATION.format(name)), f"calibration file {name}", "not UTF-8", *words)


# 2. .jsonl calibration file with a bad line

JSONL_FIX = 'each line needs a JSON object such as {"text": "..."}'


@pytest.mark.parametrize(
    "content,words",
    [
        ('{"text": "ok"}\n{"text": "unterminated\n', ["line 2 is not valid JSON", JSONL_FIX]),
        ('{"text": "ok"}\n\n"just a string"\n', ["line 3 is a JSON string, not an object", JSONL_FIX]),
        ("[1, 2]\n", ["line 1 is a JSON array, not an object", JSONL_FIX]),
        ("7\n", ["line 1 is a JSON number, not an object", JSONL_FIX]),
        ('{"text": "ok"}\n{"text": 5}\n', ["line 2: 'text' is a JSON number, not a string", JSONL_FIX]),
        ('{"text": ["a", "b"]}\n', ["line 1: 'text' is a JSON array, not a string", JSONL_FIX]),
        ('{"body": "x"}\n', ["line 1 has no 'text' field", JSONL_FIX]),
    ],
)
def test_jsonl_bad_line_names_the_line(workdir, capsys, content, words):
    (workdir / "cal.jsonl").write_text(content)
    one_line(capsys, workdir, _run(workdir, CALIBRATION.format("cal.jsonl")), "cal.jsonl", *words)


def test_calibration_file_without_text(workdir, capsys):
    (workdir / "empty.txt").write_text("\n\n  \n")
    one_line(capsys, workdir, _run(workdir, CALIBRATION.format("empty.txt")), "empty.txt has no text")


def test_missing_calibration_file_before_the_model_loads(workdir, capsys):
    one_line(capsys, workdir, _run(workdir, CALIBRATION.format("nope.txt")), "calibration file nope.txt not found")


# 3. type mistakes in a recipe


@pytest.mark.parametrize(
    "text,words",
    [
        ("calibration: {dataset: 5}", ["calibration.dataset must be a string", "olmo-mix", ".jsonl", "got 5"]),
        ("prune: {method: 3}", ["prune.method must be a string", "magnitude, wanda, sparsegpt", "got 3"]),
        ("eval: {perplexity: wiki}", ["eval.perplexity must be a list", "[wiki]", "got 'wiki'"]),
        ("prune: {method: wanda, pattern: 24}", ["prune.pattern must be a quoted string", "'2:4'", "got 24"]),
        ("prune: {method: wanda, pattern: 2:4}", ["prune.pattern must be a quoted string", "got 124", "unquoted"]),
        ("prune: {method: wanda, ignore: [3]}", ["prune.ignore must be a list of strings", "got [3]"]),
        ("prune: {method: wanda, dsnot: {max_cycles: '50'}}", ["prune.dsnot.max_cycles must be an integer"]),
        ("prune: {method: wanda, dsnot: {same_sign: 1}}", ["prune.dsnot.same_sign must be true or false"]),
        ("prune: {method: wanda, pattern: unstructured, sparsity: 0.5, owl: {M: big}}", ["prune.owl.M must be a"]),
        ("name: [a, b]", ["name must be a string", "got ['a', 'b']"]),
    ],
)
def test_recipe_type_mistakes(workdir, capsys, text, words):
    one_line(capsys, workdir, _run(workdir, text + "\n"), "recipe.yaml: ", *words)


# 4. SparseGPT N:M whose M does not divide the block size


@pytest.mark.parametrize("extra", ["", ", dsnot: {}"])
def test_sparsegpt_nm_must_divide_its_block_size_when_the_recipe_loads(workdir, capsys, extra):
    text = f"prune: {{method: sparsegpt, pattern: '2:3'{extra}}}\n"
    words = ["sparsegpt", "blocks of 128 columns", "M=3", "'2:4'"]
    with pytest.raises(UserError) as e:
        load_recipe(_recipe(workdir, text))
    assert all(w in str(e.value) for w in words), str(e.value)
    one_line(capsys, workdir, _run(workdir, text), *words)


# 5. devices

ACCEPTED = "auto, cpu, cuda, cuda:N"


def _device_argv(cmd: str, device: str) -> list[str]:
    return {
        "run": ["run", "--out", "out", "--device", device],
        "eval": ["eval", "--model", "m", "--out", "out", "--device", device, *SKIP_EVAL],
        "compare": ["compare", "a=m1", "b=m2", "--out", "out", "--device", device, *SKIP_EVAL],
        "generate": ["generate", "--model", "ckpt", "--prompt", "hi", "--device", device],
    }[cmd]


@pytest.fixture
def cuda_devices(monkeypatch):
    def set_count(n: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)

    return set_count


@pytest.mark.parametrize("cmd", ["run", "eval", "compare", "generate"])
@pytest.mark.parametrize("device", ["gpu", "mps", "banana", "cuda:x"])
def test_unknown_device(workdir, capsys, cuda_devices, cmd, device):
    cuda_devices(0)
    one_line(capsys, workdir, _device_argv(cmd, device), f"unknown device {device!r}", ACCEPTED, "no CUDA device")


@pytest.mark.parametrize("cmd", ["run", "eval", "compare", "generate"])
def test_cuda_index_beyond_the_devices(workdir, capsys, cuda_devices, cmd):
    cuda_devices(2)
    one_line(capsys, workdir, _device_argv(cmd, "cuda:7"), "'cuda:7'", "2 CUDA devices (cuda:0 to cuda:1)", "N < 2")


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda(workdir, capsys, cuda_devices, device):
    cuda_devices(0)
    one_line(capsys, workdir, _device_argv("run", device), f"{device!r}", "no CUDA device", "--device cpu")


def test_resolve_device_accepts_the_documented_names(cuda_devices):
    from compress.devices import resolve_device

    cuda_devices(0)
    assert resolve_device("auto") == resolve_device("cpu") == torch.device("cpu")
    cuda_devices(2)
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1") and resolve_device(" CPU ") == torch.device("cpu")


# 6. no zero-shot tasks


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--model", "m", "--tasks", "", *SKIP_EVAL],
        ["compare", "a=m1", "b=m2", "--out", "out", "--tasks", ",", *SKIP_EVAL],
        ["compare", "a=m1", "--out", "out", "--tasks", " , ", "--task-source", "embedded"],
    ],
)
def test_no_tasks(workdir, capsys, fake_evaluate, argv):
    one_line(capsys, workdir, argv, "no tasks given", "--tasks boolq,rte", "boolq, rte, hellaswag")


# 7. --task-source hub without the Hub


@pytest.mark.parametrize("cmd", [["eval", "--model", "m"], ["compare", "a=m1", "b=m2", "--out", "out"]])
def test_task_source_hub_unreachable(workdir, capsys, fake_evaluate, monkeypatch, cmd):
    monkeypatch.setattr(compress.sources, "hub_reachable", lambda *a, **k: False)
    argv = [*cmd, "--task-source", "hub", "--ppl", ""]
    one_line(capsys, workdir, argv, "Hub is unreachable", "--task-source embedded")


# 8. Ctrl-C


def _raise(exc: BaseException):
    def f(*args, **kwargs):
        raise exc

    return f


def test_ctrl_c_before_anything_was_kept(workdir, capsys, monkeypatch):
    monkeypatch.setattr(compress.pipeline, "run", _raise(KeyboardInterrupt()))
    err = one_line(capsys, workdir, ["run", "--out", "out"], code=130, prefix="interrupted: ")
    assert err == "interrupted: nothing was kept; rerun the same command to start again\n"


def test_ctrl_c_after_a_resume_checkpoint(workdir, capsys, monkeypatch):
    message = "layers 0-11 kept in .out.partial; rerun the same command to resume"
    monkeypatch.setattr(compress.pipeline, "run", _raise(Interrupted(message)))
    err = one_line(capsys, workdir, ["run", "--out", "out"], code=130, prefix="interrupted: ")
    assert err == f"interrupted: {message}\n"


def test_ctrl_c_during_eval(workdir, capsys, monkeypatch):
    monkeypatch.setattr(eval.evaluate, "evaluate", _raise(KeyboardInterrupt()))
    one_line(
        capsys, workdir, ["eval", "--model", "m", *SKIP_EVAL], "nothing was kept", code=130, prefix="interrupted: "
    )
