"""Make a model safe to hand to torch-pruning: rewrite, protect, and prove it traces.

``prepare_for_pruning`` rewrites chunking blocks (``yoloslim.models.rewrite``), protects the
modules whose channels must not change (the prediction layers, whose widths are the output
format — see ``outputs.py``; RT-DETR's decoder; the inside of attention, whose widths are
heads × head_dim, or the whole attention where the block around it cannot prune; whole heads
with ``protect_heads``; whatever the user names), and then *probes* the model: in a
forked child process it builds the dependency graph, prunes 30% of every prunable group
and runs a forward pass. The child is killed after ``trace_timeout`` seconds, so a hang in
torch-pruning costs time, never the run. When the probe fails, the layers responsible are
found by probing again with candidates protected (and not traced inside, see ``trace.py``),
and are protected with a warning.

How to use the result with torch-pruning: pass ``ignored_layers=p.ignored_layers`` and
``forward_fn=p.forward_fn`` to the pruner. Do not pass ignored layers to graph *tracing*
(an untraced conv becomes an element-wise op and its input channels silently stop
following their producer); the pruner keeps their output channels and adapts their inputs.
"""

from __future__ import annotations

import copy
import multiprocessing
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from yoloslim.errors import UserError
from yoloslim.models.blocks import SPLIT_FREE_BLOCKS
from yoloslim.models.rewrite import rewrite_for_pruning
from yoloslim.prune.outputs import final_layer, prediction_layers
from yoloslim.prune.trace import TraceForward, is_layer, tensors_only

PROBE_RATIO = 0.3  # share of every group the probe removes: hits every index mapping, leaves uneven counts
MAX_SEARCH_DEPTH = 4  # how far below a failing layer the search descends to name the culprit
SEARCH_BUDGET = 8  # the culprit search stops after this many trace timeouts' worth of time


class UntraceableModuleWarning(UserWarning):
    """A module was protected because torch-pruning could not trace or prune through it."""


@dataclass
class Prunable:
    """A model ready for torch-pruning, plus what must be passed along with it.

    ``forward_fn`` must be given to torch-pruning (pruners and ``build_dependency``) in place of
    the plain forward; ``rewritten`` names every split-free block in the model.
    """

    model: nn.Module
    example_inputs: torch.Tensor
    ignored_layers: list[nn.Module]
    protected: list[tuple[str, str]]
    rewritten: list[str]
    forward_fn: Callable = field(default_factory=TraceForward)


def _attention_classes() -> tuple[type, ...]:
    from ultralytics.nn.modules.block import AAttn, Attention

    return Attention, AAttn, nn.MultiheadAttention


