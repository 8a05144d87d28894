#!/usr/bin/env bash
# Makes sure `haproxy` is on PATH for the load-balancer end-to-end tests (tests/tests/balancer.rs):
# installs Debian's `haproxy` package with apt-get when it is missing. The system service is not
# used (nor started on purpose): each test runs its own haproxy process with its own config in a
# temporary directory. Without haproxy (e.g. no root, no apt) those tests skip, except under
# CI=true, where they fail.
set -euo pipefail

if command -v haproxy >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "haproxy.sh: haproxy is not installed and apt-get is not available; install haproxy yourself" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
        echo "haproxy.sh: haproxy is not installed and installing it needs root" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
install() {
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends haproxy
}
echo "haproxy.sh: installing haproxy"
if ! install; then
    # A fresh machine may have no package lists yet.
    $sudo apt-get update -q
    install
fi
# The package may start its service anyway (on a machine with an init system): the tests do not
# use it, and it listens on no port of theirs.
command -v haproxy >/dev/null 2>&1
haproxy -v | head -1
