"""Worker for tests/test_parallel_ranks.py: one training step on real gloo ranks (CPU, loopback).

``python tests/parallel_ranks.py --world-size W --port P`` forks W processes that:

1. run a data-parallel x context-parallel step (W=2: CP=2; W=4: DP=2 x CP=2, zigzag), each rank
   holding its rows and time chunks in uneven micro-batches (one empty), a float64 linear head
   under DistributedDataParallel (which averages the gradients), every shard's summed
   cross-entropy times ``W / N`` with the valid-token count ``N`` all-reduced once;
2. run megatron-core's own ``vocab_parallel_cross_entropy`` with tensor parallelism W (the head's
   columns split over the ranks), with and without label smoothing (skipped when megatron-core
   does not import; CI requires it, tests/test_frameworks_installed.py).

Rank 0 prints one JSON line per check: the relative error of the gradient against
``maskloss.value_and_grad`` on the whole batch, and for smoothing the distance to
maskloss.conventions.recipes' re-creation of megatron-core and to the global-vocabulary rule.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import maskloss
from maskloss.conventions import recipes
from maskloss.testing import TrainingShard

B, T, F_IN, C = 8, 8, 3, 8
LENGTHS = [8, 1, 0, 5, 3, 2, 7, 4]
SMOOTHING = 0.1
HAVE_MEGATRON = True  # main() clears it when megatron-core does not import


def _data():
    rng = np.random.default_rng(23)
    x = rng.normal(size=(B, T, F_IN))
    labels = rng.integers(0, C, (B, T))
    head = rng.normal(size=(F_IN, C))
    return x, labels, maskloss.mask_from_lengths(LENGTHS, T), head


def _oracle_head_grad(x, labels, mask, head, **options):
    _, g = maskloss.value_and_grad(maskloss.sparse_categorical_crossentropy)(
        labels, x @ head, mask, from_logits=True, **options)
    return np.einsum("btf,btc->fc", x, g)


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def dp_cp_step(rank, world, naive):
    x, labels, mask, head = _data()
    dp, cp = (1, 2) if world == 2 else (2, 2)
    per_rank = B // dp
    layout = maskloss.ShardLayout.split(B, T, ranks=dp, micro_batches=[1, 0, per_rank - 1],
                                        context_parallel=cp, zigzag=True)
    mine = [s for s in layout.shards if s.rank == rank]
    model = torch.nn.Linear(F_IN, C, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(head.T))
    ddp = torch.nn.parallel.DistributedDataParallel(model)  # averages gradients over the W ranks
    count = torch.tensor(float(sum(s.take(mask).sum() for s in mine)), dtype=torch.float64)
    dist.all_reduce(count)  # N: the valid tokens of the whole step, once
    for i, s in enumerate(mine):
        xs, ys, ms = (torch.from_numpy(s.take(a)) for a in (x, labels, mask))
        logits = ddp(xs)
        summed = torch.nn.functional.cross_entropy(logits[ms], ys[ms], reduction="sum")
        if naive:  # every shard's own mean, over the micro-batches: Megatron-LM#7513 / transformers#34191
            loss = summed / ms.sum().clamp(min=1) / len(mine)
        else:
            loss = summed * world / count
        if i < len(mine) - 1:
            with ddp.no_sync():
                loss.backward()
        else:
            loss.backward()
    grad = model.weight.grad.detach().numpy().T.copy()
    return _rel(grad, _oracle_head_grad(x, labels, mask, head))


def tensor_parallel(rank, world):
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    parallel_state.initialize_model_parallel(tensor_model_parallel_size=world)
    x, labels, mask, head = _data()
    width = C // world
    a, b = rank * width, (rank + 1) * width
    rows = {}
    for alpha in (0.0, SMOOTHING):
        local = torch.from_numpy(head[:, a:b].copy()).requires_grad_(True)
        logits = torch.from_numpy(x) @ local
        token = vocab_parallel_cross_entropy(logits, torch.from_numpy(labels), alpha)  # float32 inside
        valid = torch.from_numpy(mask)
        (token[valid].sum() / float(mask.sum())).backward()
        pieces = [torch.zeros(F_IN, width, dtype=torch.float64) for _ in range(world)]
        dist.all_gather(pieces, local.grad.detach())
        grad = torch.cat(pieces, dim=1).numpy()
        if alpha == 0.0:
            rows["tp"] = _rel(grad, _oracle_head_grad(x, labels, mask, head))
            continue
        # megatron's alpha is eps (V - 1) / V of maskloss's (torch's) rule; recipes takes eps
        eps = alpha * C / (C - 1)
        shards = [TrainingShard(labels, (x @ head)[..., r * width:(r + 1) * width], mask, None, 0, 0, ((0, T),),
                                (r * width, (r + 1) * width), tuple(range(B)), C) for r in range(world)]
        losses, _ = recipes._token_terms(shards, eps, local_smoothing=True)
        mine = token.detach().to(torch.float64).numpy()
        rows["tp_smoothing_vs_recreation"] = float(np.abs(np.where(mask, mine - losses[rank], 0.0)).max())
        gathered = [torch.zeros(B, T, dtype=torch.float64) for _ in range(world)]
        dist.all_gather(gathered, torch.from_numpy(np.where(mask, mine, 0.0)))
        spread = float(max(np.abs(g.numpy() - gathered[0].numpy()).max() for g in gathered))
        rows["tp_smoothing_ranks_disagree_by"] = spread  # one token, a different loss on each rank
        rows["tp_smoothing_vs_global"] = _rel(grad, _oracle_head_grad(x, labels, mask, head, label_smoothing=eps))
    return rows


def worker(rank, world, port):
    warnings.filterwarnings("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        out = {"dp_cp": dp_cp_step(rank, world, naive=False), "dp_cp_naive": dp_cp_step(rank, world, naive=True)}
        if HAVE_MEGATRON:
            out.update(tensor_parallel(rank, world))
        if rank == 0:
            for check, value in out.items():
                print(json.dumps({"world_size": world, "check": check, "value": value}), flush=True)
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    global HAVE_MEGATRON
    try:
        import megatron.core.tensor_parallel  # noqa: F401  (once, before the fork: ~5 s of CPU per import)
    except ImportError:  # the DP x CP step still runs; test_parallel_ranks skips the megatron checks
        HAVE_MEGATRON = False

    mp.start_processes(worker, args=(args.world_size, args.port), nprocs=args.world_size, join=True,
                       start_method="fork")


if __name__ == "__main__":
    main()
