"""Checkpoints: atomic writes; truncated, corrupt and foreign files are refused with CheckpointError."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from faceverify.backbones import build_backbone
from faceverify.checkpoint import FORMAT, inference_state, load_backbone, load_checkpoint, save_checkpoint
from faceverify.errors import CheckpointError

REPO = Path(__file__).resolve().parents[1]
KWARGS = {"embedding_dim": 16, "input_size": [112, 96], "widths": [4, 8, 8, 8]}


def small_state(seed: int = 0) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    model = build_backbone("sphereface20", **KWARGS)
    state = inference_state("sphereface20", KWARGS, "112x96", model, step=7)
    state["optimizer"] = {"state": {0: {"momentum_buffer": torch.randn(10)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    state["rng"] = {"torch": torch.get_rng_state(), "python": [3, list(range(5)), None]}
    return model, state


def test_roundtrip_and_no_temp_files(tmp_path):
    _, state = small_state()
    path = save_checkpoint(tmp_path / "ckpt" / "last.pt", state)
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT and loaded["step"] == 7
    assert loaded["backbone"] == {"name": "sphereface20", "kwargs": KWARGS}
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())
    assert torch.equal(loaded["optimizer"]["state"][0]["momentum_buffer"], state["optimizer"]["state"][0]["momentum_buffer"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]
    # overwriting replaces the file
    state["step"] = 8
    save_checkpoint(path, state)
    assert load_checkpoint(path)["step"] == 8


def test_load_backbone_file_and_directory(tmp_path):
    model, state = small_state(1)
    save_checkpoint(tmp_path / "model.pt", state)
    x = torch.randn(2, 3, 112, 96)
    model.eval()
    for spec in (tmp_path / "model.pt", tmp_path):
        loaded, info = load_backbone(spec)
        assert not loaded.training
        assert info.name == "sphereface20" and info.embedding_dim == 16 and info.template == "112x96"
        assert info.input_size == (112, 96) and info.step == 7 and info.path == tmp_path / "model.pt"
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_checkpoint_is_refused(tmp_path, keep):
    _, state = small_state()
    path = save_checkpoint(tmp_path / "last.pt", state)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="empty|truncated"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_backbone(path)


def test_flipped_byte_is_refused(tmp_path):
    _, state = small_state()
    path = save_checkpoint(tmp_path / "last.pt", state)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the tensor data: torch.load alone would accept this
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt|cannot be read"):
        load_checkpoint(path)


def test_foreign_files_are_refused(tmp_path):
    bare = tmp_path / "bare.pt"
    torch.save(build_backbone("sphereface20", **KWARGS).state_dict(), bare)
    with pytest.raises(CheckpointError, match="bare state_dict"):
        load_checkpoint(bare)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="truncated or not"):
        load_checkpoint(text)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="without model.pt"):
        load_backbone(tmp_path)
    pickled = tmp_path / "object.pt"
    torch.save({"format": FORMAT, "backbone": {"name": "x"}, "model": {}, "obj": Path("/")}, pickled)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(pickled)  # weights_only: arbitrary objects are never unpickled


def test_weights_that_do_not_fit_are_refused(tmp_path):
    _, state = small_state()
    state["backbone"]["kwargs"] = {**KWARGS, "embedding_dim": 32}
    save_checkpoint(tmp_path / "model.pt", state)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_backbone(tmp_path)


def test_save_requires_backbone_and_model(tmp_path):
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path / "x.pt", {"model": {}})


def test_kill_during_save_leaves_previous_checkpoint(tmp_path):
    """A writer SIGKILLed while rewriting the file never leaves a damaged checkpoint behind."""
    _, state = small_state()
    path = save_checkpoint(tmp_path / "last.pt", state)
    script = textwrap.dedent(f"""
        import torch
        from faceverify.checkpoint import save_checkpoint
        big = {{"backbone": {{"name": "sphereface20", "kwargs": {{}}}}, "model": {{"w": torch.randn(4_000_000)}}}}
        print("ready", flush=True)
        while True:
            save_checkpoint({str(path)!r}, big)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(1.5)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    loaded = load_checkpoint(path)  # either the old state or a complete new one
    assert loaded["format"] == FORMAT
    assert loaded["model"].keys() in (state["model"].keys(), {"w"})
