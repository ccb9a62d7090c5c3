"""Split-free rewrites compute exactly what the original ultralytics blocks compute, and pickle."""

import yoloslim  # noqa: F401  (offline setup before ultralytics)

import copy
import subprocess
import sys

import pytest
import torch
from torch import nn
from ultralytics.nn.modules.block import C2, C2PSA, ELAN1, PSA, C2f, C2fCIB, C2fPSA, C3k2, RepNCSPELAN4

from yoloslim.models import load_module
from yoloslim.models.blocks import SplitFreeBranch, SplitFreeChain
from yoloslim.models.rewrite import rewrite_for_pruning

TOLERANCE = 1e-5

BLOCKS = {
    "C2f": (lambda: C2f(32, 32, n=2, shortcut=True), SplitFreeChain),
    "C3k2": (lambda: C3k2(32, 32, n=1, c3k=False), SplitFreeChain),
    "C3k2-c3k": (lambda: C3k2(32, 32, n=1, c3k=True), SplitFreeChain),
    "C3k2-attn": (lambda: C3k2(64, 64, n=1, attn=True), SplitFreeChain),
    "C2fCIB": (lambda: C2fCIB(32, 32, n=1, shortcut=True, lk=True), SplitFreeChain),
    "C2fPSA": (lambda: C2fPSA(64, 64, n=1), SplitFreeChain),
    "RepNCSPELAN4": (lambda: RepNCSPELAN4(32, 48, 32, 16, n=1), SplitFreeChain),
    "ELAN1": (lambda: ELAN1(32, 32, 32, 16), SplitFreeChain),
    "C2": (lambda: C2(32, 32, n=1), SplitFreeBranch),
    "PSA": (lambda: PSA(64, 64), SplitFreeBranch),
    "C2PSA": (lambda: C2PSA(64, 64, n=1), SplitFreeBranch),
}


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics, non-default eps/momentum: defaults would hide slicing bugs."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(tensor, low, high):
        return low + (high - low) * torch.rand(tensor.shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / fan_in**0.5)
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(uniform(module.weight, 0.5, 1.5))
                module.bias.copy_(uniform(module.bias, -0.5, 0.5))
                module.running_mean.copy_(uniform(module.running_mean, -1.0, 1.0))
                module.running_var.copy_(uniform(module.running_var, 0.5, 2.0))
                module.eps, module.momentum = 1e-3, 0.03
    return model.eval()


def first_tensor(outputs) -> torch.Tensor:
    return outputs if isinstance(outputs, torch.Tensor) else first_tensor(outputs[0])


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_block_rewrite_matches_original(kind):
    build, expected = BLOCKS[kind]
    torch.manual_seed(0)
    model = randomise(nn.Sequential(build()))
    original = copy.deepcopy(model)
    assert rewrite_for_pruning(model) == ["0"]
    block = model[0]
    assert isinstance(block, expected) and block.source == type(original[0]).__name__
    assert block.first.bn.eps == 1e-3 and block.first.bn.momentum == 0.03
    assert block.first.conv.out_channels + block.second.conv.out_channels == original[0].cv1.conv.out_channels
    x = torch.randn(2, model[0].first.conv.in_channels, 16, 16)
    with torch.no_grad():
        assert (model(x) - original(x)).abs().max() <= TOLERANCE
    assert rewrite_for_pruning(model) == []


def test_subclass_with_its_own_forward_is_left_alone():
    class Doubled(C2f):
        def forward(self, x):
            return 2 * super().forward(x)

    model = nn.Sequential(Doubled(16, 16))
    assert rewrite_for_pruning(model) == []
    assert isinstance(model[0], Doubled)


@pytest.mark.parametrize("name", ["yolov8n.yaml", "yolo11n.yaml"])
def test_whole_model_rewrite_matches_original(name):
    model = randomise(load_module(name))
    original = copy.deepcopy(model)
    rewritten = rewrite_for_pruning(model)
    assert len(rewritten) >= 8
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (first_tensor(model(x)) - first_tensor(original(x))).abs().max() <= TOLERANCE


def test_rewritten_model_pickles_and_reloads_in_a_fresh_process(tmp_path):
    model = randomise(load_module("yolo11n.yaml"))
    rewrite_for_pruning(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = first_tensor(model(x))
    torch.save(model, tmp_path / "model.pt")
    torch.save(x, tmp_path / "x.pt")
    script = (
        "import sys, torch, yoloslim\n"
        "d = sys.argv[1]\n"
        "model = torch.load(d + '/model.pt', weights_only=False).eval()\n"
        "kinds = sorted({type(m).__name__ for m in model.modules() if type(m).__module__.startswith('yoloslim')})\n"
        "print(','.join(kinds))\n"
        "with torch.no_grad():\n"
        "    out = model(torch.load(d + '/x.pt'))\n"
        "torch.save(out[0] if isinstance(out, (list, tuple)) else out, d + '/out.pt')\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SplitFreeBranch" in done.stdout and "SplitFreeChain" in done.stdout
    assert (torch.load(tmp_path / "out.pt") - expected).abs().max() <= TOLERANCE
