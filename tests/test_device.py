"""The device default: the first CUDA device when torch sees one, else the CPU, said once; explicit ones pass."""

from __future__ import annotations

import pytest
import torch

import yoloslim  # noqa: F401  (offline setup before ultralytics)
from yoloslim.engine import device as device_module
from yoloslim.engine.device import resolve_device


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(device_module, "_announced", set())
    return []


@pytest.mark.parametrize("cuda, expected", [(True, "0"), (False, "cpu")])
def test_default_is_the_first_gpu_when_there_is_one(monkeypatch, said, cuda: bool, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_device(None, log=said.append) == expected
    assert resolve_device("", log=said.append) == expected
    assert len(said) == 1 and ("CUDA device 0" in said[0] if cuda else "cpu" in said[0])


@pytest.mark.parametrize("given", ["cpu", "0", "0,1", 1])
def test_an_explicit_device_is_kept_and_not_announced(monkeypatch, said, given) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(given, log=said.append) == str(given)
    assert said == []


@pytest.mark.parametrize("command", ["train", "sparse", "finetune", "distill", "val"])
def test_commands_leave_the_device_to_the_default(command: str) -> None:
    from yoloslim.cli import build_parser

    sub = build_parser(only=command).get_default("_commands")[command]
    assert sub.get_default("device") is None
