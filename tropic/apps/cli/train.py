"""``tropic train``: train one model on one data set and write a run folder.

With no arguments it trains the sparse hybrid head (Linear -> BatchNorm -> sparse max-plus ->
Linear) on scikit-learn's digits with :mod:`tropic.autodiff` (no download, seconds on a laptop CPU).

Options come from three places, later ones winning: the built-in defaults (global, then the model's
own, see :mod:`tropic.apps.cli.train_models`), a JSON file (``--config FILE``, the same keys as the
options with ``_`` for ``-``), then the command line. A run's ``config.json`` works as is: it trains
the same model on the same data again, into a new run folder (the ``out`` it names, the folder of
that run, and its ``quiet`` are ignored; give ``--out`` to choose the folder).

The run folder (``--out``, default ``runs/<timestamp>-<model>``) receives

- ``config.json``: the full resolved config, with the tropic version and the data's shape;
- ``metrics.json`` and ``metrics.csv``: one row per epoch (loss, train/test accuracy, samples/s);
- ``model.npz`` (autodiff engine, :meth:`tropic.nn.Module.save`) or ``model.pt`` (torch engine, the
  ``state_dict``);
- ``curves.png``: loss and accuracy per epoch (and ``structuring_elements.png`` for a BiSE network
  learning a morphological operation).

Mistakes are found before training starts and reported as one ``tropic: error: ...`` line (exit
status 2), with no run folder left behind: bad or out-of-range options (in a config file too: no
non-finite numbers, no ints beyond 2**63, no nesting), a ``--test-fraction`` that leaves the training
or the test set empty, ``--data-dir`` with a built-in data set (digits, diskorect) or naming a file,
``--device`` without ``--engine torch``, an ``--out`` that is a file, a non-empty folder or a place
where no folder can be created, malformed data files, data holding NaN, a ``--width`` / ``--blocks``
whose model would not fit in memory, ``--batch-size 1`` for a model with BatchNorm (which cannot
normalise one sample in training mode; a last batch of one sample is left out of each epoch instead,
with a note). A NaN or infinite gradient during training stops the run the same way, naming the
epoch, the batch and the parameter; then, as after any other failure or an interruption (Ctrl-C),
the files the run wrote and the run folder it created are removed.

A progress bar (batches of all epochs, with the time left) is drawn on standard error when it is a
terminal; ``--quiet`` prints only the run folder and the final test accuracy.

:func:`load_run` rebuilds the trained model from a run folder; :func:`evaluate` recomputes its test
metrics (see the README's "Reusing a trained model").
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from tropic.core.config import MAX_THREADS

from . import CommandError
from .train_models import DMNN_DEFAULTS, MODELS

HELP = "train a model (tropical, morphological or baseline) and write a run folder"

ENGINES = ("autodiff", "torch")
OPTIMIZERS = ("adam", "sgd", "adamw")

DEFAULTS: dict[str, Any] = {
    "model": "sparse-hybrid",
    "engine": "autodiff",
    "dataset": "digits",
    "data_dir": None,
    "epochs": 10,
    "batch_size": 32,
    "lr": 3e-3,
    "optimizer": "adam",
    "width": 128,
    "blocks": 4,
    "seed": 0,
    "out": None,
    "quiet": False,
    "device": "cpu",
    "target": "dilation:disk:7",
    "regularization": 0.0,
    "threshold": 0.5,
    "test_fraction": 0.25,
    "threads": None,
    "preset": "tropic",
}
PRESETS = ("tropic", "reference")
# BiSE networks learning a diskorect target: small batches, more epochs (about 240 Adam steps).
SEGMENT_DEFAULTS = {"batch_size": 16, "epochs": 20, "lr": 0.05}
# Digits gives some 21 steps an epoch at batch 64, where the DMNN paper's Adam 1e-3 had ~750 (MNIST):
# at 1e-3 the MPM family stays near chance after 10 epochs, at 1e-2 MPM reaches ~94%.
DIGITS_DMNN_DEFAULTS = {"lr": 1e-2}

# Keys a run's config.json holds besides the options; --config ignores them.
_INFORMATIONAL = ("tropic_version", "versions", "task", "input_shape", "classes")
# Options of one invocation, not of the training: --config ignores them in a run's config.json.
_PER_RUN = ("out", "quiet", "threads")

_TYPES: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "engine": str,
    "dataset": str,
    "data_dir": (str, type(None)),
    "epochs": int,
    "batch_size": int,
    "lr": (int, float),
    "optimizer": str,
    "width": int,
    "blocks": int,
    "seed": int,
    "out": (str, type(None)),
    "quiet": bool,
    "device": str,
    "target": str,
    "regularization": (int, float),
    "threshold": (int, float),
    "test_fraction": (int, float),
    "threads": (int, type(None)),
    "preset": str,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tropic.apps.datasets import DATASETS

    s = argparse.SUPPRESS  # only the options given appear in the namespace: the config file fills the rest
    d = DEFAULTS
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "models:\n" + "\n".join(f"  {name:14s} {spec.help}" for name, spec in MODELS.items())
    parser.epilog += (
        "\n\nWith no option: the sparse hybrid head on digits with tropic.autodiff (seconds). Options a "
        "model\nchanges when not given: the DMNN models (mlp ... hybrid-mlp) --width 256 --batch-size 64 "
        "--lr 1e-3\n(the paper's; on digits --lr 1e-2, as 1e-3 needs ~40x more steps than digits has);\n"
        "bise --width 1024 --lr 0.01, and on diskorect --batch-size 16 --epochs 20 --lr 0.05."
    )
    add = parser.add_argument
    add("--model", choices=list(MODELS), metavar="MODEL", default=s, help=f"see below (default {d['model']})")
    add("--engine", choices=ENGINES, default=s, help="tropic.autodiff or torch (tropic.torch.nn)")
    add("--dataset", choices=DATASETS, default=s, help=f"default {d['dataset']}")
    add("--data-dir", default=s, metavar="FOLDER", help="folder of the mnist / fashion-mnist / cifar10 files")
    add("--epochs", type=int, default=s, help=f"default {d['epochs']}")
    add("--batch-size", type=int, default=s, help=f"default {d['batch_size']} (64 for the DMNN models)")
    add("--lr", type=float, default=s, help=f"learning rate (default {d['lr']}, some models change it)")
    add("--optimizer", choices=OPTIMIZERS, default=s, help="default adam (sgd: momentum 0.9)")
    add("--width", type=int, default=s, help="hidden width (default: the model's, 128 for the heads)")
    add("--blocks", type=int, default=s, help=f"hidden blocks of the DMNN models (default {d['blocks']})")
    add("--seed", type=int, default=s, help="initialisation, data order and split (default 0)")
    add(
        "--preset",
        choices=PRESETS,
        default=s,
        help="initialisation: tropic's defaults, or the paper code's (reference; the DMNN models)",
    )
    add("--out", default=s, metavar="FOLDER", help="run folder (default runs/<timestamp>-<model>)")
    add("--config", default=s, metavar="FILE", help="JSON file of options (the command line overrides it)")
    add("--quiet", action="store_true", default=s, help="print only the run folder and the final accuracy")
    add("--device", default=s, help="with --engine torch: torch device (default cpu)")
    add("--target", default=s, help="diskorect: OPERATION[:SHAPE[:SIZE]] (default dilation:disk:7)")
    add("--regularization", type=float, default=s, help="bise: weight of the binarisation regulariser")
    add("--threshold", type=float, default=s, help="bise classifier: binarisation threshold of inputs")
    add("--test-fraction", type=float, default=s, help="digits / diskorect: held-out share (default 0.25)")
    add(
        "--threads",
        type=int,
        default=s,
        metavar="N",
        help="CPU threads of tropic's kernels and of torch (default: all cores; on a machine busy with "
        "other work, 1 can be several times faster with --engine torch, see docs/pytorch.md)",
    )


# -- configuration -------------------------------------------------------------------------------


def resolve_config(given: dict[str, Any], file: str | None = None) -> dict[str, Any]:
    """Defaults <- the model's defaults <- ``file`` (JSON) <- ``given`` (the command line); checked."""
    from_file = _read_config(file) if file is not None else {}
    chosen = {**from_file, **given}
    model = chosen.get("model", DEFAULTS["model"])
    if model not in MODELS:
        raise CommandError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
    config = {**DEFAULTS, **MODELS[model].defaults}
    dataset = chosen.get("dataset", DEFAULTS["dataset"])
    if model == "bise" and dataset == "diskorect":
        config.update(SEGMENT_DEFAULTS)
    if MODELS[model].defaults is DMNN_DEFAULTS and dataset == "digits":
        config.update(DIGITS_DMNN_DEFAULTS)
    config.update(chosen)
    _check(config)
    return config


