"""``tropic reproduce bimonn``: binarised morphological networks (Aouad & Talbot, "A foundation for
exact binarized morphological neural networks", 2024, arXiv:2401.03830), the paper's claims 1-3
(listed in the report and in ``docs/reproductions.md``) at small scale, with the layers of
:mod:`tropic.nn.binary`.

- Claim 1: one ``BiSE(1, 1, 7)`` learns the dilation or the erosion of diskorect images
  (:func:`tropic.apps.datasets.diskorect_task`, 50 x 50, edge-replicated border as the BiSE's) by a 7 x 7
  disk, cross or stick; we read its operation and structuring element
  (:meth:`~tropic.nn.binary.BiSE.binarized`) and measure the binarised error 1 - Dice on held-out
  images.
- Claim 2: two chained ``BiSE(1, 1, 7)`` learn the opening or the closing by the same elements
  (32 x 32 images: budget), with the constant-set regularisation ``c = 0.01``.
- Claim 3: a DenseLUI classifier (binarised input -> ``DenseLUI(in, 256, init="sparse")`` -> real-valued
  ``DenseLUI(256, 10)``; the paper: 784 -> 4096 -> 10 on MNIST) trained with and without the
  constant-set regularisation (``c = 0.01``, and 0.001 for context); float vs binarised accuracy.

Training: Adam (0.05 for the BiSEs as in tropic's tests, 0.01 for the classifier), binary
cross-entropy / cross-entropy. An "epoch" of claims 1-2 is 50 steps of batch 16 (full: 24 epochs
for claim 1, 36 for claim 2); claim 3 runs 30 epochs of batch 64. ``--epochs N`` sets all three.
The BiSE budgets are what exact recovery took: at 400 steps (8 epochs) a single BiSE recovered the
element in 14 of 18 runs (the erosion by a disk needs more), at 1200 steps in 18 of 18 (3 seeds,
tropic's preset); two chained BiSEs at 1800 steps instead of 600 bring 3 of the 6 openings /
closings (by a stick, the closing by a disk) within the paper's 0.072.

``--preset reference`` builds every BiSE and DenseLUI as the paper's code does (uniform weights near
``2 atanh(0.9) / n``, scale 0, the reparametrised bias clamp, a ``xi`` output of the real-valued head,
the regulariser's factor); the loss stays cross-entropy on the head's outputs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tropic import nn
from tropic.nn.binary import BiSE, DenseLUI, constant_set_regularization

from .. import datasets, plots
from . import report as rp
from ._common import Settings, accuracy, curve_panel, fit, load_classification, training_size

TITLE = "binarised morphological networks (Aouad & Talbot, arXiv 2401.03830)"

SHAPES = ("disk", "cross", "stick")
SE_SIZE = 7
STEPS_PER_EPOCH = 50
BATCH = 16
LR_BISE = 0.05
REG = 0.01
REGS = (0.0, 0.001, 0.01)
LR_LUI, BATCH_LUI, HIDDEN_LUI = 1e-2, 64, 256


def _epochs(settings: Settings) -> tuple[int, int, int]:
    """Epochs of claims 1, 2 and 3: 24, 36 and 30 (1 each in quick mode), or ``--epochs`` for all."""
    return tuple(settings.budget(full=full, quick=1) for full in (24, 36, 30))  # type: ignore[return-value]


def _image_sizes(settings: Settings) -> tuple[int, int]:
    """Side of the diskorect images of claims 1 and 2."""
    return (24, 24) if settings.quick else (50, 32)


def _hidden(settings: Settings) -> int:
    """Hidden DenseLUI width of the claim 3 classifier."""
    return 32 if settings.quick else HIDDEN_LUI


def dice_error(pred: np.ndarray, target: np.ndarray) -> float:
    """``1 - Dice`` of two 0/1 arrays (0 when both are empty)."""
    pred, target = pred.astype(bool), target.astype(bool)
    total = pred.sum() + target.sum()
    return 0.0 if total == 0 else float(1.0 - 2.0 * np.logical_and(pred, target).sum() / total)


def _binary_error(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.binary(True)
    try:
        return dice_error(model(x).numpy() > 0.5, y > 0.5)
    finally:
        model.binary(False)


def _train_morphology(
    model, x, y, xt, yt, epochs, seed, regularization=0.0, progress: Callable[[int], None] | None = None,
    preset: str = "tropic",
) -> list[float]:  # fmt: skip
    """Adam on random batches; the held-out binarised error after every epoch of 50 steps
    (``progress(1)`` after each step); the regulariser of ``preset``."""
    rng = np.random.default_rng(seed)
    opt = nn.Adam(model.parameters(), lr=LR_BISE)
    errors = []
    for _ in range(epochs):
        for _ in range(STEPS_PER_EPOCH):
            idx = rng.choice(len(x), min(BATCH, len(x)), replace=False)
            loss = nn.binary_cross_entropy(model(x[idx]), y[idx])
            if regularization:
                loss = loss + regularization * constant_set_regularization(model, preset=preset)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if progress is not None:
                progress(1)
        errors.append(_binary_error(model, xt, yt))
    return errors


def _task(target: str, size: int, seed: int) -> tuple[np.ndarray, ...]:
    # 48 training and 16 held-out images
    return datasets.load("diskorect", target=target, count=64, size=size, seed=seed, test_fraction=0.25)


def run_seed(settings: Settings, seed: int, e1: int, e2: int, e3: int) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": seed, "single": {}, "chained": {}, "classifier": {}}
    size1, size2 = _image_sizes(settings)
    for operation in ("dilation", "erosion"):
        for shape in SHAPES:
            target = f"{operation}:{shape}:{SE_SIZE}"
            x, y, xt, yt = _task(target, size1, seed)
            bise = BiSE(1, 1, SE_SIZE, seed=seed, preset=settings.preset)
            curve = _train_morphology(
                bise, x, y, xt, yt, e1, seed, progress=settings.advance, preset=settings.preset
            )
            read = bise.binarized()
            s = read.structuring_elements[0, 0]
            expected = datasets.structuring_element(shape, SE_SIZE)
            out["single"][target] = {
                "error": curve[-1],
                "curve": curve,
                "operation": read.operations[0],
                "recovered": bool(read.operations[0] == operation and np.array_equal(s, expected)),
                "activated": bool(read.activated[0]),
                "weights": bise._neuron_weights()[0].reshape(SE_SIZE, SE_SIZE),
                "se": s,
            }
            settings.log(
                f"  seed {seed} {target:>16}: binarised error {curve[-1]:.4f}, read as {read.operations[0]}, "
                f"S recovered {out['single'][target]['recovered']}"
            )
    for operation in ("opening", "closing"):
        for shape in SHAPES:
            target = f"{operation}:{shape}:{SE_SIZE}"
            x, y, xt, yt = _task(target, size2, seed)
            model = nn.Sequential(
                BiSE(1, 1, SE_SIZE, seed=seed, preset=settings.preset),
                BiSE(1, 1, SE_SIZE, seed=seed + 1000, preset=settings.preset),
            )
            curve = _train_morphology(
                model, x, y, xt, yt, e2, seed, regularization=REG, progress=settings.advance,
                preset=settings.preset,
            )  # fmt: skip
            out["chained"][target] = {
                "error": curve[-1],
                "curve": curve,
                "identity": dice_error(xt > 0.5, yt > 0.5),
                "operations": [layer.find_operation() for layer in model],
                "weights": [layer._neuron_weights()[0].reshape(SE_SIZE, SE_SIZE) for layer in model],
            }
            settings.log(
                f"  seed {seed} {target:>16}: binarised error {curve[-1]:.4f} "
                f"(identity {out['chained'][target]['identity']:.3f}), layers "
                f"{out['chained'][target]['operations']}"
            )
    data = load_classification(settings, seed)
    data = type(data)(*[(a >= 0.5).astype(np.float32) if i % 2 == 0 else a for i, a in enumerate(data)])
    n_in, hidden = data.x_train.shape[1], _hidden(settings)
    for c in REGS:
        net = nn.Sequential(
            DenseLUI(n_in, hidden, init="sparse", seed=seed, preset=settings.preset),
            DenseLUI(hidden, 10, real_valued=True, seed=seed + 1, preset=settings.preset),
        )

        def binarised_val(model: nn.Module) -> dict[str, float]:
            model.binary(True)
            try:
                return {"binarised_val": accuracy(model, data.x_val, data.y_val)}
            finally:
                model.binary(False)

        p = settings.preset
        regularizer = (lambda m, c=c, p=p: c * constant_set_regularization(m, preset=p)) if c else None
        history = fit(
            net, data, epochs=e3, lr=LR_LUI, batch_size=BATCH_LUI, seed=seed, regularizer=regularizer,
            on_epoch=binarised_val, progress=settings.advance,
        )  # fmt: skip
        float_acc = accuracy(net, data.x_test, data.y_test)
        net.binary(True)
        binary_acc = accuracy(net, data.x_test, data.y_test)
        activated = float(np.mean(net[0].binarized().activated))
        net.binary(False)
        out["classifier"][f"{c:g}"] = {
            "float": float_acc,
            "binarised": binary_acc,
            "activated": activated,
            "val_curve": history.val_accuracy,
            "binarised_val_curve": history.extra["binarised_val"],
        }
        settings.log(
            f"  seed {seed} DenseLUI c={c:g}: float {float_acc:.3f}, binarised {binary_acc:.3f}, "
            f"activated neurons {activated:.2f} ({history.seconds:.1f} s)"
        )
    return out


def steps(settings: Settings) -> int:
    """Training steps of a run (what :func:`run` reports to ``settings.progress``)."""
    e1, e2, e3 = _epochs(settings)
    targets = 2 * len(SHAPES)  # claims 1 and 2: two operations, each shape
    morphology = targets * (e1 + e2) * STEPS_PER_EPOCH
    classifier = len(REGS) * e3 * math.ceil(training_size(settings) / BATCH_LUI)
    return settings.seeds * (morphology + classifier)


def run(settings: Settings) -> rp.Report:
    """Train every seed, then render :data:`PAPER` (tables, verdicts, plots)."""
    start = time.perf_counter()
    seeds = [run_seed(settings, seed, *_epochs(settings)) for seed in range(settings.seeds)]
    return rp.summarize(PAPER, settings, seeds, time.perf_counter() - start)


def _fields(settings: Settings, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    e1, e2, e3 = _epochs(settings)
    size1, size2 = _image_sizes(settings)
    return dict(
        se=SE_SIZE,
        size1=size1,
        size2=size2,
        steps1=e1 * STEPS_PER_EPOCH,
        steps2=e2 * STEPS_PER_EPOCH,
        e3=e3,
        lr_bise=LR_BISE,
        batch=BATCH,
        reg=REG,
        regs=REGS,
        hidden=_hidden(settings),
        lr_lui=LR_LUI,
        batch_lui=BATCH_LUI,
    )


def _targets(operations: tuple[str, str]) -> list[tuple[str, str, str]]:
    """``(operation, shape, target)`` for both operations and every shape, in the table's order."""
    return [(o, shape, f"{o}:{shape}:{SE_SIZE}") for o in operations for shape in SHAPES]


