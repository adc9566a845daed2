"""Fill any generated ROS message with distinct, deterministic values (for round-trip tests)."""
import importlib
import re

_INT = {"int8": 127, "uint8": 255, "int16": 32767, "uint16": 65535, "int32": 2**31 - 1,
        "uint32": 2**32 - 1, "int64": 2**63 - 1, "uint64": 2**64 - 1, "byte": 255,
        "octet": 255, "char": 255}


def _message_class(type_name: str):
    pkg, name = type_name.split("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def _value(type_name: str, seed: int):
    if type_name == "boolean":
        return seed % 2 == 1
    if type_name in ("float", "double"):
        return float(seed) + 0.25
    if type_name in _INT:
        return (seed * 7 + 1) % _INT[type_name]
    if type_name.startswith("string") or type_name.startswith("wstring"):
        return f"s{seed}"
    return fill(_message_class(type_name)(), seed)


def fill(msg, seed: int = 1):
    """Set every field of msg (recursively) to values derived from seed; returns msg."""
    for i, (field, ftype) in enumerate(msg.get_fields_and_field_types().items()):
        s = seed * 31 + i
        seq = re.fullmatch(r"sequence<([^,>]+)(?:, \d+)?>", ftype)
        arr = re.fullmatch(r"(.+)\[(\d+)\]", ftype)
        if seq:
            value = [_value(seq.group(1), s + k) for k in range(3)]
        elif arr:
            value = [_value(arr.group(1), s + k) for k in range(int(arr.group(2)))]
        else:
            value = _value(ftype, s)
        if field == "header" or ftype == "builtin_interfaces/Time":
            pass  # values above are valid stamps too
        setattr(msg, field, value)
    return msg
