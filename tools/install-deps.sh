#!/bin/sh
# Installs the Debian packages drover needs to build, test and benchmark,
# skipping those already installed. Needs root or sudo when something is missing.
set -eu

BUILD="build-essential pkg-config libncurses-dev libproc2-dev libmsgpack-dev libuv1-dev libjansson-dev libcmocka-dev libmicrohttpd-dev zlib1g-dev libsystemd-dev libinih-dev"
TEST="python3 python3-pytest python3-msgpack prometheus systemd clang libclang-rt-14-dev tmux wrk valgrind procps jq openssh-server openssh-client gunicorn"
PKGS="$BUILD"
# the real servers `drover attach` is tested against (tests/integration/test_attach_servers.py);
# util-linux brings unshare and nsenter
SERVERS="nginx gunicorn uwsgi-core uwsgi-plugin-python3 util-linux"
[ -n "${DROVER_DEPS_BUILD_ONLY:-}" ] || PKGS="$BUILD $TEST $SERVERS"

# Node.js with its headers (the Node agent is built against node_api.h). A
# machine that already has a Node with headers (e.g. from NodeSource) keeps it.
if [ -z "${DROVER_DEPS_BUILD_ONLY:-}" ] && ! [ -f /usr/include/node/node_api.h ]; then
    command -v node >/dev/null 2>&1 || PKGS="$PKGS nodejs"
    PKGS="$PKGS libnode-dev"
fi

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ]; then
    echo "drover: all dependencies are installed"
    exit 0
fi
echo "drover: installing missing Debian packages:$missing"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "drover: cannot install packages: run 'make deps' as root, or install:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "drover: dependencies installed"