def _single(r: rp.Results) -> rp.Finding:
    """Claim 1: one BiSE per dilation / erosion target."""
    n = r["seeds"]
    rows, good = [], 0
    for operation, shape, t in _targets(("dilation", "erosion")):
        runs = r.get("single", t)
        good += sum(run["recovered"] and run["error"] == 0.0 for run in runs)
        rows.append(
            [
                f"{operation}, {shape} {SE_SIZE}x{SE_SIZE}",
                f"{sum(run['recovered'] for run in runs)} / {n}",
                f"{sum(run['activated'] for run in runs)} / {n}",
                rp.pm([run["error"] for run in runs], percent=False, digits=4),
                "0.000",
            ]
        )
    header = ["target", "S and operation recovered", "activated", "binarised 1 - Dice, ours", "paper"]
    total = 6 * n
    verdict = rp.AGREES if good == total else (rp.DISAGREES if good < total / 2 else rp.INCONCLUSIVE)
    return rp.Finding([(header, rows)], verdict, f"{good} of {total} runs exact.")


def _chained(r: rp.Results) -> rp.Finding:
    """Claim 2: two chained BiSEs per opening / closing target, beside the identity's error."""
    rows, within, failed = [], [], []
    for operation, shape, t in _targets(("opening", "closing")):
        runs = r.get("chained", t)
        err = [run["error"] for run in runs]
        ident = [run["identity"] for run in runs]
        expected = ["erosion", "dilation"] if operation == "opening" else ["dilation", "erosion"]
        rows.append(
            [
                f"{operation}, {shape} {SE_SIZE}x{SE_SIZE}",
                rp.pm(err, percent=False, digits=3),
                rp.pm(ident, percent=False, digits=3),
                f"{sum(run['operations'] == expected for run in runs)} / {r['seeds']}",
            ]
        )
        within.append(np.mean(err) <= 0.072)
        failed.append(np.mean(err) >= np.mean(ident) / 2)
    header = ["target", "binarised 1 - Dice, ours", "identity", "layers read as the target's two steps"]
    verdict = rp.AGREES if all(within) else (rp.DISAGREES if any(failed) else rp.INCONCLUSIVE)
    reason = (
        f"{sum(within)} of 6 targets within 0.072; {sum(failed)} no better than half the identity's error."
    )
    return rp.Finding([(header, rows)], verdict, reason)


