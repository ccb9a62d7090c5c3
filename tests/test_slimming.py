"""Classic global-threshold slimming: shortcut strategies, per-layer floor, round-up alignment."""

from __future__ import annotations

import pytest
import torch
import torch_pruning as tp
from torch import nn

from yoloslim.errors import UserError
from yoloslim.prune.slimming import apply_plans, collect_groups, highest_safe_ratio, plan_slimming


class ConvBN(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class ResidualNet(nn.Module):
    """stem -> (a -> b) + stem -> tail -> head: stem, a-less b and the add tie stem/b channels."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.stem = ConvBN(3, width)
        self.a = ConvBN(width, width)
        self.b = ConvBN(width, width)
        self.tail = ConvBN(width, width)
        self.head = nn.Conv2d(width, 4, 1)

    def forward(self, x):
        s = self.stem(x)
        return self.head(self.tail(self.b(self.a(s)) + s))


def make_model(seed: int = 0) -> ResidualNet:
    torch.manual_seed(seed)
    model = ResidualNet().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features) + 0.01
    return model


def slim(model, ratio, shortcut, layer_keep=None, round_up=None):
    x = torch.rand(1, 3, 16, 16)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    plans = collect_groups(dg, model, [model.head], shortcut)
    plan_slimming(plans, ratio, layer_keep=layer_keep, round_up=round_up)
    kept = {p.name: p.keep.tolist() for p in plans}
    apply_plans(dg, plans)
    model(x)
    return kept


class ChainNet(nn.Module):
    """stem -> 1x1 conv+BN -> depthwise conv+BN -> head: two BNs in one group, no residual add."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.stem = ConvBN(3, width)
        self.pw = nn.Conv2d(width, width, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(width)
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False)
        self.dw_bn = nn.BatchNorm2d(width)
        self.head = nn.Conv2d(width, 4, 1)

    def forward(self, x):
        return self.head(self.dw_bn(self.dw(self.pw_bn(self.pw(self.stem(x))))))


def test_strategies_differ_and_keep_the_add_consistent():
    kept = {s: slim(make_model(), 0.4, s, layer_keep=0.05) for s in ("skip", "first", "union")}
    assert "stem.conv" not in kept["skip"], "skip leaves the coupled group out"
    assert kept["first"]["stem.conv"] != kept["union"]["stem.conv"]
    assert set(kept["first"]["stem.conv"]) <= set(kept["union"]["stem.conv"])


def test_skip_leaves_coupled_channels_untouched():
    model = make_model()
    slim(model, 0.5, "skip", layer_keep=0.05)
    assert model.stem.conv.out_channels == 32 and model.b.conv.out_channels == 32
    assert model.a.conv.out_channels < 32 and model.tail.conv.out_channels < 32


def test_round_up_gives_multiples_of_8_or_full_width():
    model = make_model()
    slim(model, 0.55, "union", layer_keep=0.01, round_up=8)
    for conv in (model.stem.conv, model.a.conv, model.b.conv, model.tail.conv):
        assert conv.out_channels % 8 == 0 or conv.out_channels == 32


def test_round_up_keeps_the_largest_gammas():
    model = make_model()
    gammas = model.a.bn.weight.detach().clone()
    kept = slim(model, 0.6, "union", layer_keep=0.01, round_up=8)["a.conv"]
    dropped = sorted(set(range(32)) - set(kept))
    assert gammas[kept].min() >= gammas[dropped].max()


def test_layer_keep_floor():
    model = make_model()
    for m in (model.a.bn,):
        m.weight.data *= 1e-3
    slim(model, 0.5, "union", layer_keep=0.25)
    assert model.a.conv.out_channels >= 8


def test_ratio_that_empties_a_layer_names_the_safe_ratio():
    model = make_model()
    model.a.bn.weight.data *= 1e-3
    x = torch.rand(1, 3, 16, 16)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    plans = collect_groups(dg, model, [model.head], "union")
    safe = highest_safe_ratio(plans)
    with pytest.raises(UserError, match=f"at most {safe:.3f}"):
        plan_slimming(plans, min(0.95, safe + 0.1))
    plan_slimming(plans, safe * 0.99)


def test_ratio_bounds():
    model = make_model()
    with pytest.raises(UserError, match=r"\(0, 1\)"):
        slim(model, 1.0, "union")


def test_equal_gammas_still_prune_the_requested_share():
    model = ResidualNet().eval()  # untrained: every γ is 1
    slim(model, 0.25, "skip")
    assert model.a.conv.out_channels + model.tail.conv.out_channels == 64 - 16


def test_yolov8n_round_up_and_forward():
    """On a real detector, every pruned conv is a multiple of 8 or keeps its original width."""
    from yoloslim.models import load_module
    from yoloslim.prune.classic import slim_prune_model

    model = load_module("yolov8n.yaml")
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features)
    original = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    result = slim_prune_model(model, 0.5, shortcut="union", layer_keep=0.01, round_up=8, imgsz=64)
    pruned = {n: m.out_channels for n, m in result.model.named_modules() if isinstance(m, nn.Conv2d)}
    changed = [n for n in pruned if n in original and pruned[n] != original[n]]
    assert changed, "something was pruned"
    assert all(pruned[n] % 8 == 0 for n in changed)
    assert result.speed_up > 1.2
    result.model(torch.rand(1, 3, 64, 64))


