"""Registers `sugar` (SUGAR, seed 001_28c514d82eb344af.txt): two stages, `align` (sec. 3.2: the GCN skeleton
encoder aligned with class knowledge text by MIL-NCE; a recognizer by text similarity in its own right) then `llm`
(sec. 3.3: frozen encoder -> Temporal Query Projection -> LoRA LLM that names and describes the action)."""

from ...registry import Recipe, register_recipe
from .config import SugarConfig
from .model import SugarAlignRecognizer, SugarLLMRecognizer

RECIPE = register_recipe(Recipe(
    name="sugar",
    description="SUGAR: GCN skeleton encoder aligned with per-class motion knowledge text (MIL-NCE) -> Temporal "
                "Query Projection -> LoRA LLM names the action (classes scored by name log-likelihood) and "
                "describes it; the align stage alone recognises unseen and request-time classes by text",
    config_cls=SugarConfig,
    recognizer=SugarLLMRecognizer,
    stages=("align", "llm"),
    stage_recognizers={"align": SugarAlignRecognizer},
    stage_input="align_folder",
    # sec. 4: stage 1 SGD lr 0.01, 200 epochs, batch 200, step decay; stage 2 LoRA lr 2e-5, batch 128, 1 epoch
    # on LLaMA2-7B. chosen for CPU runs: stage 1 with the GCN schedule of the stgcn recipe (SGD nesterov lr 0.1,
    # cosine, wd 5e-4, batch 16), which trains the same blocks in tens of epochs; stage 2 AdamW lr 5e-4 for LoRA
    # and 1e-3 for the bridge (trained from scratch, unlike the paper's pretrained LLM), a few epochs
    stage_defaults={"align": {"optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4, "batch_size": 16, "epochs": 40,
                              "warmup_ratio": 0.0, "max_grad_norm": 10.0, "eval_every": 5},
                    "llm": {"optimizer": "adamw", "lr": 5e-4, "head_lr": 1e-3, "weight_decay": 0.0,
                            "batch_size": 4, "epochs": 3, "warmup_ratio": 0.05, "max_grad_norm": 1.0}},
    search_space={"bridge.segments": {"choice": [2, 4]}, "bridge.tokens": {"choice": [16, 32]},
                  "temperature": {"loguniform": [0.03, 0.3]}, "rank": {"choice": [16, 64]}},
    knobs={"window": "clip.window", "stride": "clip.stride", "frames": "clip.frames", "preset": "encoder.preset",
           "temperature": "temperature", "knowledge": "knowledge", "rank": "lora.r", "alpha": "lora.alpha",
           "backbone": "backbone.name_or_path", "gguf_file": "backbone.gguf_file", "prompt": "prompt",
           "segments": "bridge.segments", "tokens": "bridge.tokens", "bridge": "bridge.kind"},
))