def _classifier(r: rp.Results) -> rp.Finding:
    """Claim 3: the DenseLUI classifier's float and binarised accuracy for each regularisation."""
    rows = []
    for c in REGS:
        runs = r.get("classifier", f"{c:g}")
        rows.append(
            [
                "none" if c == 0 else f"c = {c:g}",
                rp.pm([run["float"] for run in runs]),
                rp.pm([run["binarised"] for run in runs]),
                rp.pm([run["float"] - run["binarised"] for run in runs]),
                rp.pm([run["activated"] for run in runs]),
            ]
        )
    header = [
        "regularisation",
        "float accuracy",
        "binarised accuracy",
        "float - binarised",
        "activated neurons",
    ]
    with_reg = r.get("classifier", f"{REG:g}", "binarised")
    without = r.get("classifier", "0", "binarised")
    reason = (
        f"binarised accuracy: c = {REG:g} {np.mean(with_reg) * 100:.1f}%, none {np.mean(without) * 100:.1f}%."
    )
    return rp.Finding([(header, rows)], rp.combine([rp.better(with_reg, without)]), reason)


def _draw_single(r: rp.Results, path: Path) -> None:
    images, titles = [], []
    for operation, shape, t in _targets(("dilation", "erosion")):
        run0 = r.seeds[0]["single"][t]
        images += [datasets.structuring_element(shape, SE_SIZE), run0["weights"], run0["se"]]
        titles += [f"{operation[:3]}. {shape}: target", "learned W", f"read: {run0['operation'][:3]}."]
    plots.image_grid(images, path, titles=titles, columns=6,
                     title="claim 1 (seed 0): target S, learned BiSE weights, binarised S")  # fmt: skip


