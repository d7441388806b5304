"""A training run: :func:`train` sets it up from a :class:`fcnseg.config.RunConfig`, :class:`Trainer` runs the loop.

Single process, or one of several under ``torchrun`` (DDP; rank 0 logs and writes). A run resumes
from a checkpoint exactly: model, optimiser, schedule position, data order and random states.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fcnseg import distributed as D
from fcnseg.weights.handle import LoadedModel
from fcnseg.config import RunConfig
from fcnseg.data.normalization import Normalization
from fcnseg.distributed import DistInfo
from fcnseg.models.batchnorm import freeze_batch_norm_statistics, synchronise_batch_norm
from fcnseg.precision import ExecutionPlan, resolve_execution
from fcnseg.training.compile import compile_available, decide_compile
from fcnseg.training.datasets import (
    TrainingData,
    build_training_data,
    check_model_fits,
    class_weights,
    data_class_source,
    take_class_count,
)
from fcnseg.training.initialization import (
    batch_norm_statistics,
    fit_classes,
    initialize_model,
    resolve_normalization,
    take_backbone_from_weights,
)
from fcnseg.losses import Loss, build_loss
from fcnseg.training.loop import TrainingDiverged, train_step
from fcnseg.training.optim import build_optimizer
from fcnseg.training.recipe import slow_start_warning
from fcnseg.training.reporter import Reporter
from fcnseg.training.sampling import (
    configure_determinism,
    rng_state,
    seed_everything,
    training_batches,
    training_loader,
)
from fcnseg.training.state import (
    BEST,
    LAST,
    Resume,
    RunState,
    read_resume,
    restore_run_state,
    train_state_dict,
)
from fcnseg.training.validation import panel_items, validate, validation_record

__all__ = ["TrainResult", "Trainer", "TrainingDiverged", "train"]

log = logging.getLogger(__name__)

TYPICAL_IMAGE = (375, 500)  # (height, width) of a PASCAL VOC photo: the time estimate's input without crops


@dataclass
class TrainResult:
    """What a run leaves behind. ``losses[i]`` is the loss of update ``i + 1`` (all updates, resumed ones too)."""

    out_dir: Path
    iteration: int
    losses: list[float]
    history: list[dict]  # one record per validation: iteration, train_loss, lr and ConfusionMatrix.compute()
    final_metrics: dict | None
    last_checkpoint: Path
    best_checkpoint: Path | None
    config: RunConfig
    seconds: float = 0.0
    images_per_second: float = 0.0
    train_seconds: float = 0.0  # the training time of the whole run (updates and their data), what a budget counts
    reached_target: bool = False  # stopped early: train.target_validations validations in a row at train.target_mean_iu
    extra: dict = field(default_factory=dict)


class Trainer:
    """Runs the updates, validations and checkpoints of one run over the parts it is given (see :func:`train`).

    Args:
        config: the run settings.
        model: the FCN (checkpoints and validation use it); ``net`` is what the updates run: the
            model itself, or DDP around it.
        optimizer, scaler: the optimiser over ``model``'s parameter groups, and the fp16 gradient scaler.
        batches: endless training batches, advancing ``state``'s data position.
        data: the training and validation sets and the class names.
        normalization: what the inputs are normalised with (stored in checkpoints).
        state: where the run stands (fresh or restored).
        reporter: the run folder's outputs (started).
        dist: this process's rank, process count and device.
        plan: device, precision and layout (:func:`fcnseg.precision.resolve_execution`, purpose training).
        clock: seconds, for ``train.time_budget`` and ``train.val_every_time`` (tests pass a fake one).
    """

    def __init__(self, config: RunConfig, model: nn.Module, net: nn.Module, optimizer: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, batches: Iterator, data: TrainingData, normalization: Normalization,
                 state: RunState, reporter: Reporter, dist: DistInfo, plan: ExecutionPlan,
                 loss_fn: Loss | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self.config, self.model, self.net, self.optimizer, self.scaler = config, model, net, optimizer, scaler
        self.batches, self.data, self.state, self.reporter, self.dist = batches, data, state, reporter, dist
        self.plan, self.loss_fn, self.clock = plan, loss_fn, clock
        self.budget = config.train.time_budget_seconds
        t = config.train
        self.val_interval = t.val_every_seconds
        self.validated_seconds = state.train_seconds  # training time at the last validation
        self.target_streak = 0  # validations in a row at train.target_mean_iu
        self.images_per_update = t.batch_size * t.iter_size * dist.world_size
        # train.compile: decided before the first update where the run's length is known (a time budget, on,
        # off), else once an update has been timed (fcnseg.training.compile)
        self.compile_pending = True
        # The model's contract, as every other command takes it: validation runs it, checkpoints save it.
        self.handle = LoadedModel(model, config.model, data.class_names, normalization, "training",
                                  head_class_names={h.name: list(h.class_names) for h in data.train_set.heads},
                                  inputs=getattr(data.train_set, "input_spec", None), palette=data.val_set.palette,
                                  plan=plan)  # validation runs in the training's precision and layout

    def write_checkpoint(self, path: Path, extra: dict) -> None:
        self.handle.save(path, extra)

    def reached_target(self) -> bool:
        """Whether the last ``target_validations`` validations all reached ``target_mean_iu`` (when one is set)."""
        t = self.config.train
        return t.target_mean_iu > 0 and self.target_streak >= t.target_validations

    def validation_due(self) -> bool:
        """Whether ``val_every_time`` of training has passed since the last validation."""
        return self.val_interval is not None and self.state.train_seconds - self.validated_seconds >= self.val_interval

    def done(self) -> bool:
        """Whether the run has its ``max_iter`` updates, has spent its ``time_budget``, or reached its target."""
        if self.reached_target():
            return True
        if self.budget is not None:
            return self.state.train_seconds >= self.budget
        return self.state.iteration >= self.config.train.max_iter

    def run(self, progress: bool = True) -> TrainResult:
        """Train to ``train.max_iter`` updates (or for ``train.time_budget``), validating every ``val_every``
        updates and every ``val_every_time`` of training, checkpointing every ``checkpoint_every`` updates, and
        both at the end; a run with a ``target_mean_iu`` ends at the validation that reaches it (in a row)."""
        t, state = self.config.train, self.state
        start_iteration = state.iteration
        self.reporter.open_progress(None if self.budget else t.max_iter, state.iteration, show=progress)
        started = time.perf_counter()
        self.settle_compile(None)
        try:
            while not self.done():
                self.step()
                done = self.done()
                self.reporter.update(state, self.images_per_update, state.iteration % t.log_every == 0 or done)
                if (t.val_every and state.iteration % t.val_every == 0) or done or self.validation_due():
                    self.validate()
                    done = self.done()
                if (t.checkpoint_every and state.iteration % t.checkpoint_every == 0) or done:
                    self.save_last()
        except KeyboardInterrupt:
            if self.dist.world_size == 1 and state.iteration > start_iteration:
                log.warning("interrupted: writing %s at iteration %d", self.reporter.checkpoints / LAST, state.iteration)
                self.save_last(gather=False)
            raise
        finally:
            self.reporter.close_progress()
        seconds = time.perf_counter() - started
        if t.calibrate and state.iteration > start_iteration:
            self.calibrate()
        speed = (state.iteration - start_iteration) * self.images_per_update / max(seconds, 1e-9)
        final = state.history[-1] if state.history and state.history[-1]["iteration"] == state.iteration else None
        self.reporter.finish(state, final, state.iteration - start_iteration, seconds, speed)
        best = self.reporter.checkpoints / BEST
        return TrainResult(out_dir=self.reporter.out_dir, iteration=state.iteration, losses=list(state.losses),
                           history=list(state.history), final_metrics=final, last_checkpoint=self.reporter.checkpoints / LAST,
                           best_checkpoint=best if best.exists() else None, config=self.config, seconds=seconds,
                           images_per_second=speed, train_seconds=state.train_seconds,
                           reached_target=self.reached_target())

    def step(self) -> float:
        """One parameter update (:func:`fcnseg.training.loop.train_step`); returns its loss over all processes."""
        # On a time budget the schedule runs over the training time spent: the processes' mean, the same
        # on each, so that all take the same learning rate and stop after the same update.
        progress = None if self.budget is None else min(1.0, self.state.train_seconds / self.budget)
        began = self.clock()
        try:
            step = train_step(self.net, self.optimizer, self.scaler, self.batches, self.config.train,
                              self.state.iteration, self.plan, self.loss_fn, progress=progress)
        except TrainingDiverged as e:
            raise TrainingDiverged(e.loss, e.iteration, e.lr, self._divergence_advice(e.lr)) from None
        seconds = self.clock() - began
        if (self.budget is not None or self.val_interval is not None) and self.dist.world_size > 1:
            total = D.all_reduce_sum(torch.tensor(seconds, dtype=torch.float64, device=self.dist.device))
            seconds = total.item() / self.dist.world_size
        self.state.train_seconds += seconds
        self.state.record(step.loss, step.lr)
        if self.compile_pending and self.state.iteration >= 2:  # the first update pays one-off set-up costs
            self.settle_compile(seconds)
        return step.loss

    def settle_compile(self, update_seconds: float | None) -> None:
        """Apply ``train.compile``: wrap the training net in ``torch.compile`` where :func:`decide_compile` says
        it pays over the run's remaining length (its time budget left, or its updates left times
        ``update_seconds``, the processes' mean), and log why; nothing when the length is not known yet."""
        t = self.config.train
        if self.budget is not None:
            expected = max(0.0, self.budget - self.state.train_seconds)
        elif update_seconds is not None:
            if self.dist.world_size > 1:  # one decision on every process
                total = D.all_reduce_sum(torch.tensor(update_seconds, dtype=torch.float64, device=self.dist.device))
                update_seconds = total.item() / self.dist.world_size
            expected = max(0, t.max_iter - self.state.iteration) * update_seconds
        else:
            expected = None
        unavailable = compile_available() if t.compile != "off" else ""
        decision = decide_compile(t.compile, self.plan.cpu, self.plan.precision, expected, unavailable)
        if decision.waits:
            return
        self.compile_pending = False
        log.info("training step: %s", decision.why)
        if decision.compile:
            self.net = torch.compile(self.net)

    def _divergence_advice(self, lr: float) -> str:
        last = self.reporter.checkpoints / LAST
        if self.state.last_checkpoint_iteration is None:
            return f"; no checkpoint was written yet; lower the learning rate (now {lr:g})"
        return (f"; the last good checkpoint is {last} (iteration {self.state.last_checkpoint_iteration}); "
                f"resume from it with a lower learning rate: fcnseg train --resume {last} --lr {lr / 10:g}")

    def validate(self) -> None:
        """Score the val split (every process), then record and report it (rank 0)."""
        state, t = self.state, self.config.train
        result = validate(self.handle, self.data.val_set, self.config.data.val_max_images)
        pending = state.pending_losses()
        train_loss = float(np.mean(pending)) if pending else math.nan
        state.validated_at = state.iteration
        self.validated_seconds = state.train_seconds
        # every process has the all-reduced result, so all stop after the same update
        target = t.target_mean_iu
        self.target_streak = self.target_streak + 1 if target and result["mean_iu"] >= target else 0
        if not self.reporter.enabled:
            return
        epoch = state.iteration * self.images_per_update / max(1, len(self.data.train_set))
        record = validation_record(result, state.iteration, epoch, train_loss, state.lrs[-1] if state.lrs else t.lr)
        panels = panel_items(self.handle, self.data.val_set, t.num_panels)
        self.reporter.validation(record, state, panels, self.data.val_set.palette, self.save_best)

    def calibrate(self) -> None:
        """Fit the temperature of the last and the best checkpoint on the validation split and store it in each (rank 0).

        The weights and the training state in the files are left as they are; only ``temperature`` is added.
        """
        from fcnseg.calibration import calibrate
        from fcnseg.errors import FcnsegError
        from fcnseg.weights.checkpoint import load_checkpoint, load_model
        from fcnseg.weights.checkpoint_writer import atomic_save

        if self.dist.is_main:
            limit = self.config.data.val_max_images or None
            for name in (LAST, BEST):
                path = self.reporter.checkpoints / name
                if not path.exists():
                    continue
                handle = self.handle if name == LAST else load_model(path)
                if name != LAST:
                    handle.prepare(self.plan.device, self.plan.precision, self.plan.layout)
                try:
                    result = calibrate(handle, self.data.val_set, limit=limit, progress=False)
                except FcnsegError as e:  # the run's weights are saved already: a failed fit costs the temperature only
                    log.warning("%s not calibrated: %s", path, e)
                    continue
                log.info("%s calibrated on the validation split: %s", path, result.summary())
                stored = load_checkpoint(path)
                stored["temperature"] = result.temperature
                atomic_save(stored, path)
        D.barrier()

    def _checkpoint_extra(self) -> dict:
        return {"run_config": self.config.to_dict(), "iteration": self.state.iteration}

    def save_best(self, path: Path, extra: dict) -> None:
        """Write the model as ``path`` with the run settings and ``extra`` (the reporter's metrics); rank 0."""
        self.write_checkpoint(path, extra=self._checkpoint_extra() | extra)

    def save_last(self, gather: bool = True) -> Path:
        """Write ``checkpoints/last.pt`` atomically on rank 0 (every process must call it when ``gather``)."""
        rng_states = D.all_gather_objects(rng_state()) if gather else [rng_state()]
        path = self.reporter.checkpoints / LAST
        if self.dist.is_main:
            saved = train_state_dict(self.state, self.optimizer, self.scaler, rng_states, self.dist.world_size)
            self.write_checkpoint(path, extra=self._checkpoint_extra() | {"train_state": saved})
            self.state.last_checkpoint_iteration = self.state.iteration
            log.debug("wrote %s (iteration %d)", path, self.state.iteration)
        D.barrier()
        return path


