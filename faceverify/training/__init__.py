"""Training: the one loop and its parts.

* ``loop``: ``train(cfg, out, resume=False)``, the training run (``faceverify train``: faceverify/commands/train.py;
  the bench, the tests)
* ``schedules``: ``LambdaSchedule`` (A-Softmax lambda annealing), ``WarmupLR`` (multistep/cosine/poly + warm-up)
* ``data``: ``AugmentedFaces`` (random 112x96 windows of the padded crops + flips), ``ResumableSampler``
* ``datasets``: ``open_training_set`` (a packed set, or identity folders prepared on the fly into a cache)
* ``config``: YAML recipes with defaults and ``--set`` overrides
* ``dist``: torchrun / DDP helpers (gloo on CPU, NCCL on GPU)
* ``logger``: ``metrics.csv`` (step,loss,accuracy,lr,lambda), TensorBoard, ``training_curve.png``
* ``validate``: ``LfwView1Validator`` (LFW View 1 pairsDevTest, never View 2)
"""

from .data import AugmentedFaces, ResumableSampler
from .schedules import LambdaSchedule, WarmupLR

__all__ = ["AugmentedFaces", "LambdaSchedule", "ResumableSampler", "WarmupLR"]