def _draw_chained(r: rp.Results, path: Path) -> None:
    images, titles = [], []
    for operation, shape, t in _targets(("opening", "closing")):
        run0 = r.seeds[0]["chained"][t]
        images += [datasets.structuring_element(shape, SE_SIZE), *run0["weights"]]
        titles += [
            f"{operation[:4]}. {shape}",
            f"1: {run0['operations'][0][:3]}.",
            f"2: {run0['operations'][1][:3]}.",
        ]
    plots.image_grid(images, path, titles=titles, columns=6,
                     title="claim 2 (seed 0): target S, weights of the two learned BiSEs")  # fmt: skip


def _draw_curves(r: rp.Results, path: Path) -> None:
    panels = []
    for key, label in (("single", "claim 1: one BiSE"), ("chained", "claim 2: two BiSEs")):
        names = {t: t.rsplit(":", 1)[0].replace(":", " ") for t in r.seeds[0][key]}  # "dilation disk"
        runs = {name: r.get(key, t, "curve") for t, name in names.items()}
        panels.append(curve_panel(runs, label, f"epoch ({STEPS_PER_EPOCH} steps)", "held-out 1 - Dice"))
    runs = {
        f"{label}, {'no reg.' if c == 0 else f'c = {c:g}'}": r.get("classifier", f"{c:g}", key)
        for c in (0.0, REG)
        for key, label in (("val_curve", "float"), ("binarised_val_curve", "binarised"))
    }
    panels.append(curve_panel(runs, "claim 3: DenseLUI classifier", "epoch", "validation accuracy"))
    plots.line_plots(panels, path, title="BiMoNN: validation metric per epoch (mean ± std)")


