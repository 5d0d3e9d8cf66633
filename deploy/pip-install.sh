#!/bin/sh
# pip install inside the Dockerfile's build. A CA bundle given to the build as the secret
# `extra_ca` (a TLS-intercepting proxy's CA) is trusted for this install only: it is appended to
# the image's CA certificates in a temporary file, never written to a layer.
set -eu
if [ -s /run/secrets/extra_ca ]; then
  ca=$(mktemp)
  cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca > "$ca"
  PIP_CERT=$ca pip install "$@"
  rm -f "$ca"
else
  pip install "$@"
fi