def _attention_exits(model: nn.Module, example_inputs: torch.Tensor, names: Sequence[str]) -> dict[str, str | None]:
    """For each attention module, the child whose output is the module's output (its output projection).

    Everything else inside (query/key/value, positional encoding) has widths of heads × head_dim and
    stays; the exit's output channels can follow the residual stream the block sits in. ``None`` where
    no child writes the output directly.
    """
    if not names:
        return {}
    outputs: dict[str, object] = {}
    hooks = []
    for name in names:
        for child_name, child in [("", model.get_submodule(name)), *model.get_submodule(name).named_children()]:
            key = f"{name}.{child_name}" if child_name else name
            hooks.append(child.register_forward_hook(lambda _m, _a, out, key=key: outputs.setdefault(key, out)))
    try:
        with torch.no_grad():
            model(example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    exits = {}
    for name in names:
        out = outputs.get(name)
        exits[name] = next((child for child, value in outputs.items() if child.startswith(name + ".")
                            and child.count(".") == name.count(".") + 1 and value is out), None)
    return exits


def _width_tied_heads() -> dict[type, str]:
    """Heads whose every layer shares one width that the output format fixes, so none of it prunes."""
    from ultralytics.nn.modules.head import RTDETRDecoder

    return {RTDETRDecoder: "decoder: all its layers share the query width that the query embeddings, "
                           "attention heads and score/box heads fix"}


@dataclass
class _Protection:
    """What keeps its width by default, and the fallback for attention whose outer channels cannot prune."""

    reasons: dict[str, str]
    head_names: list[str]
    whole_attention: dict[str, str]  # attention modules protected inside only, with the reason to keep them whole

    def attention_kept_whole(self, error: str) -> dict[str, str]:
        reasons = {n: r for n, r in self.reasons.items() if not _inside(n, self.whole_attention)}
        reasons.update({n: f"{r} (pruning around it failed: {error})" for n, r in self.whole_attention.items()})
        return reasons


def _default_protection(model: nn.Module, example_inputs: torch.Tensor, protect_heads: bool) -> _Protection:
    """A head is traced like any other layer and only its prediction layers keep their width, unless
    ``protect_heads`` asks for whole heads or the head's width is tied throughout (RT-DETR's decoder).
    Attention keeps its inner widths (heads × head_dim); its output projection follows the block around it."""
    from ultralytics.nn.modules.head import Detect

    final = final_layer(model)
    tied = _width_tied_heads()
    reasons: dict[str, str] = {}
    head_names, attention = [], []
    for name, module in model.named_modules():
        if not name or _inside(name, reasons) or _inside(name, attention):
            continue
        why_tied = next((why for cls, why in tied.items() if isinstance(module, cls)), None)
        if why_tied or (protect_heads and (isinstance(module, Detect) or module is final)):
            reasons[name] = f"head ({type(module).__name__}): " + (why_tied or "protected whole (--protect-head)")
            head_names.append(name)
        elif isinstance(module, _attention_classes()):
            attention.append(name)
    whole = {}
    for name, exit_name in _attention_exits(model, example_inputs, attention).items():
        module = model.get_submodule(name)
        whole[name] = f"attention ({type(module).__name__}): its width is heads × head_dim"
        if exit_name is None or is_layer(module):
            reasons[name] = whole.pop(name)
            continue
        for child_name, child in module.named_children():
            if f"{name}.{child_name}" != exit_name and any(True for _ in child.parameters()):
                reasons[f"{name}.{child_name}"] = f"attention inside ({type(module).__name__}): heads × head_dim"
    for name in prediction_layers(model, example_inputs):
        if not _inside(name, reasons):
            reasons[name] = f"prediction layer ({type(model.get_submodule(name)).__name__}): " \
                            f"its channels are the output format"
    return _Protection(reasons, head_names, whole)


def _inside(name: str, chosen) -> bool:
    return any(name == c or name.startswith(c + ".") for c in chosen)


def _user_protection(model: nn.Module, ignore: Sequence[str]) -> dict[str, str]:
    names = dict(model.named_modules())
    reasons: dict[str, str] = {}
    for entry in ignore:
        by_class = [n for n, m in names.items() if n and type(m).__name__ == entry]
        matches = [entry] if entry and entry in names else by_class
        if not matches:
            sample = ", ".join(n for n in list(names)[1:4])
            raise UserError(f"--ignore {entry!r} matches no module name or class in the model — use a name such as "
                            f"{sample} or a class name such as Conv")
        for name in matches:
            reasons.setdefault(name, "ignored by the user")
    return reasons


def _expand(model: nn.Module, names: Sequence[str]) -> list[nn.Module]:
    """The named modules and all their submodules (torch-pruning checks every layer of a group)."""
    seen: dict[int, nn.Module] = {}
    for name in names:
        for sub in model.get_submodule(name).modules():
            seen.setdefault(id(sub), sub)
    return list(seen.values())


def _prune_and_run(model: nn.Module, example_inputs: torch.Tensor, ignored_names: Sequence[str],
                   forward_fn: TraceForward) -> None:
    """Build the graph, prune a share of every group, run forward; raise on any failure.

    Only the first output (the predictions) must keep its shape: detectors also return their
    feature maps, which shrink with pruning by design.
    """
    import torch_pruning as tp

    model.eval()
    with torch.no_grad():
        reference = tensors_only(model(example_inputs))[0].shape
    pruner = tp.pruner.MetaPruner(
        model, example_inputs, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=PROBE_RATIO,
        global_pruning=False, ignored_layers=_expand(model, ignored_names), forward_fn=forward_fn,
    )
    pruner.step()
    model.eval()
    with torch.no_grad():
        shape = tensors_only(model(example_inputs))[0].shape
    if shape != reference:
        raise RuntimeError(f"prediction shape changed after pruning: {tuple(reference)} -> {tuple(shape)}")


def _describe(error: BaseException) -> str:
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first_line}"[:160]


