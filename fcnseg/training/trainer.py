"""The training loop: pixel-wise cross-entropy, SGD/AdamW with the reference multipliers, validation, checkpoints.

One function, :func:`train`, runs a whole run from a :class:`fcnseg.config.RunConfig`: single
process, or one of several under ``torchrun`` (DDP; rank 0 logs and writes). It resumes from a
checkpoint exactly: model, optimiser, schedule position, data order and random states.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from fcnseg.files import TEMP_GLOB, atomic_write_bytes, atomic_write_text
from fcnseg import distributed as D
from fcnseg.checkpoint import load_checkpoint, read_classifier_trunk, save_checkpoint
from fcnseg.config import ModelConfig, RunConfig, from_dict
from fcnseg.data import IGNORE_INDEX, PadCollate, build_dataset, get_normalization, train_transform
from fcnseg.data.normalization import IMAGENET_RGB, PAPER_BGR, Normalization
from fcnseg.precision import autocast, autocast_dtype, describe
from fcnseg.errors import CheckpointError, ConfigError, FcnsegError
from fcnseg.losses import pixel_cross_entropy_sum
from fcnseg.evaluation import evaluate
from fcnseg.metrics import format_table
from fcnseg.models import build_model
from fcnseg.models.batchnorm import synchronise_batch_norm
from fcnseg.models.surgery import transplant, transplant_trunk
from fcnseg.training.optim import build_optimizer, set_learning_rate
from fcnseg.training import reports

log = logging.getLogger(__name__)

LAST = "last.pt"
BEST = "best.pt"


class TrainingDiverged(FcnsegError):
    """The loss became NaN or infinite; the message names the iteration and the last good checkpoint."""


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
    extra: dict = field(default_factory=dict)


# --- data plumbing -----------------------------------------------------------------------------------


class SeededItems(Dataset):
    """Serves ``dataset[key % len]`` with the torch RNG seeded from ``(seed, key)`` for its augmentation.

    Keys come from :class:`EpochSampler` (``epoch * len + index``), so an item's random mirror, scale
    and crop depend only on the seed, the epoch and the index: not on worker count, not on the
    process count, and not on whether the run was interrupted and resumed. The caller's RNG state
    is left untouched.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((self.seed * 1_000_003 + key) % (2**63 - 1))
            return self.dataset[key % len(self.dataset)]


class EpochSampler(DistributedSampler):
    """DistributedSampler that yields ``epoch * len + index`` keys and can skip the items already seen.

    With one process it gives the same permutation a two-process run splits between its ranks
    (rank r takes every world-th item), so a global batch holds the same images either way.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip = 0  # items of this epoch already consumed (set on resume)

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        keys = [self.epoch * n + i for i in super().__iter__()]
        return iter(keys[self.skip :])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.skip)


# --- random states ------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """This process's random states as tensors and plain values (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- numerics ------------------------------------------------------------------------------------------


def resolve_normalization(config: RunConfig, weights_normalization: Normalization | None) -> Normalization:
    """``auto``: the weights' own normalisation, else paper BGR for VGG16/AlexNet, ImageNet RGB for the small net."""
    name = config.data.normalization
    if name != "auto":
        return get_normalization(name)
    if weights_normalization is not None:
        return weights_normalization
    return IMAGENET_RGB if config.model.backbone == "small" else PAPER_BGR


# --- the trainer ---------------------------------------------------------------------------------------


