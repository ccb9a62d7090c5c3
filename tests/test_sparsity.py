"""Sparse-training penalty mechanics on a toy CNN, driven through the real trainer optimizer_step.

The toy has a residual add (so one BN is excluded as coupled) and a head conv (protected). A
``StepTrainer`` reuses yoloslim's ``KeepModelMixin.optimizer_step`` — unscale, the
``on_before_optimizer_step`` event, optional clipping, scaler step — with a real optimizer and a
real CPU GradScaler, so these tests exercise the same code path as a training run.
"""

from __future__ import annotations

import pickle
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import torch_pruning as tp
from torch import nn

import yoloslim  # noqa: F401  (configures ultralytics before it is imported)
from yoloslim.engine.trainer import KeepModelMixin
from yoloslim.errors import UserError
from yoloslim.sparsity.callback import SparseTraining
from yoloslim.sparsity.optimizer_advice import sparse_optimizer_warning
from yoloslim.sparsity.penalties import METHODS, make_penalty
from yoloslim.sparsity.schedule import sr_at
from yoloslim.sparsity.selection import EXCLUDED_COUPLED, EXCLUDED_PROTECTED, select_bns
from yoloslim.sparsity.stats import COLUMNS, gamma_stats

LR = 0.05
BATCH = 8


class ConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.SiLU())


