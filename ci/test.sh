#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: the TLS and HTTP tests drive
# the engine with clients nobody here wrote (Python's ssl, openssl s_client,
# curl and wrk), installed first if missing (Debian's packages).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} for the tests" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo test "$@"
