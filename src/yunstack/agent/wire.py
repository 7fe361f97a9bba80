"""The agent protocol on the wire: each ``ControlPlane`` method's arguments and result as JSON.

Nothing here is written per field: for every method of the protocol, a pydantic model of its
parameters and one of its result are made from the method's annotations, so the wire follows the
protocol's types (dataclasses, enums, mappings, nested tuples) as they change.  Bytes travel as
base64.  The two methods that move files (``fetch_image``, ``upload_snapshot``) stream raw bytes
instead and are served by routes of their own, and ``open_console`` is a websocket.
"""

from __future__ import annotations

import collections.abc
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, create_model

from yunstack.agent.link import ControlPlane

PREFIX = "/agent/v1"
FILE_METHODS = frozenset({"fetch_image", "upload_snapshot"})
# Not a JSON call: ``open_console`` is a websocket of its own (``/hosts/{host}/consoles/{session}``).
STREAM_METHODS = FILE_METHODS | {"open_console"}
_CONFIG = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64", extra="forbid")


@dataclass(frozen=True)
class Method:
    name: str
    params: tuple[str, ...]
    args: type[BaseModel]
    result: type[BaseModel]

    def encode_args(self, values: Mapping[str, object]) -> bytes:
        return self.args(**values).model_dump_json().encode()

    def decode_args(self, body: bytes) -> dict[str, Any]:
        model = self.args.model_validate_json(body)
        return {p: getattr(model, p) for p in self.params}

    def encode_result(self, value: object) -> bytes:
        return self.result(result=value).model_dump_json().encode()

    def decode_result(self, body: bytes) -> Any:
        return self.result.model_validate_json(body).result  # type: ignore[attr-defined]


def _wire_type(annotation: Any) -> Any:
    """A parameter's type as pydantic reads it: an abstract ``Collection[X]`` travels as a list."""
    if typing.get_origin(annotation) is collections.abc.Collection:
        (item,) = typing.get_args(annotation)
        return list[item]  # type: ignore[valid-type]
    return annotation


def _method(name: str, fn: Any) -> Method:
    hints = typing.get_type_hints(fn)
    signature = inspect.signature(fn).parameters
    params = tuple(p for p in signature if p != "self")
    # A parameter with a default keeps it on the wire, so an older caller that does not send a
    # newer argument (``network_state``'s ``tunnel_ip``) is still understood.
    fields: dict[str, Any] = {
        p: (_wire_type(hints[p]), ... if signature[p].default is inspect.Parameter.empty else signature[p].default)
        for p in params
    }
    returns = hints.get("return", type(None))
    args = create_model(f"{name}_args", __config__=_CONFIG, **fields)
    result = create_model(f"{name}_result", __config__=_CONFIG, result=(returns, ...))
    return Method(name=name, params=params, args=args, result=result)


def _methods() -> dict[str, Method]:
    found = {}
    for name, fn in inspect.getmembers(ControlPlane, inspect.isfunction):
        if not name.startswith("_") and name not in STREAM_METHODS:
            found[name] = _method(name, fn)
    return found


METHODS: Mapping[str, Method] = _methods()
