#!/usr/bin/env bash
# Replaces the vendored Swagger UI (forecast-api/assets/swagger-ui) with swagger-ui-dist <version>
# from npm, and prints the files' SHA-256 for the README there.
set -euo pipefail
version=${1:?usage: $0 <swagger-ui-dist version, e.g. 5.35.0>}
root=$(cd "$(dirname "$0")/.." && pwd)
target=$root/forecast-api/assets/swagger-ui
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$version" >/dev/null && tar xzf swagger-ui-dist-*.tgz)
for file in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE; do
    cp "$work/package/$file" "$target/$file"
done
(cd "$target" && sha256sum swagger-ui-bundle.js swagger-ui.css)
echo "now set SWAGGER_UI_VERSION = \"$version\" in forecast-api/src/http/docs.rs and the README's version"
