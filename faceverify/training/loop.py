"""The training loop: one run of a recipe. ``faceverify train`` (``python -m train``, ``torchrun
-m train``), ``bench/train_speed.py`` and the tests all train through :func:`train`.

    from faceverify.training.config import load_config
    from faceverify.training.loop import train
    summary = train(load_config("train/configs/smoke.yaml"), "runs/smoke")

Writes ``OUT/checkpoints/last.pt`` (+ ``step_XXXXXXX.pt`` if ``keep_every``), ``OUT/model.pt`` (the
inference bundle, so ``OUT`` is a model directory), ``OUT/metrics.csv``, ``OUT/val.csv``,
``OUT/tb/`` (TensorBoard), ``OUT/training_curve.png``, ``OUT/config.yaml`` and ``OUT/summary.json``.
Under torchrun every process calls it (DDP: gloo on CPU, NCCL on GPUs); only rank 0 writes.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..backbones import build_backbone
from ..backbones.onnx_graph import graph_from_model, load_onnx_weights
from ..checkpoint import inference_state, load_checkpoint, save_checkpoint
from ..errors import ConfigError, FaceverifyError
from ..losses import MarginLoss, build_head
from ..models import resolve_model
from . import dist as fdist
from .config import recipe_hash, template_size
from .augment import ResumableSampler
from .logger import MetricsLogger
from .run_data import build_distill_loss, log_columns, open_run_data
from .schedules import LambdaSchedule, WarmupLR


# ---- state helpers -----------------------------------------------------------------------------
def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(cfg: dict, params) -> torch.optim.Optimizer:
    name = cfg["name"].lower()
    if name == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
                               nesterov=cfg.get("nesterov", False))
    if name == "adamw":
        return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=tuple(cfg.get("betas", (0.9, 0.999))))
    raise ConfigError(f"unknown optimizer {cfg['name']!r}; choose sgd or adamw.")


class TrainNet(nn.Module):
    """Backbone + head (+ the distillation projection) in one module, so DDP all-reduces them all."""

    def __init__(self, backbone: nn.Module, head: nn.Module, distill: nn.Module | None = None):
        super().__init__()
        self.backbone, self.head, self.distill = backbone, head, distill

    def forward(self, x: torch.Tensor, labels: torch.Tensor):
        embedding = self.backbone(x)
        # unlabelled faces (-1) pass through the head with class 0; their loss is masked out.
        # With distill.raw the embedding lives in the teacher's narrow cone: the head separates
        # identities on its centred part, where the teacher's identity information is.
        head_input = embedding
        if self.distill is not None and self.distill.w_raw:
            head_input = torch.nn.functional.normalize(embedding.float(), dim=1) - self.distill.mean
        return self.head(head_input, labels.clamp(min=0)), embedding


def margin_loss(loss_fn: MarginLoss, output, labels: torch.Tensor) -> torch.Tensor:
    """The margin loss over the labelled faces of the batch (0, still in the graph, when none are)."""
    mask = labels >= 0
    if bool(mask.all()):
        return loss_fn(output, labels)
    if not bool(mask.any()):
        return output.logits.sum() * 0.0
    return loss_fn(type(output)(output.logits[mask], output.cos_logits[mask]), labels[mask])


# ---- the run -----------------------------------------------------------------------------------
def train(cfg: dict, out: str | os.PathLike, resume: bool = False,
          on_log: Callable[[dict], None] | None = None) -> dict | None:
    """Train ``cfg`` (a recipe from :func:`~faceverify.training.config.load_config`) into ``out``;
    ``resume`` continues ``OUT/checkpoints/last.pt`` at its step. ``on_log`` receives every logged
    row on the main process (the metrics.csv values and ``images_per_s`` of that window).

    Returns the run's summary (also written to ``OUT/summary.json``) on the main process, None on
    the others. Raises :class:`~faceverify.errors.FaceverifyError` subclasses on bad recipes/data."""
    tcfg, dcfg = cfg["train"], cfg["data"]
    info = fdist.init_distributed(tcfg["device"])
    if info.device.type == "cpu" and tcfg.get("threads"):  # CPU threads of the node, shared by its processes
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, int(tcfg["threads"]) // local))
    out = Path(out)
    ckpt_dir = out / "checkpoints"
    last = ckpt_dir / "last.pt"
    if info.is_main:
        if last.exists() and not resume:
            raise ConfigError(f"{out} already holds a run ({last}); pass --resume to continue it or choose another --out.")
        if resume and not last.exists():
            raise ConfigError(f"--resume: {last} does not exist; start without --resume.")
    fdist.barrier(info)

    total_batch = int(tcfg["batch_size"])
    if total_batch % info.world_size:
        raise ConfigError(f"train.batch_size {total_batch} (total) is not divisible by {info.world_size} processes.")
    batch = total_batch // info.world_size
    seed = int(cfg["seed"])
    seed_everything(seed)

    data = open_run_data(cfg, info, seed)
    dataset, classes, num_classes = data.dataset, data.classes, data.num_classes
    distilling = bool(data.teachers)
    raw_weight = float(cfg["distill"]["raw"]) if distilling else 0.0
    crop = template_size(dcfg["template"])
    sampler = ResumableSampler(dataset, info.world_size, info.rank, seed=seed)
    steps_per_epoch = len(sampler) // batch
    if steps_per_epoch < 1:
        raise ConfigError(f"{len(dataset)} images give no full batch of {batch} per process; lower train.batch_size.")

    # model, head, loss, optimisation
    mcfg, hcfg, kcfg = cfg["model"], cfg["head"], cfg["distill"]
    backbone_kwargs = {"embedding_dim": int(mcfg["embedding_dim"]), "input_size": list(crop), **(mcfg.get("kwargs") or {})}
    start_from = None
    if mcfg.get("init_from"):  # the student starts from a teacher's ONNX weights (backbone onnx_graph)
        start_from = resolve_model(mcfg["init_from"])
        backbone_kwargs["graph"] = graph_from_model(start_from)
    backbone = build_backbone(mcfg["backbone"], **backbone_kwargs)
    if start_from is not None and not resume:
        load_onnx_weights(backbone, str(start_from.weights))
    head = build_head(hcfg["name"], int(mcfg["embedding_dim"]), num_classes, **(hcfg.get("kwargs") or {}))
    distill_loss = build_distill_loss(cfg, data.teachers)
    margin_weight = float(kcfg["margin"]) if distilling else 1.0
    net = TrainNet(backbone, head, distill_loss).to(info.device)
    loss_fn = MarginLoss(reg_lambda=float(hcfg.get("regularizer") or 0.0))
    lamb = LambdaSchedule(**hcfg["lambda"]) if head.lamb_supported and hcfg.get("lambda") else None
    ocfg, scfg = cfg["optim"], cfg["schedule"]
    optimizer = build_optimizer(ocfg, net.parameters())
    steps = int(tcfg["steps"])
    warmup = min(int(scfg["warmup_steps"]), steps)  # a run shortened with --set train.steps=N keeps a valid warm-up
    scheduler = WarmupLR(optimizer, scfg["kind"], steps, warmup, float(scfg["warmup_start"]),
                         scfg.get("milestones") or (), float(scfg["gamma"]), float(scfg["power"]), float(scfg["min_lr"]))
    use_amp = bool(tcfg["amp"])
    channels_last = bool(tcfg["channels_last"])
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    cuda = info.device.type == "cuda"
    amp_dtype = torch.float16 if cuda else torch.bfloat16  # fp16 + GradScaler on CUDA, bf16 autocast on CPU
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and cuda)

    step = 0
    if resume:
        state = load_checkpoint(last, map_location=info.device)
        if state["backbone"]["name"] != mcfg["backbone"] or state["head"]["num_classes"] != num_classes:
            raise ConfigError(f"{last} was trained with backbone {state['backbone']['name']!r} / "
                              f"{state['head']['num_classes']} classes; the recipe now says {mcfg['backbone']!r} / "
                              f"{num_classes}. Resume with the run's own config ({out / 'config.yaml'}).")
        backbone.load_state_dict(state["model"])
        head.load_state_dict(state["head"]["state"])
        if distill_loss is not None and state.get("distill_state") is not None:
            distill_loss.load_state_dict(state["distill_state"])
        optimizer.load_state_dict(state["optimizer"])
        # positions come from the checkpoint, schedule parameters from the recipe, so that
        # `--resume --set train.steps=N` extends a run (the saved recipe is OUT/config.yaml)
        scheduler.load_state_dict(state["scheduler"], position_only=True)
        scaler.load_state_dict(state["scaler"])
        if lamb is not None and state.get("lambda_state"):
            lamb.iteration = int(state["lambda_state"]["iteration"])
        step = int(state["step"])
        rngs = state["rng"]
        set_rng_state(rngs[info.rank] if info.rank < len(rngs) else rngs[0])
        for stale in ckpt_dir.glob(".last.pt.tmp-*"):  # temp files of a writer killed mid-save
            if info.is_main:
                stale.unlink(missing_ok=True)
    model = DistributedDataParallel(net, device_ids=[info.device.index] if cuda else None) if info.distributed else net

    validator = None
    vcfg = cfg["val"]
    if info.is_main and int(vcfg["every"]) > 0:
        from .validate import LfwView1Validator

        validator = LfwView1Validator(dcfg["template"], int(vcfg["pairs"]), cache_dir=dcfg["cache_dir"])

    epoch, position = divmod(step, steps_per_epoch)
    sampler.set_position(epoch, position * batch)
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, num_workers=int(dcfg["workers"]), drop_last=True,
                        pin_memory=cuda, persistent_workers=False)

    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        n_params = sum(p.numel() for p in backbone.parameters())
        labelled = int((dataset.labels >= 0).sum())
        print(f"train: {len(dataset)} images ({labelled} labelled), {num_classes} identities; {mcfg['backbone']} ({n_params / 1e6:.2f}M params) "
              f"+ {hcfg['name']} head; batch {total_batch} total = {info.world_size} process(es) x {batch}; "
              f"{steps_per_epoch} steps/epoch; steps {step} -> {steps}; device {info.device}"
              f"{f' ({info.backend})' if info.backend else ''}; amp {'on (' + str(amp_dtype).split('.')[-1] + ')' if use_amp else 'off'}",
              flush=True)
    logger = MetricsLogger(out, enabled=info.is_main, resume_step=step if resume else None,
                           tensorboard=bool(tcfg.get("tensorboard", True)),
                           extra_columns=log_columns(distill_loss, raw_weight))

    log_every, ckpt_every, val_every = int(tcfg["log_every"]), int(tcfg["checkpoint_every"]), int(vcfg["every"])
    keep_every = int(tcfg.get("keep_every") or 0)
    clip = float(ocfg.get("grad_clip") or 0.0)

    def save(step_now: int) -> None:
        rngs = fdist.all_gather_object(rng_state(), info)
        if info.is_main:
            state = inference_state(mcfg["backbone"], backbone_kwargs, dcfg["template"], fdist.unwrap(net).backbone)
            state.update({
                "head": {"name": hcfg["name"], "num_classes": num_classes, "classes": list(classes),
                         "state": head.state_dict()},
                "distill_state": distill_loss.state_dict() if distill_loss is not None else None,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                "lambda_state": lamb.state_dict() if lamb is not None else None, "step": step_now,
                "epoch": step_now // steps_per_epoch, "rng": rngs, "config": copy.deepcopy(cfg),
                "world_size": info.world_size,
            })
            save_checkpoint(last, state)
            if keep_every and step_now % keep_every == 0:
                save_checkpoint(ckpt_dir / f"step_{step_now:07d}.pt", state)
        fdist.barrier(info)

    bar = tqdm(total=steps, initial=step, desc="train", unit="step", disable=not info.is_main, dynamic_ncols=True)
    window_loss = window_acc = 0.0
    window_n = 0
    window_extra: dict[str, float] = {}
    window_start = time.perf_counter()
    started = time.perf_counter()
    start_step = step
    first_loss = last_loss = None
    model.train()
    while step < steps:
        for batch_data in loader:
            x = batch_data[0].to(info.device, non_blocking=True)
            y = batch_data[1].to(info.device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            lamb_now = lamb.step() if lamb is not None else 0.0  # Caffe: iter += 1, then lambda(iter)
            if lamb is not None:
                head.lamb = lamb_now
            lr_now = optimizer.param_groups[0]["lr"]
            with torch.autocast(info.device.type, dtype=amp_dtype, enabled=use_amp):
                output, embedding = model(x, y)
            loss = margin_weight * margin_loss(loss_fn, output, y) if margin_weight > 0 else output.logits.sum() * 0.0
            if distilling:
                d_loss, parts = fdist.unwrap(model).distill(embedding, batch_data[2].to(info.device, non_blocking=True))
                loss = loss + d_loss
                for key, value in parts.items():
                    window_extra[key] = window_extra.get(key, 0.0) + float(value)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if not torch.isfinite(loss):
                raise FaceverifyError(f"the loss became {loss.item()} at step {step}; lower the learning rate, enable "
                                      "grad clipping, or (A-Softmax) anneal lambda more slowly (larger lambda_min).")
            window_loss += loss.item()
            labelled_mask = y >= 0
            window_acc += ((output.cos_logits.argmax(1) == y) & labelled_mask).float().sum().item() / max(1, int(labelled_mask.sum()))
            window_n += 1
            if step % log_every == 0 or step == steps:
                stats = fdist.all_reduce_mean(torch.tensor([window_loss / window_n, window_acc / window_n]), info).tolist()
                elapsed = time.perf_counter() - window_start
                img_s = window_n * total_batch / elapsed if elapsed > 0 else 0.0
                extra = {k: v / window_n for k, v in window_extra.items()}
                logger.log_train(step, stats[0], stats[1], lr_now, lamb_now, img_s, extra)
                if on_log is not None and info.is_main:
                    on_log({"step": step, "loss": stats[0], "accuracy": stats[1], "lr": lr_now, "lambda": lamb_now,
                            "images_per_s": img_s, "steps_in_window": window_n, **extra})
                bar.set_postfix(loss=f"{stats[0]:.3f}", acc=f"{stats[1]:.3f}", lam=f"{lamb_now:.3g}", lr=f"{lr_now:.3g}",
                                img_s=f"{img_s:.0f}")
                first_loss = stats[0] if first_loss is None else first_loss
                last_loss = stats[0]
                window_loss = window_acc = 0.0
                window_n = 0
                window_extra = {}
                window_start = time.perf_counter()
            bar.update(1)
            if val_every and step % val_every == 0:
                if validator is not None:
                    result = validator(fdist.unwrap(net).backbone, info.device, int(vcfg["batch_size"]))
                    logger.log_val(step, result)
                    tqdm.write(f"step {step}: LFW View 1 ({result['pairs']} DevTest pairs) accuracy "
                               f"{result['accuracy']:.4f} (best threshold on these pairs), AUC {result['auc']:.4f}")
                fdist.barrier(info)
            if step % ckpt_every == 0 or step == steps:
                save(step)
            if step >= steps:
                break
        epoch += 1
        sampler.set_epoch(epoch)
    bar.close()

    summary = None
    if info.is_main:
        final = inference_state(mcfg["backbone"], backbone_kwargs, dcfg["template"], fdist.unwrap(net).backbone,
                                step=step, config=copy.deepcopy(cfg), recipe_sha256=recipe_hash(cfg))
        save_checkpoint(out / "model.pt", final)
        curve = logger.close()
        elapsed = time.perf_counter() - started
        summary = {"recipe_sha256": recipe_hash(cfg), "steps": step, "resumed_from": start_step if resume else None,
                   "first_logged_loss": first_loss,
                   "last_logged_loss": last_loss, "seconds": round(elapsed, 1),
                   "images_per_s": round((step - start_step) * total_batch / elapsed, 1) if elapsed > 0 else None,
                   # relative to the run directory: the record names no machine path when it is published
                   "checkpoint": str(last.relative_to(out)), "model": "model.pt",
                   "curve": str(Path(curve).relative_to(out)) if curve else None}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary), flush=True)
    fdist.barrier(info)
    fdist.cleanup(info)
    return summary
