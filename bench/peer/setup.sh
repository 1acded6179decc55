#!/usr/bin/env sh
# Installs the peer (node-oidc-provider 9.x) into bench/peer/node_modules (ignored by git).
set -eu
cd "$(dirname "$0")"
npm install --no-audit --no-fund --loglevel=error
