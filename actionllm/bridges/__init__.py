"""Bridges: one module per method, each turning a skeleton window into something an LLM can read.

- `joint2text` (Action-JointsLLM sec. 4.1): joints -> named-coordinate text + a task prompt, tokenized with
  per-token (frame, joint) indices so the attn-pooling weights can be read back as frame/joint importance.

Modules are imported lazily by name (the registry holds dotted paths, not classes) so that importing
`actionllm.bridges` pulls in neither torch nor transformers.
"""

from __future__ import annotations

BRIDGES: dict[str, str] = {
    "joint2text": "actionllm.bridges.joint2text:Joint2Text",
}
