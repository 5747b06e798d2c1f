#!/usr/bin/env bash
# The README walkthrough, verbatim, in a throwaway home: wallets, mint, transfer, history, verify.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export INFERPAY_HOME="$(mktemp -d)"
export INFERPAY_PASSWORD="demo-password"   # demo only: real users get a no-echo prompt
trap 'rm -rf "$INFERPAY_HOME"' EXIT
set -x
inferpay init
inferpay wallet create alice
BOB=$(inferpay wallet create bob)
inferpay mint alice 100
inferpay transfer alice "$BOB" 30
inferpay balance alice
inferpay history alice
inferpay verify
