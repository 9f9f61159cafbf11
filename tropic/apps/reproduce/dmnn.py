"""``tropic reproduce dmnn``: deep morphological networks with constrained "linear" activations
(Fotopoulos & Maragos, "Training Deep Morphological Neural Networks as Universal Approximators",
2025, arXiv:2505.09710), the paper's claims 1-4 (listed in the report and in
``docs/reproductions.md``) at small scale.

Architectures from :mod:`tropic.nn.dmnn_models`, widths scaled down on digits: ``in -> 128 -> 2
blocks of 128 -> 10`` (the paper: ``784 -> 256 -> 4 blocks of 256 -> 10``; MNIST / Fashion-MNIST
through ``--data-dir`` use the paper's widths). Training as the paper: Adam 1e-3, batch 64,
cross-entropy, 80/20 train/validation split, best-validation checkpoint; the paper's 50 epochs
(200 with weight dropout) become 40 (160): ``--epochs N`` sets N (4 N with weight dropout).

- Claim 1: MLP, MP (pure max-plus), MPM (diagonal activations).
- Claim 2: MPM, RMPM, RMPM + weight dropout (p = 0.3).
- Claim 3: one-shot magnitude pruning of the best MPM and MLP checkpoints, the same ratio in every
  layer (MPM weights ranked by ``|w|``, pruned entries the tropical zero of both branches; MLP
  weights set to 0), no fine-tuning. Beside it, for context, the paper's SNIP table (its Table 3):
  RMPM and MLP trained one epoch, pruned by SNIP (:func:`tropic.nn.pruning.snip`, saliencies of 10
  training batches, every parameter in one ranking, each output neuron keeping an input) to 99 and
  99.5% sparsity, then retrained for the main budget from there. Every MPM neuron keeps an input
  too: the paper code drops a neuron left without inputs through validity flags, which tropic's
  layers do not have.
- Claim 4: hybrid MLP, MLP and Maxout MLP with a large batch (the paper's 6400 of 48000 training
  images, the same 2/15 share of ours, so that an epoch is about 7.5 steps in both), training
  accuracy after epochs 1, 5, 20 (``min(N, 20)`` epochs); and the hybrid (and the MLP, for context)
  with a small batch (8 on digits, 64 on MNIST) for N epochs.
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

TITLE = "deep morphological networks with constrained linear activations (Fotopoulos & Maragos 2025)"

LR, BATCH = 1e-3, 64
NAMES = {
    "mlp": "MLP",
    "mp": "MP",
    "mpm": "MPM",
    "rmpm": "RMPM",
    "rmpm_wd": "RMPM + weight dropout",
    "maxout": "Maxout MLP",
    "hybrid": "hybrid MLP",
}
PAPER_TEST = {"mlp": "98.01 / 88.82", "mp": "31.59 / 22.05", "mpm": "94.66 / 82.86", "rmpm": "95.52 / 84.24"}
PAPER_TEST["rmpm_wd"] = "97.49 / 86.88"
PAPER_PRUNED = {"mlp": (71.9, 38.2, 11.5), "mpm": (93.6, 92.2, 78.7)}
PRUNE_RATIOS = (0.85, 0.9, 0.95)
PLOT_RATIOS = (0.0, 0.5, 0.7, 0.85, 0.9, 0.95)
SNIP_RATIOS = (0.99, 0.995)
PAPER_SNIP = {"mlp": "88.4", "rmpm": "90.2"}  # MNIST at 99.5%, 50 epochs of retraining
SNIP_BATCHES = 10
PAPER_LARGE = {"mlp": (49.8, 84.8, 95.2), "maxout": (57.7, 91.7, 98.9), "hybrid": (65.5, 95.0, 99.7)}
LARGE_EPOCHS = (1, 5, 20)


def _widths(settings: Settings) -> tuple[int, int]:
    """(hidden width, blocks): scaled down on digits and in quick mode, the paper's on MNIST."""
    if settings.quick:
        return 32, 1
    return (128, 2) if settings.dataset == "digits" else (256, 4)


def _epochs(settings: Settings) -> int:
    """The main budget: 40 epochs (1 in quick mode) or ``--epochs``."""
    return settings.budget(full=40, quick=1)


