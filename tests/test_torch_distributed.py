"""tropic layers under torch.distributed on the CPU (gloo, 2 processes): DDP, FSDP1, FSDP2.

One model holds every tropic.torch.nn layer. Trained for a few SGD steps on two ranks, each on half
of a batch, it must end where single-process training on the whole batch ends (float64: the
all-reduce sums the two halves' gradients in another order, so to 1e-12, not bitwise), and the
ranks must agree bitwise. FSDP frees parameters by resizing their storage to 0, which fails on
storage that a NumPy view pinned (``Tensor.numpy()``): tropic reads tensors through DLPack.
"""

from __future__ import annotations

import importlib

import pytest

torch = pytest.importorskip("torch")
tnn = importlib.import_module("tropic.torch.nn")  # torch is here: fail, not skip
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")

F64 = torch.float64
WORLD = 2
STEPS = 3
KINDS = ("ddp", "fsdp1", "fsdp2")


def every_layer() -> torch.nn.Sequential:
    """Each tropic layer once, in float64, on a (8, 2, 6, 6) input; seeded (torch's Linear too)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        tnn.Dilation2d(2, 3, init="normal", seed=1, dtype=F64),
        tnn.Erosion2d(2, 3, init="normal", seed=2, dtype=F64),
        tnn.MaxPlusConv2d(2, 3, 3, padding=1, seed=3, dtype=F64),
        tnn.MinPlusConv2d(3, 2, 3, padding=1, init="sparse", p=0.7, seed=4, dtype=F64),
        tnn.BiSEL(2, 2, 3, seed=5, dtype=F64),
        tnn.BiSE(2, 2, 3, seed=6, dtype=F64),
        tnn.LUI(2, 2, seed=7, dtype=F64),
        torch.nn.Flatten(),
        torch.nn.Linear(72, 8, dtype=F64),
        tnn.MaxPlus(8, 6, seed=8, dtype=F64),
        tnn.MinPlus(6, 6, init="sparse", p=0.6, seed=9, dtype=F64),
        tnn.DilationErosion(6, 3, 2, seed=10, dtype=F64),
        tnn.Maxout(5, 6, 2, seed=11, dtype=F64),
        tnn.MPM(6, 6, seed=12, dtype=F64),
        tnn.DEP(6, 6, seed=13, dtype=F64),
        tnn.DiagonalActivation(6, seed=14, dtype=F64),
        tnn.SVDActivation(6, seed=15, dtype=F64),
        tnn.MPMResidual(6, seed=16, dtype=F64),
        tnn.DenseLUI(6, 4, seed=17, dtype=F64),
    )


def batch(rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, 6, 6, generator=g, dtype=F64)
    t = torch.randn(8, 4, generator=g, dtype=F64)
    n = len(x) // world
    return x[rank * n : (rank + 1) * n], t[rank * n : (rank + 1) * n]


def train(model: torch.nn.Module, rank: int, world: int) -> None:
    """SGD on the mean squared error of this rank's part; the ranks' gradients are averaged."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    x, t = batch(rank, world)
    for _ in range(STEPS):
        opt.zero_grad()
        (((model(x) - t) ** 2).sum() / len(x)).backward()
        opt.step()


def wrap(model: torch.nn.Module, kind: str) -> torch.nn.Module:
    if kind == "ddp":
        return torch.nn.parallel.DistributedDataParallel(model)
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(model, device_id=torch.device("cpu"), use_orig_params=True)
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if any(True for _ in layer.parameters()):
            fully_shard(layer)
    return fully_shard(model)


def full_state(model: torch.nn.Module, kind: str) -> dict[str, torch.Tensor]:
    if kind == "ddp":
        return {k: v.clone() for k, v in model.module.state_dict().items()}
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        config = FullStateDictConfig(rank0_only=False)
        with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
            return {k.replace("_fsdp_wrapped_module.", ""): v.clone() for k, v in model.state_dict().items()}
    # Parameters are sharded (DTensors); buffers are not.
    state = model.state_dict()
    return {k: v.full_tensor() if hasattr(v, "full_tensor") else v.clone() for k, v in state.items()}


def worker(rank: int, world: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        states = {}
        for kind in KINDS:
            model = wrap(every_layer(), kind)
            train(model, rank, world)
            states[kind] = full_state(model, kind)
        torch.save(states, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The full state each rank ends with, per kind, and single-process training's."""
    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp("distributed")
    out = str(root / "state")
    # The workers import this module by name (spawn passes them the parent's sys.path).
    mp.spawn(worker, args=(WORLD, str(root / "init"), out), nprocs=WORLD, join=True)
    ranks = [torch.load(f"{out}.{rank}") for rank in range(WORLD)]
    single = every_layer()
    train(single, 0, 1)
    return ranks, single.state_dict()


@pytest.mark.parametrize("kind", KINDS)
def test_ranks_agree_and_match_single_process_training(trained, kind):
    ranks, single = trained
    for rank in range(1, WORLD):
        assert sorted(ranks[rank][kind]) == sorted(ranks[0][kind])
        for key, value in ranks[0][kind].items():
            assert torch.equal(ranks[rank][kind][key], value), (kind, key)
    assert sorted(ranks[0][kind]) == sorted(single)
    for key, value in single.items():
        got = ranks[0][kind][key]
        assert torch.equal(torch.isinf(got), torch.isinf(value)), (kind, key)  # tropical zeros kept
        torch.testing.assert_close(got, value, rtol=1e-12, atol=1e-12, msg=f"{kind} {key}")
    # Training moved every layer's parameters (the test is not passing on an untouched model).
    start = every_layer().state_dict()
    moved = [k for k in single if not torch.equal(single[k], start[k])]
    assert len(moved) >= len([k for k in single if single[k].is_floating_point()]) // 2


def test_forward_and_backward_leave_parameter_storage_resizable():
    """FSDP's free (resize the storage to 0) works after tropic read the parameters."""
    model = every_layer()
    x, t = batch(0, 1)
    ((model(x) - t) ** 2).sum().backward()
    model.eval()(x)  # and a forward without autograd recording
    for name, p in model.named_parameters():
        p.data.untyped_storage().resize_(0)  # raises on pinned storage
        assert p.data.untyped_storage().nbytes() == 0, name
