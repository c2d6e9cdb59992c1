"""Activations and gradients of a predictor's target layer, for CAM-type methods.

One forward pass with a forward hook on :meth:`Predictor.target_layer`, one
``torch.autograd.grad`` of the summed nodule logits: samples in a batch do not interact (the
predictor is in eval mode), so the gradient of the sum is each sample's own gradient. A layer
that fires several times in one forward (a 2-D slice model that runs its slices in chunks) is
handled by concatenating the calls along the batch axis.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from wsbench.errors import WsbenchError


class LayerCapture(NamedTuple):
    """``activations``/``gradients``: ``(B, C, d, h, w)`` (volume layout, see
    :meth:`Predictor.features_to_volume`); ``logits``: ``(B,)`` detached."""

    activations: torch.Tensor
    gradients: torch.Tensor
    logits: torch.Tensor


def capture_layer(predictor, x: torch.Tensor, need_gradients: bool = True) -> LayerCapture:
    """Run ``predictor`` on ``x`` ``(B, 1, D, H, W)`` and return the target layer's activations
    and (if ``need_gradients``) the gradients of the nodule logit with respect to them.

    ``x`` need not require grad; it is made to, so that activations are in the graph even when
    the predictor's parameters are frozen.
    """
    layer = predictor.target_layer()
    outputs: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        out = output[0] if isinstance(output, (tuple, list)) else output
        outputs.append(out)

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            xi = x.detach().requires_grad_(True)
            logits = predictor.logits(xi)
            if not outputs:
                raise WsbenchError(
                    f"predictor '{predictor.name}': target_layer() was not called during logits(); "
                    "fix the predictor's target_layer to return a module used in the forward pass")
            if need_gradients:
                grads = torch.autograd.grad(logits.sum(), outputs, allow_unused=True)
                grads = [torch.zeros_like(o) if g is None else g for o, g in zip(outputs, grads)]
            else:
                grads = [torch.zeros_like(o) for o in outputs]
    finally:
        handle.remove()
    b = x.shape[0]
    acts = torch.cat([o.detach() for o in outputs], 0)
    grad = torch.cat([g.detach() for g in grads], 0)
    return LayerCapture(predictor.features_to_volume(acts, b).float(),
                        predictor.features_to_volume(grad, b).float(), logits.detach())