def build(name: str, n_in: int, hidden: int, blocks: int, seed: int, preset: str = "tropic") -> nn.Sequential:
    """The network ``name``; ``preset`` reaches the networks that have a paper-code preset (the MLP
    and Maxout baselines have none)."""
    kw = dict(blocks=blocks, seed=seed)
    if name == "mlp":
        return models.mlp(n_in, hidden, 10, **kw)
    if name == "maxout":
        return models.maxout_mlp(n_in, hidden, 10, **kw)
    kw["preset"] = preset
    if name == "mp":
        return models.mp(n_in, hidden, 10, **kw)
    if name == "mpm":
        return models.mpm(n_in, hidden, 10, **kw)
    if name == "rmpm":
        return models.rmpm(n_in, hidden, 10, **kw)
    if name == "rmpm_wd":
        return models.rmpm(n_in, hidden, 10, weight_dropout=0.3, **kw)
    if name == "hybrid":
        return models.hybrid_mlp(n_in, hidden, 10, **kw)
    raise ValueError(name)


def prune_all(net: nn.Module, ratio: float) -> int:
    """Prune every MPM / Linear weight of ``net`` at ``ratio``; returns the kept weights."""
    for module in net.modules():
        if isinstance(module, (nn.MPM, nn.Linear)) and ratio > 0:
            pruning.l1_unstructured(module, ratio)
    return sum(kept for kept, _, _ in pruning.sparsity_report(net).values())


def snip_run(settings: Settings, data: Any, name: str, ratio: float, seed: int, epochs: int) -> float:
    """Test accuracy of ``name`` trained one epoch, SNIP-pruned to ``ratio``, retrained ``epochs``."""
    hidden, blocks = _widths(settings)
    net = build(name, data.x_train.shape[1], hidden, blocks, seed, settings.preset)
    fit(net, data, epochs=1, lr=LR, batch_size=BATCH, seed=seed, progress=settings.advance)
    order = np.random.default_rng(seed).permutation(len(data.x_train))[: SNIP_BATCHES * BATCH]
    picks = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]  # the paper code: 10 batches
    batches = [(data.x_train[p], data.y_train[p]) for p in picks]
    output = net[len(net) - 1]
    protected = [(output, n) for n in output._parameters]
    # Every MPM neuron keeps an input: tropic has no "absent neuron" (the paper code carries validity
    # flags and drops a neuron left without inputs; here its branches would meet as -inf + inf).
    protected += [(m, "weight") for m in net.modules() if isinstance(m, nn.MPM)]
    pruning.snip(net, batches, nn.cross_entropy, ratio, keep_rows_of=protected)
    history = fit(net, data, epochs=epochs, lr=LR, batch_size=BATCH, seed=seed, progress=settings.advance)
    net.load_state_dict(history.best_state)
    return accuracy(net, data.x_test, data.y_test)