def _probe_child(model, example_inputs, ignored_names, forward_fn, connection) -> None:
    torch.set_num_threads(1)  # a forked OpenMP pool is unusable; one thread is enough for a 64 px probe
    warnings.simplefilter("ignore")
    try:
        _prune_and_run(model, example_inputs, ignored_names, forward_fn)
        connection.send("")
    except BaseException as error:  # report every failure mode to the parent  # noqa: BLE001
        connection.send(_describe(error))


def _probe_in_thread(model, example_inputs, ignored_names, forward_fn, timeout) -> str | None:
    """Fallback where fork is unavailable: a daemon thread on a copy (a hung thread is abandoned)."""
    result: list[str] = []

    def work():
        clone = copy.deepcopy(model)
        try:
            _prune_and_run(clone, example_inputs, ignored_names, forward_fn)
            result.append("")
        except Exception as error:  # noqa: BLE001
            result.append(_describe(error))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else None


def probe(model: nn.Module, example_inputs: torch.Tensor, ignored_names: Sequence[str], forward_fn: TraceForward,
          timeout: float) -> str:
    """'' if the model prunes and runs with ``ignored_names`` protected, else why not (timeouts included)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        outcome = _probe_in_thread(model, example_inputs, list(ignored_names), forward_fn, timeout)
    else:
        context = multiprocessing.get_context("fork")
        receiver, sender = context.Pipe(duplex=False)
        arguments = (model, example_inputs, list(ignored_names), forward_fn, sender)
        child = context.Process(target=_probe_child, args=arguments, daemon=True)
        child.start()
        sender.close()
        outcome = None
        if receiver.poll(timeout):
            try:
                outcome = receiver.recv()
            except EOFError:  # the child died without reporting
                child.join(5)
        if child.is_alive():
            child.kill()
        child.join()
        receiver.close()
        if outcome is None and child.exitcode not in (None, 0, -9):
            outcome = f"tracing process died (exit code {child.exitcode})"
    return f"did not finish within {timeout:.0f} s" if outcome is None else outcome


def _candidates(model: nn.Module, parent: str, protected: Sequence[str]) -> list[str]:
    """Children of ``parent`` that hold parameters and are not protected already."""
    root = model.get_submodule(parent) if parent else model
    if not parent and isinstance(getattr(model, "model", None), nn.Sequential):
        root, parent = model.model, "model"  # ultralytics: search the layer list directly
    names = []
    for child_name, child in root.named_children():
        name = f"{parent}.{child_name}" if parent else child_name
        if any(True for _ in child.parameters()) and not _inside(name, protected):
            names.append(name)
    return names


class _Search:
    """Find a small set of modules whose protection makes the probe pass (group testing with halving).

    Out of time, every untested trial counts as failing, so the search ends protecting more, never less.
    """

    def __init__(self, model, example_inputs, base: list[str], head_names: list[str], timeout: float):
        self.model, self.example_inputs, self.base, self.timeout = model, example_inputs, base, timeout
        self.head_names = head_names
        self.deadline = time.monotonic() + SEARCH_BUDGET * timeout

    def passes(self, extra: Sequence[str]) -> bool:
        if time.monotonic() > self.deadline:
            return False
        forward_fn = TraceForward(self.head_names, extra)
        return not probe(self.model, self.example_inputs, self.base + list(extra), forward_fn, self.timeout)

    def release(self, kept: list[str], chunk: list[str]) -> list[str]:
        """Unprotect as much of ``chunk`` as possible while the probe keeps passing."""
        trial = [n for n in kept if n not in chunk]
        if self.passes(trial):
            return trial
        if len(chunk) == 1:
            return kept
        half = len(chunk) // 2
        kept = self.release(kept, chunk[:half])
        return self.release(kept, chunk[half:])

    def narrow(self, culprits: list[str], depth: int) -> list[str]:
        """Replace each culprit by the fewest of its children that still make the probe pass."""
        if depth >= MAX_SEARCH_DEPTH:
            return culprits
        narrowed = []
        for culprit in culprits:
            others = [c for c in culprits if c != culprit] + narrowed
            children = _candidates(self.model, culprit, self.base)
            if not children or not self.passes(others + children):
                narrowed.append(culprit)
                continue
            needed = self.release(children, children)
            narrowed.extend(self.narrow(needed, depth + 1) if needed else [culprit])
        return narrowed


def _find_culprits(model, example_inputs, base: list[str], head_names: list[str], timeout: float) -> list[str]:
    search = _Search(model, example_inputs, base, head_names, timeout)
    candidates = _candidates(model, "", base)
    if not candidates or not search.passes(candidates):
        return candidates
    return search.narrow(search.release(candidates, candidates), 1)


def prepare_for_pruning(model: nn.Module, imgsz: int = 64, ignore: Sequence[str] = (),
                        trace_timeout: float = 60.0, protect_heads: bool = False) -> Prunable:
    """Rewrite ``model`` in place, protect what must not change, and protect anything that fails to trace.

    Parameters are set to require grad (torch-pruning traces through autograd).
    """
    from ultralytics.utils import LOGGER

    if not isinstance(model, nn.Module):
        raise UserError(f"expected a torch nn.Module, got {type(model).__name__} — pass model.model of a YOLO object")
    if imgsz < 32:
        raise UserError(f"tracing image size {imgsz} is too small — use 32 or more (64 is the default)")
    rewrite_for_pruning(model)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    device = next(model.parameters()).device
    example_inputs = torch.randn(1, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(0)).to(device)

    protection = _default_protection(model, example_inputs, protect_heads)
    reasons, head_names = protection.reasons, protection.head_names
    for name, reason in _user_protection(model, ignore).items():
        if not _inside(name, reasons):
            reasons[name] = reason
    started = time.monotonic()
    # A forked child cannot use CUDA, so probes run on a CPU copy; module names are the same.
    probe_model = model if device.type == "cpu" else copy.deepcopy(model).cpu()
    probe_inputs = example_inputs.cpu()
    error = probe(probe_model, probe_inputs, list(reasons), TraceForward(head_names), trace_timeout)
    if error and protection.whole_attention:
        whole = protection.attention_kept_whole(error)
        if not probe(probe_model, probe_inputs, list(whole), TraceForward(head_names), trace_timeout):
            reasons, error = whole, ""
    culprits = []
    if error:
        culprits = _find_culprits(probe_model, probe_inputs, list(reasons), head_names, trace_timeout)
        for name in culprits:
            reason = f"could not be traced/pruned ({error})"
            warnings.warn(f"protecting {name} ({type(model.get_submodule(name)).__name__}): {reason}",
                          UntraceableModuleWarning, stacklevel=2)
            reasons[name] = reason
    protected = [(name, reasons[name]) for name, _ in model.named_modules() if name in reasons]
    LOGGER.info(f"yoloslim: {len(protected)} protected module(s) after {time.monotonic() - started:.1f} s of tracing: "
                + ", ".join(f"{n} [{r.split(':')[0]}]" for n, r in protected))
    rewritten = [name for name, m in model.named_modules() if isinstance(m, SPLIT_FREE_BLOCKS)]
    return Prunable(model, example_inputs, _expand(model, [n for n, _ in protected]), protected, rewritten,
                    TraceForward(head_names, culprits))


def build_dependency_graph(p: Prunable):
    """A torch-pruning DependencyGraph of ``p.model`` whose ``get_all_groups()`` skips protected layers.

    The whole model is traced (so protected layers' inputs still follow their producers); the
    protected modules are then registered as ignored for group enumeration.
    """
    import torch_pruning as tp

    graph = tp.DependencyGraph().build_dependency(p.model, p.example_inputs, forward_fn=p.forward_fn, verbose=False)
    graph.IGNORED_LAYERS_IN_TRACING.extend(p.ignored_layers)
    return graph


RESIDUAL_OPS = ("Add", "Sub")  # autograd node names of the element-wise ops that tie channels across a shortcut


def tied_by_residual(group) -> bool:
    """Whether a torch-pruning group's channels meet in a residual add (or subtraction).

    Such channels only disappear when every branch of the sum agrees, so sparse training leaves them
    alone by default and classic slimming treats them by its ``--shortcut`` strategy. A group that merely
    holds several BNs in a chain (a 1x1 conv followed by a depthwise conv, as in YOLOv10's SCDown) is
    not tied: removing a channel there removes it from the whole chain.
    """
    import torch_pruning as tp

    return any(isinstance(dep.target.module, tp.ops._ElementWiseOp)
               and str(dep.target.module._grad_fn).startswith(RESIDUAL_OPS) for dep, _ in group)
