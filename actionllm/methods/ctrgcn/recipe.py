"""Registers `ctrgcn`: CTR-GCN (Chen et al., ICCV 2021), trained with PYSKL's GCN schedule (Duan et al. 2022)."""

from ...registry import Recipe, register_recipe
from .config import CTRGCNConfig
from .model import CTRGCNRecognizer

RECIPE = register_recipe(Recipe(
    name="ctrgcn",
    description="CTR-GCN (Chen et al. 2021): channel-wise refined topologies + multi-scale temporal convs, no LLM",
    config_cls=CTRGCNConfig,
    recognizer=CTRGCNRecognizer,
    search_space={
        "clip.frames": {"choice": [32, 48, 64]},
        "lr": {"loguniform": [0.01, 0.2]},
        "weight_decay": {"loguniform": [1e-4, 1e-3]},
    },
    knobs={"window": "clip.window", "stride": "clip.stride", "frames": "clip.frames", "preset": "preset"},
    # PYSKL's CTR-GCN schedule (the same as its ST-GCN one): SGD momentum 0.9 nesterov, lr 0.1, weight decay 5e-4,
    # cosine, batch 16/GPU. (The authors' own: lr 0.1, wd 4e-4, batch 64, 5 warm-up epochs, steps at 35 and 55.)
    train_defaults={"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "batch_size": 16, "epochs": 40,
                    "warmup_ratio": 0.0, "max_grad_norm": 10.0, "eval_every": 5},
))
