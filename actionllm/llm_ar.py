"""LLM-AR (seed 002), stage 2: the LLM reads an "action sentence" and names the action.

A clip goes through the frozen stage-1 VQ-VAE (actionllm.bridges.action_vqvae) to W codes; their codebook
vectors (log_0(c_u), the backbone's embedding width) are spliced as `inputs_embeds` at `[tokens]` of the
instruction "Given a sequence of action tokens [tokens], please predict the corresponding action." and the LoRA
LLM is trained with cross-entropy on the tokens of the action's name (+ EOS) (eq. 13).

Why inputs_embeds and not new vocabulary rows: the codebook is already in the embedding space (its width is
the backbone's and the MMD term pulls it towards the word embeddings), so splicing the vectors needs no
resized embedding matrix or LM head. The base model stays byte-for-byte the published one (only LoRA weights
are trained and saved, as the paper's "pre-trained weights untouched"), which keeps a serving replica able to
hold one base for many recognizers, and the codes cost no vocabulary slots in the LM head's softmax.

Label scoring head: a class's score is the log-likelihood of its name (+ EOS) after the instruction, computed
for every candidate class with the instruction's KV cache shared (one prefix pass, then all names at once):
exact top-1/top-5 over the candidates, no parsing of free text. Free generation (greedy, `max_new_tokens`) is
returned beside the scores for display. Unseen-class protocol (Table 8): `held_out` classes are dropped from
training; at evaluation and serving the candidates are the held-out classes, named in the prompt
(`list_candidates`: "... from [list].").
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .backbone import apply_lora, describe, load_backbone, load_base, unwrap
from .bridges.action_vqvae import WEIGHTS as VQVAE_WEIGHTS
from .bridges.action_vqvae import ActionVQVAE, clip_features, load_vqvae
from .recipes import get_recipe
from .recognizer import RecognizerBase, _needs_base_weights, read_config
from .skeleton.layouts import get_layout

NEG = -1e4  # score of a class that is not a candidate (finite: softmax stays defined)


def class_text(name: str) -> str:
    """'high_arm_wave' -> 'high arm wave': what the LLM reads and writes."""
    return name.replace("_", " ").strip()


class LabelScorer:
    """Token ids of the instruction's two halves and of each class name; builds the LLM's inputs."""

    def __init__(self, cfg, tokenizer, class_names: list[str]):
        self.tok = tokenizer
        self.cfg = cfg
        self.class_names = list(class_names)
        if tokenizer.eos_token_id is None:
            raise ValueError("the backbone's tokenizer has no EOS token: a class name could not be terminated")
        self.eos = int(tokenizer.eos_token_id)
        self.lead = list(tokenizer("", add_special_tokens=True)["input_ids"])  # BOS where the tokenizer adds one
        self.answers = [tokenizer(" " + class_text(c), add_special_tokens=False)["input_ids"] + [self.eos]
                        for c in self.class_names]
        held = set(cfg.held_out)
        self.train_candidates = [i for i, c in enumerate(self.class_names) if c not in held]
        self.eval_candidates = ([i for i, c in enumerate(self.class_names) if c in held] if held
                                else list(range(len(self.class_names))))
        self._halves: dict[tuple[int, ...], tuple[list[int], list[int]]] = {}

    def prompt_halves(self, candidates: list[int]) -> tuple[list[int], list[int]]:
        """Token ids before and after [tokens] (tokenised once per candidate set: this runs every forward)."""
        key = tuple(candidates)
        if key not in self._halves:
            self._halves[key] = self._tokenise_halves(candidates)
        return self._halves[key]

    def _tokenise_halves(self, candidates: list[int]) -> tuple[list[int], list[int]]:
        text = self.cfg.list_prompt if self.cfg.list_candidates else self.cfg.prompt
        text = text.replace("[list]", ", ".join(class_text(self.class_names[i]) for i in candidates))
        pre, post = text.split("[tokens]")
        ids = lambda s: self.tok(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
        return self.lead + ids(pre.rstrip()), ids(post)

    def answer_batch(self, classes: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer ids [R, A] (right-padded with EOS) and their mask [R, A]."""
        longest = max(len(self.answers[c]) for c in classes)
        ids = torch.full((len(classes), longest), self.eos, dtype=torch.long)
        mask = torch.zeros((len(classes), longest), dtype=torch.long)
        for r, c in enumerate(classes):
            ids[r, : len(self.answers[c])] = torch.tensor(self.answers[c])
            mask[r, : len(self.answers[c])] = 1
        return ids.to(device), mask.to(device)