# A config file holds a few options: anything larger is not one (and is not read whole).
_CONFIG_MAX_BYTES = 1 << 20
# Option values are ints below 2**63 (a seed, counts, sizes): longer JSON integers are refused as
# they are parsed, before Python converts thousands of digits.
_INT_MAX = 2**63 - 1


class _BadNumber(ValueError):
    """A JSON number that no option can take (raised while parsing, reported as is)."""


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"the number {text[:40]} is out of range (not a finite float)")
    return value


def _json_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > len(str(_INT_MAX)):
        raise _BadNumber(f"an integer of {digits} digits is out of range (options are below 2**63)")
    return int(text)


def _json_constant(text: str) -> float:
    raise _BadNumber(f"{text} is not a valid option value (not a finite number)")


def _read_config(file: str) -> dict[str, Any]:
    """The options of a JSON config file: an object of option names, with finite numbers and ints
    below 2**63 (huge or non-finite numbers and deep nesting are one-line errors, not tracebacks)."""
    path = Path(file)
    try:
        with open(path, "rb") as stream:
            raw = stream.read(_CONFIG_MAX_BYTES + 1)
        if len(raw) > _CONFIG_MAX_BYTES:
            raise CommandError(f"config file {file}: over {_CONFIG_MAX_BYTES} bytes, too large for options")
        values = json.loads(
            raw.decode("utf-8"),
            parse_float=_json_float,
            parse_int=_json_int,
            parse_constant=_json_constant,
        )
    except FileNotFoundError:
        raise CommandError(f"config file {file} does not exist") from None
    except _BadNumber as exc:
        raise CommandError(f"config file {file}: {exc}") from None
    except RecursionError:
        raise CommandError(f"config file {file}: nested too deeply (options are one flat object)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise CommandError(f"config file {file}: not valid JSON ({exc})") from None
    if not isinstance(values, dict):
        raise CommandError(f"config file {file}: expected a JSON object, got {type(values).__name__}")
    values = {key.replace("-", "_"): value for key, value in values.items()}
    unknown = sorted(set(values) - set(DEFAULTS) - set(_INFORMATIONAL))
    if unknown:
        raise CommandError(f"config file {file}: unknown key(s) {', '.join(unknown)}")
    if "tropic_version" in values:  # a run's config.json: "out" is that run's (full) folder
        for key in _PER_RUN:
            values.pop(key, None)
    return {k: v for k, v in values.items() if k in DEFAULTS}


def _check(config: dict[str, Any]) -> None:
    from tropic.apps.datasets import DATASETS, split_sizes

    for key, expected in _TYPES.items():
        value = config[key]
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise CommandError(f"{_flag(key)} has the wrong type: {value!r}")
    choices_of = {"engine": ENGINES, "optimizer": OPTIMIZERS, "dataset": DATASETS, "preset": PRESETS}
    for key, choices in choices_of.items():
        if config[key] not in choices:
            raise CommandError(f"{_flag(key)} must be one of {', '.join(choices)}, got {config[key]!r}")
    for key in ("epochs", "batch_size", "width", "blocks"):
        low = 0 if key == "blocks" else 1
        if config[key] < low:
            raise CommandError(f"{_flag(key)} must be at least {low}, got {config[key]}")
    if config["preset"] != "tropic" and not MODELS[config["model"]].presets:
        with_presets = ", ".join(name for name, spec in MODELS.items() if spec.presets)
        raise CommandError(
            f"--preset {config['preset']}: --model {config['model']} has no paper-code preset "
            f"(models with one: {with_presets})"
        )
    if config["seed"] < 0:
        raise CommandError(f"--seed must be non-negative, got {config['seed']}")
    if config["threads"] is not None and not 1 <= config["threads"] <= MAX_THREADS:
        raise CommandError(f"--threads must be from 1 to {MAX_THREADS}, got {config['threads']}")
    for key in ("epochs", "batch_size", "width", "blocks", "seed"):
        if config[key] > _INT_MAX:
            raise CommandError(f"{_flag(key)} must be below 2**63, got a {len(str(config[key]))}-digit int")
    if not math.isfinite(config["threshold"]):
        raise CommandError(f"--threshold must be a finite number, got {config['threshold']}")
    if not (math.isfinite(config["lr"]) and config["lr"] > 0):
        raise CommandError(f"--lr must be a positive number, got {config['lr']}")
    if not (math.isfinite(config["regularization"]) and config["regularization"] >= 0):
        raise CommandError(f"--regularization must be non-negative, got {config['regularization']}")
    if not 0 < config["test_fraction"] < 1:
        raise CommandError(f"--test-fraction must be in (0, 1), got {config['test_fraction']}")
    if config["model"] == "bise" and config["dataset"] == "diskorect":
        from tropic.apps.datasets import DISKORECT_SIZE, _parse_target

        try:
            _parse_target(config["target"], DISKORECT_SIZE)
        except ValueError as exc:
            raise CommandError(f"--target: {exc}") from None
    elif config["dataset"] == "diskorect":
        raise CommandError(
            f"diskorect is a segmentation task (learn a morphological operation): only --model bise "
            f"learns it, not {config['model']}"
        )
    if config["dataset"] in ("mnist", "fashion-mnist", "cifar10") and not config["data_dir"]:
        raise CommandError(
            f"--dataset {config['dataset']} is read from local files: give --data-dir FOLDER "
            f"(nothing is downloaded)"
        )
    if config["data_dir"] and config["dataset"] in ("digits", "diskorect"):
        raise CommandError(
            f"--data-dir is for the data sets read from files (mnist, fashion-mnist, cifar10), but "
            f"--dataset is {config['dataset']}, which is built in: add --dataset mnist (or another), "
            f"or leave --data-dir out"
        )
    if config["engine"] != "torch" and config["device"] != "cpu":
        raise CommandError(
            f"--device {config['device']} needs --engine torch (--engine {config['engine']} runs on the "
            f"CPU): add --engine torch, or leave --device out"
        )
    try:
        split_sizes(config["dataset"], config["test_fraction"])
    except ValueError as exc:
        raise CommandError(str(exc).replace("test_fraction", "--test-fraction")) from None


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


# -- data ----------------------------------------------------------------------------------------


def _load_data(config: dict[str, Any]) -> tuple[np.ndarray, ...]:
    from tropic.apps import datasets

    segment = config["dataset"] == "diskorect"
    try:
        x_train, y_train, x_test, y_test = datasets.load(
            config["dataset"],
            config["data_dir"],
            seed=config["seed"],
            test_fraction=config["test_fraction"],
            flatten=not segment,
            target=config["target"],
        )
    except ImportError:
        raise CommandError(
            f"--dataset {config['dataset']} needs scikit-learn: pip install scikit-learn"
        ) from None
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc).replace("\n", " ")) from None
    _check_data(config["dataset"], (x_train, y_train, x_test, y_test), segment)
    if config["model"] == "bise" and not segment:  # the BiSE classifier reads one binary level set
        threshold = np.float32(config["threshold"])
        x_train, x_test = ((x >= threshold).astype(np.float32) for x in (x_train, x_test))
    return x_train, y_train, x_test, y_test


