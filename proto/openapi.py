"""The OpenAPI document of the HTTP/JSON front end, generated from nlu.proto's descriptors (with
its comments as descriptions), never from a second set of hand-written models: the schemas are
the messages in the proto's JSON mapping (lowerCamelCase names, 64-bit integers as strings,
enums by name), the paths are `service.http_api.app`'s.

    python proto/openapi.py > proto/nlu/v1/nlu.openapi.json     (`make openapi`)

`tests/test_openapi.py` fails when the committed document is stale.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2

HERE = Path(__file__).parent
PROTO = "nlu/v1/nlu.proto"
FD = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    FD.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FD.TYPE_INT64: {"type": "string", "format": "int64"},
    FD.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FD.TYPE_BYTES: {"type": "string", "format": "byte"},
}
ROUTES = [  # (path, method, request message or None, response message, summary)
    ("/v1/parse", "post", "ParseRequest", "ParseResponse", "Parse one utterance"),
    ("/v1/parse:batch", "post", "ParseBatchRequest", "ParseBatchResponse",
     "Parse utterances in one call (order kept)"),
    ("/v1/model", "get", None, "ModelInfo", "The served model, routing and open-world policy"),
]  # fmt: skip
ERRORS = {
    "400": "invalid argument (bad JSON, unknown field, invalid value, too many items)",
    "401": "no valid bearer token (when tokens are configured)",
    "413": "body larger than http_max_body_bytes",
    "429": "shed: the queue or the concurrency limit is full; see Retry-After",
    "500": "internal error",
    "503": "the model is not loaded yet",
    "504": "the caller's X-Server-Timeout passed before an answer",
}
TIMEOUT_PARAMETER = {  # service/http_api/app.py: the HTTP form of a gRPC deadline
    "name": "X-Server-Timeout",
    "in": "header",
    "required": False,
    "description": "the caller's deadline in seconds (a positive number); past it: 504",
    "schema": {"type": "number", "exclusiveMinimum": 0},
}


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """nlu.proto compiled by grpc_tools' protoc with its source info (the comments)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "nlu.pb"
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}", "--include_source_info",
             f"--descriptor_set_out={out}", str(HERE / PROTO)],
            check=True,
        )  # fmt: skip
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Source path → its leading comment, one line."""
    return {
        tuple(loc.path): " ".join(loc.leading_comments.split())
        for loc in file.source_code_info.location
        if loc.leading_comments.strip()
    }


def field_schema(field: descriptor_pb2.FieldDescriptorProto) -> dict:
    if field.type == FD.TYPE_MESSAGE:
        schema: dict = {"$ref": f"#/components/schemas/{field.type_name.rsplit('.', 1)[-1]}"}
    elif field.type == FD.TYPE_ENUM:
        schema = {"$ref": f"#/components/schemas/{field.type_name.rsplit('.', 1)[-1]}"}
    else:
        schema = dict(SCALARS[field.type])
    if field.label == FD.LABEL_REPEATED:
        return {"type": "array", "items": schema}
    return schema


def document() -> dict:
    (file,) = [f for f in descriptor_set().file if f.name == PROTO]
    notes = comments(file)
    schemas: dict[str, dict] = {}
    for e, enum in enumerate(file.enum_type):
        schemas[enum.name] = {
            "type": "string",
            "enum": [v.name for v in enum.value],
            "description": notes.get((5, e), ""),
        }
    for m, message in enumerate(file.message_type):
        properties = {}
        for f, field in enumerate(message.field):
            schema = field_schema(field)
            note = notes.get((4, m, 2, f), "")
            if note:
                schema = {"description": note, **schema} if "$ref" not in schema else {
                    "description": note, "allOf": [schema]}  # fmt: skip
            properties[field.json_name] = schema
        schemas[message.name] = {
            "type": "object",
            "description": notes.get((4, m), ""),
            "properties": properties,
        }
    schemas["Error"] = {
        "type": "object",
        "description": "Google's HTTP error model; status is the gRPC code name of the same "
        "failure (service/http_api/status.py)",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "integer"},
                    "status": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": "string"},
                    "retryAfterS": {"type": "number"},
                },
                "required": ["code", "status", "message"],
            }
        },
    }
    paths: dict[str, dict] = {}
    error_responses = {
        code: {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code, text in ERRORS.items()
    }
    for path, method, request, response, summary in ROUTES:
        operation: dict = {
            "summary": summary,
            "responses": {
                "200": {
                    "description": response,
                    "content": {
                        "application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}
                    },
                },
                **error_responses,
            },
        }
        if request is not None:
            operation["parameters"] = [TIMEOUT_PARAMETER]
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}
                },
            }
        paths[path] = {method: operation}
    for probe, meaning in (("/healthz", "the process runs"), ("/readyz", "loaded, not draining")):
        paths[probe] = {
            "get": {
                "summary": f"200 while {meaning} (no token needed)",
                "responses": {"200": {"description": "ok"}, "503": {"description": "not ready"}},
            }
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "nlu.v1 over HTTP/JSON",
            "version": "v1",
            "description": "The nlu.v1 gRPC API in the proto's JSON mapping, generated from "
            f"proto/{PROTO}. Rasa's POST /model/parse is Rasa's own contract (README).",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
        "paths": paths,
    }


if __name__ == "__main__":
    print(json.dumps(document(), indent=2))
