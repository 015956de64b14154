"""Several processes on torch.distributed (launched by torchrun): who is who, and one step's collective.

One process per device (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR, ...). Every rank runs the
same stages on the same data; rank 0 alone writes the run folder and talks to the user (see
`follower_scratch`). In the prompt-training loop each logical step is one *global* batch:

- every rank draws the same global batch (the same seeded sampler; under DP the same Poisson
  mask, its seed drawn from OS entropy on rank 0 and broadcast once: `same_on_every_rank`) and
  keeps its share of it (`shard`: every W-th example of the batch, so the union is exactly the
  batch one process would train on, whatever W is);
- `ShardedAggregator` turns the local per-example gradients into the global batch's gradient with
  ONE all-reduce (SUM, float32) per step — also on a rank whose share is empty, so no rank ever
  waits on a collective the others skip. Without DP that is the mean over the global batch. With
  DP each rank clips its own examples and sums them, rank 0 alone adds the noise N(0, σ²C²) to its
  sum before the all-reduce (noise once, not W times), and the total is divided by q·N: the same
  update as one process, so σ, q and ε do not depend on W. The batch's loss, and whether any rank
  was asked to stop (Ctrl-C, SIGTERM), ride in the same all-reduce: all ranks stop after the same step.

With one process (WORLD_SIZE unset or 1) nothing here is active and the loop is unchanged.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, NoReturn

import torch
import torch.distributed as dist

from engine.errors import PostError

# A collective waits this long for a rank that is gone; torchrun stops the other ranks as soon as one
# exits with an error, so this only bounds the odd case it cannot see. Long: the other ranks wait at a
# barrier while rank 0 distils (minutes to hours on real models).
TIMEOUT_S = 4 * 3600


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def active() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def launched_world() -> int:
    """The world size the launcher asked for (torchrun's WORLD_SIZE), 1 without a launcher."""
    raw = os.environ.get("WORLD_SIZE", "").strip() or "1"
    try:
        return int(raw)
    except ValueError:
        raise PostError(f"WORLD_SIZE={raw!r} is not a number of processes") from None


def init_from_env(device: str = "auto", timeout_s: float = TIMEOUT_S) -> bool:
    """Join the process group torchrun set up; True when W > 1. `device` is runtime.device: nccl
    when the ranks compute on CUDA (one GPU per process, the local rank's), gloo on the CPU.

    The world size seen is checked against WORLD_SIZE: a launcher that silently fell back to one
    process must not look like a distributed run."""
    want = launched_world()
    if want <= 1:
        return False
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
        if missing:
            raise PostError(f"WORLD_SIZE={want} but {', '.join(missing)} not set: start post with "
                            "torchrun --nproc_per_node=N -m post_tui.cli ...")
        backend = backend_for(device)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    seen = dist.get_world_size()
    if seen != want:
        raise PostError(f"torch.distributed sees {seen} processes but WORLD_SIZE={want}")
    return True


def backend_for(device: str, local: int | None = None) -> str:
    """nccl or gloo for runtime.device, refusing before any process group exists what nccl would
    only fail on later (two ranks on one GPU: nccl stops with "Duplicate GPU detected"). `local`:
    the processes on this machine (torchrun's LOCAL_WORLD_SIZE when not given)."""
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if not cuda:
        return "gloo"
    if device.startswith("cuda:"):
        raise PostError(f"runtime.device = {device} under several processes: each process takes the GPU of "
                        "its local rank; use runtime.device = \"cuda\" (or \"auto\")")
    if not torch.cuda.is_available():
        raise PostError("runtime.device = cuda under several processes but no CUDA device is available here: "
                        "use auto or cpu")
    if local is None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")) or 1)
    gpus = torch.cuda.device_count()
    if local > gpus:
        raise PostError(f"{local} processes on this machine but {gpus} GPU(s): nccl needs one GPU per process; "
                        f"use --nproc {gpus}, or runtime.device = \"cpu\" for processes on the CPU")
    return "nccl"


@contextlib.contextmanager
def main_first():
    """Rank 0 runs the block first while the others wait; then the others run it (and find rank 0's
    cached result). A no-op with one process."""
    if not active():
        yield
        return
    if not is_main():
        _collective(dist.barrier)
    yield
    if is_main():
        _collective(dist.barrier)


def barrier() -> None:
    """Every rank waits here for the others; a no-op with one process."""
    if active():
        _collective(dist.barrier)


def follower_scratch() -> Path:
    """A throwaway folder for a rank other than 0: its run folder, and its privacy ledger (so the
    user's ledger records each release once, from rank 0). Removed with the process's temp files."""
    folder = Path(tempfile.mkdtemp(prefix=f"post-rank{rank()}-"))
    os.environ["POST_LEDGER"] = str(folder / "ledger")
    return folder


def leave(code: int) -> NoReturn:
    """End a rank's process with `code`, skipping the interpreter's teardown.

    Why: a gloo worker thread drops its reference to a finished collective's tensors a moment after
    the collective returns; dropping it takes the GIL. When that moment falls in the interpreter's
    teardown, the thread is killed inside a C++ destructor and the process aborts (SIGABRT,
    "terminate called without an active exception") — a finished run would look failed to torchrun
    (measured: about one exit in three on a 2-core box; destroy_process_group does not join those
    threads in torch 2.13). Every file a run writes is complete before its stage returns (atomic
    writes), so only the console is left to flush."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to show
            pass
    os._exit(code)


# ---------------------------------------------------------------- collectives

def _collective(collective, *args, **kwargs):
    """A collective; a peer that died or timed out becomes a one-line PostError, not a traceback."""
    try:
        return collective(*args, **kwargs)
    except RuntimeError as err:  # gloo / nccl errors (DistBackendError is a RuntimeError)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise PostError(f"rank {rank()}: another process of this run stopped or timed out ({first}); "
                        "see its own error above") from None


def _device_for_collectives(like: torch.device | None = None) -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return like if like is not None else torch.device("cpu")


def same_on_every_rank(value: int) -> int:
    """Rank 0's `value` on every rank (one broadcast); the value itself when W = 1."""
    if not active():
        return value
    box = torch.tensor([int(value)], dtype=torch.int64, device=_device_for_collectives())
    _collective(dist.broadcast, box, src=0)
    return int(box.item())


def sync_tensor_(tensor: torch.Tensor) -> torch.Tensor:
    """Overwrite `tensor` with rank 0's copy (in place); a no-op when W = 1."""
    if active():
        device = _device_for_collectives(tensor.device)
        box = tensor.detach().to(device, torch.float32).contiguous()
        _collective(dist.broadcast, box, src=0)
        tensor.data.copy_(box.to(tensor.device, tensor.dtype))
    return tensor


def my_share(items: list) -> list:
    """Every W-th item, starting at this rank: each item is handled by exactly one rank."""
    return list(items)[rank()::world_size()]


def sum_over_ranks(count: int) -> int:
    """An integer summed over the ranks (exact, int64); the value itself when W = 1."""
    if not active():
        return count
    box = torch.tensor([int(count)], dtype=torch.int64, device=_device_for_collectives())
    _collective(dist.all_reduce, box, op=dist.ReduceOp.SUM)
    return int(box.item())


def shard(batches: Iterator[list[int]], rank_: int | None = None, world: int | None = None) -> Iterator[list[int]]:
    """This rank's share of each global batch: every W-th example, starting at the rank (may be empty)."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    for batch in batches:
        yield Share(list(batch)[r::w], batch)


class Share(list):
    """This rank's indices of a step; `.global_batch` is the whole batch (for tokens/s of the step)."""

    def __init__(self, mine: list[int], global_batch: list[int]):
        super().__init__(mine)
        self.global_batch = list(global_batch)


class ShardedAggregator:
    """The global batch's gradient from each rank's per-example gradients, in one all-reduce.

    `dp`: a DPSession (clip each, sum, noise once on rank 0, divide by q·N) or None (the mean over
    the global batch, weighted by each rank's number of examples)."""

    distributed = True

    def __init__(self, dp=None, cancel=None):
        self.dp, self.cancel = dp, cancel  # cancel: the run's threading.Event (Ctrl-C / SIGTERM)
        self.stop_requested = False  # set on every rank in the same step: the loop reads this, not `cancel`

    def reduce(self, per_example_grads: torch.Tensor, losses: torch.Tensor) -> tuple[torch.Tensor, float | None]:
        """(B_local, m, d) gradients and (B_local,) losses → (m, d) gradient, mean loss of the global batch."""
        grads = per_example_grads.detach().float()
        if self.dp is not None:
            local = self.dp.clipped_sum(grads)
            if is_main():
                local = local + self.dp.noise(local)  # once, in the sum every rank receives
        else:
            local = grads.sum(0)
        device = _device_for_collectives(local.device)
        cancelled = self.cancel is not None and self.cancel.is_set()
        stats = torch.tensor([float(losses.detach().float().sum()) if losses.numel() else 0.0,
                              float(grads.shape[0]), float(cancelled)], dtype=torch.float32)
        packed = torch.cat([local.flatten().to(device), stats.to(device)])
        _collective(dist.all_reduce, packed, op=dist.ReduceOp.SUM)
        packed = packed.to(local.device)
        total, loss_sum, count = packed[:-3].view_as(local), float(packed[-3]), int(round(float(packed[-2])))
        if float(packed[-1]) > 0:  # a rank was asked to stop: every rank stops after this same step
            self.stop_requested = True
            if self.cancel is not None:
                self.cancel.set()  # and the pipeline after the stage, as for a local Ctrl-C
        if self.dp is not None:
            grad = total / (self.dp.sample_rate * self.dp.n_examples)
        else:
            grad = total / max(count, 1)
        return grad, (loss_sum / count if count else None)


def spread(batches: Iterator[list[int]], aggregate, dp=None, cancel=None):
    """The training loop's (batches, aggregator) for this world: unchanged with one process, else
    this rank's shard of each global batch and the one-all-reduce aggregator (which also carries a
    cancel request of any rank to all, so all stop after the same step)."""
    if not active():
        return batches, aggregate
    return shard(batches), ShardedAggregator(dp, cancel)


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """`values` summed over the ranks (a copy; float64 stays float64); the values themselves when W = 1."""
    if not active():
        return values
    box = values.detach().clone().to(_device_for_collectives(values.device))
    _collective(dist.all_reduce, box, op=dist.ReduceOp.SUM)
    return box.to(values.device)


def gather_objects(obj) -> list:
    """Every rank's small picklable `obj`, in rank order, on every rank (one all_gather_object); [obj] when W = 1."""
    if not active():
        return [obj]
    out = [None] * world_size()
    _collective(dist.all_gather_object, out, obj)
    return out


def gather_rows(rows: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's `rows` (n_r, ...) and their int64 `index` (n_r,), concatenated in rank order on every
    rank (all_gather of tensors padded to the largest share; a rank's share may be empty)."""
    if not active():
        return rows, index
    sizes = gather_objects(int(rows.shape[0]))
    device = _device_for_collectives(rows.device)
    padded = torch.zeros(max(sizes), *rows.shape[1:], dtype=rows.dtype, device=device)
    padded[:rows.shape[0]] = rows.to(device)
    slot = torch.full((max(sizes),), -1, dtype=torch.int64, device=device)
    slot[:index.shape[0]] = index.to(device)
    got_rows = [torch.empty_like(padded) for _ in sizes]
    got_index = [torch.empty_like(slot) for _ in sizes]
    _collective(dist.all_gather, got_rows, padded)
    _collective(dist.all_gather, got_index, slot)
    return (torch.cat([g[:n] for g, n in zip(got_rows, sizes)]).to(rows.device),
            torch.cat([g[:n] for g, n in zip(got_index, sizes)]).to(index.device))