def test_cli_sweep_writes_one_table_and_a_folder_per_ratio(tmp_path, capsys):
    import json

    from yoloslim.cli import main

    out = tmp_path / "sweep"
    code = main(["prune", "--weights", "yolov8n.yaml", "--method", "slim", "--prune-ratio", "0.2", "0.4",
                 "--layer-keep", "0.01", "--round-up", "8", "--imgsz", "64", "--no-latency", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert [r["prune_ratio"] for r in report["runs"]] == [0.2, 0.4]
    assert len(report["rows"]) == 3
    params = [r["params"] for r in report["rows"]]
    assert params[0] > params[1] > params[2]
    for ratio in ("0.2", "0.4"):
        assert (out / f"ratio-{ratio}" / "pruned.pt").is_file()
        assert (out / f"ratio-{ratio}" / "channels.png").is_file()


def test_cli_round_up_without_classic_mode_is_refused(tmp_path, capsys):
    from yoloslim.cli import main

    code = main(["prune", "--weights", "yolov8n.yaml", "--speed-up", "1.5", "--round-up", "8", "--imgsz", "64",
                 "--no-latency", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--round-up" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("shortcut", ["skip", "first", "union"])
def test_chained_bns_without_an_add_are_pruned_as_one_channel(shortcut):
    """A chain's channel goes only when both of its BNs are small, whatever the shortcut strategy."""
    model = ChainNet().eval()
    model.pw_bn.weight.data = torch.tensor([0.01] * 4 + [0.02] * 4 + [1.0] * 8)
    model.dw_bn.weight.data = torch.tensor([0.01] * 4 + [1.0] * 4 + [0.02] * 4 + [1.0] * 4)
    x = torch.rand(1, 3, 16, 16)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    plans = collect_groups(dg, model, [model.head], shortcut)
    assert not any(p.coupled for p in plans)
    plan_slimming(plans, 0.2)
    chain = next(p for p in plans if len(p.gammas) == 2)
    assert chain.keep.tolist() == list(range(4, 16))
    apply_plans(dg, plans)
    assert model.pw.out_channels == model.dw.out_channels == 12
    assert model(x).shape == (1, 4, 16, 16)


def test_sparse_training_and_slimming_share_the_residual_rule():
    """On yolov10n (SCDown: 1x1 + depthwise, no add) the BNs sparse training penalizes are exactly those
    that ``--shortcut skip`` may prune."""
    from yoloslim.models import load_module
    from yoloslim.prune.graph import build_dependency_graph, prepare_for_pruning
    from yoloslim.sparsity.selection import select_bns

    p = prepare_for_pruning(load_module("yolov10n.yaml"), imgsz=64)
    graph = build_dependency_graph(p)
    names = {m: n for n, m in p.model.named_modules()}
    skip_roots = {plan.name for plan in collect_groups(graph, p.model, p.ignored_layers, "skip")}
    penalized = set(select_bns(p.model, graph, p.ignored_layers).penalized)
    chained = 0
    for group in graph.get_all_groups(ignored_layers=p.ignored_layers, root_module_types=[nn.Conv2d]):
        bns = {names[dep.target.module] for dep, _ in group if isinstance(dep.target.module, nn.BatchNorm2d)
               and dep.handler == tp.prune_batchnorm_out_channels}
        if not bns:
            continue
        root = names[group[0].dep.target.module]
        assert (root in skip_roots) == bns.issubset(penalized), root
        chained += len(bns) > 1 and root in skip_roots
    assert chained >= 3, "yolov10n's SCDown groups hold two BNs and are not tied by an add"
