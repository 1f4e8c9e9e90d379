#!/bin/sh
# Fails the native build early, in one line, when liburing's development files are missing.
if ! pkg-config --exists liburing 2>/dev/null; then
  echo "dmremap-ublk: liburing not found by pkg-config: install it (Debian/Ubuntu: apt-get install liburing-dev)" >&2
  exit 1
fi
