"""Errors that reach a client as an iovox error document.

An :class:`ApiError` carries one or more ``(status, message)`` pairs. The messages are a wire
contract with iovox clients and must match the spec byte for byte, so every message is built
here or in the module that owns the check, never formatted ad hoc in a handler.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorItem:
    status: int
    message: str


class ApiError(Exception):
    """One or more iovox errors; the response status is the highest of them."""

    def __init__(self, *messages: str, status: int = 400) -> None:
        self.items: list[ErrorItem] = [ErrorItem(status, m) for m in messages]
        super().__init__("; ".join(messages))

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled whole (its items, not only its text): the API's writer process sends it back.
        return (ApiError.of, (self.items,))

    @classmethod
    def of(cls, items: Iterable[ErrorItem]) -> ApiError:
        err = cls()
        err.items = list(items)
        err.args = ("; ".join(i.message for i in err.items),)
        return err

    @property
    def status(self) -> int:
        return max((i.status for i in self.items), default=400)


class ErrorList:
    """Collects validation errors so that a request gets all of them at once."""

    def __init__(self) -> None:
        self.items: list[ErrorItem] = []

    def add(self, message: str, status: int = 400) -> None:
        self.items.append(ErrorItem(status, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise ApiError.of(self.items)


# Messages shared by every interface (spec section 1).
UNAUTHORIZED = "HTTP 401: Unauthorized"
API_VERSION_EMPTY = "API Version Empty"
API_VERSION_INVALID = "API Version Invalid"
XML_EMPTY = "XML Empty"
REQUEST_EMPTY = "Request Empty"
OUTPUT_TYPE_INVALID = "Output Type Invalid"
INTERNAL = "Internal Server Error"
PAGE_NOT_INTEGER = "Page Number not an integer"
LIMIT_NOT_INTEGER = "Limit not an integer"
ORDER_FIELD_INVALID = "Order Field Invalid"
ORDER_DIRECTION_INVALID = "Order Direction Invalid"
# voxflow decisions (iovox is silent on these).
REQUEST_TOO_LARGE = "Request Too Large"
INTERFACE_INVALID = "Interface Invalid"
METHOD_EMPTY = "Method Empty"
METHOD_INVALID = "Method Invalid"
QUERY_STRING_INVALID = "Query String Invalid"


def verb_mismatch(expected: str, attempted: str) -> str:
    return f"Request Method must be {expected}. {attempted} attempted"


def xml_parse_error(detail: str, line: int, column: int) -> str:
    return f"XML parse error. {detail} at line {line}, column {column}"


def limit_range(maximum: int) -> str:
    return f"Limit must be between 1 and {maximum}"


def required_fields_invalid(bad: Iterable[str]) -> str:
    return "Required Fields Invalid: " + ",".join(bad)
