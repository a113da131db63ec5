"""A small OpenAI-compatible chat server around a real causal LM (the offline SmolLM2-135M-Instruct by default):
what `actionllm describe --endpoint` is tested against as a separate process, in place of vLLM or Ray Serve LLM,
which need a GPU and weights this machine cannot fetch. GET /v1/models and POST /v1/chat/completions (the fields
describe sends: model, messages, max_tokens, temperature, seed); one generation at a time.

    python tests/e2e/openai_server.py --port 8001 [--backbone smollm2-135m] [--api-key-env NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--api-key-env", default=None, help="NAME of a variable holding the key requests must send")
    args = ap.parse_args()

    import torch

    from actionllm.components.backbone import BackboneConfig, load_backbone

    model, tok = load_backbone(BackboneConfig(name_or_path=args.backbone))
    model.eval()
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    lock = threading.Lock()

    def complete(body: dict) -> str:
        messages = body["messages"]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        enc = tok(text, return_tensors="pt", add_special_tokens=False)
        temperature = float(body.get("temperature") or 0.0)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with lock, torch.no_grad():
            if body.get("seed") is not None:
                torch.manual_seed(int(body["seed"]))
            ids = model.generate(**enc, max_new_tokens=int(body.get("max_tokens") or 64), pad_token_id=tok.pad_token_id,
                                 **sampling)
        return tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def allowed(self) -> bool:
            if key and self.headers.get("Authorization") != f"Bearer {key}":
                self.send(401, {"error": {"message": "invalid API key", "type": "invalid_request_error"}})
                return False
            return True

        def do_GET(self):
            if not self.allowed():
                return
            if self.path.rstrip("/") != "/v1/models":
                return self.send(404, {"error": {"message": f"no route {self.path}"}})
            self.send(200, {"object": "list", "data": [{"id": args.backbone, "object": "model", "owned_by": "local"}]})

        def do_POST(self):
            if not self.allowed():
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self.send(404, {"error": {"message": f"no route {self.path}"}})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                content = complete(body)
            except (ValueError, KeyError, TypeError) as err:
                return self.send(400, {"error": {"message": f"bad request: {err}"}})
            self.send(200, {"id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
                            "model": body.get("model", args.backbone),
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                         "finish_reason": "stop"}]})

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
