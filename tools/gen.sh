#!/usr/bin/env bash
# Regenerates Python messages, gRPC stubs, .pyi typing stubs and the Envoy descriptor set
# from protos/ into the folder given as $1 (gen/ normally).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: tools/gen.sh OUTDIR}
deps=.build/protodeps
py="$PWD/.venv/bin/python"
mkdir -p "$out"
find "$out" -mindepth 1 -not -name '.gitkeep' -delete
protos=$(cd protos && find paymesh -name '*.proto' | LC_ALL=C sort)
(cd protos && $py -m grpc_tools.protoc -I . -I "../$deps" \
    --python_out="../$out" --grpc_python_out="../$out" \
    --mypy_out="../$out" --mypy_grpc_out="../$out" $protos)
# Envoy's transcoder needs every message it renders, google.rpc details included.
(cd protos && $py -m grpc_tools.protoc -I . -I "../$deps" --include_imports \
    --descriptor_set_out="../$out/paymesh.binpb" $protos \
    google/rpc/status.proto google/rpc/error_details.proto)
# Packages, so that setuptools, mypy and the import system agree on them.
find "$out/paymesh" -type d -exec touch {}/__init__.py \;
# The REST API's OpenAPI document and the event type catalog with its objects' JSON Schemas, from
# the protos with their comments (tools/openapi.py). The catalog is read from the stubs just
# generated into $out, not from whatever gen/ held before.
with_comments=$(mktemp)
trap 'rm -f "$with_comments"' EXIT
(cd protos && $py -m grpc_tools.protoc -I . -I "../$deps" --include_imports --include_source_info \
    --descriptor_set_out="$with_comments" $protos)
PYTHONPATH="$out${PYTHONPATH:+:$PYTHONPATH}" \
    $py tools/openapi.py "$with_comments" "$out/openapi.json" "$out/event_types.json"
