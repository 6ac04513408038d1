"""Looking inside a Transformer without changing its code: the residual blocks' states and lesions.

Everything here works through the residual interface that every variant shares (``nmt.residual``): a block is
called as ``block(state, sublayer)`` and knows its ``place``; the model lists its blocks with
``Transformer.residual_pairs()``. No variant is named, so a block registered tomorrow (or a
``package.module:Class`` one) is diagnosed like the built-in ones.

- ``streams(state)``: the (B, T, d) tensors a state is made of: the hidden tensor itself, each member of a tuple
  (ResiDual, B2T), or each slice of a tensor with a stream axis (Hyper-Connections: (B, T, n, d)).
- ``stream_names(block, n)``: what the block's class calls its streams (``stream_names``), else "stream j".
- ``lesioned(blocks)``: a context manager under which each block's sublayer returns zeros of its input's shape,
  so that the block computes what it computes when its residual branch F(x) is 0 (its own normalisations, gates
  and other streams unchanged).
- ``recording(model)``: a context manager that records, at every forward pass, each block's output state and each
  stack's input (the embedding output), layer outputs and output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


def streams(state, d_model: int) -> list[Tensor]:
    """The (…, T, d) tensors of a residual state: a tensor, the members of a tuple, or the slices of a stream axis
    (a tensor with one more dimension than its input, streams on the axis before the last)."""
    if isinstance(state, (tuple, list)):
        return [s for member in state for s in streams(member, d_model)]
    if state.dim() == 4 and state.size(-1) == d_model:
        return list(state.unbind(dim=-2))
    return [state]


def stream_names(block: nn.Module, n: int) -> list[str]:
    """Names of a block's n state streams: its class's ``stream_names`` if it declares as many, else stream 0…n−1
    (a single stream is "hidden")."""
    declared = tuple(getattr(type(block), "stream_names", ()) or ())
    if len(declared) == n:
        return list(declared)
    return ["hidden"] if n == 1 else [f"stream {j}" for j in range(n)]


def place_label(block: nn.Module) -> str:
    """"L3 self_attn" (1-based layer) for a block that knows its place."""
    place = getattr(block, "place", None)
    return f"L{place.layer + 1} {place.sublayer}" if place is not None else type(block).__name__


def _zero_sublayer(h: Tensor) -> Tensor:
    return torch.zeros_like(h)


@contextlib.contextmanager
def lesioned(blocks: list[nn.Module]) -> Iterator[None]:
    """Within the block, every block in ``blocks`` gets a sublayer that returns zeros of its input's shape: its
    residual branch F(x) is deleted, the rest of the block (normalisations, gates, other streams) unchanged."""

    def hook(module, args):
        state, _sublayer, *rest = args
        return (state, _zero_sublayer, *rest)

    handles = [block.register_forward_pre_hook(hook) for block in blocks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class Recording:
    """What ``recording`` saw in the last forward pass: per side ("encoder", "decoder"), the stack's input
    (``inputs``), every block's output state in order (``blocks``: (block, state)), every layer's output as the
    stack would end there (``layers``: the stack ends' ``end`` applied to the layer's output state), and the
    stack's output (``outputs``)."""

    inputs: dict[str, Tensor] = field(default_factory=dict)
    blocks: dict[str, list[tuple[nn.Module, object]]] = field(default_factory=dict)
    layers: dict[str, list[Tensor]] = field(default_factory=dict)
    outputs: dict[str, Tensor] = field(default_factory=dict)

    def clear(self) -> None:
        for part in (self.inputs, self.blocks, self.layers, self.outputs):
            part.clear()


@contextlib.contextmanager
def recording(model: nn.Module) -> Iterator[Recording]:
    """Record the residual states of ``model``'s forward passes (see ``Recording``); the last pass's only."""
    seen = Recording()
    handles = []

    def on_stack_input(side):
        def hook(module, args):
            seen.inputs[side] = args[0].detach()
            seen.blocks[side], seen.layers[side] = [], []
        return hook

    def on_stack_output(side):
        def hook(module, args, output):
            seen.outputs[side] = output.detach()
        return hook

    def on_block(side):
        def hook(module, args, output):
            seen.blocks[side].append((module, _detached(output)))
        return hook

    def on_layer(side, ends):
        def hook(module, args, output):
            with torch.no_grad():
                seen.layers[side].append(ends.end(output).detach())
        return hook

    for side in ("encoder", "decoder"):
        stack = getattr(model, side)
        handles.append(stack.register_forward_pre_hook(on_stack_input(side)))
        handles.append(stack.register_forward_hook(on_stack_output(side)))
        for layer in stack.layers:
            handles.append(layer.register_forward_hook(on_layer(side, stack.ends)))
            for block, _ in layer.residual_pairs():
                handles.append(block.register_forward_hook(on_block(side)))
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _detached(state):
    if isinstance(state, (tuple, list)):
        return type(state)(_detached(s) for s in state)
    return state.detach()