def run_seed(settings: Settings, seed: int, epochs: int) -> dict[str, Any]:
    data = load_classification(settings, seed)
    n_in = data.x_train.shape[1]
    hidden, blocks = _widths(settings)
    out: dict[str, Any] = {"seed": seed, "test": {}, "val_curve": {}, "best_epoch": {}, "seconds": {}}
    out |= {"pruned": {}, "kept": {}, "large_train_curve": {}, "large_test": {}, "small_test": {}, "snip": {}}
    for name in ("mlp", "mp", "mpm", "rmpm", "rmpm_wd"):
        net = build(name, n_in, hidden, blocks, seed, settings.preset)
        n = 4 * epochs if name == "rmpm_wd" else epochs
        history = fit(net, data, epochs=n, lr=LR, batch_size=BATCH, seed=seed, progress=settings.advance)
        net.load_state_dict(history.best_state)
        out["test"][name] = accuracy(net, data.x_test, data.y_test)
        out["val_curve"][name] = history.val_accuracy
        out["best_epoch"][name] = history.best_epoch + 1
        out["seconds"][name] = history.seconds
        if name in ("mlp", "mpm"):
            pruned, kept = {}, {}
            for ratio in sorted(set(PLOT_RATIOS) | set(PRUNE_RATIOS)):
                copy = build(name, n_in, hidden, blocks, seed, settings.preset)
                copy.load_state_dict(history.best_state)
                kept[f"{ratio:g}"] = prune_all(copy, ratio)
                pruned[f"{ratio:g}"] = accuracy(copy, data.x_test, data.y_test)
            out["pruned"][name], out["kept"][name] = pruned, kept
        settings.log(
            f"  seed {seed} {NAMES[name]:>22}: test {out['test'][name]:.3f} ({history.seconds:.1f} s)"
        )
    for name in ("mlp", "rmpm"):
        out["snip"][name] = {f"{r:g}": snip_run(settings, data, name, r, seed, epochs) for r in SNIP_RATIOS}
        settings.log(f"  seed {seed} {NAMES[name]:>22}: SNIP test accuracy {out['snip'][name]}")
    large, small = _batches(settings, len(data.x_train))
    out["batch"] = {"large": large, "small": small}
    out["n_train"] = len(data.x_train)
    large_epochs = min(epochs, 20)
    for name in ("hybrid", "mlp", "maxout"):
        net = build(name, n_in, hidden, blocks, seed, settings.preset)
        history = fit(
            net, data, epochs=large_epochs, lr=LR, batch_size=large, seed=seed, train_accuracy=True,
            progress=settings.advance,
        )  # fmt: skip
        out["large_train_curve"][name] = history.train_accuracy
        out["large_test"][name] = accuracy(net, data.x_test, data.y_test)
        settings.log(
            f"  seed {seed} {NAMES[name]:>22}, batch {large}: train accuracy per epoch "
            f"{[round(a, 3) for a in history.train_accuracy[:5]]}... ({history.seconds:.1f} s)"
        )
    for name in ("hybrid", "mlp"):
        net = build(name, n_in, hidden, blocks, seed, settings.preset)
        history = fit(net, data, epochs=epochs, lr=LR, batch_size=small, seed=seed, progress=settings.advance)
        out["small_test"][name] = accuracy(net, data.x_test, data.y_test)
        settings.log(
            f"  seed {seed} {NAMES[name]:>22}, batch {small}: test {out['small_test'][name]:.3f} "
            f"({history.seconds:.1f} s)"
        )
    return out


def _batches(settings: Settings, n_train: int) -> tuple[int, int]:
    """(large, small) batch sizes of claim 4: the paper's 6400 of 48000 training images, and 64 (8 on
    digits)."""
    return max(1, round(n_train * 6400 / 48000)), (8 if settings.dataset == "digits" else 64)


def steps(settings: Settings) -> int:
    """Training steps of a run (what :func:`run` reports to ``settings.progress``)."""
    n, epochs = training_size(settings), _epochs(settings)
    large, small = _batches(settings, n)
    main = (4 + 4) * epochs * math.ceil(n / BATCH)  # mlp, mp, mpm, rmpm; rmpm + dropout runs 4x longer
    main += 2 * len(SNIP_RATIOS) * (1 + epochs) * math.ceil(n / BATCH)  # SNIP: 1 epoch, then retraining
    claim4 = 3 * min(epochs, 20) * math.ceil(n / large) + 2 * epochs * math.ceil(n / small)
    return settings.seeds * (main + claim4)


def run(settings: Settings) -> rp.Report:
    """Train every seed, then render :data:`PAPER` (tables, verdicts, plots)."""
    start = time.perf_counter()
    epochs = _epochs(settings)
    seeds = [run_seed(settings, seed, epochs) for seed in range(settings.seeds)]
    return rp.summarize(PAPER, settings, seeds, time.perf_counter() - start)


def _shown(large_epochs: int) -> list[int]:
    """The epochs of the claim 4a table: those of the paper's 1, 5, 20 that were run."""
    return [e for e in LARGE_EPOCHS if e <= large_epochs] or [large_epochs]


