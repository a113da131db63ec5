"""Registers `sugar` (SUGAR, seed 001_28c514d82eb344af.txt). This step: stage `align` (sec. 3.2), the skeleton
encoder aligned with class knowledge text by MIL-NCE -- a recognizer by text similarity. Stage 2 (Temporal Query
Projection + LoRA LLM, sec. 3.3) is not built yet (README.md)."""

from ...registry import Recipe, register_recipe
from .config import SugarConfig
from .model import SugarAlignRecognizer

RECIPE = register_recipe(Recipe(
    name="sugar",
    description="SUGAR stage 1: GCN skeleton encoder aligned with per-class motion knowledge text (MIL-NCE); "
                "classes by text similarity, so unseen classes can be named at evaluation and request time",
    config_cls=SugarConfig,
    recognizer=SugarAlignRecognizer,
    stages=("align",),
    search_space={"temperature": {"loguniform": [0.03, 0.3]}, "lr": {"loguniform": [0.01, 0.2]},
                  "clip.frames": {"choice": [32, 48]}},
    knobs={"window": "clip.window", "stride": "clip.stride", "frames": "clip.frames", "preset": "encoder.preset",
           "temperature": "temperature", "knowledge": "knowledge"},
    # sec. 4 (implementation): SGD, lr 0.01, 200 epochs, batch 200, step decay x0.1. chosen for CPU runs: the
    # GCN schedule the stgcn recipe uses (SGD nesterov lr 0.1, cosine, wd 5e-4, batch 16), which trains the same
    # blocks in tens of epochs; the paper's lr 0.01 is one --lr away
    train_defaults={"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "batch_size": 16, "epochs": 40,
                    "warmup_ratio": 0.0, "max_grad_norm": 10.0, "eval_every": 5},
))
