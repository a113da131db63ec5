#!/usr/bin/env bash
# A real Ray head on this machine for `actionllm submit`: token auth on, dashboard (Jobs API) on 127.0.0.1:8265.
#   cluster/local.sh up [--num-cpus 4 ...]     # = actionllm cluster up
#   cluster/local.sh status                    # = actionllm cluster status
#   cluster/local.sh down                      # = actionllm cluster down (stops only this head)
# Uses the project's virtualenv (.venv, made by `make install`) unless ACTIONLLM points at another command.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
actionllm="${ACTIONLLM:-$here/.venv/bin/actionllm}"
if [ ! -x "$actionllm" ]; then
  echo "error: $actionllm not found: run \`make install\` first (or set ACTIONLLM)" >&2
  exit 2
fi
case "${1:-}" in
  up|down|status) cmd="$1"; shift; exec "$actionllm" cluster "$cmd" "$@" ;;
  *) echo "usage: $0 up|status|down [options of actionllm cluster up]" >&2; exit 2 ;;
esac
