"""``tropic train`` in-process: run folders of a few models on both engines, the embedded default's
accuracy, real-data formats from tiny files, and one-line errors (status 2) for user mistakes."""

from __future__ import annotations

import csv
import dataclasses
import importlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from tropic.apps.cli import main

from .test_datasets import idx_bytes, write_cifar, write_mnist

pytest.importorskip("sklearn", reason="scikit-learn (the test extra) provides the digits data")
pytest.importorskip("matplotlib", reason="the run folder's curves.png needs matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


def torch_engine():
    pytest.importorskip("torch")
    importlib.import_module("tropic.torch.nn")  # with torch installed, a broken import must fail


def train(capsys, *args):
    status = main(["train", *args])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def check_run(folder, epochs):
    """The run folder's files parse and agree; the saved model reproduces the test accuracy."""
    from tropic.apps.cli.train import evaluate

    config = json.loads((folder / "config.json").read_text())
    assert Path(config["out"]).resolve() == folder.resolve() and config["epochs"] == epochs
    assert {"tropic_version", "model", "engine", "dataset", "lr", "input_shape"} <= set(config)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["epochs"]] == list(range(1, epochs + 1))
    with open(folder / "metrics.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == epochs
    for row, saved in zip(rows, metrics["epochs"], strict=True):
        assert set(row) == set(saved)
        assert float(row["test_accuracy"]) == pytest.approx(saved["test_accuracy"], abs=1e-12)
        assert float(row["samples_per_s"]) > 0
    assert (folder / "curves.png").read_bytes()[:8] == PNG
    model_file = folder / ("model.pt" if config["engine"] == "torch" else "model.npz")
    assert model_file.stat().st_size > 0
    again = evaluate(folder)
    for key, value in again.items():
        assert value == metrics["final"][key], key
    return config, metrics


def test_default_run_reaches_90_percent(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = train(capsys)
    match = re.search(r"^final test accuracy: (\d\.\d+)$", out, re.MULTILINE)
    assert match and float(match.group(1)) >= 0.9
    assert out.rstrip().endswith(match.group(0))
    assert len(re.findall(r"^epoch +\d+/10 .* samples/s", out, re.MULTILINE)) == 10
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.endswith("-sparse-hybrid")
    config, metrics = check_run(folder, 10)
    assert (config["model"], config["engine"], config["dataset"]) == ("sparse-hybrid", "autodiff", "digits")
    assert metrics["final"]["test_accuracy"] == pytest.approx(float(match.group(1)), abs=5e-5)


@pytest.mark.parametrize(
    ("model", "engine", "extra"),
    [
        ("relu", "autodiff", ["--optimizer", "sgd", "--lr", "0.05"]),
        ("maxout", "autodiff", ["--optimizer", "adamw"]),
        ("rmpm-dropout", "autodiff", ["--blocks", "1"]),
        ("mpm-svd", "autodiff", ["--blocks", "1"]),
        ("bise", "autodiff", ["--regularization", "0.01"]),
        ("sparse-hybrid", "torch", []),
        ("hybrid-mlp", "torch", ["--blocks", "1"]),
        ("bise", "torch", []),
    ],
)
def test_one_epoch_run_folder(capsys, tmp_path, model, engine, extra):
    if engine == "torch":
        torch_engine()
    folder = tmp_path / "run"
    out = train(capsys, "--model", model, "--engine", engine, "--epochs", "1", "--width", "16",
                "--out", str(folder), *extra)  # fmt: skip
    assert "epoch 1/1" in out and "final test accuracy" in out
    config, metrics = check_run(folder, 1)
    assert (config["model"], config["engine"], config["width"]) == (model, engine, 16)
    if model == "bise":  # the DenseLUI classifier also reports its binarised accuracy
        assert 0.0 <= metrics["final"]["binary_test_accuracy"] <= 1.0
        assert config["threshold"] == 0.5


def test_autodiff_model_reloads_and_predicts(capsys, tmp_path):
    from tropic.apps import datasets
    from tropic.apps.cli.train import load_run

    folder = tmp_path / "run"
    train(capsys, "--model", "relu", "--epochs", "2", "--width", "32", "--seed", "3", "--out", str(folder))
    model, config = load_run(folder)
    _, _, x_test, y_test = datasets.load("digits", seed=3, flatten=True)
    accuracy = float(np.mean(np.argmax(model(x_test).numpy(), axis=1) == y_test))
    assert accuracy == json.loads((folder / "metrics.json").read_text())["final"]["test_accuracy"]
    assert config["seed"] == 3


@pytest.mark.parametrize("engine", ["autodiff", "torch"])
def test_bise_learns_a_dilation_exactly(capsys, tmp_path, engine):
    if engine == "torch":
        torch_engine()
    folder = tmp_path / "run"
    train(capsys, "--model", "bise", "--dataset", "diskorect", "--target", "dilation:cross:3", "--engine",
          engine, "--epochs", "12", "--out", str(folder), "--quiet")  # fmt: skip
    config, metrics = check_run(folder, 12)
    final = metrics["final"]
    assert config["task"] == "segment" and config["batch_size"] == 16  # the segmentation defaults
    assert final["binary_test_dice_error"] == 0.0 and final["binary_test_accuracy"] == 1.0
    assert final["bise"] == [
        {"operation": "dilation", "activated": True, "expected_operation": "dilation", "matches_target": True}
    ]
    assert (folder / "structuring_elements.png").read_bytes()[:8] == PNG


def test_real_data_formats(capsys, tmp_path):
    write_mnist(tmp_path / "fashion", n_train=40, n_test=10, gz=True)
    folder = tmp_path / "run-fashion"
    train(capsys, "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "fashion"), "--model", "relu",
          "--epochs", "1", "--width", "8", "--out", str(folder))  # fmt: skip
    config, _ = check_run(folder, 1)
    assert config["input_shape"] == [784] and config["classes"] == 10
    write_cifar(tmp_path / "cifar" / "cifar-10-batches-py", per_batch=6)
    folder = tmp_path / "run-cifar"
    train(capsys, "--dataset", "cifar10", "--data-dir", str(tmp_path / "cifar"), "--model", "mpm",
          "--blocks", "0", "--epochs", "1", "--width", "8", "--out", str(folder), "--quiet")  # fmt: skip
    config, _ = check_run(folder, 1)
    assert config["input_shape"] == [3072] and config["data_dir"] == str((tmp_path / "cifar").resolve())


def test_config_file_and_command_line_override(capsys, tmp_path):
    first = tmp_path / "first"
    options = tmp_path / "options.json"
    options.write_text(json.dumps({"model": "relu", "epochs": 1, "width": 8, "batch-size": 64}))
    train(capsys, "--config", str(options), "--width", "12", "--out", str(first), "--quiet")
    config = json.loads((first / "config.json").read_text())
    assert (config["model"], config["epochs"], config["width"], config["batch_size"]) == ("relu", 1, 12, 64)
    # a run's own config.json is a valid --config (its informational keys are ignored)
    second = tmp_path / "second"
    train(capsys, "--config", str(first / "config.json"), "--out", str(second), "--quiet")
    again = json.loads((second / "config.json").read_text())
    assert {k: v for k, v in again.items() if k != "out"} == {k: v for k, v in config.items() if k != "out"}
    first_metrics = json.loads((first / "metrics.json").read_text())["final"]
    assert (
        json.loads((second / "metrics.json").read_text())["final"]["test_accuracy"]
        == (first_metrics["test_accuracy"])
    )


def errors(tmp_path):
    bad_magic = tmp_path / "bad-magic"
    write_mnist(bad_magic)
    images = (bad_magic / "train-images-idx3-ubyte").read_bytes()
    (bad_magic / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x07" + images[4:])
    (tmp_path / "empty").mkdir()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "unknown.json").write_text('{"epochz": 3}')
    (tmp_path / "wrong-type.json").write_text('{"epochs": "3"}')
    (tmp_path / "list.json").write_text("[1]")
    labels = tmp_path / "labels"
    write_mnist(labels)
    (labels / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1, 11])))
    sizes = tmp_path / "sizes"
    write_mnist(sizes)
    (sizes / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 20, 20), np.uint8)))
    overflow = tmp_path / "overflow"
    write_mnist(overflow)
    (overflow / "train-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 4]) + b"\x00\x01\x00\x00" * 4)
    empty_images = tmp_path / "empty-images"
    write_mnist(empty_images, n_train=0)
    (tmp_path / "huge-float.json").write_text('{"lr": 1e400}')
    (tmp_path / "nan.json").write_text('{"lr": NaN}')
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "long-int.json").write_text('{"seed": ' + "7" * 5000 + "}")
    (tmp_path / "big-int.json").write_text('{"epochs": ' + "9" * 19 + "}")
    (tmp_path / "huge.json").write_text("{" + " " * (2 << 20) + "}")
    diskorect = ["--model", "bise", "--dataset", "diskorect"]

    def config(name):
        return ["--config", str(tmp_path / name)]

    return [
        (["--model", "resnet"], "invalid choice: 'resnet'"),
        (["--engine", "jax"], "invalid choice: 'jax'"),
        (["--epochs", "-1"], "--epochs must be at least 1, got -1"),
        (["--epochs", "x"], "invalid int value"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--lr", "0"], "--lr must be a positive number"),
        (["--lr", "nan"], "--lr must be a positive number"),
        (["--width", "0"], "--width must be at least 1"),
        (["--seed", "-2"], "--seed must be non-negative"),
        (["--test-fraction", "1.5"], "--test-fraction must be in (0, 1)"),
        (["--dataset", "mnist"], "--dataset mnist is read from local files: give --data-dir"),
        (["--dataset", "cifar10", "--data-dir", str(tmp_path / "empty")], "cifar10: "),
        (["--dataset", "mnist", "--data-dir", str(tmp_path / "empty")], "none of"),
        (["--dataset", "mnist", "--data-dir", str(tmp_path / "nowhere")], "does not exist"),
        (["--dataset", "mnist", "--data-dir", str(bad_magic)], "bad IDX magic number 0x00000807"),
        (["--dataset", "mnist", "--data-dir", str(labels)], "label 11 outside 0..9"),
        (["--dataset", "diskorect"], "only --model bise learns it, not sparse-hybrid"),
        (["--model", "bise", "--dataset", "diskorect", "--target", "thinning"], "--target: target must be"),
        (["--model", "bise", "--dataset", "diskorect", "--target", "erosion:disk:4"], "odd positive int"),
        (["--config", str(tmp_path / "missing.json")], "does not exist"),
        (["--config", str(tmp_path / "bad.json")], "not valid JSON"),
        (["--config", str(tmp_path / "unknown.json")], "unknown key(s) epochz"),
        (["--config", str(tmp_path / "wrong-type.json")], "--epochs has the wrong type: '3'"),
        (["--config", str(tmp_path / "list.json")], "expected a JSON object"),
        (["--out", str(tmp_path / "used")], "exists and is not empty"),
        (["--batch-size", "1"], "--batch-size 1: --model sparse-hybrid has BatchNorm, which cannot"),
        (config("huge-float.json"), "huge-float.json: the number 1e400 is out of range"),
        (config("nan.json"), "nan.json: NaN is not a valid option value"),
        (config("deep.json"), "deep.json: nested too deeply"),
        (config("long-int.json"), "long-int.json: an integer of 5000 digits is out of range"),
        (config("big-int.json"), "--epochs must be below 2**63, got a 19-digit int"),
        (config("huge.json"), "too large for options"),
        (["--seed", "9" * 30], "--seed must be below 2**63"),
        (["--width", "1000000000"], "--width 1000000000: --model sparse-hybrid would hold"),
        (["--model", "mpm", "--width", "100000", "--blocks", "100"], "lower --width and --blocks"),
        ([*diskorect, "--target", "dilation:disk:100001"], "at most 2 x 32 - 1 = 63 for 32 x 32 images"),
        (["--model", "bise", "--threshold", "nan"], "--threshold must be a finite number, got nan"),
        (["--model", "relu", "--preset", "reference"], "--model relu has no paper-code preset (models with"),
        (["--preset", "paper"], "invalid choice: 'paper'"),
        (["--dataset", "mnist", "--data-dir", str(sizes)], "holds 28 x 28 images but"),
        (["--dataset", "mnist", "--data-dir", str(overflow)], "implies 18446744073709551636"),
        (["--dataset", "mnist", "--data-dir", str(empty_images)], "train-images-idx3-ubyte: holds no images"),
    ]


def test_user_mistakes_give_one_line_and_status_2(capsys, tmp_path, monkeypatch):
    """Each mistake is one line, found before training starts: no run folder is left behind."""
    monkeypatch.chdir(tmp_path)
    for args, message in errors(tmp_path):
        assert main(["train", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("tropic: error: ") and message in err, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err
        assert not (tmp_path / "runs").exists(), args


def test_last_batch_of_one_sample_is_left_out_with_a_note(capsys, tmp_path):
    """1348 digits in batches of 449 leave one sample: BatchNorm cannot normalise it in training mode
    (it used to end in a traceback), so each epoch leaves it out and says so."""
    folder = tmp_path / "run"
    out = train(capsys, "--batch-size", "449", "--epochs", "2", "--width", "16", "--out", str(folder))
    assert "note: 1348 samples in batches of 449 leave a last batch of one sample" in out
    check_run(folder, 2)
    out = train(capsys, "--batch-size", "449", "--epochs", "1", "--model", "mpm", "--blocks", "0",
                "--width", "8", "--out", str(tmp_path / "mpm"))  # fmt: skip
    assert "note:" not in out  # no BatchNorm: every sample is used


def test_model_size_estimate_is_exact():
    """The memory check reads every model's size off tiny builds: it matches the real models."""
    from tropic.apps.cli.train import _arrays, _model_bytes, resolve_config
    from tropic.apps.cli.train_models import MODELS

    for name, spec in MODELS.items():
        for given in ({"width": 10, "blocks": 3}, {"width": 16, "blocks": 0}, {"dataset": "diskorect"}):
            if "dataset" in given and name != "bise":
                continue
            config = resolve_config({"model": name, **given})
            images = 3072 if name.startswith("cnn-") else 784 if "lenet5" in name else 64  # their sizes
            n_in, classes = (1, 0) if "dataset" in given else (images, 10)
            real = sum(a.nbytes for a in _arrays(spec.build(config, n_in, classes)))
            assert _model_bytes(spec, config, n_in, classes)[0] == real, (name, given)


def with_nan(data, index):
    x_train, y_train, x_test, y_test = data
    x_train = x_train.copy()
    x_train[index] = np.nan
    return x_train, y_train, x_test, y_test


def test_nan_in_the_data_is_refused_before_training(capsys, tmp_path, monkeypatch):
    from tropic.apps import datasets

    load = datasets.load
    monkeypatch.setattr(datasets, "load", lambda *a, **k: with_nan(load(*a, **k), (17, 5)))
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "tropic: error: --dataset digits: the training inputs hold NaN or infinite values (1 samples, "
        "the first at index 17): training needs finite data\n"
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("engine", ["autodiff", "torch"])
def test_nan_gradient_during_training_is_one_line_and_no_run_folder(capsys, tmp_path, monkeypatch, engine):
    """A step whose gradient is NaN (here from a NaN weight) stops the run with one line naming the
    epoch, the batch and the parameter, and removes the run folder it had started."""
    if engine == "torch":
        torch_engine()
    from tropic.apps.cli import train_models

    spec = train_models.MODELS["relu"]

    def build(config, n_in, classes):
        model = spec.build(config, n_in, classes)
        model[0].weight.data[0, 0] = np.nan
        return model

    monkeypatch.setitem(train_models.MODELS, "relu", dataclasses.replace(spec, build=build))
    folder = tmp_path / "run"
    assert main(["train", "--model", "relu", "--engine", engine, "--width", "8", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tropic: error: epoch 1, batch 1: step 1: the gradient of parameter '"), err
    assert err.count("\n") == 1 and err.rstrip().endswith("lower --lr or check the data")
    assert not folder.exists()


def test_torch_engine_without_tropic_torch(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tropic.torch", None)  # import tropic.torch now fails
    assert main(["train", "--engine", "torch", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--engine torch needs PyTorch and tropic.torch" in err and err.count("\n") == 1


def test_torch_device_errors(capsys, tmp_path):
    torch_engine()
    import torch

    cases = [("bogus", "is not a torch device")]
    if not torch.cuda.is_available():
        cases.append(("cuda", "torch sees no CUDA device"))
    for device, message in cases:
        assert main(["train", "--engine", "torch", "--device", device, "--out", str(tmp_path / device)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1


def test_torch_engine_without_the_layer(capsys, tmp_path, monkeypatch):
    torch_engine()
    from tropic.torch.nn import convert

    def unconvertible(layer, dtype, device):
        raise NotImplementedError(f"no torch equivalent of tropic.nn.{type(layer).__name__} yet")

    monkeypatch.setattr(convert, "_from_layer", unconvertible)
    assert main(["train", "--engine", "torch", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "--engine torch: no torch equivalent of tropic.nn.MaxPlus" in err and err.count("\n") == 1


def test_image_grid_png(tmp_path):
    from tropic.apps.plots import image_grid

    images = [np.eye(5), np.where(np.eye(3) > 0, 0.0, -np.inf), np.ones((1, 1, 3, 3))]
    path = image_grid(images, tmp_path / "g.png", titles=["a", "b", "c"], title="elements")
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="2 titles for 3 images"):
        image_grid(images, tmp_path / "h.png", titles=["a", "b"])
    with pytest.raises(ValueError, match="must be 2-d"):
        image_grid([np.ones((2, 3, 3))], tmp_path / "h.png")


def test_dmnn_models_on_digits_default_to_a_larger_learning_rate():
    """The DMNN paper's Adam 1e-3 assumes MNIST's ~40x more steps; on digits the default is 1e-2,
    elsewhere the paper's, and an explicit --lr always wins."""
    from tropic.apps.cli.train import resolve_config

    assert resolve_config({"model": "mpm"})["lr"] == 1e-2
    assert resolve_config({"model": "mpm", "dataset": "mnist", "data_dir": "."})["lr"] == 1e-3
    assert resolve_config({"model": "mpm", "lr": 5e-4})["lr"] == 5e-4
    assert resolve_config({"model": "sparse-hybrid"})["lr"] == 3e-3  # not a DMNN model


def test_preset_reference_builds_the_paper_codes_initialisation(capsys, tmp_path):
    """``--preset reference`` reaches the model (mp's first layer starts at W = -1 as in the paper's
    code), is saved in config.json and reloads; ``act-dep-fixed`` fixes the DEP mix at 3/4."""
    from tropic.apps.cli.train import load_run, resolve_config
    from tropic.apps.cli.train_models import MODELS

    config = resolve_config({"model": "mp", "preset": "reference", "width": 8, "blocks": 1})
    reference = MODELS["mp"].build(config, 6, 3)
    default = MODELS["mp"].build({**config, "preset": "tropic"}, 6, 3)
    assert (reference[0].weight.data == -1).all()
    assert not (default[0].weight.data == -1).any()
    fixed = MODELS["act-dep-fixed"].build(
        resolve_config({"model": "act-dep-fixed", "width": 8, "blocks": 1}), 6, 3
    )
    deps = [m for m in fixed.modules() if type(m).__name__ == "DEP"]
    assert deps and all((np.asarray(m.mix) == 0.75).all() for m in deps)
    out = tmp_path / "run"
    train(capsys, "--model", "mp", "--preset", "reference", "--epochs", "1", "--width", "8", "--blocks", "1",
          "--out", str(out), "--quiet")  # fmt: skip
    assert json.loads((out / "config.json").read_text())["preset"] == "reference"
    model, saved = load_run(out)
    assert saved["preset"] == "reference"


@pytest.mark.parametrize(
    ("model", "engine", "dataset"),
    [
        ("mpm-lenet5", "autodiff", "mnist"),
        ("resnet20", "torch", "mnist"),
        ("cnn-sparse", "autodiff", "cifar10"),
    ],
)
def test_convolutional_models_train_on_unflattened_images(capsys, tmp_path, model, engine, dataset):
    """The papers' convolutional networks take the flattened images back to (C, H, W) with their
    first layer, train, save and reload (check_run); LeNet-5 refuses 8 x 8 digits in one line."""
    if engine == "torch":
        pytest.importorskip("torch")
    if dataset == "mnist":
        write_mnist(tmp_path / "data", n_train=24, n_test=8)
    else:
        write_cifar(tmp_path / "data" / "cifar-10-batches-py", per_batch=4)
    folder = tmp_path / model
    data = ["--dataset", dataset, "--data-dir", str(tmp_path / "data")]
    train(capsys, *data, "--model", model, "--engine", engine, "--epochs", "1", "--batch-size", "8",
          "--out", str(folder), "--quiet")  # fmt: skip
    config, _ = check_run(folder, 1)
    assert config["input_shape"] == [784 if dataset == "mnist" else 3072]
    assert main(["train", "--model", "lenet5", "--out", str(tmp_path / "digits")]) == 2
    assert "it takes 28 x 28 images" in capsys.readouterr().err
