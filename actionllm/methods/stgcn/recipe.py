"""Registers `stgcn`: ST-GCN (Yan, Xiong, Lin, AAAI 2018), trained with PYSKL's recipe (Duan et al. 2022)."""

from ...registry import Recipe, register_recipe
from .config import STGCNConfig
from .model import STGCNRecognizer

RECIPE = register_recipe(Recipe(
    name="stgcn",
    description="ST-GCN baseline (Yan et al. 2018): spatial-configuration graph convs + temporal convs, no LLM",
    config_cls=STGCNConfig,
    recognizer=STGCNRecognizer,
    search_space={
        "clip.frames": {"choice": [32, 48, 64]},
        "lr": {"loguniform": [0.01, 0.2]},
        "weight_decay": {"loguniform": [1e-4, 1e-3]},
    },
    knobs={"window": "clip.window", "stride": "clip.stride", "frames": "clip.frames", "preset": "preset"},
    # PYSKL's ST-GCN schedule: SGD momentum 0.9 nesterov, lr 0.1, weight decay 5e-4, cosine, batch 16/GPU
    train_defaults={"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "batch_size": 16, "epochs": 40,
                    "warmup_ratio": 0.0, "max_grad_norm": 10.0, "eval_every": 5},
))
