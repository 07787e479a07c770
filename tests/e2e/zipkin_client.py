"""A real Zipkin client for tests/e2e/zipkin.rs.

Usage: zipkin_client.py HOST:PORT

1. The OpenTelemetry Python SDK with its Zipkin JSON v2 exporter
   (opentelemetry-exporter-zipkin-json, installed by scripts/test.sh) sends
   one trace across two services: frontend's SERVER span "GET /checkout",
   its CLIENT span "POST /pay", and payments' SERVER span "POST /pay" under
   it, which fails (status ERROR, "card declined") and records an event.
2. Zipkin protobuf: a ListOfSpans encoded by the protobuf runtime from a
   descriptor built here from zipkin.proto's field numbers (so not by
   Skein's own declarations): a CLIENT span with a remote endpoint, and
   the SERVER half that shares its span ID.

Prints one JSON object with what was sent, for the test to compare.
"""

import json
import sys
import time

try:
    from opentelemetry import trace
    from opentelemetry.exporter.zipkin.json import ZipkinExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    import requests
except ImportError as e:
    sys.exit(
        f"missing Python package ({e}); install it with "
        "`python3 -m pip install opentelemetry-exporter-zipkin-json==1.45.1` (scripts/test.sh does)"
    )

addr = sys.argv[1]
endpoint = f"http://{addr}/api/v2/spans"


def provider(service, ipv4, port):
    p = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = ZipkinExporter(endpoint=endpoint, local_node_ipv4=ipv4, local_node_port=port)
    p.add_span_processor(SimpleSpanProcessor(exporter))
    return p


frontend = provider("frontend", "10.0.0.1", 8080)
payments = provider("payments", "10.0.0.2", 9090)
ft = frontend.get_tracer("shop.frontend", "1.2.3")
pt = payments.get_tracer("shop.payments")

out = {}
with ft.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
    root.set_attribute("http.method", "GET")
    with ft.start_as_current_span("POST /pay", kind=SpanKind.CLIENT) as client:
        client.set_attribute("http.status_code", 402)
        ctx = trace.set_span_in_context(client)
        server = pt.start_span("POST /pay", context=ctx, kind=SpanKind.SERVER)
        server.add_event("charge attempt", {"card.last4": "4242", "attempt": 2})
        server.set_status(Status(StatusCode.ERROR, "card declined"))
        server.end()
        out["server"] = {
            "span_id": format(server.get_span_context().span_id, "016x"),
            "start_ns": server.start_time,
            "end_ns": server.end_time,
            "event_ns": server.events[0].timestamp,
        }
    out["client"] = {"span_id": format(client.get_span_context().span_id, "016x")}
out["trace_id"] = format(root.get_span_context().trace_id, "032x")
out["root"] = {"span_id": format(root.get_span_context().span_id, "016x")}
frontend.shutdown()
payments.shutdown()

# --- Zipkin protobuf, from a descriptor of zipkin.proto -------------------
f = descriptor_pb2.FileDescriptorProto(name="zipkin_e2e.proto", package="zipkin2.proto3", syntax="proto3")
T = descriptor_pb2.FieldDescriptorProto


def message(name, fields):
    m = f.message_type.add(name=name)
    for fname, number, ftype, label, type_name in fields:
        fd = m.field.add(name=fname, number=number, type=ftype, label=label)
        if type_name:
            fd.type_name = type_name
    return m


OPT, REP = T.LABEL_OPTIONAL, T.LABEL_REPEATED
message("Endpoint", [
    ("service_name", 1, T.TYPE_STRING, OPT, None),
    ("ipv4", 2, T.TYPE_BYTES, OPT, None),
    ("ipv6", 3, T.TYPE_BYTES, OPT, None),
    ("port", 4, T.TYPE_INT32, OPT, None),
])
message("Annotation", [("timestamp", 1, T.TYPE_FIXED64, OPT, None), ("value", 2, T.TYPE_STRING, OPT, None)])
span_msg = message("Span", [
    ("trace_id", 1, T.TYPE_BYTES, OPT, None),
    ("parent_id", 2, T.TYPE_BYTES, OPT, None),
    ("id", 3, T.TYPE_BYTES, OPT, None),
    ("kind", 4, T.TYPE_INT32, OPT, None),  # the enum's wire form
    ("name", 5, T.TYPE_STRING, OPT, None),
    ("timestamp", 6, T.TYPE_FIXED64, OPT, None),
    ("duration", 7, T.TYPE_UINT64, OPT, None),
    ("local_endpoint", 8, T.TYPE_MESSAGE, OPT, ".zipkin2.proto3.Endpoint"),
    ("remote_endpoint", 9, T.TYPE_MESSAGE, OPT, ".zipkin2.proto3.Endpoint"),
    ("annotations", 10, T.TYPE_MESSAGE, REP, ".zipkin2.proto3.Annotation"),
    ("tags", 11, T.TYPE_MESSAGE, REP, ".zipkin2.proto3.Span.TagsEntry"),
    ("debug", 12, T.TYPE_BOOL, OPT, None),
    ("shared", 13, T.TYPE_BOOL, OPT, None),
])
entry = span_msg.nested_type.add(name="TagsEntry")
entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=OPT)
entry.field.add(name="value", number=2, type=T.TYPE_STRING, label=OPT)
entry.options.map_entry = True
message("ListOfSpans", [("spans", 1, T.TYPE_MESSAGE, REP, ".zipkin2.proto3.Span")])
pool = descriptor_pool.DescriptorPool()
pool.Add(f)
ListOfSpans = message_factory.GetMessageClass(pool.FindMessageTypeByName("zipkin2.proto3.ListOfSpans"))

now_us = int(time.time() * 1e6)
trace_id = bytes.fromhex("5af7183fb1d4cf5f")  # 64-bit
span_id = bytes.fromhex("352bff9a74ca9ad2")
parent = bytes.fromhex("6b221d5bc9e6496c")
lst = ListOfSpans()
c = lst.spans.add(trace_id=trace_id, parent_id=parent, id=span_id, kind=1, name="get /api",
                  timestamp=now_us, duration=207000)
c.local_endpoint.service_name = "gateway"
c.local_endpoint.ipv4 = bytes([192, 168, 99, 1])
c.remote_endpoint.service_name = "backend"
c.remote_endpoint.ipv4 = bytes([172, 3, 0, 2])
c.remote_endpoint.port = 9000
c.annotations.add(timestamp=now_us + 10, value="ws")
c.tags["http.path"] = "/api"
s = lst.spans.add(trace_id=trace_id, parent_id=parent, id=span_id, kind=2, name="get /api",
                  timestamp=now_us + 50, duration=100000, shared=True)
s.local_endpoint.service_name = "backend"
s.tags["error"] = "true"
r = requests.post(endpoint, data=lst.SerializeToString(), headers={"Content-Type": "application/x-protobuf"})
out["proto"] = {"status": r.status_code, "trace_id": trace_id.hex(), "span_id": span_id.hex(),
                "parent": parent.hex(), "timestamp_us": now_us}
print(json.dumps(out))