def _fields(settings: Settings, seeds: list[dict[str, Any]]) -> dict[str, Any]:
    epochs = _epochs(settings)
    hidden, blocks = _widths(settings)
    large_epochs = min(epochs, 20)
    return dict(
        epochs=epochs,
        dropout_epochs=4 * epochs,
        n_in=64 if settings.dataset == "digits" else 784,
        hidden=hidden,
        blocks=blocks,
        scaled=" (scaled down from the paper's 784 -> 256 -> 4 x 256 -> 10)" if hidden < 256 else "",
        lr=LR,
        batch=BATCH,
        large_epochs=large_epochs,
        shown=", ".join(map(str, _shown(large_epochs))),
        large=seeds[0]["batch"]["large"],
        small=seeds[0]["batch"]["small"],
        small_choice="on digits we take 8 (1/135 of ours)."
        if settings.dataset == "digits"
        else "we use 64 too.",
        steps=math.ceil(seeds[0]["n_train"] / BATCH),
    )


def _mean(r: rp.Results, *keys: str) -> float:
    return rp.mean_std(r.get(*keys))[0]


def _mp_fails(r: rp.Results) -> rp.Finding:
    """Claim 1: MLP, MP and MPM test accuracy."""
    rows = [[NAMES[n], rp.pm(r.get("test", n)), PAPER_TEST[n]] for n in ("mlp", "mp", "mpm")]
    header = ["model", f"test accuracy, ours ({r['dataset']})", "paper (MNIST / Fashion-MNIST)"]
    mp_m, mpm_m = _mean(r, "test", "mp"), _mean(r, "test", "mpm")
    if mp_m < 0.5 and mpm_m - mp_m >= 0.3:
        verdict = rp.AGREES
    elif mp_m >= 0.8 or mpm_m - mp_m < 0.1:
        verdict = rp.DISAGREES
    else:
        verdict = rp.INCONCLUSIVE
    return rp.Finding([(header, rows)], verdict, f"MP {mp_m * 100:.1f}%, MPM {mpm_m * 100:.1f}%.")


def _residual(r: rp.Results) -> rp.Finding:
    """Claim 2: MPM, RMPM, RMPM + weight dropout."""
    models = ("mpm", "rmpm", "rmpm_wd")
    rows = [
        [NAMES[n], rp.pm(r.get("test", n)), f"{np.mean(r.get('best_epoch', n)):.0f}", PAPER_TEST[n]]
        for n in models
    ]
    header = ["model", "test accuracy, ours", "mean best epoch", "paper (MNIST / Fashion-MNIST)"]
    o1 = rp.better(r.get("test", "rmpm"), r.get("test", "mpm"))
    o2 = rp.better(r.get("test", "rmpm_wd"), r.get("test", "rmpm"))
    means = ", ".join(f"{NAMES[n]} {_mean(r, 'test', n) * 100:.1f}%" for n in models)
    reason = f"RMPM > MPM: {o1}; RMPM + dropout > RMPM: {o2} ({means})."
    return rp.Finding([(header, rows)], rp.combine([o1, o2]), reason)


def _prunable(r: rp.Results) -> rp.Finding:
    """Claim 3: MLP vs MPM after one-shot magnitude pruning."""
    rows = [
        [
            "0% (unpruned)",
            rp.pm(r.get("pruned", "mlp", "0")),
            rp.pm(r.get("pruned", "mpm", "0")),
            "98.01 / 94.66",
        ]
    ]
    outcomes = []
    for i, ratio in enumerate(PRUNE_RATIOS):
        key = f"{ratio:g}"
        rows.append(
            [f"{ratio * 100:g}%"]
            + [rp.pm(r.get("pruned", n, key)) for n in ("mlp", "mpm")]
            + [f"{PAPER_PRUNED['mlp'][i]} / {PAPER_PRUNED['mpm'][i]}"]
        )
        outcomes.append(rp.better(r.get("pruned", "mpm", key), r.get("pruned", "mlp", key)))
    header = ["sparsity", "MLP, ours", "MPM, ours", "paper MNIST: MLP / MPM"]
    reason = "MPM above MLP at 85/90/95%: " + " / ".join(outcomes) + "."
    snip_rows = [
        [f"{ratio * 100:g}%"]
        + [rp.pm(r.get("snip", n, f"{ratio:g}")) for n in ("mlp", "rmpm")]
        + [f"{PAPER_SNIP['mlp']} / {PAPER_SNIP['rmpm']}" if ratio == 0.995 else ""]
        for ratio in SNIP_RATIOS
    ]
    snip_header = ["SNIP sparsity (retrained; context, not judged)", "MLP, ours", "RMPM, ours"]
    snip_header.append("paper MNIST: MLP / RMPM")
    return rp.Finding([(header, rows), (snip_header, snip_rows)], rp.combine(outcomes), reason)


