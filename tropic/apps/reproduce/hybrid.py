"""``tropic reproduce hybrid``: sparse hybrid linear-morphological heads (Fotopoulos, Garoufis &
Maragos, EUSIPCO 2025, arXiv:2504.09289), the paper's claims 1-3 (listed in the report and in
``docs/reproductions.md``) at small scale.

Setup. The paper puts its heads (256 -> 512 -> 10) on a CNN trained jointly with them. We keep the
head's widths and stand a small trainable front end in for the CNN: ``Linear(in -> 256) -> ReLU``
on the pixels (digits: 64, MNIST: 784), then one of four heads built by
:mod:`tropic.nn.dmnn_models` with the same first linear layer:

- ReLU: ``Linear(256 -> 512, no bias) -> BN -> ReLU -> Linear(512 -> 10)`` (:func:`relu_head`);
- Maxout: ``... -> BN -> max over pairs -> Linear(256 -> 10)`` (:func:`maxout_head`);
- dense max-plus: ``... -> BN -> MaxPlus(512 -> 512), W ~ N(0, 1) -> Linear`` (:func:`hybrid_head`,
  ``init="dense"``);
- Sparse-Morph: the same with the sparse max-plus layer, ``K = 1024`` finite weights
  (:func:`hybrid_head`).

Claims 1 and 3 train with the paper's CIFAR-10 recipe (Adam 1e-3, batch 64, 10 epochs, last epoch
kept); claim 2 with its MTAT recipe (Adam 1e-4, batch 16), whose epoch-1 validation score is the
paper's convergence evidence. Pruning (claim 3): per-layer L1 magnitude pruning of the head's two
linear layers at ratios ``(r1, r2)`` in ``{0.7, 0.8, 0.9, 0.95}^2``, no fine-tuning
(:func:`tropic.nn.pruning.l1_unstructured`); the front end is not pruned, nor is the sparse max-plus
layer; to match the budgets the dense max-plus layer is pruned (most negative weights to ``-inf``)
down to the sparse layer's 1024 finite weights (exactly: ``count=1024`` keeps exactly that many, see
:func:`tropic.nn.init.sparse_maxplus`).

``--epochs N`` sets the claim 1/3 training length; claim 2 runs ``min(N, 3)`` epochs.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from tropic import nn
from tropic.nn import dmnn_models as models
from tropic.nn import pruning

from .. import plots
from . import report as rp
from ._common import Settings, accuracy, curve_panel, fit, load_classification, training_size

TITLE = "sparse hybrid linear-morphological networks (Fotopoulos, Garoufis & Maragos, EUSIPCO 2025)"

HEADS = {"relu": "ReLU", "maxout": "Maxout", "dense": "dense max-plus", "sparse": "Sparse-Morph"}
RATIOS = (0.7, 0.8, 0.9, 0.95)

# The paper's numbers (CIFAR-10 test accuracy %, 5 runs; MTAT validation ROC-AUC after epoch 1).
PAPER_ACCURACY = {
    "relu": "78.98 ± 0.76",
    "maxout": "78.17 ± 0.86",
    "dense": "77.78 ± 0.72",
    "sparse": "78.32 ± 0.50",
}
PAPER_EPOCH1 = {"relu": "0.841", "maxout": "0.847", "dense": "0.818", "sparse": "0.868"}
PAPER_PRUNED = {
    "relu": "69.57 ± 3.38",
    "maxout": "34.89 ± 6.62",
    "dense": "29.83 ± 11.16",
    "sparse": "74.13 ± 2.14",
}

LR, BATCH = 1e-3, 64  # CIFAR-10 recipe (claims 1, 3)
LR_FAST, BATCH_FAST = 1e-4, 16  # MTAT recipe (claim 2)


def _widths(settings: Settings) -> tuple[int, int]:
    """(front-end width, head hidden width): the paper's 256 -> 512, or 32 -> 64 in quick mode."""
    return (32, 64) if settings.quick else (256, 512)


def build(head: str, in_features: int, front: int, hidden: int, seed: int) -> nn.Sequential:
    """Front end ``Linear(in, front) -> ReLU`` (the same initial weights for every head of a seed),
    then the head ``front -> hidden -> 10``."""
    front_end = nn.Sequential(nn.Linear(in_features, front, seed=10_000 + seed), nn.ReLU())
    if head == "relu":
        h = models.relu_head(front, hidden, 10, seed=seed)
    elif head == "maxout":
        h = models.maxout_head(front, hidden, 10, seed=seed)
    elif head == "dense":
        h = models.hybrid_head(front, hidden, 10, init="dense", seed=seed)
    else:
        h = models.hybrid_head(front, hidden, 10, init="sparse", count=2 * hidden, seed=seed)
    return nn.Sequential(front_end, h)


