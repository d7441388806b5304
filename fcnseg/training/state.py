"""What a checkpoint stores about a run beyond its model, and how a resumed run gets it back.

The run state is the position (update, epoch, batch in epoch, training time spent), the optimiser and gradient scaler,
every process's random states, the losses and learning rates of all updates, the validations so
far, the best mean IU, and where the current validation window began.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fcnseg.weights.checkpoint import load_checkpoint
from fcnseg.errors import CheckpointError, ConfigError
from fcnseg.training.sampling import seed_everything, set_rng_state

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


@dataclass
class RunState:
    """Where a run stands; ``losses[i]`` and ``lrs[i]`` belong to update ``i + 1``."""

    iteration: int = 0  # updates done
    epoch: int = 0
    batch_in_epoch: int = 0  # this process's batches of ``epoch`` already consumed
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)  # one record per validation (rank 0)
    best_mean_iu: float = -math.inf
    validated_at: int = 0  # the update of the last validation: its window of losses starts after it
    train_seconds: float = 0.0  # time spent in updates (with their data), what a train.time_budget counts
    last_checkpoint_iteration: int | None = None  # of checkpoints/last.pt; not stored, known on resume

    def record(self, loss: float, lr: float) -> None:
        """Count one update with its loss and base learning rate."""
        self.iteration += 1
        self.losses.append(loss)
        self.lrs.append(lr)

    def pending_losses(self) -> list[float]:
        """The losses of the updates since the last validation (what its ``train_loss`` averages)."""
        return self.losses[self.validated_at :]


@dataclass
class Resume:
    """A ``last.pt`` read once, with the run folder it belongs to."""

    path: Path  # the checkpoint file
    run_dir: Path  # the folder that holds it: a resumed run writes here
    checkpoint: dict[str, Any] | None  # dropped by :meth:`release` once the run is restored

    @property
    def run_config(self) -> dict[str, Any] | None:
        return (self.checkpoint or {}).get("run_config")

    def release(self) -> None:
        """Let go of the checkpoint's tensors (a VGG16 FCN's weights alone are ~500 MB)."""
        self.checkpoint = None


def checkpoint_file(path: str | Path) -> Path:
    """A checkpoint file as given, or a run folder's ``checkpoints/last.pt``."""
    path = Path(path)
    if path.is_dir():
        candidate = path / CHECKPOINTS / LAST
        if not candidate.is_file():
            raise ConfigError(f"{path}: a folder without {CHECKPOINTS}/{LAST}; nothing to resume")
        return candidate
    return path


def run_folder(checkpoint: Path) -> Path:
    """The run folder a checkpoint file lies in: ``RUN`` for ``RUN/checkpoints/last.pt``, else its own folder."""
    folder = checkpoint.resolve().parent
    return folder.parent if folder.name == CHECKPOINTS else folder


def read_resume(path: str | Path) -> Resume:
    """Read the checkpoint to resume from (a ``last.pt`` or a run folder), once, and check it holds a run state."""
    file = checkpoint_file(path)
    checkpoint = load_checkpoint(file)
    if checkpoint.get("train_state") is None:
        raise CheckpointError(f"{file}: holds no training state (a '{BEST}', or a checkpoint not written by "
                              f"fcnseg train?); resume from a run's {CHECKPOINTS}/{LAST}")
    return Resume(path=file, run_dir=run_folder(file), checkpoint=checkpoint)


def train_state_dict(
    state: RunState, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, rng_states: list[dict],
    world_size: int,
) -> dict[str, Any]:
    """The ``train_state`` entry of a ``last.pt``: tensors and plain values only (it loads with weights_only)."""
    return {
        "iteration": state.iteration,
        "epoch": state.epoch,
        "batch_in_epoch": state.batch_in_epoch,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_states,  # one per process, in rank order
        "world_size": world_size,
        "losses": torch.tensor(state.losses, dtype=torch.float64),
        "lrs": torch.tensor(state.lrs, dtype=torch.float64),
        "history": state.history,
        "best_mean_iu": state.best_mean_iu,
        "validated_at": state.validated_at,
        "train_seconds": state.train_seconds,
    }


def restore_run_state(
    resume: Resume, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, world_size: int, rank: int,
    seed: int,
) -> RunState:
    """Load the optimiser and scaler from ``resume`` and return its run state, with this process's RNG restored.

    A run resumed with another process count cannot continue the data order of the epoch it was
    in: it starts the next epoch, with random states seeded from the seed and the update count.
    """
    saved = resume.checkpoint["train_state"]
    optimizer.load_state_dict(saved["optimizer"])
    scaler.load_state_dict(saved["scaler"])
    history = list(saved["history"])
    state = RunState(
        iteration=int(saved["iteration"]),
        epoch=int(saved["epoch"]),
        batch_in_epoch=int(saved["batch_in_epoch"]),
        losses=saved["losses"].tolist(),
        lrs=saved["lrs"].tolist(),
        history=history,
        best_mean_iu=float(saved["best_mean_iu"]),
        # checkpoints written before validated_at was stored: the last validation on record
        validated_at=int(saved.get("validated_at", history[-1]["iteration"] if history else 0)),
        train_seconds=float(saved.get("train_seconds", 0.0)),  # 0 for checkpoints written before it was stored
    )
    state.last_checkpoint_iteration = state.iteration
    if int(saved["world_size"]) == world_size:
        set_rng_state(saved["rng"][rank])
    else:
        log.warning("resuming with %d processes a run made with %d: data order and random states start afresh "
                    "for this epoch", world_size, saved["world_size"])
        seed_everything(seed + 7919 * state.iteration + rank)
        state.batch_in_epoch = 0
        state.epoch += 1
    return state