def _large_batch(r: rp.Results) -> rp.Finding:
    """Claim 4a: training accuracy per epoch with the large batch."""
    large_epochs = r["large_epochs"]
    shown = _shown(large_epochs)
    rows = []
    for n in ("mlp", "maxout", "hybrid"):
        row = [NAMES[n]] + [rp.pm(r.get("large_train_curve", n, e - 1)) for e in shown]
        rows.append(row + [" / ".join(f"{v:g}" for v in PAPER_LARGE[n])])
    header = ["model"] + [f"epoch {e}" for e in shown] + ["paper MNIST, epochs 1 / 5 / 20 (batch 6400)"]
    outs, said = [], []
    for e in (e for e in (1, 5) if e <= large_epochs):
        for n in ("mlp", "maxout"):
            outs.append(
                rp.better(r.get("large_train_curve", "hybrid", e - 1), r.get("large_train_curve", n, e - 1))
            )
            said.append(f"after epoch {e} vs {NAMES[n]}: {outs[-1]}")
    return rp.Finding([(header, rows)], rp.combine(outs), "Hybrid better " + "; ".join(said) + ".")


def _small_batch(r: rp.Results) -> rp.Finding:
    """Claim 4b: the hybrid MLP's test accuracy with a small and with the large batch."""
    small, large = r["small"], r["large"]
    hyb_small, hyb_large = _mean(r, "small_test", "hybrid"), _mean(r, "large_test", "hybrid")
    drop = hyb_large - hyb_small
    if drop >= 0.2:
        verdict = rp.AGREES
    elif drop < 0.05:
        verdict = rp.DISAGREES
    else:
        verdict = rp.INCONCLUSIVE
    rows = [
        [NAMES[n], rp.pm(r.get("small_test", n)), rp.pm(r.get("large_test", n))] for n in ("hybrid", "mlp")
    ]
    rows[0].append("33.6 (batch 64) / 97.4 (batch 6400)")
    rows[1].append("")
    header = ["model", f"batch {small}", f"batch {large}", "paper MNIST (hybrid)"]
    reason = f"Hybrid: batch {small} {hyb_small * 100:.1f}%, batch {large} {hyb_large * 100:.1f}%."
    return rp.Finding([(header, rows)], verdict, reason)


def _draw_pruning(r: rp.Results, path: Path) -> None:
    series, bands = {}, {}
    for n in ("mlp", "mpm"):
        xs = [float(np.mean(r.get("kept", n, f"{x:g}"))) for x in PLOT_RATIOS]
        ys = [rp.mean_std(r.get("pruned", n, f"{x:g}")) for x in PLOT_RATIOS]
        series[NAMES[n]], bands[NAMES[n]] = (xs, [m for m, _ in ys]), [s for _, s in ys]
    title = "one-shot magnitude pruning, same ratio per layer"
    plots.line_plot(series, path, title=title, xlabel="kept weights", ylabel="test accuracy", bands=bands)


def _draw_curves(r: rp.Results, path: Path) -> None:
    validation = {NAMES[n]: r.get("val_curve", n) for n in ("mlp", "mp", "mpm", "rmpm", "rmpm_wd")}
    large_batch = {NAMES[n]: r.get("large_train_curve", n) for n in ("mlp", "maxout", "hybrid")}
    panels = [
        curve_panel(validation, f"batch {BATCH}", "epoch", "validation accuracy"),
        curve_panel(large_batch, f"batch {r['large']}", "epoch", "training accuracy"),
    ]
    plots.line_plots(panels, path, title="DMNN: accuracy per epoch (mean ± std over seeds)")