PAPER = rp.Paper(
    name="bimonn",
    title=TITLE,
    fields=_fields,
    settings={
        "claim 1": "BiSE(1, 1, {se}), diskorect {size1} x {size1}, 48 training + 16 held-out images, Adam "
        "{lr_bise:g}, batch {batch}, {steps1} steps",
        "claim 2": "BiSE(1, 1, {se}) -> BiSE(1, 1, {se}), diskorect {size2} px, constant-set regularisation "
        "c = {reg:g}, {steps2} steps",
        "claim 3": "{dataset} thresholded at 0.5 -> DenseLUI(in, {hidden}) -> real-valued DenseLUI({hidden}, "
        "10), Adam {lr_lui:g}, batch {batch_lui}, {e3} epochs, c in {regs}",
        "seeds": lambda r: len(r.seeds),
    },
    claims=(
        rp.ClaimSpec(
            id="1",
            statement="a single BiSE trained on (image, dilation/erosion of image) pairs recovers the exact "
            "structuring element and operation, and its binarised form has zero error",
            setup="Per target: runs whose binarised operation and structuring element equal the target's; "
            "runs whose neuron passes the exact activation test (no approximation needed); held-out "
            "binarised error 1 - Dice, mean ± std over seeds.",
            rule="agrees if every run (6 targets x seeds) recovers the operation and the structuring element "
            "with binarised error exactly 0; does not agree if fewer than half of the runs do; inconclusive "
            "otherwise.",
            judge=_single,
        ),
        rp.ClaimSpec(
            id="2",
            statement="openings/closings are learned by two chained BiSEs with small binarised error",
            setup="Held-out binarised 1 - Dice of the two-BiSE network, beside that of the identity (the "
            "input itself as the prediction); the paper's worst case over its targets is 0.072 (diskorect, "
            "disk).",
            rule="agrees if every target's mean binarised error is at most 0.072 (the paper's worst); does "
            "not agree if any target's mean error is at least half the identity's; inconclusive otherwise.",
            judge=_chained,
        ),
        rp.ClaimSpec(
            id="3",
            statement="the regularisation raises the binarised accuracy of a DenseLUI classifier toward its "
            "float accuracy",
            setup="Test accuracy (%) of the float network and of its binarised form (hidden DenseLUI "
            "binarised, real-valued head kept), the gap between them, and the share of hidden neurons that "
            "are exactly activated; mean ± std over seeds. The paper gives no numbers in our summary.",
            rule="agrees if the binarised accuracy with c = {reg:g} beats the one without regularisation by "
            "more than the larger of the two stds (at least 0.5 points); does not agree if it is at or below "
            "it; inconclusive otherwise (c = 0.001 is shown for context, not used by the rule).",
            judge=_classifier,
        ),
    ),
    figures=(
        rp.FigureSpec(
            "structuring_elements.png",
            "Claim 1, seed 0: target structuring element, learned BiSE weights W, binarised S.",
            _draw_single,
        ),
        rp.FigureSpec(
            "chained_elements.png",
            "Claim 2, seed 0: target structuring element and the weights of the two BiSEs.",
            _draw_chained,
        ),
        rp.FigureSpec(
            "curves.png",
            "Held-out binarised error per epoch (claims 1-2) and validation accuracy (claim 3).",
            _draw_curves,
        ),
    ),
    notes=(
        "The hidden DenseLUI starts from the sparse initialisation (init='sparse', density 0.1), which "
        "tropic.nn.binary documents as the one that binarises well for wide fan-ins. A first full run "
        "with the dense initialisation, stopped after seed 0, gave binarised accuracies at chance "
        "(10.0% with c = 0.001, 10.9% with c = 0.01; float 94.0% and 93.3%), so we switched; the "
        "verdict rule was not changed.",
        "Images are smaller than the paper's in claim 2 (32 x 32 instead of 50 x 50) and the classifier is "
        "{hidden} hidden neurons on {dataset} instead of 4096 on MNIST (budget).",
    ),
)
