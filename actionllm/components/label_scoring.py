"""Label scoring and generation for recognizers whose LLM writes the action's name (llm-ar, SUGAR, LVLM-VAR).

A prompt with a `[tokens]` slot is embedded with the method's vectors spliced in at the slot (`prefix`). A
class's score is the log-likelihood of its name (+ EOS) after that prefix, computed for every candidate class
with the prefix's KV cache shared (one prefix pass, then all names at once): exact top-1/top-5 over the
candidates, no parsing of free text (`score`). Training is cross-entropy on the true name's tokens (`nll`).
Free generation (greedy) is returned beside the scores for display (`generate`).

A `[list]` slot in the prompt names the candidate classes ("... from [list].", the unseen-class protocol).
"""

from __future__ import annotations

import copy

import torch

from .backbone import unwrap

NEG = -1e4  # score of a class that is not a candidate (finite: softmax stays defined)


def kv_cache(llm):
    """An empty KV cache for `llm` (transformers imported here, not when a GCN-only process loads this file)."""
    from transformers import DynamicCache

    return DynamicCache(config=unwrap(llm).config)


def class_text(name: str) -> str:
    """'high_arm_wave' -> 'high arm wave': what the LLM reads and writes."""
    return name.replace("_", " ").strip()


class LabelScorer:
    """Token ids of the prompt's two halves and of each class name; scores and generates with an LLM."""

    def __init__(self, tokenizer, class_names: list[str], prompt: str, held_out: list[str] | tuple = (),
                 terminator: str | None = None):
        if prompt.count("[tokens]") != 1:
            raise ValueError(f"the prompt must contain [tokens] exactly once: {prompt!r}")
        self.tok, self.prompt = tokenizer, prompt
        self.class_names = list(class_names)
        if tokenizer.eos_token_id is None:
            raise ValueError("the backbone's tokenizer has no EOS token: a class name could not be terminated")
        self.eos = int(tokenizer.eos_token_id)
        self.lead = list(tokenizer("", add_special_tokens=True)["input_ids"])  # BOS where the tokenizer adds one
        # a name ends with EOS, or with `terminator` when the model goes on writing after it (SUGAR: "name. why")
        end = [self.eos] if terminator is None else tokenizer(terminator, add_special_tokens=False)["input_ids"]
        self.answers = [self.name_ids(c) + end for c in self.class_names]
        held = set(held_out)
        self.train_candidates = [i for i, c in enumerate(self.class_names) if c not in held]
        self.eval_candidates = ([i for i, c in enumerate(self.class_names) if c in held] if held
                                else list(range(len(self.class_names))))
        self._halves: dict[tuple[int, ...], tuple[list[int], list[int]]] = {}

    # --- token ids -----------------------------------------------------------------------------------------
    def name_ids(self, name: str) -> list[int]:
        return list(self.tok(" " + class_text(name), add_special_tokens=False)["input_ids"])

    def prompt_halves(self, candidates: list[int]) -> tuple[list[int], list[int]]:
        """Token ids before and after [tokens] (tokenised once per candidate set: this runs every forward)."""
        key = tuple(candidates)
        if key not in self._halves:
            text = self.prompt.replace("[list]", ", ".join(class_text(self.class_names[i]) for i in candidates))
            pre, post = text.split("[tokens]")
            ids = lambda s: self.tok(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
            self._halves[key] = (self.lead + ids(pre.rstrip()), ids(post))
        return self._halves[key]

    def answer_batch(self, classes: list[int], device, table: list[list[int]] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer ids [R, A] (right-padded with EOS) and their mask [R, A]; `table`: other per-class token ids
        (training targets longer than the scored name) in place of the answers."""
        table = table or self.answers
        longest = max(len(table[c]) for c in classes)
        ids = torch.full((len(classes), longest), self.eos, dtype=torch.long)
        mask = torch.zeros((len(classes), longest), dtype=torch.long)
        for r, c in enumerate(classes):
            ids[r, : len(table[c])] = torch.tensor(table[c])
            mask[r, : len(table[c])] = 1
        return ids.to(device), mask.to(device)

    def prompt_tokens(self, slot: int, candidates: list[int]) -> int:
        """Tokens of one prompt with `slot` vectors at [tokens] (throughput figures)."""
        pre, post = self.prompt_halves(candidates)
        return len(pre) + slot + len(post)

    # --- with an LLM -----------------------------------------------------------------------------------------
    def prefix(self, llm, vec: torch.Tensor, candidates: list[int]) -> torch.Tensor:
        """[B, L0, d]: the embedded prompt with `vec` [B, W, d] at [tokens]."""
        emb = llm.get_input_embeddings()
        pre, post = self.prompt_halves(candidates)
        b = vec.shape[0]
        pre_e, post_e = (emb(torch.tensor(ids, device=vec.device, dtype=torch.long)).expand(b, -1, -1)
                         for ids in (pre, post))
        return torch.cat([pre_e, vec.to(pre_e.dtype), post_e], 1)

    def answer_logprobs(self, llm, prefix: torch.Tensor, rows: torch.Tensor, classes: list[int],
                        share_prefix: bool, table: list[list[int]] | None = None, keep: dict | None = None
                        ) -> torch.Tensor:
        """Per-token log p of each row's class name (+EOS) after its sample's prefix -> [R, A] (0 where padded).

        rows [R]: the sample of each row. share_prefix: run the prefix once per sample and repeat its KV cache
        for the rows (scoring many classes); otherwise one pass over prefix + answer per row (training). `keep`
        (with share_prefix): receives a copy of the prefix's cache and last hidden state, taken before the cache is
        repeated per row, from which `generate` continues without running the prefix again."""
        ans, mask = self.answer_batch(classes, prefix.device, table)
        emb = llm.get_input_embeddings()
        l0 = prefix.shape[1]
        decoder, head = unwrap(llm).get_decoder(), unwrap(llm).get_output_embeddings()
        if share_prefix:
            cache = kv_cache(llm)
            out = decoder(inputs_embeds=prefix, use_cache=True, past_key_values=cache)
            first = out.last_hidden_state[:, -1][rows]  # [R, d]: predicts the first answer token
            counts = torch.bincount(rows, minlength=prefix.shape[0])
            if not torch.equal(rows, torch.repeat_interleave(torch.arange(len(counts), device=rows.device), counts)):
                raise ValueError("rows must be grouped by sample")
            if not bool((counts == counts[0]).all()):
                raise ValueError("every sample needs the same number of rows to share its prefix")
            cache = out.past_key_values
            if keep is not None:
                keep.update(cache=copy.deepcopy(cache), last=out.last_hidden_state[:, -1:], length=l0)
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

    def score(self, llm, vec: torch.Tensor, candidates: list[int], keep: dict | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class scores [B, K] (sum log-likelihood of each candidate's name; NEG for the others) and the
        per-token log-probs [B, K', A] of the candidates. `keep`: see `answer_logprobs` (then `generate(...,
        start=keep)` writes the text without a second prefix pass)."""
        b, k = vec.shape[0], len(candidates)
        prefix = self.prefix(llm, vec, candidates)
        rows = torch.arange(b, device=vec.device).repeat_interleave(k)
        tok_logp = self.answer_logprobs(llm, prefix, rows, candidates * b, share_prefix=True,
                                        keep=keep).view(b, k, -1)
        scores = torch.full((b, len(self.class_names)), NEG, device=vec.device)
        scores[:, candidates] = tok_logp.sum(-1)
        return scores, tok_logp

    def nll(self, llm, vec: torch.Tensor, labels: torch.Tensor, class_weights: torch.Tensor | None = None,
            targets: list[list[int]] | None = None, name_weight: float = 1.0):
        """Cross-entropy on the true names' tokens (teacher forcing), per token, weighted by class. `targets`:
        per-class token ids to train on instead of the names (SUGAR: name + description + EOS), each starting with
        the scored answer (name + terminator), whose tokens count `name_weight` times (1: a plain mean)."""
        table = targets or self.answers
        prefix = self.prefix(llm, vec, self.train_candidates)
        logp = self.answer_logprobs(llm, prefix, torch.arange(len(labels), device=vec.device),
                                    [int(c) for c in labels], share_prefix=False, table=table)
        tok_w = torch.zeros_like(logp)
        for r, c in enumerate(labels.tolist()):
            tok_w[r, :len(table[c])] = 1.0
            if name_weight != 1.0:
                head = len(self.answers[c])
                if table[c][:head] != self.answers[c]:
                    raise ValueError(f"the training target of {self.class_names[c]!r} does not start with its name")
                tok_w[r, :head] = name_weight
        w = (class_weights.to(vec.device)[labels] if class_weights is not None
             else torch.ones(len(labels), device=vec.device))
        return (w * -(logp * tok_w).sum(-1)).sum() / (w * tok_w.sum(-1)).sum()

    def loop_outputs(self, llm, vec: torch.Tensor, labels: torch.Tensor | None, class_weights, training: bool,
                     targets: list[list[int]] | None = None, name_weight: float = 1.0) -> dict:
        """What a recognizer's forward returns to the loop. Training: the cross-entropy on the true classes' tokens
        (teacher forcing; `targets`: other per-class token ids than the names), no logits (generative). Validation
        (labels given, eval mode): scores over the training classes and their names' NLL. Evaluation and serving
        (no labels): scores over the eval candidates (the held-out classes of an unseen-class run, else all)."""
        if training:
            if labels is None:
                raise ValueError("training needs labels")
            return {"loss": self.nll(llm, vec, labels, class_weights, targets=targets, name_weight=name_weight),
                    "logits": None}
        cands = self.train_candidates if labels is not None else self.eval_candidates
        scores, tok_logp = self.score(llm, vec, cands)
        out = {"logits": scores}
        if labels is not None:
            out["loss"] = self.candidate_nll(tok_logp, labels, cands)
        return out

    def candidate_nll(self, tok_logp: torch.Tensor, labels: torch.Tensor, candidates: list[int]) -> torch.Tensor:
        """Validation loss from `score`'s per-token log-probs: the true names' rows among the candidates."""
        pos = {c: j for j, c in enumerate(candidates)}
        nll, ntok = tok_logp.new_zeros(()), 0
        for i, c in enumerate(labels.tolist()):
            if c in pos:
                nll = nll - tok_logp[i, pos[c]].sum()
                ntok += len(self.answers[c])
        return nll / max(ntok, 1)

    @torch.no_grad()
    def generate(self, llm, vec: torch.Tensor, candidates: list[int], max_new_tokens: int,
                 start: dict | None = None) -> list[str]:
        """Greedy free generation after the prompt (display only; the scores decide the label). `start`: what
        `score(..., keep=start)` kept of the same prompt (its prefix cache and last hidden state): the prefix is
        not run again."""
        if max_new_tokens <= 0:
            return [""] * vec.shape[0]
        decoder, head, emb = unwrap(llm).get_decoder(), unwrap(llm).get_output_embeddings(), llm.get_input_embeddings()
        if start:
            h, cache, pos = start["last"], start["cache"], start["length"]
        else:
            prefix = self.prefix(llm, vec, candidates)
            out = decoder(inputs_embeds=prefix, use_cache=True, past_key_values=kv_cache(llm))
            h, cache, pos = out.last_hidden_state[:, -1:], out.past_key_values, prefix.shape[1]
        ids, done = [], torch.zeros(vec.shape[0], dtype=torch.bool, device=vec.device)
        for _ in range(max_new_tokens):
            nxt = head(h).float().argmax(-1)  # [B, 1]
            ids.append(nxt)
            done |= nxt[:, 0] == self.eos
            if bool(done.all()):
                break
            out = decoder(inputs_embeds=emb(nxt), past_key_values=cache, use_cache=True,
                          position_ids=torch.full_like(nxt, pos))
            h, cache, pos = out.last_hidden_state, out.past_key_values, pos + 1
        texts = []
        for row in torch.cat(ids, 1).tolist():
            row = row[: row.index(self.eos)] if self.eos in row else row
            texts.append(self.tok.decode(row, skip_special_tokens=True).strip())
        return texts
