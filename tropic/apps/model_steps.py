"""One training step of each paper's flagship model, three ways, for ``tropic bench --models`` and asv.

A step is forward, loss, backward and an Adam update (lr 1e-3) on a fixed batch, float32, CPU torch
tensors. Each model is built three ways with the same shapes:

``tropic``
    the model from :mod:`tropic.torch.nn` (tropic's operators as torch custom ops);
``paper``
    the same network, with the same initial parameters, written the way the papers' own code writes
    it in plain torch: a dense tropical layer broadcasts ``x.unsqueeze(1) + W`` to a
    (batch, out, in) tensor and reduces it with ``max`` / ``min`` over the last axis; a tropical
    convolution pads with the tropical zero, unfolds and reduces a (batch, out, C*k*k, pixels)
    tensor; the sparse layer stores its masked weights as ``-1e9`` (the reference's value);
``linear``
    the same network with each tropical layer replaced by the linear layer of the same shape
    (``nn.Linear`` / ``nn.Conv2d``) followed by ReLU (no ReLU after the layer that gives the logits;
    a sigmoid after the last layer of the BiMoNN net, whose loss is a binary cross-entropy).

The models (batch 64 unless said otherwise; ``quick=True`` shrinks every size for smoke runs):

=================  =================================================================================
``sparse-morph``   sparse-hybrid head on 512-d features: Linear(512, 512, no bias) -> BatchNorm1d ->
                   MaxPlus(512, 512, Sparse-Morph init: 1024 finite weights) -> Linear(512, 10)
``mpm``            DMNN MPM MLP: MPM(784, 256) -> Diag -> 4 x [MPM(256, 256) -> Diag] -> MPM(256, 10)
``rmpm``           DMNN residual MPM MLP: MPM(784, 256) -> Diag -> 4 x [x + a * MPM(x)] -> MPM(256, 10)
``dmnn-conv``      a LeNet-5-shaped DMNN conv net on 28 x 28 images: MaxPlusConv2d(1, 6, 5, pad 2) ->
                   depthwise 3x3 linear activation -> MaxPool2d(2) -> MaxPlusConv2d(6, 16, 5) ->
                   depthwise 3x3 -> MaxPool2d(2) -> MPM(400, 120) -> Diag -> MPM(120, 84) -> Diag ->
                   MPM(84, 10)
``bimonn``         BiMoNN net on diskorect 50 x 50 images, batch 32: BiSEL(1, 3, 7) -> BiSEL(3, 1, 7),
                   binary cross-entropy against the images dilated by a 3 x 3 square
=================  =================================================================================

(``Diag`` is the DMNN paper's diagonal "linear" activation ``a * x``.) The BiMoNN net has no tropical
operator: a BiSE is a non-negative convolution and a smooth threshold, so its ``paper`` row is the
same convolutions and measures only what tropic's layers add around them.

:func:`training_step` returns the step as a zero-argument callable; :func:`compare_models` times
every model three ways in this process, measures the extra peak resident memory of a step in a
fresh process each, and checks that ``tropic`` and ``paper`` compute the same loss.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["IMPLEMENTATIONS", "MODELS", "ModelRow", "compare_models", "format_models", "training_step"]

MODELS = ("sparse-morph", "mpm", "rmpm", "dmnn-conv", "bimonn")
IMPLEMENTATIONS = ("tropic", "paper", "linear")
PAPER_ZERO = -1e9  # the sparse-hybrid reference's "very negative" masked weight


@dataclass(frozen=True)
class _Sizes:
    batch: int
    features: int  # sparse-morph input and hidden width
    pixels: int  # MLP input (a flattened 28 x 28 image)
    hidden: int  # MLP width
    blocks: int
    side: int  # dmnn-conv image side
    bimonn_batch: int
    bimonn_side: int


FULL = _Sizes(
    batch=64, features=512, pixels=784, hidden=256, blocks=4, side=28, bimonn_batch=32, bimonn_side=50
)
QUICK = _Sizes(batch=4, features=16, pixels=36, hidden=8, blocks=1, side=12, bimonn_batch=2, bimonn_side=12)


# --- the papers' formulation, in plain torch ---------------------------------------------------------


def _paper_modules():
    """The plain-torch layers (defined on first use, so that importing this module needs no torch)."""
    import torch
    from torch import nn

    class BroadcastMaxPlus(nn.Module):
        """``max(b, max_i (x_i + W_ji))`` by broadcasting a (batch, out, in) tensor."""

        def __init__(self, weight, bias) -> None:
            super().__init__()
            self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

        def forward(self, x):
            return torch.maximum((x.unsqueeze(1) + self.weight).max(dim=-1).values, self.bias)

    class BroadcastMPM(nn.Module):
        """``max(b, max_i (x_i + W_ji)) + min(b', min_i (x_i + W_ji))`` from one broadcast tensor."""

        def __init__(self, weight, bias_max, bias_min) -> None:
            super().__init__()
            self.weight = nn.Parameter(weight)
            self.bias_max, self.bias_min = nn.Parameter(bias_max), nn.Parameter(bias_min)

        def forward(self, x):
            z = x.unsqueeze(1) + self.weight
            return torch.maximum(z.max(dim=-1).values, self.bias_max) + torch.minimum(
                z.min(dim=-1).values, self.bias_min
            )

    class Diagonal(nn.Module):
        def __init__(self, weight) -> None:
            super().__init__()
            self.weight = nn.Parameter(weight)

        def forward(self, x):
            return x * self.weight

    class Residual(nn.Module):
        """``x + a * f(x)``."""

        def __init__(self, inner, scale) -> None:
            super().__init__()
            self.inner, self.scale = inner, scale

        def forward(self, x):
            return x + self.scale(self.inner(x))

    class UnfoldMaxPlusConv2d(nn.Module):
        """Max-plus convolution: ``-inf`` padding, unfold, add the weights, max over the window."""

        def __init__(self, weight, stride, padding) -> None:
            super().__init__()
            self.weight, self.stride, self.padding = nn.Parameter(weight), stride, padding

        def forward(self, x):
            out_channels, _, kh, kw = self.weight.shape
            ph, pw = self.padding
            x = nn.functional.pad(x, (pw, pw, ph, ph), value=-float("inf"))
            height = (x.shape[2] - kh) // self.stride[0] + 1
            width = (x.shape[3] - kw) // self.stride[1] + 1
            columns = nn.functional.unfold(x, (kh, kw), stride=self.stride)  # (B, C*kh*kw, L)
            z = columns.unsqueeze(1) + self.weight.reshape(1, out_channels, -1, 1)
            return z.max(dim=2).values.reshape(x.shape[0], out_channels, height, width)

    class SmoothBiSE(nn.Module):
        """``xi(p (pad_edge(x) * softplus(theta) - softplus(beta)))``, ``xi(u) = tanh(u)/2 + 1/2``."""

        def __init__(self, theta, beta, scale, groups) -> None:
            super().__init__()
            self.theta, self.beta, self.scale = nn.Parameter(theta), nn.Parameter(beta), nn.Parameter(scale)
            self.groups = groups

        def forward(self, x):
            kh, kw = self.theta.shape[-2:]
            if kh > 1 or kw > 1:
                x = nn.functional.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
            z = nn.functional.conv2d(x, nn.functional.softplus(self.theta), groups=self.groups)
            b = nn.functional.softplus(self.beta).reshape(1, -1, 1, 1)
            return torch.tanh((z - b) * self.scale.reshape(1, -1, 1, 1)) * 0.5 + 0.5

    class SmoothBiSEL(nn.Module):
        """One BiSE per (input, output) channel pair, then a LUI (a 1x1 BiSE) per output channel."""

        def __init__(self, bises, luis, in_channels, out_channels) -> None:
            super().__init__()
            self.bises, self.luis = bises, luis
            self.in_channels, self.out_channels = in_channels, out_channels

        def forward(self, x):
            z = self.bises(x)
            b, _, h, w = z.shape
            z = z.reshape(b, self.in_channels, self.out_channels, h, w).transpose(1, 2)
            return self.luis(z.reshape(b, -1, h, w))

    return {
        "BroadcastMaxPlus": BroadcastMaxPlus,
        "BroadcastMPM": BroadcastMPM,
        "Diagonal": Diagonal,
        "Residual": Residual,
        "UnfoldMaxPlusConv2d": UnfoldMaxPlusConv2d,
        "SmoothBiSE": SmoothBiSE,
        "SmoothBiSEL": SmoothBiSEL,
    }


def _copy(p):
    return p.detach().clone()


def paper_model(model):
    """``model`` (a :mod:`tropic.torch.nn` network) rewritten in the papers' plain-torch formulation,
    with copies of its parameters (masked ``-inf`` weights become ``-1e9``, as in the references)."""
    import torch
    from torch import nn

    from tropic.torch import nn as tnn

    P = _paper_modules()

    def convert(m):
        if isinstance(m, nn.Sequential):
            return nn.Sequential(*(convert(child) for child in m))
        if isinstance(m, tnn.MaxPlus):
            w = torch.where(torch.isneginf(m.weight), PAPER_ZERO, m.weight).detach().clone()
            return P["BroadcastMaxPlus"](w, _copy(m.bias))
        if isinstance(m, tnn.MPM):
            return P["BroadcastMPM"](_copy(m.weight), _copy(m.bias_max), _copy(m.bias_min))
        if isinstance(m, tnn.DiagonalActivation):
            return P["Diagonal"](_copy(m.weight))
        if isinstance(m, tnn.MPMResidual):
            return P["Residual"](convert(m.mpm), convert(m.scale))
        if isinstance(m, tnn.MaxPlusConv2d):
            if m.groups != 1 or m.bias is not None:
                raise NotImplementedError("the unfold formulation here has groups=1 and no bias")
            return P["UnfoldMaxPlusConv2d"](_copy(m.weight), m.stride, m.padding)
        if isinstance(m, tnn.BiSE):
            if m.bias_clamp:
                raise NotImplementedError("the plain-torch BiSE here has no bias clamp")
            return P["SmoothBiSE"](_copy(m.theta), _copy(m.beta), _copy(m.scale), m.groups)
        if isinstance(m, tnn.BiSEL):
            return P["SmoothBiSEL"](convert(m.bises), convert(m.luis), m.in_channels, m.out_channels)
        if isinstance(m, tnn.TorchLayer):
            raise NotImplementedError(f"no plain-torch formulation of {type(m).__name__} here")
        return copy.deepcopy(m)

    return convert(model)


def linear_model(model, final: str | None = None):
    """``model`` with each tropical layer replaced by ``nn.Linear`` / ``nn.Conv2d`` of the same shape
    and a ReLU; the last layer gets ``final`` instead (None: nothing, ``"sigmoid"``). Fresh default
    initialisation (torch's own) for the replaced layers; the other layers are copied."""
    from torch import nn

    from tropic.torch import nn as tnn

    P = _paper_modules()

    def activated(layer, last):
        if not last:
            return nn.Sequential(layer, nn.ReLU())
        return layer if final is None else nn.Sequential(layer, nn.Sigmoid())

    def convert(m, last):
        if isinstance(m, nn.Sequential):
            children = list(m)
            return nn.Sequential(
                *(convert(c, last and i == len(children) - 1) for i, c in enumerate(children))
            )
        if isinstance(m, (tnn.MaxPlus, tnn.MPM)):
            out_features, in_features = m.weight.shape
            return activated(nn.Linear(in_features, out_features), last)
        if isinstance(m, tnn.MPMResidual):
            h = m.mpm.weight.shape[0]
            return P["Residual"](activated(nn.Linear(h, h), False), P["Diagonal"](_copy(m.scale.weight)))
        if isinstance(m, tnn.DiagonalActivation):
            return P["Diagonal"](_copy(m.weight))
        if isinstance(m, tnn.MaxPlusConv2d):
            out_channels, c_g, kh, kw = m.weight.shape
            conv = nn.Conv2d(
                c_g * m.groups, out_channels, (kh, kw), m.stride, m.padding, groups=m.groups, bias=False
            )
            return activated(conv, last)
        if isinstance(m, tnn.BiSEL):
            k = m.bises.kernel_size
            conv = nn.Conv2d(
                m.in_channels, m.out_channels, k, padding=(k[0] // 2, k[1] // 2), padding_mode="replicate"
            )
            return activated(conv, last)
        if isinstance(m, tnn.TorchLayer):
            raise NotImplementedError(f"no linear counterpart of {type(m).__name__} here")
        return copy.deepcopy(m)

    return convert(model, True)


# --- the models ------------------------------------------------------------------------------------


def _tropic_model(name: str, s: _Sizes, seed: int):
    """(tropic.torch.nn model, input batch, target, loss function, final activation of ``linear``)."""
    import torch
    from torch import nn

    from tropic.nn._synthetic import diskorect
    from tropic.torch import nn as tnn

    g = torch.Generator().manual_seed(seed)
    classes = 10
    if name == "sparse-morph":
        model = tnn.hybrid_head(s.features, s.features, classes, init="sparse", seed=seed)
        x = torch.randn(s.batch, s.features, generator=g)
    elif name in ("mpm", "rmpm"):
        build = tnn.mpm if name == "mpm" else tnn.rmpm
        model = build(s.pixels, s.hidden, classes, blocks=s.blocks, seed=seed)
        x = torch.rand(s.batch, s.pixels, generator=g)
    elif name == "dmnn-conv":
        rng = np.random.default_rng(seed)
        flat = 16 * ((s.side // 2 - 4) // 2) ** 2

        def depthwise(channels):
            conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
            with torch.no_grad():  # the DMNN paper starts the linear activation at the identity
                conv.weight.zero_()
                conv.weight[:, 0, 1, 1] = 1
            return conv

        model = nn.Sequential(
            tnn.MaxPlusConv2d(1, 6, 5, padding=2, rng=rng),
            depthwise(6),
            nn.MaxPool2d(2),
            tnn.MaxPlusConv2d(6, 16, 5, rng=rng),
            depthwise(16),
            nn.MaxPool2d(2),
            nn.Flatten(),
            tnn.MPM(flat, 120, rng=rng),
            tnn.DiagonalActivation(120, rng=rng),
            tnn.MPM(120, 84, rng=rng),
            tnn.DiagonalActivation(84, rng=rng),
            tnn.MPM(84, classes, rng=rng),
        )
        x = torch.rand(s.batch, 1, s.side, s.side, generator=g)
    elif name == "bimonn":
        rng = np.random.default_rng(seed)
        model = nn.Sequential(tnn.BiSEL(1, 3, 7, rng=rng), tnn.BiSEL(3, 1, 7, rng=rng))
        x = torch.from_numpy(diskorect(s.bimonn_batch, s.bimonn_side, rng=rng))  # (B, 1, H, W)
        target = nn.functional.max_pool2d(x, 3, stride=1, padding=1)  # dilation by a 3 x 3 square
        return model, x, target, nn.functional.binary_cross_entropy, "sigmoid"
    else:
        raise ValueError(f"model must be one of {MODELS}, got {name!r}")
    target = torch.randint(0, classes, (x.shape[0],), generator=g)
    return model, x, target, nn.functional.cross_entropy, None


def build(name: str, implementation: str, *, quick: bool = False, seed: int = 0):
    """``(model, x, target, loss)`` of ``name`` written as ``implementation`` (see the module docstring)."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")
    import torch

    torch.manual_seed(seed)  # the linear layers' default initialisation
    model, x, target, loss, final = _tropic_model(name, QUICK if quick else FULL, seed)
    if implementation == "paper":
        model = paper_model(model)
    elif implementation == "linear":
        model = linear_model(model, final)
    return model.train(), x, target, loss


def training_step(
    name: str, implementation: str, *, quick: bool = False, seed: int = 0
) -> Callable[[], float]:
    """A zero-argument callable running one training step (forward, loss, backward, Adam update)
    of model ``name`` written as ``implementation``; it returns the step's loss (before the update)."""
    import torch

    model, x, target, loss_function = build(name, implementation, quick=quick, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> float:
        optimizer.zero_grad()
        loss = loss_function(model(x), target)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return step


def layer_step(name: str, implementation: str, quick: bool = False):
    """:func:`training_step` under the name that the fresh-process memory probe calls."""
    return training_step(name, implementation, quick=quick)


# --- the report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    model: str
    implementation: str
    seconds: float
    peak_mib: float | None
    loss: float


def compare_models(
    models: Sequence[str] = MODELS,
    *,
    quick: bool = False,
    repeat: int = 5,
    memory: bool = True,
    progress: Any = None,
) -> list[ModelRow]:
    """Time a training step of every model three ways (median of ``repeat`` after one warm-up, this
    process) and, with ``memory``, its extra peak resident memory in a fresh process each."""
    from tropic.apps.bench import measure, peak_in_fresh_process

    rows = []
    for name in models:
        for implementation in IMPLEMENTATIONS:
            seconds, loss = measure(training_step(name, implementation, quick=quick), repeat)
            peak = peak_in_fresh_process(__name__, name, implementation, quick) if memory else None
            rows.append(ModelRow(name, implementation, seconds, peak, loss))
            if progress is not None:
                progress.update(1)
    return rows


def format_models(rows: Sequence[ModelRow]) -> list[str]:
    """The table of :func:`compare_models`: per model, each implementation's median, its time and
    peak memory relative to tropic's, and whether the paper formulation's first loss equals tropic's."""
    from tropic.apps.bench import table_lines

    header = ("model", "implementation", "ms", "peak MiB", "time / tropic", "peak / tropic", "first loss")
    by_model: dict[str, dict[str, ModelRow]] = {}
    for row in rows:
        by_model.setdefault(row.model, {})[row.implementation] = row
    cells = []
    for model, implementations in by_model.items():
        reference = implementations.get("tropic")
        for row in implementations.values():
            peak_ratio = "-"
            if reference is not None and row.peak_mib is not None and reference.peak_mib:
                peak_ratio = f"{row.peak_mib / reference.peak_mib:.1f}x"
            time_ratio = "-" if reference is None else f"{row.seconds / reference.seconds:.2f}x"
            loss = f"{row.loss:.6g}"
            if row.implementation == "paper" and reference is not None:
                loss += " (= tropic)" if np.isclose(row.loss, reference.loss, rtol=1e-5) else " (differs!)"
            cells.append(
                (
                    model,
                    row.implementation,
                    f"{row.seconds * 1e3:.2f}",
                    "-" if row.peak_mib is None else f"{row.peak_mib:.1f}",
                    time_ratio,
                    peak_ratio,
                    loss,
                )
            )
    return table_lines(header, cells, numeric={2, 3, 4, 5})


def plot_models(rows: Sequence[ModelRow], path: Any) -> str:
    """A chart of :func:`compare_models`: per model, the step time and the extra peak memory of each
    implementation (grouped bars, log scale). The file format follows the suffix of ``path``."""
    from tropic.apps.plots import _pyplot

    plt = _pyplot()
    models = list(dict.fromkeys(r.model for r in rows))
    value = {(r.model, r.implementation): r for r in rows}
    panels = [("step time (ms)", lambda r: r.seconds * 1e3)]
    if all(r.peak_mib for r in rows):
        panels.append(("extra peak resident memory (MiB)", lambda r: r.peak_mib))
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    try:
        width = 0.8 / len(IMPLEMENTATIONS)
        for ax, (label, read) in zip(axes[0], panels, strict=True):
            for i, implementation in enumerate(IMPLEMENTATIONS):
                xs = [m + (i - 1) * width for m in range(len(models))]
                heights = [read(value[(model, implementation)]) for model in models]
                ax.bar(xs, heights, width, label=implementation)
                for x, h in zip(xs, heights, strict=True):
                    ax.annotate(f"{h:.3g}", (x, h), ha="center", va="bottom", fontsize=6)
            ax.set_yscale("log")
            ax.set_xticks(range(len(models)), models, fontsize=8)
            ax.set_ylabel(label)
            ax.grid(True, axis="y", alpha=0.3)
        axes[0][0].legend(fontsize=8)
        figure.suptitle("one training step (forward, backward, Adam), float32, CPU", fontsize=10)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
    finally:
        plt.close(figure)
    return str(path)
