"""Training: the one loop and its parts.

* ``loop``: ``train(cfg, out, resume=False)``, the training run (``faceverify train``: faceverify/commands/train.py;
  the bench, the tests)
* ``schedules``: ``LambdaSchedule`` (A-Softmax lambda annealing), ``WarmupLR`` (multistep/cosine/poly + warm-up)
* ``augment``: ``AugmentedFaces`` (random 112x96 windows of the padded crops + flips), ``ResumableSampler`` (the
  ``(index, epoch)`` keys those random choices are drawn from, resumable part-way through an epoch)
* ``training_set``: ``open_training_set`` (the recipe's packed set: found, or its identity folders prepared on the fly
  into a cache)
* ``run_data``: ``open_run_data`` (the dataset a step reads: augmented crops, or distillation's views and teacher
  targets), ``build_distill_loss``
* ``config``: YAML recipes with defaults and ``--set`` overrides
* ``dist``: torchrun / DDP helpers (gloo on CPU, NCCL on GPU)
* ``logger``: ``metrics.csv`` (step,loss,accuracy,lr,lambda), TensorBoard, ``training_curve.png``
* ``validate``: ``LfwView1Validator`` (LFW View 1 pairsDevTest, never View 2)
"""

from .augment import AugmentedFaces, ResumableSampler
from .schedules import LambdaSchedule, WarmupLR

__all__ = ["AugmentedFaces", "LambdaSchedule", "ResumableSampler", "WarmupLR"]