def kept_weights(net: nn.Sequential) -> int:
    """Kept (non-zero, finite, unmasked) weights of the head's weight matrices."""
    return sum(kept for kept, _, _ in pruning.sparsity_report(net[1]).values())


def prune(net: nn.Sequential, head: str, r1: float, r2: float, hidden: int) -> nn.Sequential:
    """One-shot per-layer L1 pruning of the head's linear layers (and the dense max-plus layer down
    to the sparse layer's ``2 * hidden`` weights)."""
    h = net[1]
    pruning.l1_unstructured(h[0], r1)
    pruning.l1_unstructured(h[3], r2)
    if head == "dense":
        pruning.l1_unstructured(h[2], hidden * hidden - 2 * hidden)
    return net


def _epochs(settings: Settings) -> tuple[int, int]:
    """(claims 1/3 epochs, claim 2 epochs): 10 (1 in quick mode) or ``--epochs``; at most 3 for claim 2."""
    epochs = settings.budget(full=10, quick=1)
    return epochs, min(epochs, 3)


def _key(r1: float, r2: float) -> str:
    return f"{r1:g},{r2:g}"


def run_seed(settings: Settings, seed: int, epochs: int, fast_epochs: int) -> dict[str, Any]:
    data = load_classification(settings, seed)
    front, hidden = _widths(settings)
    n_in = data.x_train.shape[1]
    result: dict[str, Any] = {"seed": seed, "accuracy": {}, "val_curve": {}, "fast_val_curve": {}}
    result |= {"pruned": {}, "kept": {}, "seconds": {}, "weights": {}}
    for head in HEADS:
        net = build(head, n_in, front, hidden, seed)
        history = fit(net, data, epochs=epochs, lr=LR, batch_size=BATCH, seed=seed, progress=settings.advance)
        result["accuracy"][head] = accuracy(net, data.x_test, data.y_test)
        result["weights"][head] = kept_weights(net)
        result["val_curve"][head] = history.val_accuracy
        state = net.state_dict()
        pruned, kept = {}, {}
        settings_list = [(0.0, 0.0)] + [(r1, r2) for r1 in RATIOS for r2 in RATIOS]
        for r1, r2 in settings_list:  # (0, 0): unpruned, except the dense max-plus layer (budget)
            copy = build(head, n_in, front, hidden, seed)
            copy.load_state_dict(state)
            prune(copy, head, r1, r2, hidden)
            pruned[_key(r1, r2)] = accuracy(copy, data.x_test, data.y_test)
            kept[_key(r1, r2)] = kept_weights(copy)
        result["pruned"][head], result["kept"][head] = pruned, kept
        fast = build(head, n_in, front, hidden, seed)
        fast_history = fit(
            fast, data, epochs=fast_epochs, lr=LR_FAST, batch_size=BATCH_FAST, seed=seed,
            progress=settings.advance,
        )  # fmt: skip
        result["fast_val_curve"][head] = fast_history.val_accuracy
        result["seconds"][head] = history.seconds + fast_history.seconds
        settings.log(
            f"  seed {seed} {HEADS[head]:>14}: test {result['accuracy'][head]:.3f}, "
            f"epoch-1 val (Adam 1e-4) {fast_history.val_accuracy[0]:.3f}, "
            f"pruned 0.7/0.7 {pruned[_key(0.7, 0.7)]:.3f} ({result['seconds'][head]:.1f} s)"
        )
    return result


def steps(settings: Settings) -> int:
    """Training steps of a run (what :func:`run` reports to ``settings.progress``)."""
    n, (epochs, fast_epochs) = training_size(settings), _epochs(settings)
    per_head = epochs * math.ceil(n / BATCH) + fast_epochs * math.ceil(n / BATCH_FAST)
    return settings.seeds * len(HEADS) * per_head


def run(settings: Settings) -> rp.Report:
    """Train every seed, then render :data:`PAPER` (tables, verdicts, plots)."""
    start = time.perf_counter()
    seeds = [run_seed(settings, seed, *_epochs(settings)) for seed in range(settings.seeds)]
    return rp.summarize(PAPER, settings, seeds, time.perf_counter() - start)