class Toy(nn.Module):
    """stem -> (a -> b) + stem -> c -> head: stem.1 and b.1 are tied by the add; a.1 and c.1 are free."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a, self.b, self.c = ConvBN(3, 8), ConvBN(8, 8), ConvBN(8, 8), ConvBN(8, 6)
        self.head = nn.Sequential(nn.Conv2d(6, 2, 1), nn.BatchNorm2d(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(self.c(x + self.b(self.a(x))))


def toy_model(seed: int = 0, small_gammas: bool = True) -> Toy:
    """Eval mode (BN uses running stats), so gradients do not depend on how a batch is split."""
    torch.manual_seed(seed)
    model = Toy().eval()
    if small_gammas:  # start near zero so a few steps of penalty visibly create tiny γ
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.005, 0.06)
    return model


def toy_selection(model: Toy, penalize_coupled: bool = False):
    graph = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 16, 16))
    return select_bns(model, graph, ignored_layers=list(model.head.modules()), penalize_coupled=penalize_coupled)


def toy_batches(n: int, size: int = BATCH, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 3, 16, 16, generator=g), torch.randn(size, 2, 16, 16, generator=g)) for _ in range(n)]


def task_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (model(x) - y).pow(2).mean()


class StepTrainer(KeepModelMixin):
    """The parts of an ultralytics trainer that optimizer_step and SparseTraining touch."""

    def __init__(self, model: nn.Module, scale: float = 2.0**10, batches_per_epoch: int = 1,
                 optimizer: type[torch.optim.Optimizer] = torch.optim.SGD) -> None:
        self.model = model
        self.optimizer = optimizer(model.parameters(), lr=LR)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=10**6)
        self.ema = None
        self.epoch, self.epochs = 0, 1
        self.train_loader = range(batches_per_epoch)
        self.callbacks: dict[str, list] = defaultdict(list)

    def add_callback(self, event: str, fn) -> None:
        self.callbacks[event].append(fn)

    def run_callbacks(self, event: str) -> None:
        for fn in self.callbacks[event]:
            fn(self)


def run_sparse(model: nn.Module, sr: float, micro_batches, accumulate: int = 1, scale: float = 2.0**10,
               method: str = "slim", extension: SparseTraining | None = None,
               optimizer: type[torch.optim.Optimizer] = torch.optim.SGD) -> tuple[SparseTraining, StepTrainer]:
    """Train like ultralytics does: backward on each scaled micro-batch loss, optimizer_step every k."""
    extension = extension or SparseTraining(make_penalty(method, toy_selection(model)), sr=sr, schedule="constant")
    trainer = StepTrainer(model, scale=scale, batches_per_epoch=len(micro_batches), optimizer=optimizer)
    for event, fn in extension.events():
        trainer.add_callback(event, fn)
    trainer.run_callbacks("on_train_start")
    trainer.run_callbacks("on_train_epoch_start")
    for i, (x, y) in enumerate(micro_batches):
        trainer.run_callbacks("on_train_batch_start")
        trainer.scaler.scale(task_loss(trainer.model, x, y) / accumulate).backward()
        if (i + 1) % accumulate == 0:
            trainer.optimizer_step()
    return extension, trainer


def gammas(model: nn.Module, names) -> dict[str, torch.Tensor]:
    modules = dict(model.named_modules())
    return {n: modules[n].weight.detach().clone() for n in names}


def test_selection_excludes_residual_coupled_and_head_and_is_picklable() -> None:
    model = toy_model()
    selection = toy_selection(model)
    assert selection.penalized == ("a.1", "c.1")
    assert selection.excluded == {"stem.1": EXCLUDED_COUPLED, "b.1": EXCLUDED_COUPLED, "head.1": EXCLUDED_PROTECTED}
    assert "2 BN layers penalized, 3 excluded" in selection.describe()
    coupled = toy_selection(model, penalize_coupled=True)
    assert coupled.penalized == ("stem.1", "a.1", "b.1", "c.1") and coupled.excluded == {"head.1": EXCLUDED_PROTECTED}
    assert pickle.loads(pickle.dumps(selection)) == selection


def test_penalty_makes_penalized_gammas_sparse_and_leaves_excluded_ones_alone() -> None:
    batches = toy_batches(30)
    base, sparse = toy_model(), toy_model()
    selection = toy_selection(base)
    run_sparse(base, 0.0, batches)
    run_sparse(sparse, 1e-2, batches)
    g0, g1 = (torch.cat(list(gammas(m, selection.penalized).values())).abs() for m in (base, sparse))
    assert g1.sum() < g0.sum()
    assert gamma_stats(g1)[COLUMNS["small"]] > gamma_stats(g0)[COLUMNS["small"]]


def penalty_gradients(method: str, penalize_coupled: bool = False) -> tuple[dict, dict]:
    """Gradients after one penalized and one unpenalized pass of the same batch on the same model."""
    (x, y), = toy_batches(1)
    grads = {}
    for sr in (1e-2, 0.0):
        model = toy_model()
        extension = SparseTraining(make_penalty(method, toy_selection(model, penalize_coupled)), sr=sr)
        trainer = StepTrainer(model)
        extension.on_train_start(trainer)
        task_loss(model, x, y).backward()
        extension(trainer)
        grads[sr] = {n: p.grad.clone() for n, p in model.named_parameters()}
    return grads[1e-2], grads[0.0]


def bn_gammas() -> dict[str, torch.Tensor]:
    return {n: m.weight.detach() for n, m in toy_model().named_modules() if isinstance(m, nn.BatchNorm2d)}


def test_excluded_bn_receives_exactly_the_task_gradient() -> None:
    penalized, plain = penalty_gradients("slim")
    for name in ("stem.1.weight", "b.1.weight", "head.1.weight", "a.0.weight"):
        assert torch.equal(penalized[name], plain[name]), name
    torch.testing.assert_close(penalized["a.1.weight"] - plain["a.1.weight"], 1e-2 * torch.sign(bn_gammas()["a.1"]))


def test_group_slim_is_l1_for_a_lone_bn_and_group_lasso_across_coupled_bns() -> None:
    penalized, plain = penalty_gradients("group_slim", penalize_coupled=True)
    delta = {n: penalized[n] - plain[n] for n in plain}
    g = bn_gammas()
    torch.testing.assert_close(delta["a.1.weight"], 1e-2 * torch.sign(g["a.1"]))
    norm = (g["stem.1"] ** 2 + g["b.1"] ** 2).sqrt()
    torch.testing.assert_close(delta["stem.1.weight"], 1e-2 * g["stem.1"] / norm)
    torch.testing.assert_close(delta["b.1.weight"], 1e-2 * g["b.1"] / norm)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_penalty_does_not_depend_on_the_loss_scale(method: str) -> None:
    batches = toy_batches(3)
    finals = {}
    for scale in (2.0**3, 2.0**14):
        model = toy_model()
        _, trainer = run_sparse(model, 1e-2, batches, scale=scale, method=method)
        assert trainer.scaler.get_scale() == scale
        finals[scale] = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(finals[2.0**3], finals[2.0**14], rtol=1e-5, atol=1e-7)


def test_slim_step_moves_gamma_by_exactly_lr_times_sr_at_any_scale() -> None:
    batches = toy_batches(1)
    for scale in (2.0**2, 2.0**16):
        plain, sparse = toy_model(), toy_model()
        start = sparse.a[1].weight.detach().clone()
        run_sparse(plain, 0.0, batches, scale=scale)
        run_sparse(sparse, 1e-2, batches, scale=scale)
        moved = sparse.a[1].weight.detach() - plain.a[1].weight.detach()
        torch.testing.assert_close(moved, -LR * 1e-2 * torch.sign(start), rtol=1e-4, atol=1e-8)


def test_under_adam_sr_barely_changes_how_far_gamma_moves_and_the_run_warns() -> None:
    """The reason sparse training warns about Adam: 10x the penalty, about the same γ drift, capped near lr × steps."""
    batches = toy_batches(10)
    drift = {}
    for sr in (1.0, 10.0):
        model = toy_model(small_gammas=False)
        start = model.a[1].weight.detach().clone()
        extension, trainer = run_sparse(model, sr, batches, optimizer=torch.optim.AdamW)
        drift[sr] = (start - model.a[1].weight.detach()).abs()
    cap = LR * len(batches)
    assert float(drift[10.0].max()) <= 1.05 * cap
    assert float(drift[10.0].mean()) < 1.2 * float(drift[1.0].mean())
    warning = sparse_optimizer_warning(trainer)
    assert warning is not None and "AdamW" in warning and f"~{cap:.2g} " in warning and "--optimizer SGD" in warning
    _, sgd_trainer = run_sparse(toy_model(), 1e-2, toy_batches(1))
    assert sparse_optimizer_warning(sgd_trainer) is None


def test_accumulated_micro_batches_get_the_penalty_once_per_step() -> None:
    k = 4
    batches = toy_batches(2 * k, size=BATCH // k)
    plain, sparse = toy_model(), toy_model()
    start = sparse.a[1].weight.detach().clone()
    run_sparse(plain, 0.0, batches[:k], accumulate=k)
    extension, _ = run_sparse(sparse, 1e-2, batches[:k], accumulate=k)
    assert extension.steps == 1
    moved = sparse.a[1].weight.detach() - plain.a[1].weight.detach()
    torch.testing.assert_close(moved, -LR * 1e-2 * torch.sign(start), rtol=1e-4, atol=1e-8)
    extension, _ = run_sparse(toy_model(), 1e-2, batches, accumulate=k)
    assert extension.steps == 2


def test_clipping_is_off_unless_requested_and_schedule_is_smooth() -> None:
    model = toy_model()
    trainer = StepTrainer(model, batches_per_epoch=10)
    SparseTraining(make_penalty("slim", toy_selection(model)), sr=1e-2).on_train_start(trainer)
    assert trainer.clip_grad_norm is None
    SparseTraining(make_penalty("slim", toy_selection(model)), sr=1e-2, clip=5.0).on_train_start(trainer)
    assert trainer.clip_grad_norm == 5.0
    assert sr_at(1e-2, "linear", 0.0) == 1e-2 and sr_at(1e-2, "linear", 1.0) == pytest.approx(1e-3)
    assert sr_at(1e-2, "linear", 0.25) == pytest.approx(1e-2 * (1 - 0.9 * 0.25))
    extension = SparseTraining(make_penalty("slim", toy_selection(model)), sr=1e-2, schedule="linear")
    trainer.epochs, trainer.epoch = 4, 1
    extension.on_train_epoch_start(trainer)
    seen = []
    for _ in range(10):
        extension.on_train_batch_start(trainer)
        seen.append(extension.current_sr(trainer))
    assert seen[0] == pytest.approx(1e-2 * (1 - 0.9 * 1 / 4)) and all(a > b for a, b in zip(seen, seen[1:]))


def test_bad_inputs_are_one_line_user_errors() -> None:
    from yoloslim.sparsity.api import check_sr
    from yoloslim.sparsity.schedule import check_schedule

    for call in (lambda: check_sr(-1e-3), lambda: make_penalty("l1", toy_selection(toy_model())),
                 lambda: check_schedule("step")):
        with pytest.raises(UserError) as info:
            call()
        assert "\n" not in str(info.value)
    no_bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))
    graph = tp.DependencyGraph().build_dependency(no_bn, torch.randn(1, 3, 8, 8))
    with pytest.raises(UserError, match="no BN layer"):
        make_penalty("slim", select_bns(no_bn, graph, ignored_layers=[no_bn[2]]))


def _ddp_worker(rank: int, world: int, init_file: str, extension_bytes: bytes, out: str, steps: int) -> None:
    """One rank: half of every global batch; gradients are averaged by DDP before optimizer_step."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = nn.parallel.DistributedDataParallel(toy_model())
        extension = pickle.loads(extension_bytes)  # as ultralytics ships callbacks to DDP workers
        half = BATCH // world
        shards = [(x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half]) for x, y in toy_batches(steps)]
        run_sparse(model, extension.sr, shards, extension=extension)
        torch.save(gammas(model.module, extension.penalty.selection.penalized), f"{out}.{rank}")
        del model  # DDP's reducer holds the group: release it before the group goes
        dist.barrier()  # neither rank tears gloo down while the other may still be talking
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_ddp_gives_the_same_gammas_as_one_process(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    steps = 6
    model = toy_model()
    extension = SparseTraining(make_penalty("slim", toy_selection(model)), sr=1e-2, schedule="linear")
    out = tmp_path / "ddp_gammas.pt"
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), pickle.dumps(extension), str(out), steps), nprocs=2)
    run_sparse(model, 1e-2, toy_batches(steps), extension=extension)
    single = gammas(model, extension.penalty.selection.penalized)
    start = gammas(toy_model(), single)
    assert any(not torch.allclose(single[n], start[n]) for n in single)
    for rank in range(2):
        distributed = torch.load(f"{out}.{rank}")
        for name in single:
            torch.testing.assert_close(distributed[name], single[name], rtol=1e-5, atol=1e-7)
