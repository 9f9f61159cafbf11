"""tropic.torch.nn: a Dilation2d layer's training step on CPU tensors against kornia and the unfold formula.

Forward and backward of a grey-level dilation layer, batch 32, 16 channels, 64 x 64 images, 7 x 7
structuring elements, float32, gradients to the input and to the structuring element:

* ``tropic``: ``tropic.torch.nn.Dilation2d(16, 7)`` (one depthwise max-plus convolution; autograd
  saves the int8 winners);
* ``kornia``: ``kornia.morphology.dilation(x, ones(7, 7), structuring_element=se)`` with a learnable
  ``se`` (kornia has one element for all channels, tropic one per channel: the same work per output
  value), its default engine; skipped when kornia is not installed;
* ``torch_unfold``: the formula users write, ``-inf`` padding, ``Tensor.unfold`` twice, add the
  reflected per-channel elements, ``amax`` over the window: a (32, 16, 64, 64, 7, 7) intermediate.

``python -m benchmarks.bench_torch_nn [--repeat N]`` prints the medians, the ratios to tropic and the
extra peak resident memory of a step of each (a fresh process per implementation, its second step,
after the inputs are built).
"""

from __future__ import annotations

import argparse

from .common import (
    LayerStepBenchmark,
    compare_layer_steps,
    optional_import,
    preload_torch,
    random_array,
    require_torch,
    size,
)

preload_torch()

BATCH, CHANNELS, HEIGHT, WIDTH, KERNEL = size((32, 16, 64, 64, 7), (2, 3, 9, 8, 3))
IMPLEMENTATIONS = ("tropic", "kornia", "torch_unfold")


def torch_unfold_dilation(x, structure):
    """Per-channel grey dilation (SciPy conventions, ``-inf`` outside) by unfold + add + amax."""
    torch = require_torch()
    k = structure.shape[-1]
    before, after = k // 2, k - 1 - k // 2
    xpad = torch.nn.functional.pad(x, (after, before, after, before), value=-float("inf"))
    windows = xpad.unfold(2, k, 1).unfold(3, k, 1)  # (B, C, H, W, k, k)
    return (windows + torch.flip(structure, (-2, -1))[None, :, None, None]).amax(dim=(-2, -1))


def layer_step(implementation: str):
    """A zero-argument callable running one forward + backward of ``implementation``; it returns
    ``(output, gradient of x, gradient of the structuring element)``."""
    torch = require_torch()
    x = torch.from_numpy(random_array(BATCH, CHANNELS, HEIGHT, WIDTH, seed=1))
    grad = torch.from_numpy(random_array(BATCH, CHANNELS, HEIGHT, WIDTH, seed=3))
    structure = torch.from_numpy(0.1 * random_array(CHANNELS, KERNEL, KERNEL, seed=2))
    if implementation == "tropic":
        from tropic.torch import nn as tnn

        layer = tnn.Dilation2d(CHANNELS, KERNEL)
        with torch.no_grad():
            layer.structure.copy_(structure)
        params, forward = layer.structure, layer
    elif implementation == "kornia":
        kornia = optional_import("kornia")
        if kornia is None:
            raise NotImplementedError("kornia is not installed")
        params = structure[0].clone().requires_grad_()
        footprint = torch.ones(KERNEL, KERNEL)

        def forward(x):
            return kornia.morphology.dilation(x, footprint, structuring_element=params)

    elif implementation == "torch_unfold":
        params = structure.clone().requires_grad_()

        def forward(x):
            return torch_unfold_dilation(x, params)

    else:
        raise NotImplementedError(implementation)

    def run():
        params.grad = None
        xg = x.clone().requires_grad_()
        y = forward(xg)
        y.backward(grad)
        return y.detach(), xg.grad, params.grad

    return run


class TorchDilation2dLayerTraining(LayerStepBenchmark):
    """Forward + backward of a Dilation2d layer (32 x 16 x 64 x 64, 7 x 7, float32)."""

    params = (IMPLEMENTATIONS,)

    def make_step(self, implementation):
        return layer_step(implementation)


def main(argv=None) -> None:
    import tropic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    torch = require_torch()
    kornia = optional_import("kornia")
    print(
        f"torch {torch.__version__}, kornia {getattr(kornia, '__version__', 'not installed')}, "
        f"{torch.get_num_threads()} torch threads, {tropic.get_num_threads()} tropic threads"
    )
    print(
        f"Dilation2d forward+backward, batch {BATCH}, {CHANNELS} channels, {HEIGHT}x{WIDTH}, "
        f"{KERNEL}x{KERNEL}, float32"
    )
    available = [i for i in IMPLEMENTATIONS if i != "kornia" or kornia is not None]
    results = compare_layer_steps("benchmarks.bench_torch_nn", available, layer_step, args.repeat)
    y, gx, gs = results["tropic"][1]
    y_ref, gx_ref, gs_ref = results["torch_unfold"][1]
    difference = max(float((a - b).abs().max()) for a, b in ((gx, gx_ref), (gs, gs_ref)))
    print(
        f"tropic vs unfold: outputs equal {bool(torch.equal(y, y_ref))}, largest gradient difference "
        f"{difference:.2g} (accumulation order)"
    )


if __name__ == "__main__":
    main()