def place_model(model: nn.Module, dist: DistInfo, channels_last: bool = False) -> tuple[nn.Module, nn.Module]:
    """``model`` on this process's device, and what the updates run: the model, or DDP around it (several processes)."""
    model = model.to(dist.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if dist.world_size == 1:
        return model, model
    synchronise_batch_norm(model)  # statistics of the global batch, as in one process
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return model, nn.parallel.DistributedDataParallel(model, device_ids=ids)


def train(config: RunConfig, resume: str | Path | Resume | None = None, progress: bool = True,
          clock: Callable[[], float] = time.perf_counter, notes: Sequence[str] = ()) -> TrainResult:
    """Train an FCN as ``config`` says; under torchrun, every process calls this.

    Everything a user can get wrong (the checkpoint to resume, the starting weights, the data and
    its classes) is read and checked before the run folder is created, so a run that fails on them
    leaves no folder behind.

    Args:
        config: the resolved run settings (see :func:`fcnseg.config.resolve_run_config`).
        resume: a ``checkpoints/last.pt`` or a run folder to continue from (model, optimiser,
            schedule, data order, RNG), or a :class:`fcnseg.training.state.Resume` already read
            (it is released once restored). The outputs go to ``config.train.out_dir`` all the same.
        progress: show a progress bar (rank 0).
        clock: what ``train.time_budget`` is measured with (seconds).
        notes: lines logged at the start of the run, so that ``train.log`` has them too (``fcnseg train``'s
            choice of recipe, and why).
    Returns:
        TrainResult (losses, validation history, checkpoint paths). Writes into ``config.train.out_dir``:
        ``config.yaml``, ``train.log``, ``losses.csv``, ``metrics.csv``/``.json``, ``metrics.txt``,
        ``curves.png``, ``panels.png`` (+ ``panels/``), ``checkpoints/{last,best}.pt``, ``tensorboard/``.
    Raises:
        TrainingDiverged: the loss became NaN/inf (names the iteration and the last good checkpoint).
    """
    started_group = not D.is_initialized()
    reporter = None
    try:
        t = config.train
        dist = D.init_distributed(t.device)
        reporter = Reporter(t.out_dir, enabled=dist.is_main)  # holds the setup's log; writes nothing yet
        for line in notes:
            log.info("%s", line)
        configure_determinism(t.deterministic, dist.device)
        seed_everything(t.seed + dist.rank)
        if resume is not None and not isinstance(resume, Resume):
            resume = read_resume(resume)
        resumed = (resume.checkpoint if resume else None, resume.path if resume else "")
        if resume is None:
            config = take_backbone_from_weights(config)
        initialized = initialize_model(config, *resumed)
        normalization = resolve_normalization(config, initialized.normalization)
        data = build_training_data(config, normalization, check_model=False)
        counted = take_class_count(config, data.train_set)
        if counted is not config:  # the model was built for the default count: build it for the data's,
            config = counted  # from the same random start as a run that gave the count
            seed_everything(t.seed + dist.rank)
            initialized = initialize_model(config, *resumed)
        check_model_fits(data.train_set, config.model)
        if resume is None:  # a resumed run's classes were fitted when it started
            fit_classes(initialized, data.class_names, data_class_source(data.train_set, config),
                        class_map=t.class_map or None, ignore_names=t.ignore_class_names)
        normalization = data.train_set.normalization  # None above: the data set's own mean pixel
        log.info("%s", initialized.description)  # after the data: a run that fails on them says only why
        batch_norm = batch_norm_statistics(config, initialized.model, dist.world_size)
        if batch_norm.message:
            log.info("%s", batch_norm.message)
        if batch_norm.freeze:  # before DDP's synchronised BatchNorm, which then leaves the frozen ones alone
            freeze_batch_norm_statistics(initialized.model)
        if config.model.is_resnet and config.model.aux:
            if t.aux_weight > 0:  # torchvision's reference: loss = main + 0.5 x aux
                initialized.model.train_aux = True
                log.info("aux_classifier trained: loss = main head's + %g x the auxiliary head's (train.aux_weight; "
                         "inference runs the main head only)", t.aux_weight)
            else:  # stored as it starts, not left as parameters without gradients (DDP)
                initialized.model.aux_classifier.requires_grad_(False)
                log.info("aux_classifier kept as it starts: train.aux_weight is 0, the loss is the main head's")
        if resume is None and dist.is_main:
            crop = config.data.crop_size
            slow = slow_start_warning(config, dist.device.type, (crop, crop) if crop else TYPICAL_IMAGE)
            if slow:
                log.warning("%s", slow)
        weights = class_weights(t, data.train_set, data.class_names)
        loss_fn = build_loss(t.loss, class_weights=weights, normalize=t.normalize_loss, focal_gamma=t.focal_gamma)

        plan = resolve_execution(dist.device, t.precision, t.layout, purpose="training")
        model, net = place_model(initialized.model, dist, plan.channels_last)
        optimizer = build_optimizer(model, t)
        scaler = torch.amp.GradScaler(dist.device.type, enabled=plan.autocast_dtype == torch.float16)
        loader, sampler = training_loader(data.train_set, t, config.data.num_workers, dist.world_size, dist.rank,
                                          pin_memory=dist.device.type == "cuda")
        state = RunState()
        if resume is not None:
            state = restore_run_state(resume, optimizer, scaler, dist.world_size, dist.rank, t.seed)
            log.info("resumed from %s at iteration %d (epoch %d)", resume.path, state.iteration, state.epoch)
            resume.release()

        reporter.start(config, data.class_names)
        reporter.log_start(len(data.train_set), len(data.val_set), dist.world_size, dist.device,
                           f"{plan.precision}, {plan.layout}",
                           sum(p.numel() for p in model.parameters() if p.requires_grad))
        trainer = Trainer(config, model, net, optimizer, scaler, training_batches(loader, sampler, state), data,
                          normalization, state, reporter, dist, plan, loss_fn, clock)
        return trainer.run(progress=progress)
    finally:
        if reporter is not None:
            reporter.close()
        if started_group:
            D.cleanup()