def _fields(settings: Settings, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    epochs, fast_epochs = _epochs(settings)
    front, hidden = _widths(settings)
    widths = " (quick mode: widths scaled down)" if settings.quick else " (the paper's head widths)"
    return dict(epochs=epochs, fast_epochs=fast_epochs, front=front, hidden=hidden, widths=widths,
                lr=LR, batch=BATCH, lr_fast=LR_FAST, batch_fast=BATCH_FAST)  # fmt: skip


def _accuracy(r: rp.Results) -> rp.Finding:
    """Claim 1: test accuracy of each head."""
    rows = [
        [HEADS[h], f"{int(np.mean(r.get('weights', h)))}", rp.pm(r.get("accuracy", h)), PAPER_ACCURACY[h]]
        for h in HEADS
    ]
    header = ["head", "head weights", f"test accuracy, ours ({r['dataset']})", "paper (CIFAR-10)"]
    outcome = rp.as_good(r.get("accuracy", "sparse"), r.get("accuracy", "relu"))
    sparse_m, relu_m = (rp.mean_std(r.get("accuracy", h))[0] * 100 for h in ("sparse", "relu"))
    return rp.Finding(
        [(header, rows)], rp.combine([outcome]), f"Sparse-Morph {sparse_m:.1f}% vs ReLU {relu_m:.1f}%."
    )


def _convergence(r: rp.Results) -> rp.Finding:
    """Claim 2: validation accuracy after each of the first epochs (the MTAT recipe)."""
    epochs = range(r["fast_epochs"])
    header = ["head"] + [f"val. accuracy after epoch {e + 1}" for e in epochs]
    header += ["paper: val. ROC-AUC after epoch 1 (MTAT)"]
    rows = [
        [HEADS[h]] + [rp.pm(r.get("fast_val_curve", h, e)) for e in epochs] + [PAPER_EPOCH1[h]] for h in HEADS
    ]
    first = {h: r.get("fast_val_curve", h, 0) for h in HEADS}
    outcomes = {h: rp.better(first["sparse"], first[h]) for h in ("relu", "maxout", "dense")}
    means = {h: rp.mean_std(first[h])[0] * 100 for h in HEADS}
    reason = (
        "Epoch-1 validation accuracy: "
        + ", ".join(f"{HEADS[h]} {means[h]:.1f}%" for h in HEADS)
        + "; Sparse-Morph faster than: "
        + ", ".join(f"{HEADS[h]} {o}" for h, o in outcomes.items())
        + "."
    )
    return rp.Finding([(header, rows)], rp.combine(outcomes.values()), reason)


def _pruning(r: rp.Results) -> rp.Finding:
    """Claim 3: test accuracy after one-shot L1 pruning, r1 = r2 with the kept weights, then all 16."""
    rows = []
    for ratio in (0.0, *RATIOS):
        key = _key(ratio, ratio)
        row = [f"{ratio:g} / {ratio:g}"]
        for h in HEADS:
            row.append(f"{rp.pm(r.get('pruned', h, key))} ({int(np.mean(r.get('kept', h, key)))})")
        row.append(", ".join(f"{HEADS[h]} {PAPER_PRUNED[h]}" for h in HEADS) if ratio == 0.7 else "")
        rows.append(row)
    diagonal = (
        ["r1 / r2"] + [f"{HEADS[h]}: accuracy (kept head weights)" for h in HEADS] + ["paper (CIFAR-10)"],
        rows,
    )
    wins = 0
    grid_rows = []
    for r1 in RATIOS:
        for r2 in RATIOS:
            accs = {h: rp.mean_std(r.get("pruned", h, _key(r1, r2)))[0] for h in HEADS}
            wins += accs["sparse"] > accs["relu"]
            best = max(accs, key=accs.get)
            grid_rows.append(
                [f"{r1:g}", f"{r2:g}"]
                + [rp.pm(r.get("pruned", h, _key(r1, r2))) for h in HEADS]
                + [HEADS[best]]
            )
    grid = (["r1", "r2"] + [HEADS[h] for h in HEADS] + ["best mean"], grid_rows)
    best_count = sum(row[-1] == HEADS["sparse"] for row in grid_rows)
    at = _key(0.7, 0.7)
    headline = rp.better(r.get("pruned", "sparse", at), r.get("pruned", "relu", at))
    if headline == "yes" and wins >= 12:
        verdict = rp.AGREES
    elif headline == "no" or wins < 8:
        verdict = rp.DISAGREES
    else:
        verdict = rp.INCONCLUSIVE
    s07, r07 = (rp.mean_std(r.get("pruned", h, at))[0] * 100 for h in ("sparse", "relu"))
    reason = (
        f"At (0.7, 0.7): Sparse-Morph {s07:.1f}% vs ReLU {r07:.1f}%; Sparse-Morph above ReLU in {wins} of 16 "
        f"settings, best of the four heads in {best_count} of 16 (paper: 16 of 16)."
    )
    return rp.Finding([diagonal, grid], verdict, reason)


def _draw_pruning(r: rp.Results, path: Path) -> None:
    series, bands = {}, {}
    for h in HEADS:
        xs = [float(np.mean(r.get("kept", h, _key(x, x)))) for x in (0.0, *RATIOS)]
        ys = [rp.mean_std(r.get("pruned", h, _key(x, x))) for x in (0.0, *RATIOS)]
        series[HEADS[h]] = (xs, [m for m, _ in ys])
        bands[HEADS[h]] = [s for _, s in ys]
    title = "hybrid heads: one-shot L1 pruning, r1 = r2"
    plots.line_plot(
        series, path, title=title, xlabel="kept head weights", ylabel="test accuracy", bands=bands
    )


def _draw_validation(r: rp.Results, path: Path) -> None:
    panels = []
    for key, title in (
        ("val_curve", f"Adam {LR:g}, batch {BATCH}"),
        ("fast_val_curve", f"Adam {LR_FAST:g}, batch {BATCH_FAST}"),
    ):
        runs = {HEADS[h]: r.get(key, h) for h in HEADS}
        panels.append(curve_panel(runs, title, "epoch", "validation accuracy"))
    plots.line_plots(panels, path, title="hybrid heads: validation accuracy per epoch")


PAPER = rp.Paper(
    name="hybrid",
    title=TITLE,
    fields=_fields,
    settings={
        "data": "{dataset} (flattened pixels in [0, 1]; 20% of the training split held out for validation)",
        "network": "front end Linear(in -> {front}) -> ReLU, trained jointly; heads {front} -> {hidden} -> 10"
        "{widths}",
        "seeds": lambda r: len(r.seeds),
        "claims 1, 3": "Adam {lr:g}, batch {batch}, {epochs} epochs (the paper's CIFAR-10 recipe), last "
        "epoch",
        "claim 2": "Adam {lr_fast:g}, batch {batch_fast}, {fast_epochs} epochs (the paper's MTAT recipe)",
    },
    claims=(
        rp.ClaimSpec(
            id="1",
            statement="a hybrid head with a sparse max-plus layer trains as well as ReLU",
            setup="Test accuracy (%) after {epochs} epochs, mean ± std over {seeds} seeds.",
            rule="agrees if Sparse-Morph's mean test accuracy is at least ReLU's mean minus s, s = the "
            "larger of their stds (at least 0.5 points); does not agree if it is more than 2 s below; "
            "inconclusive in between.",
            judge=_accuracy,
        ),
        rp.ClaimSpec(
            id="2",
            statement="it converges faster in the first epochs",
            setup="Validation accuracy (%) after each of the first epochs with Adam {lr_fast:g}, batch "
            "{batch_fast}, mean ± std over {seeds} seeds. The paper measures ROC-AUC on MTAT (auto-tagging); "
            "we measure accuracy on a classification set.",
            rule="agrees if Sparse-Morph's mean epoch-1 validation accuracy is above each of ReLU's, "
            "Maxout's and dense max-plus's by more than the larger of the two stds (at least 0.5 points); "
            "does not agree if it is at or below any of them; inconclusive otherwise.",
            judge=_convergence,
        ),
        rp.ClaimSpec(
            id="3",
            statement="its linear layers become more prunable: accuracy after L1 pruning degrades less than "
            "ReLU's",
            setup="Test accuracy (%) after one-shot per-layer L1 pruning of the head's first (r1) and second "
            "(r2) linear layer, no fine-tuning; in brackets the kept head weights. The dense max-plus layer "
            "is pruned to the sparse layer's budget in every row, 0 / 0 included (see the notes).",
            rule="agrees if at (0.7, 0.7) Sparse-Morph's mean beats ReLU's by more than the larger std (at "
            "least 0.5 points) and its mean is above ReLU's in at least 12 of the 16 settings; does not "
            "agree if its mean is at or below ReLU's at (0.7, 0.7) or above it in fewer than 8 of the 16; "
            "inconclusive otherwise.",
            judge=_pruning,
        ),
    ),
    figures=(
        rp.FigureSpec(
            "pruning.png",
            "Test accuracy vs kept head weights after one-shot L1 pruning (mean ± std over seeds).",
            _draw_pruning,
        ),
        rp.FigureSpec(
            "validation.png",
            "Validation accuracy per epoch (mean ± std over seeds): claims 1/3 runs, claim 2 runs.",
            _draw_validation,
        ),
    ),
    notes=(
        "The paper trains its heads on CNN features (CIFAR-10, MTAT); we use a one-layer ReLU front end on "
        "{dataset} pixels, trained jointly with the head, as the feature extractor.",
        "Budget matching: all heads share the first linear layer; the dense max-plus layer is pruned to the "
        "sparse layer's 2 x hidden finite weights (our reading of 'parameter budgets are matched'; the "
        "sparse layer is initialised with exactly that many), the sparse max-plus layer is not pruned.",
    ),
)
