"""The forward torch-pruning traces: protected modules are replaced by stand-ins.

torch-pruning follows autograd from the outputs back to the input. Some modules break that
walk — RT-DETR's decoder defeats its channel inference, YOLOv10/26 heads detach their inputs,
and a module may make it fail or never finish. While tracing, such a module is replaced by a
stand-in that keeps exactly what pruning needs from it:

* its *entry convs* (convs reading the module's inputs) applied to those inputs and returned
  as extra outputs, so their input channels still follow whoever produces them;
* for a mid-network module, its real output computed without autograd, plus zero times the
  output of its last conv — which ties the output channels to a protected conv, so nothing
  downstream (a residual add, say) can prune them — plus zero times any input of the same
  shape, since a residual inside the module would tie that input to the output.

A head needs only the first part (nothing reads its output). Nothing inside a stand-in is
traced, so nothing inside it can break the trace. The stand-ins exist only during the call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn


def tensors_only(outputs) -> list[torch.Tensor]:
    """Flatten a model's outputs to tensors; RT-DETR returns ``None`` entries that break tracing."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in tensors_only(item)]
    return []


@dataclass
class _Observation:
    """What one gradient-free forward pass saw at a module."""

    inputs: list[torch.Tensor] = field(default_factory=list)
    output: object = None
    conv_calls: list[tuple[nn.Conv2d, torch.Tensor]] = field(default_factory=list)

    def entry_convs(self) -> list[tuple[nn.Conv2d, int]]:
        """Convs whose input is one of the module's inputs (or a view/detached copy of it)."""
        keys = [(t.data_ptr(), t.shape) for t in self.inputs]
        entries, seen = [], set()
        for conv, tensor in self.conv_calls:
            key = (tensor.data_ptr(), tensor.shape)
            if key in keys and id(conv) not in seen:
                seen.add(id(conv))
                entries.append((conv, keys.index(key)))
        return entries

    def exit_conv(self) -> tuple[nn.Conv2d, torch.Tensor] | None:
        """The last conv run whose output channels equal the module's (4-D tensor output only)."""
        out = self.output
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            return None
        for conv, tensor in reversed(self.conv_calls):
            if conv.out_channels == out.shape[1]:
                return conv, tensor
        return None


def _observe(model: nn.Module, modules: Sequence[nn.Module], example_inputs: torch.Tensor) -> list[_Observation]:
    observations = [_Observation() for _ in modules]
    hooks = []
    for module, seen in zip(modules, observations):
        def on_input(_module, args, seen=seen):
            if not seen.inputs:
                seen.inputs.extend(tensors_only(list(args)))

        def on_output(_module, _args, output, seen=seen):
            seen.output = output

        def on_conv(conv, args, seen=seen):
            seen.conv_calls.append((conv, args[0]))

        hooks += [module.register_forward_pre_hook(on_input), module.register_forward_hook(on_output)]
        hooks += [m.register_forward_pre_hook(on_conv) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            model(example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    return observations


def is_layer(module: nn.Module) -> bool:
    """A layer torch-pruning hooks itself (conv, BN, attention...): a stand-in would confuse its bookkeeping."""
    from torch_pruning import ops

    return ops.module2type(module) != ops.OPTYPE.ELEMENTWISE


class _StandIn:
    """Replaces one module's forward while tracing (see the module docstring)."""

    def __init__(self, seen: _Observation, keep_output: bool, extras: list[torch.Tensor]):
        self.entries = seen.entry_convs()
        self.exit = seen.exit_conv() if keep_output else None
        self.output = seen.output if keep_output else None
        self.extras = extras

    def __call__(self, *args, **kwargs):
        inputs = tensors_only(list(args))
        entry_outputs = [conv(inputs[index]) for conv, index in self.entries]
        if self.output is None:
            return entry_outputs
        self.extras.extend(entry_outputs)
        if self.exit is None:
            return self.output
        conv, tensor = self.exit
        output = self.output + 0.0 * conv(tensor).mean(dim=(2, 3), keepdim=True)
        for tensor in inputs:
            if tensor.shape == output.shape:
                output = output + 0.0 * tensor
        return output


class TraceForward:
    """``forward_fn`` for torch-pruning pruners and ``DependencyGraph.build_dependency``.

    ``head_names``: modules whose output nothing in the model reads (detection heads);
    ``opaque_names``: mid-network modules that must not be traced inside.
    Picklable: it holds module names, not modules.
    """

    def __init__(self, head_names: Sequence[str] = (), opaque_names: Sequence[str] = ()):
        self.head_names = list(head_names)
        self.opaque_names = list(opaque_names)

    def __call__(self, model: nn.Module, example_inputs: torch.Tensor) -> list[torch.Tensor]:
        names = self.head_names + self.opaque_names
        modules = [model.get_submodule(name) for name in names]
        observations = _observe(model, modules, example_inputs)
        extras: list[torch.Tensor] = []
        saved = [(module, module.__dict__.get("forward")) for module in modules]
        for name, module, seen in zip(names, modules, observations):
            is_head = name in self.head_names
            if is_layer(module) or (is_head and not seen.entry_convs()):
                continue  # protected by ignoring alone; trace it as it is
            if not is_head and not isinstance(seen.output, torch.Tensor):
                continue
            module.forward = _StandIn(seen, keep_output=not is_head, extras=extras)
        try:
            return tensors_only(model(example_inputs)) + extras
        finally:
            for module, forward in saved:
                module.__dict__.pop("forward", None)
                if forward is not None:
                    module.forward = forward