PAPER = rp.Paper(
    name="dmnn",
    title=TITLE,
    fields=_fields,
    settings={
        "data": "{dataset} (flattened pixels in [0, 1]; 80/20 train/validation split of the training set)",
        "widths": "{n_in} -> {hidden} -> {blocks} blocks of {hidden} -> 10{scaled}",
        "seeds": lambda r: len(r.seeds),
        "training": "Adam {lr:g}, batch {batch}, {epochs} epochs ({dropout_epochs} with weight dropout), "
        "best-validation checkpoint",
    },
    claims=(
        rp.ClaimSpec(
            id="1",
            statement="pure max-plus stacks (MP) fail to train; MPM with the constrained linear activations "
            "trains",
            setup="Test accuracy (%) at the best-validation epoch, mean ± std over {seeds} seeds.",
            rule="agrees if MP's mean test accuracy is below 50% and MPM's is at least 30 points above it; "
            "does not agree if MP's is at least 80% or MPM's is less than 10 points above it; inconclusive "
            "otherwise.",
            judge=_mp_fails,
        ),
        rp.ClaimSpec(
            id="2",
            statement="residual connections and weight dropout improve MPM's accuracy (RMPM + dropout > "
            "RMPM > MPM)",
            setup="Test accuracy (%) at the best-validation epoch, mean ± std over {seeds} seeds; {epochs} "
            "epochs, {dropout_epochs} with weight dropout (p = 0.3).",
            rule="agrees if RMPM beats MPM and RMPM + weight dropout beats RMPM, each by more than the "
            "larger of the two stds (at least 0.5 points); does not agree if either mean is at or below the "
            "other's; inconclusive otherwise.",
            judge=_residual,
        ),
        rp.ClaimSpec(
            id="3",
            statement="MPM is far more prunable than an MLP under one-shot magnitude pruning",
            setup="Test accuracy (%) after pruning the same share of every layer's weights of the best "
            "checkpoint, no fine-tuning, mean ± std over seeds.",
            rule="agrees if MPM's mean beats the MLP's by more than the larger of the two stds (at least 0.5 "
            "points) at each of 85, 90 and 95%; does not agree if MPM's mean is at or below the MLP's at any "
            "of them; inconclusive otherwise.",
            judge=_prunable,
        ),
        rp.ClaimSpec(
            id="4a",
            statement="with large batches the hybrid MLP converges faster than ReLU and Maxout MLPs",
            setup="Training accuracy (%) after epochs {shown} with batch {large} (the paper's 6400 of 48000 "
            "training images, the same share of ours), Adam {lr:g}, mean ± std over seeds.",
            rule="agrees if the hybrid's mean training accuracy is above the MLP's and the Maxout MLP's by "
            "more than the larger of the two stds (at least 0.5 points) after epoch 1 and after epoch 5; "
            "does not agree if it is at or below either of them at either epoch; inconclusive otherwise.",
            judge=_large_batch,
        ),
        rp.ClaimSpec(
            id="4b",
            statement="with small batches the hybrid MLP fails (a property users must be warned about)",
            setup="Test accuracy (%) with a small batch ({small}, {epochs} epochs) and with the large batch "
            "({large}, {large_epochs} epochs). The paper's failing batch, 64, is 1/750 of its training set; "
            "{small_choice}",
            rule="agrees if the hybrid's mean test accuracy with the small batch is at least 20 points below "
            "its large-batch mean; does not agree if it is less than 5 points below (or above); inconclusive "
            "otherwise.",
            judge=_small_batch,
        ),
    ),
    figures=(
        rp.FigureSpec(
            "pruning.png",
            "Test accuracy vs kept weights after one-shot magnitude pruning (MLP vs MPM).",
            _draw_pruning,
        ),
        rp.FigureSpec(
            "curves.png",
            "Validation accuracy per epoch (claims 1-2) and large-batch training accuracy (claim 4a).",
            _draw_curves,
        ),
    ),
    notes=(
        "Widths and data are scaled down ({dataset}, hidden {hidden}, {blocks} blocks) and so are the "
        "training steps: the paper's MNIST runs take about 750 steps per epoch, ours {steps}.",
        "MPM-SVD, DEP and Act-MP are in tropic.nn.dmnn_models but not part of these runs (budget).",
    ),
)
