"""Resumable layer-wise runs: finished layers' tensors, the current hidden states and metrics in a work folder.

A checkpoint is written when `every_s` seconds have passed since the last one (never for short runs), and
read back on the next run with the same key (a hash of the model, recipe and calibration tokens).
Each write goes to a temporary file and is renamed, so an interrupted write leaves the previous checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file


def run_key(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            h.update(p.contiguous().cpu().numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".part")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
    os.replace(tmp, path)


class LayerwiseCheckpoint:
    def __init__(self, folder: Path, key: str, every_s: float = 300.0) -> None:
        self.folder, self.key, self.every_s = Path(folder), key, every_s
        self._last = time.monotonic()
        self.state: dict = {"key": key, "next_layer": 0, "metrics": {}, "extra": {}}
        self.resumed = False
        state_file = self.folder / "state.json"
        if state_file.exists():
            try:
                saved = json.loads(state_file.read_text())
            except json.JSONDecodeError:
                saved = {}
            if saved.get("key") == key:
                self.state, self.resumed = saved, True
            else:  # another run's leftovers
                shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def next_layer(self) -> int:
        return self.state["next_layer"]

    def layer_tensors(self, idx: int) -> dict[str, torch.Tensor]:
        return self._load(self.folder / f"layer_{idx:04d}.safetensors")

    def hidden(self) -> list[torch.Tensor]:
        tensors = self._load(self.folder / "hidden.safetensors")
        return [tensors[f"h{i}"] for i in range(len(tensors))]

    def _load(self, path: Path) -> dict[str, torch.Tensor]:
        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise RuntimeError(f"resume data {path} is unreadable ({e}); delete {self.folder} to start over") from e

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def save(
        self,
        next_layer: int,
        hidden: list[torch.Tensor],
        metrics: dict,
        finished_layers: dict[int, dict[str, torch.Tensor]],
    ) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for idx, tensors in finished_layers.items():
            _save_atomic(tensors, self.folder / f"layer_{idx:04d}.safetensors")
        _save_atomic({f"h{i}": h for i, h in enumerate(hidden)}, self.folder / "hidden.safetensors")
        self.state.update(next_layer=next_layer, metrics=metrics)
        self._write_state()
        self._last = time.monotonic()

    def put_extra(self, name: str, value) -> None:
        self.state["extra"][name] = value
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_state()

    def _write_state(self) -> None:
        tmp = self.folder / "state.json.part"
        tmp.write_text(json.dumps(self.state))
        os.replace(tmp, self.folder / "state.json")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