def _check_data(dataset: str, data: tuple[np.ndarray, ...], segment: bool) -> None:
    """Refuse empty sets and NaN or infinite values before training: one NaN sample would make every
    gradient NaN (the optimisers stop at the first such step, but better say it before starting)."""
    x_train, y_train, x_test, y_test = data
    parts = {"training inputs": x_train, "test inputs": x_test}
    if segment:
        parts.update({"training targets": y_train, "test targets": y_test})
    for part, x in parts.items():
        if len(x) == 0:
            raise CommandError(f"--dataset {dataset}: the {part} are empty")
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            raise CommandError(
                f"--dataset {dataset}: the {part} hold NaN or infinite values ({int(bad.sum())} samples, "
                f"the first at index {int(np.argmax(bad))}): training needs finite data"
            )


# -- engines: the same training loop over tropic.autodiff or torch -------------------------------


class _Autodiff:
    """Training step, prediction and saving with :mod:`tropic.nn`."""

    file = "model.npz"

    def __init__(self, model: Any, config: dict[str, Any], segment: bool) -> None:
        import tropic.nn as nn

        self.nn, self.model, self.segment = nn, model, segment
        self.regularization = config["regularization"] if config["model"] == "bise" else 0.0
        params, lr = list(model.named_parameters()), config["lr"]  # named: errors name the parameter
        self.optimizer = {
            "adam": lambda: nn.Adam(params, lr=lr),
            "sgd": lambda: nn.SGD(params, lr=lr, momentum=0.9),
            "adamw": lambda: nn.AdamW(params, lr=lr),
        }[config["optimizer"]]()

    def step(self, xb: np.ndarray, yb: np.ndarray) -> tuple[float, np.ndarray]:
        """One training step; :class:`FloatingPointError` for a non-finite gradient (nothing updated)."""
        nn = self.nn
        self.model.train()
        out = self.model(xb)
        loss = nn.binary_cross_entropy(out, yb) if self.segment else nn.cross_entropy(out, yb)
        if self.regularization:
            loss = loss + self.regularization * nn.constant_set_regularization(self.model)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.item()), out.numpy()

    def predict(self, x: np.ndarray, binary: bool = False) -> np.ndarray:
        return _predict_autodiff(self.model, x, binary)

    def tropic_model(self) -> Any:
        return self.model

    def save(self, folder: Path) -> Path:
        self.model.save(folder / self.file)
        return folder / self.file