class LLMARRecognizer(RecognizerBase):
    """Stage 2 of llm-ar (`--stage llm`): frozen action VQ-VAE -> instruction with the action sentence ->
    LoRA LLM -> class scores from the names' log-likelihoods. Its folder holds the VQ-VAE as well."""

    stage = "llm"
    explanation = "none (uniform: LLM-AR has no per-frame read-back)"

    def __init__(self, config: dict, class_names: list[str], layout: str, dims: int, *, recipe: str = "llm-ar",
                 model=None, tokenizer=None, vqvae: ActionVQVAE | None = None, seed: int = 0, device: str = "cpu",
                 lora: bool = True, **_ignored):
        super().__init__()
        from .baselines.stgcn import ClipEncoder

        self.recipe = recipe
        self.cfg = get_recipe(recipe).config_cls.model_validate(config)
        self.class_names, self.layout, self.dims = list(class_names), layout, int(dims)
        if vqvae is None:
            if not self.cfg.tokenizer:
                raise ValueError("the llm stage needs the stage-1 VQ-VAE: set recipe_config.tokenizer to a "
                                 "tokenizer-stage recognizer folder (or train both stages: no --stage)")
            vqvae, meta = load_vqvae(self.cfg.tokenizer)
            if meta["layout"] != layout or int(meta["dims"]) != self.dims:
                raise ValueError(f"{self.cfg.tokenizer}: the VQ-VAE reads {meta['layout']}/{meta['dims']}D, "
                                 f"the data is {layout}/{dims}D")
        features = self.cfg.clip.max_bodies * get_layout(layout).num_joints * self.dims
        if vqvae.features != features:
            raise ValueError(f"the VQ-VAE reads {vqvae.features} features per frame but clip.max_bodies "
                             f"{self.cfg.clip.max_bodies} x {get_layout(layout).num_joints} joints x {dims}D is {features}")
        self.vqvae = vqvae.requires_grad_(False).eval()
        if model is None:
            model, tokenizer = load_backbone(self.cfg.backbone, device=device, seed=seed)
        if model.config.hidden_size != self.vqvae.dim:
            raise ValueError(f"the VQ-VAE's codebook is {self.vqvae.dim}-wide but the backbone's embeddings are "
                             f"{model.config.hidden_size}-wide: train the tokenizer stage with this backbone")
        self.tokenizer = tokenizer
        self.llm = apply_lora(model, self.cfg.lora) if lora else model
        self.scorer = LabelScorer(self.cfg, tokenizer, self.class_names)
        self.encoder = ClipEncoder(self.cfg.model_dump(), layout, dims, recipe=recipe)

    @property
    def candidates(self) -> list[int]:
        return list(self.scorer.eval_candidates)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vqvae.eval()  # frozen stage 1: never in training mode
        return self

    # --- the pieces ------------------------------------------------------------------------------------------
    def collate_fn(self):
        from .baselines.stgcn import ClipCollate

        return ClipCollate()

    def action_sentence(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Clips [B, M, T, V, C] -> (codes [B, W], their vectors [B, W, d] in the LLM's dtype)."""
        with torch.no_grad():
            codes = self.vqvae.quantise(clip_features(x.float(), self.cfg.clip.max_bodies))
            vec = self.vqvae.code_vectors()[codes]
        return codes, vec.to(self.llm.get_input_embeddings().weight.dtype)

    def _prefix(self, vec: torch.Tensor, candidates: list[int]) -> torch.Tensor:
        """[B, L0, d]: embedded instruction with the action sentence at [tokens]."""
        emb = self.llm.get_input_embeddings()
        pre, post = self.scorer.prompt_halves(candidates)
        b = vec.shape[0]
        pre_e, post_e = (emb(torch.tensor(ids, device=vec.device, dtype=torch.long)).expand(b, -1, -1)
                         for ids in (pre, post))
        return torch.cat([pre_e, vec, post_e], 1)

    def _decoder(self):
        return unwrap(self.llm).get_decoder()

    def _lm_head(self):
        return unwrap(self.llm).get_output_embeddings()

    def answer_logprobs(self, prefix: torch.Tensor, rows: torch.Tensor, classes: list[int],
                        share_prefix: bool) -> torch.Tensor:
        """Per-token log p of each row's class name (+EOS) after its sample's prefix -> [R, A] (0 where padded).

        rows [R]: the sample of each row. share_prefix: run the prefix once per sample and repeat its KV cache
        for the rows (scoring many classes); otherwise one pass over prefix + answer per row (training)."""
        from transformers import DynamicCache

        ans, mask = self.scorer.answer_batch(classes, prefix.device)
        emb = self.llm.get_input_embeddings()
        l0 = prefix.shape[1]
        decoder, head = self._decoder(), self._lm_head()
        if share_prefix:
            cache = DynamicCache(config=unwrap(self.llm).config)
            out = decoder(inputs_embeds=prefix, use_cache=True, past_key_values=cache)
            first = out.last_hidden_state[:, -1][rows]  # [R, d]: predicts the first answer token
            counts = torch.bincount(rows, minlength=prefix.shape[0])
            if not torch.equal(rows, torch.repeat_interleave(torch.arange(len(counts), device=rows.device), counts)):
                raise ValueError("rows must be grouped by sample")
            if not bool((counts == counts[0]).all()):
                raise ValueError("every sample needs the same number of rows to share its prefix")
            cache = out.past_key_values
            cache.batch_repeat_interleave(int(counts[0]))
            att = torch.cat([torch.ones(len(rows), l0, dtype=torch.long, device=prefix.device), mask], 1)
            pos = (l0 + torch.arange(ans.shape[1] - 1, device=prefix.device)).expand(len(rows), -1)
            rest = decoder(inputs_embeds=emb(ans[:, :-1]), attention_mask=att[:, :-1], position_ids=pos,
                           past_key_values=cache, use_cache=True).last_hidden_state if ans.shape[1] > 1 else None
            h = first[:, None] if rest is None else torch.cat([first[:, None], rest], 1)  # [R, A, d]
        else:
            inputs = torch.cat([prefix[rows], emb(ans)], 1)
            att = torch.cat([torch.ones(len(rows), l0, dtype=torch.long, device=prefix.device), mask], 1)
            h = decoder(inputs_embeds=inputs, attention_mask=att, use_cache=False).last_hidden_state
            h = h[:, l0 - 1: l0 - 1 + ans.shape[1]]
        logp = torch.log_softmax(head(h).float(), -1).gather(-1, ans[..., None]).squeeze(-1)
        return logp * mask

    def score_classes(self, vec: torch.Tensor, candidates: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Class scores [B, K] (sum log-likelihood of each candidate's name; NEG for the others) and the
        per-token log-probs [B, K', A] of the candidates."""
        b, k = vec.shape[0], len(candidates)
        prefix = self._prefix(vec, candidates)
        rows = torch.arange(b, device=vec.device).repeat_interleave(k)
        classes = candidates * b
        tok_logp = self.answer_logprobs(prefix, rows, classes, share_prefix=True).view(b, k, -1)
        scores = torch.full((b, len(self.class_names)), NEG, device=vec.device)
        scores[:, candidates] = tok_logp.sum(-1)
        return scores, tok_logp

    # --- the loop's contract ---------------------------------------------------------------------------------
    def forward(self, x, body_mask=None, labels=None, class_weights=None) -> dict:
        _, vec = self.action_sentence(x)
        if self.training:  # eq. 13: cross-entropy on the true name's tokens (teacher forcing)
            if labels is None:
                raise ValueError("training needs labels")
            cands = self.scorer.train_candidates
            prefix = self._prefix(vec, cands)
            logp = self.answer_logprobs(prefix, torch.arange(len(labels), device=vec.device),
                                        [int(c) for c in labels], share_prefix=False)
            ntok = torch.tensor([len(self.scorer.answers[int(c)]) for c in labels], device=vec.device)
            nll = -logp.sum(-1)
            w = (class_weights.to(vec.device)[labels] if class_weights is not None
                 else torch.ones(len(labels), device=vec.device))
            loss = (w * nll).sum() / (w * ntok).sum()
            return {"loss": loss, "logits": None}
        # validation during training (labels given) scores the training classes; evaluation and serving
        # (predict_windows) the eval candidates: the held-out classes of an unseen-class run, else all
        cands = self.scorer.train_candidates if labels is not None else self.scorer.eval_candidates
        scores, tok_logp = self.score_classes(vec, cands)
        out = {"logits": scores}
        if labels is not None:  # the generative loss of the true names (the candidates' rows that match)
            pos = {c: j for j, c in enumerate(cands)}
            nll, ntok = vec.new_zeros(()).float(), 0
            for i, c in enumerate(labels.tolist()):
                if c in pos:
                    nll = nll - tok_logp[i, pos[c]].sum()
                    ntok += len(self.scorer.answers[c])
            out["loss"] = nll / max(ntok, 1)
        return out

    def count_tokens(self, batch: dict) -> int:
        w = batch["x"].shape[2] // 4
        pre, post = self.scorer.prompt_halves(self.scorer.train_candidates)
        names = sum(len(self.scorer.answers[int(c)]) for c in batch["labels"]) if "labels" in batch else 0
        return len(batch["x"]) * (len(pre) + w + len(post)) + names

    def param_groups(self, lr: float, head_lr: float | None = None) -> list[dict]:
        return [{"params": [p for p in self.llm.parameters() if p.requires_grad], "lr": lr}]

    def load_weights(self, folder: str | Path) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.llm, load_file(str(Path(folder) / "adapter_model.safetensors")))

    # --- inference -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, vec: torch.Tensor, candidates: list[int], max_new_tokens: int) -> list[str]:
        """Greedy free generation after the instruction (display only; the scores decide the label)."""
        from transformers import DynamicCache

        if max_new_tokens <= 0:
            return [""] * vec.shape[0]
        prefix = self._prefix(vec, candidates)
        decoder, head, emb = self._decoder(), self._lm_head(), self.llm.get_input_embeddings()
        cache = DynamicCache(config=unwrap(self.llm).config)
        out = decoder(inputs_embeds=prefix, use_cache=True, past_key_values=cache)
        h, cache, pos = out.last_hidden_state[:, -1:], out.past_key_values, prefix.shape[1]
        ids, done = [], torch.zeros(vec.shape[0], dtype=torch.bool, device=vec.device)
        for _ in range(max_new_tokens):
            nxt = head(h).float().argmax(-1)  # [B, 1]
            ids.append(nxt)
            done |= nxt[:, 0] == self.scorer.eos
            if bool(done.all()):
                break
            out = decoder(inputs_embeds=emb(nxt), past_key_values=cache, use_cache=True,
                          position_ids=torch.full_like(nxt, pos))
            h, cache, pos = out.last_hidden_state, out.past_key_values, pos + 1
        texts = []
        for row in torch.cat(ids, 1).tolist():
            row = row[: row.index(self.scorer.eos)] if self.scorer.eos in row else row
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts

    @torch.no_grad()
    def predict_windows(self, windows: list[np.ndarray], batch_size: int = 8) -> dict:
        from .baselines.stgcn import ClipCollate, prepare_clip

        was_training = self.training
        self.eval()
        device = self.llm.get_input_embeddings().weight.device
        probs, generated, codes_out, tokens = [], [], [], 0
        cands = self.scorer.eval_candidates
        collate = ClipCollate()
        for s in range(0, len(windows), batch_size):
            chunk = windows[s:s + batch_size]
            x = np.empty(len(chunk), dtype=object)
            x[:] = [prepare_clip(w, self.cfg, self.layout)[0] for w in chunk]
            batch = collate({"x": x})
            codes, vec = self.action_sentence(batch["x"].to(device))
            scores, _ = self.score_classes(vec, cands)
            probs.append(torch.softmax(scores.float(), -1).cpu().numpy())
            generated += self.generate(vec, cands, self.cfg.max_new_tokens)
            codes_out += codes.cpu().tolist()
            tokens += self.count_tokens({"x": batch["x"]})
        self.train(was_training)
        joints = list(get_layout(self.layout).joints)
        return {"probabilities": np.concatenate(probs) if probs else np.zeros((0, len(self.class_names))),
                "frame_weights": [np.full(np.asarray(w).shape[-3], 1.0 / np.asarray(w).shape[-3], np.float32)
                                  for w in windows],
                "joint_weights": [np.full(len(joints), 1.0 / len(joints), np.float32) for _ in windows],
                "joint_names": joints, "tokens": tokens, "generated": generated, "action_tokens": codes_out}

    # --- folder ------------------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        base_name = self.cfg.backbone.name_or_path
        meta = {**self.base_meta(), "stage": self.stage, "joint_names": list(get_layout(self.layout).joints),
                "backbone": {"name_or_path": base_name, "revision": self.cfg.backbone.revision,
                             **describe(self.llm, self.tokenizer)},
                "base_weights": "base" if _needs_base_weights(base_name) else None,
                "vqvae": {"weights": VQVAE_WEIGHTS, "features": self.vqvae.features, "width": self.vqvae.dim,
                          "source": self.cfg.tokenizer}}
        (folder / "config.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        self.llm.save_pretrained(str(folder))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.vqvae.state_dict().items()},
                  str(folder / VQVAE_WEIGHTS))
        self.tokenizer.save_pretrained(str(folder / "tokenizer"))
        if meta["base_weights"]:
            from .backbone import save_base

            save_base(self.llm.get_base_model(), folder / "base")
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu", shared: dict | None = None) -> LLMARRecognizer:
        """Load a folder (self-contained: the VQ-VAE is inside). `shared` is accepted for the common signature;
        an llm-ar recognizer loads its own base."""
        from peft import PeftModel
        from transformers import AutoTokenizer

        folder = Path(folder)
        meta = read_config(folder)
        if meta.get("stage") != "llm":
            raise ValueError(f"{folder}: an llm-ar {meta.get('stage')!r}-stage folder, not a recognizer: evaluate "
                             "or serve the llm stage's folder (<run>/recognizer)")
        cfg = get_recipe(meta["recipe"]).config_cls.model_validate(meta["config"])
        vq = ActionVQVAE(meta["vqvae"]["features"], meta["vqvae"]["width"], cfg.vqvae)
        vq.load_state_dict(load_file(str(folder / meta["vqvae"]["weights"])))
        if meta.get("base_weights"):
            model = load_base(folder / meta["base_weights"], attn_implementation=cfg.backbone.attn_implementation)
            tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        else:
            model, tokenizer = load_backbone(cfg.backbone, device=device)
        llm = PeftModel.from_pretrained(model, str(folder), is_trainable=False)
        rec = cls(meta["config"], meta["class_names"], meta["layout"], meta["dims"], recipe=meta["recipe"],
                  model=llm, tokenizer=tokenizer, vqvae=vq, lora=False)
        return rec.to(device).eval()