class Trainer:
    """One training run; :func:`train` is the way in. Holds the model, data, optimiser and bookkeeping."""

    def __init__(self, config: RunConfig, resume: str | Path | None = None, progress: bool = True) -> None:
        self.config = config
        self.progress = progress
        self.dist = D.init_distributed(config.train.device)
        self.device = self.dist.device
        t = config.train
        self.out_dir = Path(t.out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.main = self.dist.is_main
        if self.main:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            for stale in self.ckpt_dir.glob(TEMP_GLOB):  # left by a run killed while writing a checkpoint
                stale.unlink(missing_ok=True)
        self._file_log = self._start_file_log()

        if t.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        seed_everything(t.seed + self.dist.rank)

        resume_ckpt = load_checkpoint(resume) if resume else None
        self.resume_path = Path(resume) if resume else None
        self.model, weights_norm = self._build_model(resume_ckpt)
        self.normalization = resolve_normalization(config, weights_norm)
        self.train_set, self.val_set = self._build_data()
        self.class_names = list(self.train_set.class_names)
        self._check_classes()

        self.model.to(self.device)
        if t.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.net: nn.Module = self.model
        if self.dist.world_size > 1:
            synchronise_batch_norm(self.model)  # statistics of the global batch, as in one process
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = build_optimizer(self.model, t)
        self.amp_dtype = autocast_dtype(t.precision, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

        self.iteration = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.history: list[dict] = []
        self.best_mean_iu = -math.inf
        self.last_checkpoint_iteration: int | None = None
        self._build_loaders()
        if resume_ckpt is not None:
            self._restore(resume_ckpt)
        self.tensorboard = reports.TensorBoardLog(self.out_dir / "tensorboard") if self.main else None
        if self.main:
            self._write_config()

    # -- construction --

    def _start_file_log(self) -> logging.Handler | None:
        if not self.main:
            return None
        handler = logging.FileHandler(self.out_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        logging.getLogger("fcnseg").addHandler(handler)
        if logging.getLogger("fcnseg").getEffectiveLevel() > logging.INFO:
            logging.getLogger("fcnseg").setLevel(logging.INFO)
        return handler

    def _build_model(self, resume_ckpt: dict | None) -> tuple[nn.Module, Normalization | None]:
        cfg, t = self.config, self.config.train
        if resume_ckpt is not None:
            stored = from_dict(ModelConfig, resume_ckpt["model_config"], f"{self.resume_path}: model_config")
            if stored != cfg.model:
                raise ConfigError(
                    f"{self.resume_path}: the checkpoint's model is {stored} but the config asks for {cfg.model}; "
                    f"resume with the run's own config (fcnseg train --resume {self.resume_path})"
                )
            model = build_model(cfg.model)
            model.load_state_dict(resume_ckpt["state_dict"])
            return model, Normalization.from_dict(resume_ckpt["normalization"])
        model = build_model(cfg.model)
        if t.classifier_weights:
            if cfg.model.backbone != "vgg16":
                raise ConfigError(f"classifier_weights {t.classifier_weights}: only a VGG16 trunk can start from it, "
                                  f"but model.backbone is {cfg.model.backbone!r}")
            trunk, norm = read_classifier_trunk(t.classifier_weights)
            transplant_trunk(model, trunk, t.classifier_weights)
            log.info("trunk initialised from the classifier %s; score layers zero, upsampling bilinear", t.classifier_weights)
            return model, norm
        if t.init_from:
            ckpt = load_checkpoint(t.init_from)
            copied = transplant(model, ckpt["state_dict"])
            if not copied:
                raise CheckpointError(f"{t.init_from}: no layer of it fits a {cfg.model.arch} on {cfg.model.backbone}")
            new = [k for k in model.state_dict() if k not in copied]
            trunk_left = [k for k in new if k.startswith("backbone.")]
            if trunk_left:  # staged training continues the whole trunk; a partial copy is a different net
                theirs = ckpt["model_config"]
                raise CheckpointError(
                    f"{t.init_from}: its trunk ({theirs.get('backbone')}, batch_norm {theirs.get('batch_norm', False)}) "
                    f"does not fit this {cfg.model.backbone} trunk (batch_norm {cfg.model.batch_norm}); "
                    f"missing or differently shaped: {', '.join(trunk_left[:4])}{' ...' if len(trunk_left) > 4 else ''}"
                )
            log.info(
                "initialised %d tensors from %s (a %s); new layers keep their zero/bilinear init: %s",
                len(copied), t.init_from, ckpt["model_config"].get("arch"), ", ".join(new) or "none",
            )
            return model, Normalization.from_dict(ckpt["normalization"])
        return model, None

    def _dataset(self, kind: str, root: str, split: str, transform, count: int):
        d = self.config.data
        kwargs: dict[str, Any] = {}
        if kind == "synthetic" and not root:
            kwargs = {"num_images": count, "seed": d.synthetic_seed, "style": d.synthetic_style,
                      "size": (d.synthetic_size, d.synthetic_size) if d.synthetic_size else None}
        elif d.sbd_root and kind in ("voc", "auto"):
            kwargs = {"sbd_root": d.sbd_root}
        return build_dataset(kind, root or None, split, normalization=self.normalization, transform=transform, **kwargs)

    def _build_data(self):
        d = self.config.data
        scale = (d.scale_min, d.scale_max) if (d.scale_min, d.scale_max) != (1.0, 1.0) else None
        transform = train_transform(mirror=d.mirror, scale_range=scale, crop_size=d.crop_size or None)
        train_set = self._dataset(d.dataset, d.root, d.train_split, transform, d.synthetic_train_images)
        val_kind, val_root = (d.val_dataset, d.val_root) if d.val_dataset else (d.dataset, d.root)
        val_set = self._dataset(val_kind, val_root, d.val_split, None, d.synthetic_val_images)
        return train_set, val_set

    def _check_classes(self) -> None:
        found = self.train_set.num_classes
        if self.val_set.num_classes != found:
            raise ConfigError(f"the train split has {found} classes but the val split has {self.val_set.num_classes}")
        if self.config.model.num_classes != found:
            raise ConfigError(
                f"model.num_classes is {self.config.model.num_classes} but the data set has {found} classes "
                f"({', '.join(self.class_names[:6])}{', ...' if found > 6 else ''}); set model.num_classes: {found}"
            )

    def _build_loaders(self) -> None:
        t, d = self.config.train, self.config.data
        self.sampler = EpochSampler(self.train_set, self.dist.world_size, self.dist.rank, shuffle=True, seed=t.seed)
        self.train_loader = DataLoader(
            SeededItems(self.train_set, t.seed),
            batch_size=t.batch_size,
            sampler=self.sampler,
            num_workers=d.num_workers,
            collate_fn=PadCollate(IGNORE_INDEX),
            drop_last=self.sampler.num_samples >= t.batch_size,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(t.seed),  # keeps the global RNG (dropout) untouched
            persistent_workers=False,
        )
        if self.sampler.num_samples < t.batch_size:
            log.warning("each process sees %d training images per epoch, fewer than batch_size %d",
                        self.sampler.num_samples, t.batch_size)

    def _write_config(self) -> None:
        import yaml

        text = "# Resolved settings of this run; re-run it with: fcnseg train --config <this file>\n"
        text += yaml.safe_dump(self.config.to_dict(), sort_keys=False)
        atomic_write_text(text, self.out_dir / "config.yaml")

    # -- checkpoints --

    def _checkpoint_extra(self, rng_states: list[dict], with_state: bool = True) -> dict[str, Any]:
        extra: dict[str, Any] = {"run_config": self.config.to_dict(), "iteration": self.iteration}
        if with_state:
            extra["train_state"] = {
                "iteration": self.iteration,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng_states,  # one per process, in rank order
                "world_size": self.dist.world_size,
                "losses": torch.tensor(self.losses, dtype=torch.float64),
                "lrs": torch.tensor(self.lrs, dtype=torch.float64),
                "history": self.history,
                "best_mean_iu": self.best_mean_iu,
            }
        return extra

    def save(self, name: str = LAST, gather: bool = True) -> Path:
        """Write ``checkpoints/<name>`` atomically on rank 0 (every rank must call it when ``gather``)."""
        rng_states = D.all_gather_objects(rng_state()) if gather else [rng_state()]
        path = self.ckpt_dir / name
        if self.main:
            extra = self._checkpoint_extra(rng_states, with_state=name == LAST)
            save_checkpoint(path, self.model, self.config.model, self.class_names, self.normalization, extra)
            if name == LAST:
                self.last_checkpoint_iteration = self.iteration
            log.debug("wrote %s (iteration %d)", path, self.iteration)
        D.barrier()
        return path

    def _restore(self, ckpt: dict) -> None:
        state = ckpt.get("train_state")
        if state is None:
            raise CheckpointError(f"{self.resume_path}: holds no training state (a 'best' checkpoint?); resume from {LAST}")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.losses = state["losses"].tolist()
        self.lrs = state["lrs"].tolist()
        self.history = list(state["history"])
        self.best_mean_iu = float(state["best_mean_iu"])
        self.last_checkpoint_iteration = self.iteration
        rngs = state["rng"]
        if int(state["world_size"]) == self.dist.world_size:
            set_rng_state(rngs[self.dist.rank])
        else:
            log.warning("resuming with %d processes a run made with %d: data order and random states start afresh "
                        "for this epoch", self.dist.world_size, state["world_size"])
            seed_everything(self.config.train.seed + 7919 * self.iteration + self.dist.rank)
            self.batch_in_epoch = 0
            self.epoch += 1
        log.info("resumed from %s at iteration %d (epoch %d)", self.resume_path, self.iteration, self.epoch)

    # -- the loop --

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        bs = self.config.train.batch_size
        while True:
            self.sampler.set_epoch(self.epoch)
            self.sampler.skip = self.batch_in_epoch * bs
            for images, masks in self.train_loader:
                self.batch_in_epoch += 1
                yield images, masks
            self.epoch += 1
            self.batch_in_epoch = 0

    def _autocast(self):
        return autocast(self.device, self.amp_dtype)

    def _to_device(self, images: torch.Tensor, masks: torch.Tensor):
        images = images.to(self.device, non_blocking=True)
        if self.config.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, masks.to(self.device, non_blocking=True)

    def step(self, batches: Iterator) -> float:
        """One parameter update over ``iter_size`` passes; returns the global loss (all processes).

        The gradient equals that of one process seeing the whole global batch: each process's summed
        loss is divided by the labelled pixels of all processes (normalised loss) and multiplied by the
        process count, which DDP's gradient averaging then cancels.
        """
        t = self.config.train
        world = self.dist.world_size
        lr = set_learning_rate(self.optimizer, t, self.iteration)
        self.optimizer.zero_grad(set_to_none=True)
        self.net.train()
        logged = torch.zeros((), dtype=torch.float64, device=self.device)
        for micro in range(t.iter_size):
            images, masks = self._to_device(*next(batches))
            sync = micro == t.iter_size - 1 or world == 1
            context = nullcontext() if sync else self.net.no_sync()
            with context:
                with self._autocast():
                    logits = self.net(images)
                loss_sum, labelled = pixel_cross_entropy_sum(logits, masks)
                if t.normalize_loss:
                    denominator = D.all_reduce_sum(labelled.to(torch.float64)).clamp(min=1)
                else:
                    denominator = torch.ones((), dtype=torch.float64, device=self.device)
                loss = loss_sum / denominator / t.iter_size
                self.scaler.scale(loss * world).backward()
            logged += loss.detach().double()
        loss_value = D.all_reduce_sum(logged).item()
        if not math.isfinite(loss_value):
            self._diverged(loss_value, lr)
        if t.grad_clip:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iteration += 1
        self.losses.append(loss_value)
        self.lrs.append(lr)
        return loss_value

    def _diverged(self, loss_value: float, lr: float) -> None:
        it = self.iteration + 1
        if self.last_checkpoint_iteration is not None:
            where = f"the last good checkpoint is {self.ckpt_dir / LAST} (iteration {self.last_checkpoint_iteration})"
            hint = f"; resume from it with a lower learning rate: fcnseg train --resume {self.ckpt_dir / LAST} --lr {lr / 10:g}"
        else:
            where, hint = "no checkpoint was written yet", f"; lower the learning rate (now {lr:g})"
        raise TrainingDiverged(f"the training loss became {loss_value} at iteration {it} (lr {lr:g}); {where}{hint}")

    def validate(self) -> dict:
        """The four metrics on the validation split (each process scores a shard; counts are summed)."""
        limit = self.config.data.val_max_images or None
        return evaluate(self.model, self.val_set, device=self.device, precision=describe(self.amp_dtype), limit=limit,
                        progress=False)

    @torch.no_grad()
    def panels(self, path: Path) -> None:
        """image | ground truth | prediction for the first ``num_panels`` validation images (rank 0)."""
        count = min(self.config.train.num_panels, len(self.val_set))
        if not count:
            return
        self.model.eval()
        items = []
        for index in range(count):
            image, mask = self.val_set[index]
            with self._autocast():
                logits = self.model(image[None].to(self.device))
            raw = self.val_set.load_raw(index)
            items.append({"name": self.val_set.name(index), "image": raw.image, "mask": raw.mask,
                          "prediction": logits.argmax(1)[0].cpu().numpy()})
        self.model.train()
        reports.draw_panels(items, self.val_set.palette, path, self.class_names)

    def _record_validation(self, result: dict, window_loss: float) -> dict:
        record = {
            "iteration": self.iteration,
            "epoch": self.iteration * self._images_per_update() / max(1, len(self.train_set)),
            "train_loss": window_loss,
            "lr": self.lrs[-1] if self.lrs else self.config.train.lr,
            **{k: result[k] for k in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu")},
            "per_class_iu": result["per_class_iu"],
            "per_class_accuracy": result["per_class_accuracy"],
            "pixels": result["pixels"],
        }
        self.history.append(record)
        return record

    def _images_per_update(self) -> int:
        t = self.config.train
        return t.batch_size * t.iter_size * self.dist.world_size

    def _write_reports(self) -> None:
        reports.write_loss_csv(self.losses, self.lrs, self.out_dir / "losses.csv")
        if self.history:
            reports.write_validation_history(self.history, self.out_dir, self.class_names)
        title = f"{self.config.model.arch} ({self.config.model.backbone}) on {self.config.data.dataset}"
        reports.plot_curves(self.losses, self.history, self.out_dir / "curves.png", title)

    def run(self) -> TrainResult:
        t = self.config.train
        if self.main:
            self._log_start()
        start_iteration = self.iteration
        batches = self._batches()
        bar = None
        if self.main and self.progress:
            from tqdm import tqdm

            bar = tqdm(total=t.max_iter, initial=self.iteration, desc="train", unit="it", dynamic_ncols=True, smoothing=0.1)
        started = time.perf_counter()
        window: list[float] = []
        mark = (started, self.iteration)
        try:
            while self.iteration < t.max_iter:
                loss = self.step(batches)
                window.append(loss)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss:.4g}", lr=f"{self.lrs[-1]:.2g}", refresh=False)
                    bar.update(1)
                done = self.iteration >= t.max_iter
                if self.main and (self.iteration % t.log_every == 0 or done):
                    now = time.perf_counter()
                    speed = (self.iteration - mark[1]) * self._images_per_update() / max(now - mark[0], 1e-9)
                    mark = (now, self.iteration)
                    recent = float(np.mean(self.losses[-t.log_every :]))
                    log.info("iteration %d/%d  loss %.4g  lr %.3g  %.1f images/s", self.iteration, t.max_iter, recent,
                             self.lrs[-1], speed)
                    if self.tensorboard:
                        self.tensorboard.scalar("train/loss", recent, self.iteration)
                        self.tensorboard.scalar("train/lr", self.lrs[-1], self.iteration)
                        self.tensorboard.scalar("train/images_per_second", speed, self.iteration)
                if (t.val_every and self.iteration % t.val_every == 0) or done:
                    self._validate_and_report(float(np.mean(window)) if window else math.nan, bar)
                    window = []
                if (t.checkpoint_every and self.iteration % t.checkpoint_every == 0) or done:
                    self.save(LAST)
        except KeyboardInterrupt:
            if self.dist.world_size == 1 and self.iteration > start_iteration:
                log.warning("interrupted: writing %s at iteration %d", self.ckpt_dir / LAST, self.iteration)
                self.save(LAST, gather=False)
            raise
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - started
        speed = (self.iteration - start_iteration) * self._images_per_update() / max(seconds, 1e-9)
        final = self.history[-1] if self.history and self.history[-1]["iteration"] == self.iteration else None
        if self.main:
            if final is None:  # otherwise the last validation has just written them
                self._write_reports()
            if final is not None:
                table = format_table(final, self.class_names)
                atomic_write_text(table + "\n", self.out_dir / "metrics.txt")
                log.info("validation at iteration %d:\n%s", self.iteration, table)
            log.info("done: %d updates in %.0f s (%.1f images/s); outputs in %s", self.iteration - start_iteration,
                     seconds, speed, self.out_dir)
        best = self.ckpt_dir / BEST
        return TrainResult(
            out_dir=self.out_dir,
            iteration=self.iteration,
            losses=list(self.losses),
            history=list(self.history),
            final_metrics=final,
            last_checkpoint=self.ckpt_dir / LAST,
            best_checkpoint=best if best.exists() else None,
            config=self.config,
            seconds=seconds,
            images_per_second=speed,
        )

    def _validate_and_report(self, window_loss: float, bar) -> None:
        result = self.validate()
        if not self.main:
            return
        record = self._record_validation(result, window_loss)
        msg = (f"validation at iteration {self.iteration}: mean IU {100 * record['mean_iu']:.2f}, pixel acc. "
               f"{100 * record['pixel_accuracy']:.2f}, mean acc. {100 * record['mean_accuracy']:.2f}, "
               f"f.w. IU {100 * record['frequency_weighted_iu']:.2f}")
        log.info(msg)
        if self.tensorboard:
            for key in ("mean_iu", "pixel_accuracy", "mean_accuracy", "frequency_weighted_iu"):
                self.tensorboard.scalar(f"val/{key}", record[key], self.iteration)
        mean_iu = record["mean_iu"] if math.isfinite(record["mean_iu"]) else -math.inf
        if mean_iu > self.best_mean_iu:
            self.best_mean_iu = mean_iu
            save_checkpoint(self.ckpt_dir / BEST, self.model, self.config.model, self.class_names, self.normalization,
                            self._checkpoint_extra([], with_state=False) | {"metrics": {k: record[k] for k in reports.METRIC_KEYS}})
        panel_dir = self.out_dir / "panels"
        self.panels(panel_dir / f"iter_{self.iteration:07d}.png")
        if (panel_dir / f"iter_{self.iteration:07d}.png").exists():
            atomic_write_bytes((panel_dir / f"iter_{self.iteration:07d}.png").read_bytes(), self.out_dir / "panels.png")
        self._write_reports()

    def _log_start(self) -> None:
        c, t = self.config, self.config.train
        log.info(
            "training %s (%s backbone, %d classes) on %s %s: %d train / %d val images, %d process(es) on %s, precision %s",
            c.model.arch, c.model.backbone, c.model.num_classes, c.data.dataset, c.data.root or "(in memory)",
            len(self.train_set), len(self.val_set), self.dist.world_size, self.device,
            describe(self.amp_dtype),
        )
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        log.info(
            "%s lr %g (%s), momentum %g, weight decay %g, %d images per update (%d x %d passes x %d processes), "
            "%s loss, %d trainable parameters, %d updates; outputs in %s",
            t.optimizer, t.lr, t.lr_policy, t.momentum, t.weight_decay, self._images_per_update(), t.batch_size,
            t.iter_size, self.dist.world_size, "normalised" if t.normalize_loss else "summed", trainable, t.max_iter,
            self.out_dir,
        )

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()
        if self._file_log is not None:
            logging.getLogger("fcnseg").removeHandler(self._file_log)
            self._file_log.close()


def train(config: RunConfig, resume: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train an FCN as ``config`` says; under torchrun, every process calls this.

    Args:
        config: the resolved run settings (see :func:`fcnseg.config.resolve_run_config`).
        resume: a ``checkpoints/last.pt`` to continue from (model, optimiser, schedule, data order, RNG).
        progress: show a progress bar (rank 0).
    Returns:
        TrainResult (losses, validation history, checkpoint paths). Writes into ``config.train.out_dir``:
        ``config.yaml``, ``train.log``, ``losses.csv``, ``metrics.csv``/``.json``, ``metrics.txt``,
        ``curves.png``, ``panels.png`` (+ ``panels/``), ``checkpoints/{last,best}.pt``, ``tensorboard/``.
    Raises:
        TrainingDiverged: the loss became NaN/inf (names the iteration and the last good checkpoint).
    """
    started_group = not D.is_initialized()
    trainer = None
    try:
        trainer = Trainer(config, resume=resume, progress=progress)
        return trainer.run()
    finally:
        if trainer is not None:
            trainer.close()
        if started_group:
            D.cleanup()
