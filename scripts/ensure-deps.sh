#!/bin/sh
# Installs the system programs the project needs when they are missing.
# Usage: scripts/ensure-deps.sh [redis] [postgres] [openssl] [schemathesis] [browser]
set -eu

have() { command -v "$1" >/dev/null 2>&1; }

apt_install() {
    if ! have apt-get; then
        echo "error: $* missing and apt-get is not available; install them with your package manager" >&2
        exit 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if have sudo; then SUDO=sudo; else
            echo "error: $* missing; run as root or install them: apt-get install -y $*" >&2
            exit 1
        fi
    else
        SUDO=
    fi
    echo "installing $* with apt-get" >&2
    # Only refresh the package lists when they are missing or older than a day.
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
        $SUDO apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

for component in "$@"; do
    case "$component" in
        redis)
            if ! have redis-server || ! have redis-cli; then
                apt_install redis-server redis-tools
            fi
            ;;
        openssl)
            if ! have openssl; then apt_install openssl; fi
            ;;
        postgres)
            # Tests run their own server from the Debian binaries (initdb, pg_ctl).
            if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
                apt_install postgresql
            fi
            ;;
        schemathesis)
            # API schema testing (PyPI), in a virtual environment of the project's own.
            venv="$(dirname "$0")/../.tools/venv"
            if [ ! -x "$venv/bin/schemathesis" ]; then
                if ! have python3; then apt_install python3 python3-venv; fi
                python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
                echo "installing schemathesis into .tools/venv" >&2
                "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
            fi
            ;;
        browser)
            # Debian's Chromium, driven by playwright-core (npm; never its own browser download).
            if ! have chromium; then apt_install chromium; fi
            if ! have node || ! have npm; then apt_install nodejs npm; fi
            browser_dir="$(dirname "$0")/../tests/browser"
            if [ ! -d "$browser_dir/node_modules/playwright-core" ]; then
                echo "installing playwright-core into tests/browser" >&2
                (cd "$browser_dir" && npm ci --silent --no-audit --no-fund)
            fi
            ;;
        *)
            echo "error: unknown component $component" >&2
            exit 2
            ;;
    esac
done
