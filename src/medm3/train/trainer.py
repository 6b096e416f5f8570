"""The training loop of ``m3 train`` (accelerate: single device, DDP, FSDP, DeepSpeed).

One optimizer step = ``gradient_accumulation_steps`` micro-batches of
``batch_size`` conversations on every process. Data order is a seeded
permutation per epoch (``seed + epoch``), padded to a multiple of
``batch_size x processes`` and dealt out round-robin; only whole optimizer
steps are taken from an epoch. A checkpoint after step *k* holds the model,
optimizer, scheduler and RNG states (``accelerator.save_state``; frozen
weights are left out) and ``trainer_state.json``; resuming loads them and
skips the micro-batches already consumed in that epoch, so an interrupted and
resumed run takes the same steps on the same batches as an uninterrupted one.

Multi-GPU / multi-node: ``accelerate launch --config_file
configs/accelerate/deepspeed_zero3.yaml -m medm3.cli.main train CONFIG.yaml``
(or ``fsdp.yaml``); the output folder must be on a file system all nodes share.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medm3.errors import InputError, MissingDependencyError
from medm3.train import checkpoints
from medm3.train.config import Config, dump_config
from medm3.train.recipe import param_groups

logger = logging.getLogger(__name__)

LOG_NAME = "train_log.jsonl"
#: ``on_step(step, record)`` is called after every optimizer step (and its checkpoint).
StepHook = Callable[[int, dict[str, Any]], None]


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        output_dir: The run folder.
        steps: Optimizer steps done in total (resumed runs included).
        export_dir: The exported model (``None`` when export is disabled).
        last_loss: Loss of the last step (``None`` when no step ran in this call).
        log_path: The JSON-lines log (``step``, ``epoch``, ``loss``, ``lr``, ``grad_norm``).
        main_process: Whether this is the main process of a distributed run.
    """

    output_dir: Path
    steps: int
    export_dir: Path | None
    last_loss: float | None
    log_path: Path
    main_process: bool = True


@dataclass
class _Run:
    """The state of one training run between setup and export."""

    acc: Any
    model: Any
    optimizer: Any
    scheduler: Any
    recipe: Any
    dataset: Any
    factor: Callable[[int], float]
    per_epoch: int
    total: int
    extra: dict[str, Any]
    step: int


