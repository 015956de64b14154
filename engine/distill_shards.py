"""Distillation over several processes: data parallel over the corpus rows, DDP on the student.

Every rank packs the same corpus rows and draws the same global batch of row indices each step (the
same seeded order as one process). Rank r owns the rows whose index is r modulo W (its corpus shard):
it computes (and caches) the teacher's hidden states of those rows only, and trains on the rows of
each global batch it owns. The student is wrapped in torch's DistributedDataParallel, which averages
the gradients over the ranks during backward; each rank scales its local mean loss by W × its share
of the batch's loss mass (rows, or the cue weights' sum), so the average is the gradient of the whole
batch's loss — the update one process would make, up to float summation order. A rank that owns no
row of a step still takes part (one of its own rows at weight 0): DDP needs every rank in every
backward. The step's loss, its parts and any rank's stop request ride in one all-reduce after it.

With one process nothing is wrapped and every row is this rank's: the single-process loop.
"""
from __future__ import annotations

import torch
from torch import nn

from engine import distributed
from engine.errors import PostError


class StudentForward(nn.Module):
    """The student's forward the loss needs: final hidden states only (`hidden`: no LM head), or the
    full output with hidden states (`kd`). A module, so DDP sees the forward it synchronises. `bridge`
    (hidden only): the final states stacked with the states entering every block after the first,
    (B, 1 + K, L, d), as engine.distill.teacher_states gives the teacher's."""

    def __init__(self, student: nn.Module, hidden_only: bool, bridge: bool = False):
        super().__init__()
        self.student, self.hidden_only, self.bridge = student, hidden_only, bridge

    def forward(self, input_ids: torch.Tensor, prefix: torch.Tensor | None = None, n_head: int = 0):
        if self.hidden_only and prefix is not None:  # engine.distill_prefix: the rows' own positions
            from engine.distill_prefix import final_hidden
            return final_hidden(self.student, input_ids, prefix, n_head)
        if self.hidden_only and self.bridge:
            out = self.student.base_model(input_ids=input_ids, output_hidden_states=True, use_cache=False)
            return torch.stack([out.last_hidden_state, *out.hidden_states[1:-1]], dim=1)
        if self.hidden_only:
            return self.student.base_model(input_ids=input_ids, use_cache=False).last_hidden_state
        return self.student(input_ids=input_ids, output_hidden_states=True, use_cache=False)


def wrap(student: nn.Module, hidden_only: bool, bridge: bool = False) -> nn.Module:
    """The forward to train through: DDP over the ranks when W > 1 (gloo on CPU, nccl on CUDA)."""
    forward = StudentForward(student, hidden_only, bridge)
    if not distributed.active():
        return forward
    from torch.nn.parallel import DistributedDataParallel
    device_ids = [student.device.index] if student.device.type == "cuda" else None
    # hidden-only: an untied LM head that is trained gets no gradient (the loss never reaches it)
    return DistributedDataParallel(forward, device_ids=device_ids, find_unused_parameters=hidden_only)


class RowSplit:
    """Which rows of a global batch this rank trains on, and its share of the batch's loss mass."""

    def __init__(self, n_rows: int, weights: torch.Tensor | None = None):
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if n_rows < self.world:
            raise PostError(f"the distillation corpus has {n_rows} rows, fewer than the {self.world} processes")
        self.weights = weights  # (rows, L) per-position loss weights, or None (every position counts 1)

    def owned(self, n_rows: int) -> torch.Tensor:
        """Global indices of this rank's corpus shard (the rows it caches teacher states for)."""
        return torch.arange(self.rank, n_rows, self.world)

    def local(self, picked: torch.Tensor) -> torch.Tensor:
        """Global row indices owned by this rank → positions in its shard (its cached states)."""
        return picked // self.world

    def mine(self, picked: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(this rank's rows of the global batch, their fraction of its loss mass). An empty share
        becomes this rank's first row at fraction 0: it runs forward and backward, contributing nothing."""
        keep = picked[picked % self.world == self.rank]
        if keep.numel() == 0:
            return torch.tensor([self.rank], dtype=picked.dtype), 0.0
        return keep, self._mass(keep) / self._mass(picked)

    def _mass(self, rows: torch.Tensor) -> float:
        if self.weights is None:
            return float(rows.numel())
        return float(self.weights[rows].float().sum())

    def grad_scale(self, fraction: float) -> float:
        """Multiplier of the local mean loss so DDP's mean over ranks is the global batch's gradient."""
        return fraction * self.world if distributed.active() else 1.0

    def reduce(self, loss: torch.Tensor, parts: dict[str, torch.Tensor], fraction: float,
               stop: bool) -> tuple[float, dict[str, float], bool]:
        """The global batch's loss and parts, and whether any rank asked to stop (one all-reduce)."""
        names = list(parts)  # the same order on every rank (the loss function builds it)
        if not distributed.active():
            return loss.item(), {k: parts[k].item() for k in names}, stop
        local = torch.tensor([float(loss) * fraction] + [float(parts[k]) * fraction for k in names] + [float(stop)],
                             dtype=torch.float64)
        total = distributed.all_reduce_sum(local)
        return float(total[0]), {k: float(total[1 + i]) for i, k in enumerate(names)}, bool(total[-1] > 0)


# ---------------------------------------------------------------- the teacher-state cache, per rank shard

def cache_path(folder, key: str):
    """Where this rank's teacher states go: `<key>.safetensors` with one process; with W processes
    `<key>.w<W>/shard-<r>.safetensors` (rows r, r+W, ...) beside the manifest rank 0 writes."""
    from pathlib import Path
    if not distributed.active():
        return Path(folder) / f"{key}.safetensors"
    return Path(folder) / f"{key}.w{distributed.world_size()}" / f"shard-{distributed.rank()}.safetensors"


def write_manifest(path, key: str, n_rows: int, shard_rows: int) -> None:
    """Every rank reports its shard (one gather); rank 0 writes `manifest.json` beside its own shard.
    On several machines each keeps its ranks' shards in its own cache; the manifest lists them all."""
    if not distributed.active():
        return
    import socket
    from pathlib import Path
    from engine import artifacts
    mine = {"rank": distributed.rank(), "host": socket.gethostname(), "file": Path(path).name, "rows": shard_rows,
            "sha256": artifacts.sha256_file(path) if Path(path).is_file() else None}
    shards = distributed.gather_objects(mine)
    if distributed.is_main():
        artifacts.write_json(Path(path).parent / "manifest.json",
                             {"key": key, "world": distributed.world_size(), "rows": n_rows,
                              "rows_of_rank": "r, r + world, r + 2·world, ...", "shards": shards})
