"""Where in a protobuf message's bytes decoding fails: the field path (`requests[2].text`) that
an INVALID_ARGUMENT can name, where protobuf's own DecodeError says only "Error parsing
message". Reads the wire format (varint keys, length-delimited fields) one level at a time."""

from __future__ import annotations

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError

LENGTH_DELIMITED, VARINT, FIXED64, FIXED32 = 2, 0, 1, 5


def varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise IndexError("truncated varint")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos


def undecodable_field(descriptor: Descriptor, data: bytes) -> str:
    """The path of the first field of `data` (a message of type `descriptor`) that does not
    decode: a string that is not UTF-8, a sub-message that does not parse (then the path goes
    on inside it), or "" when no single field is to blame (truncated bytes, not protobuf)."""
    seen: dict[str, int] = {}
    pos = 0
    try:
        while pos < len(data):
            key, pos = varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == VARINT:
                _, pos = varint(data, pos)
                continue
            if wire_type in (FIXED64, FIXED32):
                pos += 8 if wire_type == FIXED64 else 4
                continue
            if wire_type != LENGTH_DELIMITED:
                return ""
            length, pos = varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
            field = descriptor.fields_by_number.get(number)
            if field is None:
                continue
            index = seen.get(field.name, 0)
            seen[field.name] = index + 1
            name = f"{field.name}[{index}]" if field.is_repeated else field.name
            problem = field_problem(field, value)
            if problem is not None:
                return name + problem
    except IndexError:
        return ""
    return ""


def field_problem(field: FieldDescriptor, value: bytes) -> str | None:
    """None when the field's bytes decode; else the rest of the path: "" for the field itself,
    ".text" for a place inside a sub-message."""
    if field.type == FieldDescriptor.TYPE_STRING:
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return ""
        return None
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        try:
            message_factory.GetMessageClass(field.message_type).FromString(value)
        except DecodeError:
            inner = undecodable_field(field.message_type, value)
            return f".{inner}" if inner else ""
    return None