class _Torch:
    """The same with torch: the tropic model converted by ``tropic.torch.nn.from_tropic`` and a
    ``torch.optim`` optimiser."""

    file = "model.pt"

    def __init__(self, model: Any, config: dict[str, Any], segment: bool) -> None:
        torch, tnn = _torch_modules()
        self.torch, self.tnn, self.base, self.segment = torch, tnn, model, segment
        self.device = _torch_device(torch, config["device"])
        try:
            self.model = tnn.from_tropic(model, device=self.device)
        except NotImplementedError as exc:
            raise CommandError(f"--engine torch: {exc} (use --engine autodiff)") from None
        except (RuntimeError, ValueError) as exc:
            raise CommandError(f"--engine torch: {str(exc).splitlines()[0]}") from None
        torch.manual_seed(config["seed"])
        self.steps = 0
        self.regularization = config["regularization"] if config["model"] == "bise" else 0.0
        params, lr = self.model.parameters(), config["lr"]
        self.optimizer = {
            "adam": lambda: torch.optim.Adam(params, lr=lr),
            "sgd": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9),
            "adamw": lambda: torch.optim.AdamW(params, lr=lr),
        }[config["optimizer"]]()

    def _tensor(self, x: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def step(self, xb: np.ndarray, yb: np.ndarray) -> tuple[float, np.ndarray]:
        functional = self.torch.nn.functional
        self.model.train()
        out = self.model(self._tensor(xb))
        yb = self._tensor(yb)
        loss = functional.binary_cross_entropy(out, yb) if self.segment else functional.cross_entropy(out, yb)
        if self.regularization:
            loss = loss + self.regularization * self.tnn.constant_set_regularization(self.model)
        self.optimizer.zero_grad()
        loss.backward()
        self._check_gradients()
        self.optimizer.step()
        self.steps += 1
        return float(loss.item()), out.detach().cpu().numpy()

    def _check_gradients(self) -> None:
        """The rule of the :mod:`tropic.nn` optimisers, for ``torch.optim``: a NaN or infinite
        gradient on a finite weight raises :class:`FloatingPointError` before the step."""
        torch = self.torch
        with torch.no_grad():
            for name, p in self.model.named_parameters():
                if p.grad is not None and bool((torch.isfinite(p) & ~torch.isfinite(p.grad)).any()):
                    raise FloatingPointError(
                        f"step {self.steps + 1}: the gradient of parameter {name!r} (shape "
                        f"{tuple(p.shape)}) holds NaN or infinite entries where the parameter is finite"
                    )

    def predict(self, x: np.ndarray, binary: bool = False) -> np.ndarray:
        return _predict_torch(self.model, x, binary, self.device)

    def tropic_model(self) -> Any:
        """The tropic model with the trained weights (for reading structuring elements)."""
        self.base.load_state_dict(self.tnn.tropic_state_dict(self.model))
        return self.base

    def save(self, folder: Path) -> Path:
        self.torch.save(self.model.state_dict(), folder / self.file)
        return folder / self.file


def _predict_autodiff(model: Any, x: np.ndarray, binary: bool = False) -> np.ndarray:
    """Outputs of a tropic.nn model in evaluation (and optionally binary) mode, 1024 samples at a time."""
    import tropic.autodiff as ad

    model.eval()
    model.binary(binary)
    try:
        with ad.no_grad():
            return np.concatenate([model(x[i : i + 1024]).numpy() for i in range(0, len(x), 1024)])
    finally:
        model.binary(False)


def _predict_torch(model: Any, x: np.ndarray, binary: bool, device: Any) -> np.ndarray:
    """The same for a torch module."""
    torch, tnn = _torch_modules()
    model.eval()
    tnn.set_binary(model, binary)
    try:
        with torch.no_grad():
            parts = [model(torch.from_numpy(x[i : i + 1024]).to(device)) for i in range(0, len(x), 1024)]
    finally:
        tnn.set_binary(model, False)
    return np.concatenate([p.cpu().numpy() for p in parts])


def _torch_device(torch: Any, name: str) -> Any:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CommandError(f"--device {name!r} is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"--device {name}: torch sees no CUDA device")
    return device


def _torch_modules() -> tuple[Any, Any]:
    try:
        import torch

        from tropic.torch import nn as tnn
    except ImportError as exc:
        raise CommandError(
            f"--engine torch needs PyTorch and tropic.torch ({exc}); use --engine autodiff"
        ) from None
    return torch, tnn


# -- metrics -------------------------------------------------------------------------------------


def _accuracy(out: np.ndarray, y: np.ndarray, segment: bool) -> float:
    if segment:
        return float(np.mean((out >= 0.5) == (y >= 0.5)))
    return float(np.mean(np.argmax(out, axis=1) == y))


def _test_metrics(predict: Any, x: np.ndarray, y: np.ndarray, config: dict[str, Any], segment: bool) -> dict:
    metrics = {"test_accuracy": _accuracy(predict(x), y, segment)}
    if config["model"] == "bise":
        binary = predict(x, binary=True)
        metrics["binary_test_accuracy"] = _accuracy(binary, y, segment)
        if segment:
            from tropic.apps.reproduce.bimonn import dice_error

            metrics["binary_test_dice_error"] = dice_error(binary >= 0.5, y >= 0.5)
    return metrics


# -- the command ---------------------------------------------------------------------------------


def run(options: argparse.Namespace) -> int:
    given = {k: v for k, v in vars(options).items() if k in DEFAULTS}
    config = resolve_config(given, getattr(options, "config", None))
    result = train(config)
    print(f"final test accuracy: {result['final']['test_accuracy']:.4f}")
    return 0


def train(config: dict[str, Any]) -> dict[str, Any]:
    """Train with a resolved config (see :func:`resolve_config`); write the run folder; return the
    metrics (``{"epochs": [row, ...], "final": {...}, "run": folder}``). ``threads`` holds for the
    call only."""
    restore = _set_threads(config)
    try:
        return _train(config)
    finally:
        restore()


def _train(config: dict[str, Any]) -> dict[str, Any]:
    import tropic
    from tropic.apps import progress

    quiet = config["quiet"]
    segment = config["dataset"] == "diskorect"
    _check_paths(config)
    x_train, y_train, x_test, y_test = _load_data(config)
    classes = 0 if segment else int(max(y_train.max(), y_test.max())) + 1
    n_in = x_train.shape[1]
    spec = MODELS[config["model"]]
    _check_model_size(spec, config, n_in, classes)
    try:
        model = spec.build(config, n_in, classes)
    except ValueError as exc:
        raise CommandError(f"--model {config['model']}: {exc}") from None
    skip_single = _check_batches(model, config, len(x_train))
    engine = (_Torch if config["engine"] == "torch" else _Autodiff)(model, config, segment)
    folder, created = _run_folder(config)
    try:
        config = {
            **config,
            "out": str(folder),
            "data_dir": str(Path(config["data_dir"]).resolve()) if config["data_dir"] else None,
            "tropic_version": tropic.__version__,
            "versions": _versions(config["engine"]),
            "task": "segment" if segment else "classify",
            "input_shape": list(x_train.shape[1:]),
            "classes": classes,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        if not quiet:
            print(
                f"{config['model']} on {config['dataset']} ({len(x_train)} train / {len(x_test)} test, "
                f"{x_train.shape[1:]} inputs) with {config['engine']}, {_count(model)} parameters -> {folder}"
            )
            if skip_single:
                print(
                    f"note: {len(x_train)} samples in batches of {config['batch_size']} leave a last batch "
                    f"of one sample, which BatchNorm cannot normalise in training mode: it is left out of "
                    f"each epoch (a different sample each time)"
                )

        rng = np.random.default_rng(config["seed"])
        rows: list[dict[str, Any]] = []
        data = (x_train, y_train, x_test, y_test)
        size = config["batch_size"]
        n_batches = len(x_train) // size if skip_single else math.ceil(len(x_train) / size)
        with progress.bar(config["epochs"] * n_batches, "training", quiet=quiet, unit="batch") as bar:
            for epoch in range(1, config["epochs"] + 1):
                rows.append(_epoch(engine, epoch, data, config, rng, skip_single, bar))
                if not quiet:
                    progress.write(_epoch_line(rows[-1], config["epochs"]))

        final = {k: v for k, v in rows[-1].items() if k not in ("epoch", "samples_per_s", "seconds")}
        final["train_seconds"] = sum(r["seconds"] for r in rows)
        if config["model"] == "bise":
            final["bise"] = _bise_report(engine.tropic_model(), config, segment)
        engine.save(folder)
        metrics = {"epochs": rows, "final": final}
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        with open(folder / "metrics.csv", "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        _plots(folder, rows, config, engine, segment)
    except BaseException:  # a NaN gradient, an interruption, a full disk: no half-written run folder
        _remove_run(folder, created)
        raise
    if not quiet and "binary_test_accuracy" in final:
        print(f"binarised network: test accuracy {final['binary_test_accuracy']:.4f}")
    print(f"run folder: {folder}")
    return {**metrics, "run": folder}


def _epoch(
    engine: Any,
    epoch: int,
    data: tuple[np.ndarray, ...],
    config: dict[str, Any],
    rng: np.random.Generator,
    skip_single: bool,
    bar: Any = None,
) -> dict[str, Any]:
    """One pass over the training set in random batches, then the test metrics: the epoch's row.

    ``bar`` (a :func:`tropic.apps.progress.bar`) advances by one per batch. A non-finite gradient or
    loss is a :class:`CommandError` naming the epoch and batch.
    """
    from tropic.nn.data import batches

    x_train, y_train, x_test, y_test = data
    segment = config["dataset"] == "diskorect"
    start = time.perf_counter()
    losses, correct_weight, seen = [], 0.0, 0
    for i, (xb, yb) in enumerate(batches(x_train, y_train, config["batch_size"], rng=rng), 1):
        if skip_single and len(xb) == 1:
            continue
        try:
            loss, out = engine.step(xb, yb)
        except FloatingPointError as exc:
            raise CommandError(f"epoch {epoch}, batch {i}: {exc}: lower --lr or check the data") from None
        if not math.isfinite(loss):
            raise CommandError(f"the loss became {loss} at epoch {epoch}: lower --lr")
        losses.append(loss * len(xb))
        correct_weight += _accuracy(out, yb, segment) * len(xb)
        seen += len(xb)
        if bar is not None:
            bar.set_postfix_str(f"epoch {epoch}/{config['epochs']}, loss {loss:.4f}", refresh=False)
            bar.update(1)
    train_seconds = time.perf_counter() - start
    return {
        "epoch": epoch,
        "loss": sum(losses) / seen,
        "train_accuracy": correct_weight / seen,
        **_test_metrics(engine.predict, x_test, y_test, config, segment),
        "samples_per_s": seen / train_seconds,
        "seconds": time.perf_counter() - start,
    }


def _set_threads(config: dict[str, Any]) -> Any:
    """``--threads N``: tropic's kernels and, with ``--engine torch``, torch's intra-op pool. Returns
    the function that puts the previous settings back."""
    from tropic.core import config as settings

    n = config.get("threads")
    if n is None:
        return lambda: None
    before = settings._num_threads
    settings.set_num_threads(n)
    if config["engine"] != "torch":
        return lambda: settings.set_num_threads(before)
    import torch

    torch_before = torch.get_num_threads()
    torch.set_num_threads(n)

    def restore() -> None:
        settings.set_num_threads(before)
        torch.set_num_threads(torch_before)

    return restore


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    width = len(str(epochs))
    line = (
        f"epoch {row['epoch']:{width}d}/{epochs}  loss {row['loss']:.4f}"
        f"  train acc {row['train_accuracy']:.4f}  test acc {row['test_accuracy']:.4f}"
    )
    if "binary_test_accuracy" in row:
        line += f"  binarised {row['binary_test_accuracy']:.4f}"
    return line + f"  {row['samples_per_s']:,.0f} samples/s  ({row['seconds']:.1f} s)"


def _check_paths(config: dict[str, Any]) -> None:
    """The folders of ``--data-dir`` and ``--out``, before anything is read or trained."""
    from .paths import check_input_folder, check_output_folder

    if config["data_dir"]:
        check_input_folder("--data-dir", config["data_dir"])
    if config["out"]:
        check_output_folder("--out", config["out"], hint="choose another --out")


def _run_folder(config: dict[str, Any]) -> tuple[Path, list[Path]]:
    """The run folder, created if needed, and the folders created for it (``(folder, created)``,
    outermost first); ``--out`` was checked by :func:`_check_paths`."""
    from .paths import make_folder

    if config["out"]:
        folder = Path(config["out"])
    else:
        stem = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{config['model']}"
        folder, n = stem, 1
        while folder.exists():
            n += 1
            folder = stem.with_name(f"{stem.name}-{n}")
    return folder, make_folder("--out", folder)


#: Every file a run writes into its folder (removed again when the run fails).
_RUN_FILES = ("config.json", "metrics.json", "metrics.csv", "curves.png", "structuring_elements.png")


def _remove_run(folder: Path, created: list[Path]) -> None:
    """Undo :func:`_run_folder` and the files written into it, after a failed or interrupted training."""
    for name in (*_RUN_FILES, _Autodiff.file, _Torch.file):
        (folder / name).unlink(missing_ok=True)
    for path in reversed(created):
        try:
            path.rmdir()
        except OSError:  # something else was written there meanwhile: leave it
            return


def _check_batches(model: Any, config: dict[str, Any], n_train: int) -> bool:
    """Check that training batches can be normalised; return whether the last batch of each epoch,
    one sample, must be left out.

    BatchNorm in training mode normalises each feature over the batch: with one sample there is
    nothing to normalise (the variance is 0, the output undefined), and the layer raises. So a model
    with BatchNorm refuses ``--batch-size 1`` and a training set of one sample, and leaves out the
    one-sample last batch that ``n_train % batch_size == 1`` gives (a different sample each epoch,
    as the order is shuffled).
    """
    import tropic.nn as nn

    if not any(isinstance(m, nn.BatchNorm1d) and not isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return False
    why = f"--model {config['model']} has BatchNorm, which cannot normalise a batch of one sample in training"
    if config["batch_size"] == 1:
        raise CommandError(f"--batch-size 1: {why}; use --batch-size 2 or more")
    if n_train < 2:
        raise CommandError(f"the training set has {n_train} sample: {why}")
    return n_train % config["batch_size"] == 1


def _check_model_size(spec: Any, config: dict[str, Any], n_in: int, classes: int) -> None:
    """Refuse a ``--width`` / ``--blocks`` whose model would not fit in memory, before building it.

    Training holds about four times the parameters (weights, gradients, two Adam moments): that must
    fit in this machine's memory (see :func:`_model_bytes` for the size).
    """
    width, blocks = config["width"], config["blocks"]
    if width <= 6 and blocks <= 1:
        return
    sizes = _model_bytes(spec, config, n_in, classes)
    if sizes is None:
        return  # the real build reports the model's own error
    total, per_block = sizes
    memory = _physical_memory()
    if 4 * total > memory:
        knobs = "--width and --blocks" if per_block else "--width"
        raise CommandError(
            f"--width {width}{f' --blocks {blocks}' if per_block else ''}: --model {config['model']} "
            f"would hold {_bytes(total)} of parameters, and training about 4x that, more than this "
            f"machine's {_bytes(memory)} of memory: lower {knobs}"
        )


def _model_bytes(spec: Any, config: dict[str, Any], n_in: int, classes: int) -> tuple[int, int] | None:
    """Bytes of parameters and buffers of the model ``config`` asks for, without building it, and the
    bytes each block adds: ``(total, per_block)`` (None if a tiny model cannot be built).

    Every model's size is a quadratic polynomial in the width (layers of width x width at most),
    plus ``blocks`` times another: both are read off six builds of tiny models (widths 2, 4 and 6;
    0 and 1 blocks), so no formula is written twice.
    """
    sizes = {}
    for w in (2, 4, 6):
        for b in (0, 1):
            try:
                model = spec.build({**config, "width": w, "blocks": b}, n_in, classes)
            except ValueError:
                return None
            sizes[w, b] = sum(a.nbytes for a in _arrays(model))

    def at(b: int) -> int:  # Lagrange through widths 2, 4 and 6, exact in integers
        s2, s4, s6, w = sizes[2, b], sizes[4, b], sizes[6, b], config["width"]
        return (s2 * (w - 4) * (w - 6) - 2 * s4 * (w - 2) * (w - 6) + s6 * (w - 2) * (w - 4)) // 8

    base, per_block = at(0), at(1) - at(0)
    return base + config["blocks"] * per_block, per_block


def _arrays(model: Any) -> list[Any]:
    return [p.data for p in model.parameters()] + list(model.buffers())


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # not POSIX: assume a small machine
        return 8 << 30


def _bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def _versions(engine: str) -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "numpy": np.__version__}
    if engine == "torch":
        import torch

        versions["torch"] = torch.__version__
    return versions


def _count(model: Any) -> int:
    return int(sum(int(np.isfinite(np.asarray(p.numpy())).sum()) for p in model.parameters()))


def _bise_report(model: Any, config: dict[str, Any], segment: bool) -> list[dict[str, Any]] | dict:
    """What each binarisable layer became: the operation, whether it is exact (activated) and, on
    diskorect, whether the structuring element is the target's."""
    import tropic.nn as nn
    from tropic.apps.datasets import _parse_target, structuring_element

    if not segment:
        layer = model[0]
        read = layer.binarized()
        return {"activated_neurons": int(read.activated.sum()), "neurons": len(read.activated)}
    operation, shape, size = _parse_target(config["target"])
    expected = {"dilation": ["dilation"], "erosion": ["erosion"], "opening": ["erosion", "dilation"]}
    expected_ops = expected.get(operation, ["dilation", "erosion"])
    se = structuring_element(shape, size)
    report = []
    for layer, wanted in zip([m for m in model if isinstance(m, nn.BiSE)], expected_ops, strict=True):
        read = layer.binarized()
        learned = read.structuring_elements[0, 0]
        report.append(
            {
                "operation": read.operations[0],
                "activated": bool(read.activated[0]),
                "expected_operation": wanted,
                "matches_target": bool(read.operations[0] == wanted and np.array_equal(learned, se)),
            }
        )
    return report


def _plots(
    folder: Path, rows: list[dict[str, Any]], config: dict[str, Any], engine: Any, segment: bool
) -> None:
    from tropic.apps.plots import image_grid, line_plots  # matplotlib itself is imported when drawing

    epochs = [r["epoch"] for r in rows]
    accuracy = {
        "train": (epochs, [r["train_accuracy"] for r in rows]),
        "test": (epochs, [r["test_accuracy"] for r in rows]),
    }
    if "binary_test_accuracy" in rows[0]:
        accuracy["test, binarised"] = (epochs, [r["binary_test_accuracy"] for r in rows])
    kind = "pixel accuracy" if segment else "accuracy"
    panels = [
        {"series": {"train": (epochs, [r["loss"] for r in rows])}, "title": "loss", "xlabel": "epoch"},
        {"series": accuracy, "title": kind, "xlabel": "epoch", "ylabel": kind},
    ]
    title = f"{config['model']} on {config['dataset']} ({config['engine']})"
    try:
        line_plots(panels, folder / "curves.png", title=title)
        if segment:
            from tropic.apps.datasets import _parse_target, structuring_element

            _, shape, size = _parse_target(config["target"])
            model = engine.tropic_model()
            weights = [layer.weight.numpy()[0, 0] for layer in model]
            read = [layer.binarized() for layer in model]
            images = [structuring_element(shape, size).astype(float), *weights]
            images += [r.structuring_elements[0, 0].astype(float) for r in read]
            titles = [f"target {config['target']}"] + [f"W{i + 1}" for i in range(len(weights))]
            titles += [f"S{i + 1} ({r.operations[0]})" for i, r in enumerate(read)]
            image_grid(
                images, folder / "structuring_elements.png", titles=titles, title=title, columns=len(images)
            )
    except ImportError as exc:
        print(f"tropic: no plots ({exc})", file=sys.stderr)


# -- reading a run back --------------------------------------------------------------------------


def load_run(folder: str | Path) -> tuple[Any, dict[str, Any]]:
    """The trained model of a run folder and its config: a :mod:`tropic.nn` model (autodiff runs) or
    a torch module (torch runs), in evaluation mode."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CommandError(f"{folder} is not a run folder ({exc})") from None
    shape = config["input_shape"]
    n_in = shape[0] if config["task"] == "segment" else int(np.prod(shape))
    model = MODELS[config["model"]].build(config, n_in, config["classes"])
    if config["engine"] == "torch":
        torch, tnn = _torch_modules()
        device = _torch_device(torch, config["device"])
        model = tnn.from_tropic(model, device=device)
        model.load_state_dict(torch.load(folder / _Torch.file, map_location=device))
    else:
        model.load(folder / _Autodiff.file)
    model.eval()
    return model, config


def evaluate(folder: str | Path) -> dict[str, float]:
    """Reload a run's model and data and recompute its test metrics (as in ``metrics.json``)."""
    model, config = load_run(folder)
    segment = config["task"] == "segment"
    _, _, x_test, y_test = _load_data(config)
    if config["engine"] == "torch":
        device = next(model.parameters()).device

        def predict(x: np.ndarray, binary: bool = False) -> np.ndarray:
            return _predict_torch(model, x, binary, device)
    else:

        def predict(x: np.ndarray, binary: bool = False) -> np.ndarray:
            return _predict_autodiff(model, x, binary)

    return _test_metrics(predict, x_test, y_test, config, segment)
