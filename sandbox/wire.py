"""Request/response values and the error bodies of each Knox service (no sockets here)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import parse_qs
from xml.etree import ElementTree as ET

from sandbox.constants import EFOTA_ERROR_RESOURCE, KDP_ERROR_HTTP_STATUS


class BadJson(ValueError):
    pass


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query_string: str
    headers: Message
    body: bytes
    _query: dict[str, list[str]] | None = None

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = parse_qs(self.query_string, keep_blank_values=True)
        return self._query

    def q(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        # email.message.Message lookups are case-insensitive, which is what HTTP (and Knox's docs, which spell
        # both x-knox-apitoken and X-KNOX-APITOKEN) need.
        return self.headers.get(name)

    def json(self) -> Any:
        if not self.body:
            raise BadJson("request body is empty")
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadJson(f"request body is not valid JSON: {exc}") from None

    def form(self) -> dict[str, str]:
        try:
            parsed = parse_qs(self.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return {}
        return {k: v[0] for k, v in parsed.items()}


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    # `drop`: close the connection without answering. `truncate`: send the headers, then half of the body, then
    # close. Both come from the fault knobs.
    drop: bool = False
    truncate: bool = False


def json_response(obj: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, json.dumps(obj, separators=(",", ":")).encode(), "application/json", headers or [])


def status_for_code(code: int) -> int:
    """HTTP status of a Knox numeric code: the documented mapping, else the code's leading three digits."""
    status = KDP_ERROR_HTTP_STATUS.get(code)
    if status is None:
        status = int(str(code)[:3])
    return status


def kdp_error(pair: tuple[int, str], data: str, status: int | None = None) -> Response:
    """The KDP error object of knox-api.md section 3.10: errorId, code, message, data."""
    code, message = pair
    body = {"errorId": uuid.uuid4().hex, "code": code, "message": message, "data": data}
    return json_response(body, status or status_for_code(code))


def ams_error(pair: tuple[int, str], data: str, status: int | None = None) -> Response:
    """Authentication failures use the documented body exactly: {"code", "message", "data"}."""
    code, message = pair
    return json_response({"code": code, "message": message, "data": data}, status or status_for_code(code))


def kg_error(pair: tuple[int, str], reason: str, status: int | None = None) -> Response:
    code, message = pair
    body = {"result": "FAIL", "error": {"code": code, "message": message, "reason": reason}}
    return json_response(body, status or status_for_code(code))


def oauth_error(error: str, description: str, status: int) -> Response:
    return json_response({"error": error, "error_description": description}, status)


def efota_error(code: str, status: int = 400) -> Response:
    root = ET.Element("error")
    ET.SubElement(root, "code").text = code
    ET.SubElement(root, "message")
    ET.SubElement(root, "resource").text = EFOTA_ERROR_RESOURCE
    return xml_response(root, status)


def xml_response(root: ET.Element, status: int = 200) -> Response:
    return Response(status, ET.tostring(root, encoding="utf-8", xml_declaration=False), "application/xml")