def resolve_mixed_precision(value: str) -> str:
    """``auto`` -> ``bf16`` on CUDA GPUs that support it, else ``no``."""
    if value != "auto":
        return value
    import torch

    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def lr_lambda(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at each step: linear warm-up, then ``kind``."""

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        progress = min(1.0, max(0.0, progress))
        if kind == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def epoch_batches(
    n: int, batch_size: int, world: int, rank: int, seed: int, epoch: int
) -> list[list[int]]:
    """This process's micro-batches (example indices) of one epoch.

    A permutation seeded with ``seed + epoch``, wrapped around to a multiple of
    ``batch_size * world``, dealt out round-robin to the processes.
    """
    import torch

    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    per_round = batch_size * world
    total = math.ceil(n / per_round) * per_round
    while len(order) < total:
        order += order[: total - len(order)]
    mine = order[rank::world]
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]


def plan_steps(n: int, config: Config, world: int) -> tuple[int, int]:
    """``(steps per epoch, total steps)`` for ``n`` examples on ``world`` processes.

    Raises:
        InputError: Fewer micro-batches per epoch than ``gradient_accumulation_steps``.
    """
    train = config.train
    micro = math.ceil(n / (train.batch_size * world))
    per_epoch = micro // train.gradient_accumulation_steps
    if per_epoch < 1:
        raise InputError(
            f"{n} examples make {micro} micro-batch(es) per process per epoch, fewer than "
            f"train.gradient_accumulation_steps={train.gradient_accumulation_steps}"
        )
    total = train.max_steps or max(1, math.ceil(train.epochs * per_epoch))
    return per_epoch, total


def _build_recipe(config: Config, mixed_precision: str) -> Any:
    if config.model.kind == "vila":
        from medm3.train import vila_sft

        return vila_sft.build(config, mixed_precision)
    from medm3.train import hf_sft

    return hf_sft.build(config, mixed_precision)


def _to_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


class _JsonLog:
    """Append-only JSON-lines log; on resume, entries after the resumed step are dropped."""

    def __init__(self, path: Path, start_step: int, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        if not enabled:
            return
        kept = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    if json.loads(line).get("step", 0) <= start_step:
                        kept.append(line)
                except ValueError:
                    continue
        path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


class Trainer:
    """One training run (see the module docstring); use :func:`train`.

    Args:
        config: The validated configuration.
        on_step: Called after each optimizer step with ``(step, record)``.
        progress: Show a progress bar on the main process.
    """

    def __init__(self, config: Config, on_step: StepHook | None = None, progress: bool = True):
        self.config = config
        self.on_step = on_step
        self.progress = progress
        self.output_dir = Path(config.train.output_dir)

    # -- setup ---------------------------------------------------------------------------
    def _accelerator(self) -> Any:
        try:
            from accelerate import Accelerator
            from accelerate.utils import DistributedDataParallelKwargs, DistributedType
        except ImportError:  # pragma: no cover - depends on the environment
            raise MissingDependencyError("accelerate", "train", "m3 train") from None
        train = self.config.train
        self.mixed_precision = resolve_mixed_precision(train.mixed_precision)
        handlers = []
        if self.config.tune.vision_tower or self.config.tune.projector:
            # Text-only batches leave the vision side without gradients (DDP must allow it).
            handlers.append(DistributedDataParallelKwargs(find_unused_parameters=True))
        acc = Accelerator(
            mixed_precision=self.mixed_precision,
            gradient_accumulation_steps=train.gradient_accumulation_steps,
            kwargs_handlers=handlers,
        )
        if acc.distributed_type == DistributedType.DEEPSPEED:
            ds = acc.state.deepspeed_plugin.deepspeed_config
            ds["train_micro_batch_size_per_gpu"] = train.batch_size
            if ds.get("gradient_clipping", "auto") == "auto":
                ds["gradient_clipping"] = train.max_grad_norm
        self.distributed_type = acc.distributed_type
        return acc

    def _checkpoint_hooks(self, acc: Any, module: Any) -> dict[str, Any]:
        """Leave frozen weights out of checkpoints; returns the matching load kwargs."""
        from accelerate.utils import DistributedType

        if all(p.requires_grad for p in module.parameters()):
            return {}

        def keep_trainable(models: list, weights: list, _folder: str) -> None:
            for i, model in enumerate(models[: len(weights)]):
                names = {n for n, p in model.named_parameters() if p.requires_grad}
                weights[i] = {k: v for k, v in weights[i].items() if k in names}

        acc.register_save_state_pre_hook(keep_trainable)
        if self.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
            return {}
        return {"strict": False}

    # -- checkpoints ---------------------------------------------------------------------
    def _save(self, acc: Any, step: int, epoch: int, state_extra: dict[str, Any]) -> None:
        tmp = checkpoints.temp_dir(self.output_dir, step)
        if acc.is_main_process:
            checkpoints.clear_temp(self.output_dir)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {"step": step, "epoch": epoch, **state_extra}
            checkpoints.finalize(tmp, checkpoints.checkpoint_dir(self.output_dir, step), state)
            checkpoints.prune(self.output_dir, self.config.train.save_total_limit)
        acc.wait_for_everyone()

    # -- loop ----------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train, checkpoint and export; returns the :class:`TrainResult`."""
        run = self._start()
        last_loss = self._train(run)
        export_dir = self._export(run.acc, run.model, run.recipe, run.step)
        run.acc.wait_for_everyone()
        run.acc.free_memory()
        return TrainResult(
            self.output_dir,
            run.step,
            export_dir,
            last_loss,
            self.output_dir / LOG_NAME,
            run.acc.is_main_process,
        )

    def _start(self) -> _Run:
        """Read the data, build the model and optimizer, and resume from a checkpoint if any."""
        import torch
        from accelerate.utils import set_seed

        from medm3.train.dataset import ConversationDataset, read_samples
        from medm3.utils.atomic import atomic_write_text

        config, train = self.config, self.config.train
        samples = read_samples(config.data.train, config.data.image_folder)
        resume_dir = checkpoints.resume_from(self.output_dir, train.resume)
        acc = self._accelerator()
        per_epoch, total = plan_steps(len(samples), config, acc.num_processes)
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.output_dir / "config.yaml", dump_config(config))

        set_seed(train.seed)
        recipe = _build_recipe(config, self.mixed_precision)
        dataset = ConversationDataset(samples, recipe.encode)
        dataset[0]  # fail fast on template/processor problems
        module = recipe.module
        optimizer = torch.optim.AdamW(
            param_groups(module, train.weight_decay), lr=train.learning_rate
        )
        factor = lr_lambda(train.lr_scheduler, math.ceil(train.warmup_ratio * total), total)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        load_kwargs = self._checkpoint_hooks(acc, module)
        model, optimizer = acc.prepare(module, optimizer)
        acc.register_for_checkpointing(scheduler)
        step = self._resume(acc, resume_dir, len(samples), load_kwargs)
        extra = {
            "total_steps": total,
            "world_size": acc.num_processes,
            "batch_size": train.batch_size,
            "gradient_accumulation_steps": train.gradient_accumulation_steps,
            "seed": train.seed,
            "examples": len(samples),
        }
        return _Run(
            acc, model, optimizer, scheduler, recipe, dataset, factor, per_epoch, total, extra, step
        )

    def _resume(
        self, acc: Any, resume_dir: Path | None, n: int, load_kwargs: dict[str, Any]
    ) -> int:
        """Load the checkpoint to resume from (checked against this run); the step it reached."""
        if resume_dir is None:
            return 0
        state = checkpoints.read_state(resume_dir)
        self._check_resume(state, n, acc.num_processes)
        acc.load_state(str(resume_dir), **load_kwargs)
        if acc.is_main_process:
            logger.info("resumed from %s (step %d)", resume_dir, state["step"])
        return int(state["step"])

    def _train(self, run: _Run) -> float | None:
        """The optimizer steps from ``run.step`` to the end; returns the last loss."""
        acc = run.acc
        log = _JsonLog(self.output_dir / LOG_NAME, run.step, acc.is_main_process)
        bar = self._progress_bar(acc, run.total, run.step)
        last_loss: float | None = None
        last_saved = run.step
        try:
            while run.step < run.total:
                epoch, done = divmod(run.step, run.per_epoch)
                micro_batches, n_steps = self._epoch(
                    run.dataset, run.recipe, epoch, done, run.per_epoch, acc
                )
                for _ in range(n_steps):
                    started = time.perf_counter()
                    loss, grad_norm = self._step(
                        acc, run.model, run.optimizer, run.scheduler, micro_batches
                    )
                    run.step += 1
                    last_loss = loss
                    record = self._record(run, loss, grad_norm, started)
                    if self._after_step(run, record, loss, log, bar, epoch):
                        last_saved = run.step
                    if run.step >= run.total:
                        break
            if self.config.train.save_steps and run.step > last_saved:
                self._save(acc, run.step, run.step // run.per_epoch, run.extra)
        finally:
            bar.close()
        return last_loss

    def _record(self, run: _Run, loss: float, grad_norm: Any, started: float) -> dict[str, Any]:
        """The log record of the step just taken."""
        return {
            "step": run.step,
            "epoch": round(run.step / run.per_epoch, 4),
            "loss": round(loss, 6),
            "lr": self.config.train.learning_rate * run.factor(run.step - 1),
            "grad_norm": grad_norm,
            "seconds": round(time.perf_counter() - started, 4),
        }

    def _after_step(
        self, run: _Run, record: dict[str, Any], loss: float, log: _JsonLog, bar: Any, epoch: int
    ) -> bool:
        """Log, show progress, checkpoint and call ``on_step``; True when a checkpoint was saved."""
        train, step = self.config.train, run.step
        if step % train.logging_steps == 0 or step == run.total:
            log.write(record)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{record['lr']:.2e}")
        saved = bool(train.save_steps) and step % train.save_steps == 0
        if saved:
            self._save(run.acc, step, epoch, run.extra)
        if self.on_step is not None:
            self.on_step(step, record)
        return saved

    def _epoch(
        self, dataset: Any, recipe: Any, epoch: int, done: int, per_epoch: int, acc: Any
    ) -> tuple[Any, int]:
        """Iterator over this process's remaining micro-batches of ``epoch``, and its step count.

        ``done`` optimizer steps of the epoch were taken already (resume): their
        micro-batches are skipped without being loaded.
        """
        import torch

        train = self.config.train
        accum = train.gradient_accumulation_steps
        batches = epoch_batches(
            len(dataset), train.batch_size, acc.num_processes, acc.process_index, train.seed, epoch
        )[done * accum : per_epoch * accum]
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            collate_fn=recipe.collate,
            num_workers=self.config.data.num_workers,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(train.seed + epoch),  # global RNG untouched
        )
        return iter(loader), len(batches) // accum

    def _step(
        self, acc: Any, model: Any, optimizer: Any, scheduler: Any, micro_batches: Any
    ) -> tuple[float, float | None]:
        import torch

        losses = []
        grad_norm = None
        for _ in range(self.config.train.gradient_accumulation_steps):
            batch = _to_device(next(micro_batches), acc.device)
            with acc.accumulate(model):
                loss = model(**batch)
                acc.backward(loss)
                losses.append(loss.detach())
                if acc.sync_gradients:
                    if self.config.train.max_grad_norm > 0:
                        norm = acc.clip_grad_norm_(
                            model.parameters(), self.config.train.max_grad_norm
                        )
                        grad_norm = None if norm is None else round(float(norm), 6)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
        mean = acc.reduce(torch.stack(losses).mean(), reduction="mean")
        return float(mean), grad_norm

    def _progress_bar(self, acc: Any, total: int, initial: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            initial=initial,
            desc="m3 train",
            unit="step",
            disable=not (self.progress and acc.is_main_process),
            dynamic_ncols=True,
        )

    def _check_resume(self, state: dict[str, Any], n: int, world: int) -> None:
        train = self.config.train
        now = {
            "world_size": world,
            "batch_size": train.batch_size,
            "gradient_accumulation_steps": train.gradient_accumulation_steps,
            "seed": train.seed,
            "examples": n,
        }
        changed = [k for k, v in now.items() if k in state and state[k] != v]
        if changed:
            logger.warning(
                "resuming with different %s than the checkpoint: the data order differs from "
                "the interrupted run",
                ", ".join(changed),
            )

    def _export(self, acc: Any, model: Any, recipe: Any, step: int) -> Path | None:
        config = self.config
        if not config.export.enabled:
            return None
        folder = config.export_dir
        state = acc.get_state_dict(model)
        if acc.is_main_process:
            recipe.info.update({"steps": step, "config": config.to_dict()})
            recipe.export(state, folder)
            if recipe.save_adapter is not None and config.export.save_adapter:
                recipe.save_adapter(state, folder / "adapter")
            logger.info("exported the fine-tuned model to %s", folder)
        return folder


def train(config: Config, *, on_step: StepHook | None = None, progress: bool = True) -> TrainResult:
    """Run ``m3 train`` with a validated config.

    Args:
        config: From :func:`medm3.train.config.load_config`.
        on_step: Called after every optimizer step with ``(step, record)``
            (after the step's checkpoint); raising from it stops the run, as an
            interruption would.
        progress: Show the progress bar (main process only).

    Returns:
        The :class:`TrainResult`.

    Raises:
        InputError: Bad data, checkpoint or settings.
        MissingDependencyError: accelerate/peft missing.
    """
    return Trainer(config, on_step=on_step, progress=progress).run()
