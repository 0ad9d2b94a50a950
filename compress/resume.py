"""Resumable layer-wise runs: finished layers' tensors, the current hidden states and metrics in a work folder.

A checkpoint is written when `every_s` seconds have passed since the last one (never for short runs), on
Ctrl-C, and read back on the next run with the same key (a hash of the model, recipe and calibration tokens).

Each checkpoint is one atomic unit: `step-NNNN/` (NNNN = the next layer to run) holds `state.json`, the
hidden states (`hidden.safetensors`, whose metadata records the key and NNNN) and the layers finished since the
previous checkpoint (`layer_XXXX.safetensors`, metadata: key and layer index). It is written as
`.step-NNNN.tmp/`, every file fsynced, then renamed; a kill at any point leaves the previous checkpoint whole.
On load every file's recorded key and index are checked against the folder it sits in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from compress.errors import UserError
from compress.export import disk_full

STEP_RE = re.compile(r"step-(\d{4,})")


def run_key(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            h.update(p.contiguous().cpu().numpy().tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json(path: Path, value) -> None:
    """Atomic, durable JSON write (temp file, fsync, rename, fsync of the folder)."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(value))
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def _save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path, metadata=metadata)
    _fsync(path)


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(path, framework="pt") as f:
        return f.metadata() or {}


class LayerwiseCheckpoint:
    def __init__(self, folder: Path, key: str, every_s: float = 300.0) -> None:
        self.folder, self.key, self.every_s = Path(folder), key, every_s
        self._last = time.monotonic()
        self.state: dict = {"key": key, "next_layer": 0, "metrics": {}, "records": {}, "extra": {}}
        self.resumed = False
        if not self.folder.exists():
            return
        for tmp in self.folder.glob(".step-*.tmp"):  # a write that was killed: never part of a checkpoint
            shutil.rmtree(tmp, ignore_errors=True)
        extra = self._read_json(self.folder / "extra.json")
        steps = self._steps()
        if (extra and extra.get("key") != key) or any(s.get("key") != key for s in steps.values()):
            shutil.rmtree(self.folder, ignore_errors=True)  # another run's leftovers
            return
        if extra:
            self.state["extra"], self.resumed = extra["extra"], True
        if steps:
            last = max(steps)
            self.state.update(next_layer=last, metrics=steps[last]["metrics"], records=steps[last].get("records", {}))
            self.resumed = True
            self._verify(last)

    # ------------------------------------------------------------ reading
    @staticmethod
    def _read_json(path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            return {"key": None}  # unreadable: treated as foreign, the folder is discarded

    def _steps(self) -> dict[int, dict]:
        """Complete checkpoints in the folder: next_layer -> state."""
        out = {}
        for d in self.folder.iterdir():
            m = STEP_RE.fullmatch(d.name)
            if m and d.is_dir():
                state = self._read_json(d / "state.json") or {"key": None}
                if state.get("key") == self.key and state.get("next_layer") != int(m[1]):
                    state = {"key": None}
                out[int(m[1])] = state
        return out

    def _step_dir(self, next_layer: int) -> Path:
        return self.folder / f"step-{next_layer:04d}"

    def _layer_file(self, idx: int) -> Path:
        files = [self._step_dir(n) / f"layer_{idx:04d}.safetensors" for n in sorted(self._steps()) if n > idx]
        found = [f for f in files if f.exists()]
        if not found:
            raise UserError(f"resume data in {self.folder} lacks layer {idx}; delete {self.folder} to start over")
        return found[0]

    def _verify(self, last: int) -> None:
        """Every file of the checkpoint records this run's key and its own index (a mixed-up or stale file
        would silently give a different model)."""
        hidden = self._step_dir(last) / "hidden.safetensors"
        for path, want in [(hidden, {"key": self.key, "next_layer": str(last)})] + [
            (self._layer_file(i), {"key": self.key, "layer": str(i)}) for i in range(last)
        ]:
            try:
                meta = _metadata(path)
            except (SafetensorError, OSError) as e:
                raise UserError(f"resume data {path} is unreadable ({e}); delete {self.folder} to start over") from None
            if any(meta.get(k) != v for k, v in want.items()):
                raise UserError(
                    f"resume data {path} belongs to another layer or run ({meta}); delete {self.folder} to start over"
                )

    @property
    def next_layer(self) -> int:
        return self.state["next_layer"]

    def layer_tensors(self, idx: int) -> dict[str, torch.Tensor]:
        return self._load(self._layer_file(idx))

    def hidden(self) -> list[torch.Tensor]:
        tensors = self._load(self._step_dir(self.next_layer) / "hidden.safetensors")
        return [tensors[f"h{i}"] for i in range(len(tensors))]

    def _load(self, path: Path) -> dict[str, torch.Tensor]:
        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise UserError(f"resume data {path} is unreadable ({e}); delete {self.folder} to start over") from e

    # ------------------------------------------------------------ writing
    def due(self) -> bool:
        return time.monotonic() - self._last >= self.every_s

    def save(
        self,
        next_layer: int,
        hidden: list[torch.Tensor],
        metrics: dict,
        finished_layers: dict[int, dict[str, torch.Tensor]],
        records: dict | None = None,
    ) -> None:
        """One atomic checkpoint: layers `finished_layers` (those done since the last save) and the inputs of
        layer `next_layer`; `records`: the JSON part of the Linears' records (their masks are layer tensors)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self._step_dir(next_layer)
        tmp = self.folder / f".{final.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            for idx, tensors in finished_layers.items():
                _save(tensors, tmp / f"layer_{idx:04d}.safetensors", {"key": self.key, "layer": str(idx)})
            meta = {"key": self.key, "next_layer": str(next_layer)}
            _save({f"h{i}": h for i, h in enumerate(hidden)}, tmp / "hidden.safetensors", meta)
            state = {"key": self.key, "next_layer": next_layer, "metrics": metrics, "records": records or {}}
            _write_json(tmp / "state.json", state)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            _fsync(self.folder)
        except (OSError, SafetensorError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            need = sum(t.numel() * t.element_size() for t in hidden) + sum(
                t.numel() * t.element_size() for d in finished_layers.values() for t in d.values()
            )
            if not disk_full(e):
                raise UserError(f"could not write the resume checkpoint in {self.folder} ({e})") from None
            raise UserError(
                f"no space left on device writing the resume checkpoint in {self.folder} (needs about "
                f"{need / 1e6:.0f} MB); free space and rerun the same command (the previous checkpoint is kept)"
            ) from None
        for n in self._steps():  # the new checkpoint is complete: older hidden states are not needed
            if n != next_layer:
                (self._step_dir(n) / "hidden.safetensors").unlink(missing_ok=True)
        self.state.update(next_layer=next_layer, metrics=metrics, records=records or {})
        self._last = time.monotonic()

    def put_extra(self, name: str, value) -> None:
        self.state["extra"][name] = value
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_json(self.folder / "extra.json", {"key": self.key, "extra": self.state["extra"]})

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
