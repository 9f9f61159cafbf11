"""A training step of each paper's flagship model: tropic against the papers' formulation and the
linear network of the same shape (the models and the three formulations: :mod:`tropic.apps.model_steps`).

``time_training_step`` / ``peakmem_training_step``: one step (forward, loss, backward, Adam) of each
model written each way. ``ModelStepRatios`` tracks the same-run ratios, which stay readable across
machines: the papers' formulation's time over tropic's (above 1: tropic is faster) and tropic's time
over the linear network's (the target is at most 1.5). ``tropic bench --models`` prints the same
steps as a table with the peak memory of each in a fresh process.
"""

from __future__ import annotations

from tropic.apps.model_steps import IMPLEMENTATIONS, MODELS, training_step

from .common import SMOKE, Benchmark, preload_torch, require_torch

preload_torch(optimizers=True)


class ModelTrainingStep(Benchmark):
    """One training step of ``model`` written as ``implementation`` (float32, CPU torch tensors)."""

    params = (MODELS, IMPLEMENTATIONS)
    param_names = ("model", "implementation")

    def setup(self, model, implementation):
        require_torch()
        self.run = training_step(model, implementation, quick=SMOKE)

    def time_training_step(self, model, implementation):
        self.run()

    def peakmem_training_step(self, model, implementation):
        self.run()


class ModelStepRatios(Benchmark):
    """Same-run ratios of the medians of 5 steps after a warm-up, per model."""

    params = (MODELS,)
    param_names = ("model",)
    unit = "ratio"

    def setup(self, model):
        require_torch()
        from tropic.apps.bench import measure

        self.seconds = {i: measure(training_step(model, i, quick=SMOKE), 5)[0] for i in IMPLEMENTATIONS}

    def track_tropic_over_paper(self, model):
        return self.seconds["tropic"] / self.seconds["paper"]

    def track_tropic_over_linear(self, model):
        return self.seconds["tropic"] / self.seconds["linear"]
