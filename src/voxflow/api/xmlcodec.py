"""The one place that turns request bodies into XML trees and response trees into bytes.

Parsing is hardened: no DTD, no entity expansion, no network, bounded size and depth.
Responses are built from a small tree of plain values (:data:`Tree`) and rendered as iovox XML
or as the JSON mirror of that XML (every scalar a string, one row an object, empty ``""``).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache
from typing import Union

from lxml import etree

from voxflow import errors
from voxflow.errors import ApiError

MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32
XML_CONTENT_TYPE = "application/xml; charset=utf-8"
# The declaration exactly as iovox writes it.
XML_DECLARATION = b'<?xml version="1.0" encoding="utf-8"?>\n'
JSON_CONTENT_TYPE = "application/json; charset=utf-8"

# A response tree: a mapping is an element's children in order, a sequence is a repeated element,
# a string is text, None is an empty element, and an lxml element is copied as it is.
Tree = Union[str, None, Mapping[str, "Tree"], Sequence["Tree"], "etree._Element"]

_local = threading.local()
# Characters XML 1.0 cannot hold; lxml refuses them with a ValueError.
_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _parser() -> etree.XMLParser:
    # lxml parsers must not be shared between threads; request handlers run in a thread pool.
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
            remove_blank_text=True,
            collect_ids=False,
        )
        _local.parser = parser
    return parser


def _position(body: bytes, index: int) -> tuple[int, int]:
    line = body.count(b"\n", 0, index) + 1
    return line, index - (body.rfind(b"\n", 0, index) + 1) + 1


def parse_request(body: bytes) -> etree._Element:
    """Parse a POST/PUT body into its ``<request>`` root, or raise the iovox error."""
    body = body.strip()
    if not body:
        raise ApiError(errors.XML_EMPTY)
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(errors.REQUEST_TOO_LARGE, status=413)
    doctype = body.find(b"<!DOCTYPE")
    if doctype >= 0:
        raise ApiError(errors.xml_parse_error("DOCTYPE is not allowed", *_position(body, doctype)))
    parser = _parser()
    try:
        root = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        # exc.error_log also holds earlier parses' errors from this thread; the parser's own
        # log is reset for every parse, so its first entry is this document's first error.
        entry = parser.error_log[0] if len(parser.error_log) else None
        if entry is not None:
            message = entry.message.strip() if entry.message else "Invalid XML"
            raise ApiError(errors.xml_parse_error(message, entry.line, entry.column)) from None
        line, column = exc.position if exc.position else (1, 1)
        raise ApiError(errors.xml_parse_error(exc.msg or "Invalid XML", line, column)) from None
    if root.getroottree().docinfo.internalDTD is not None:
        raise ApiError(errors.xml_parse_error("DOCTYPE is not allowed", 1, 1))
    # Every element has a "<": with no more than MAX_DEPTH of them the walk is not needed.
    if body.count(b"<") > MAX_DEPTH and _depth(root) > MAX_DEPTH:
        raise ApiError(errors.xml_parse_error("Document is nested too deeply", 1, 1))
    if root.tag != "request" or len(root) == 0:
        raise ApiError(errors.REQUEST_EMPTY)
    return root


def _depth(root: etree._Element) -> int:
    deepest = 0
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        el, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in el)
    return deepest


# ---------------------------------------------------------------- reading a request tree


def text(parent: etree._Element, tag: str) -> str | None:
    """The stripped text of the first child ``tag``, None when the child is absent."""
    child = parent.find(tag)
    if child is None:
        return None
    return (child.text or "").strip()


def items(parent: etree._Element, tag: str) -> list[etree._Element]:
    """Children named ``tag`` (the repeated items of a create or update request)."""
    return [c for c in parent if c.tag == tag]


def fields(el: etree._Element) -> dict[str, str]:
    """The scalar children of an element as a dict of stripped texts (later duplicates win)."""
    return {
        str(c.tag): (c.text or "").strip() for c in el if isinstance(c.tag, str) and len(c) == 0
    }


# ---------------------------------------------------------------- rendering a response tree


# Tags and texts that XML writes as they are: no escaping, no character lxml would refuse.
_PLAIN_TAG = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*\Z")
_PLAIN_TEXT = re.compile(r"[A-Za-z0-9 _.:,@+/-]*\Z")


@lru_cache(maxsize=1024)
def _plain_tag(tag: str) -> bool:
    """A tag that XML writes as it is (answers use a few tags again and again)."""
    return _PLAIN_TAG.match(tag) is not None


def _plain_xml(root_tag: str, tree: Tree) -> bytes | None:
    """A flat mapping of plain strings (initiateCall's answer) written directly: the bytes
    lxml writes, without building a tree. None for anything else."""
    if not isinstance(tree, Mapping) or not tree or not _plain_tag(root_tag):
        return None
    parts = [f"<{root_tag}>"]
    for tag, value in tree.items():
        if not (isinstance(value, str) and _plain_tag(tag) and _PLAIN_TEXT.match(value)):
            return None
        parts.append(f"<{tag}>{value}</{tag}>")
    parts.append(f"</{root_tag}>")
    return XML_DECLARATION + "".join(parts).encode("ascii")


def to_xml(root_tag: str, tree: Tree) -> bytes:
    plain = _plain_xml(root_tag, tree)
    if plain is not None:
        return plain
    root = etree.Element(root_tag)
    _fill(root, tree)
    return XML_DECLARATION + etree.tostring(root, encoding="utf-8")


def _fill(el: etree._Element, tree: Tree) -> None:
    if tree is None:
        return
    if isinstance(tree, str):
        el.text = tree
        return
    if isinstance(tree, etree._Element):
        el.append(_copy(tree))
        return
    if isinstance(tree, Mapping):
        for tag, value in tree.items():
            for v in _repeat(value):
                _fill(etree.SubElement(el, tag), v)
        return
    raise TypeError(f"a sequence must sit under a tag: {tree!r}")


def _repeat(value: Tree) -> Iterator[Tree]:
    if isinstance(value, Sequence) and not isinstance(value, str):
        yield from value
    else:
        yield value


def _copy(el: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(el))


def to_json(root_tag: str, tree: Tree) -> bytes:
    return json.dumps({root_tag: _jsonable(tree)}, ensure_ascii=False).encode("utf-8")


def _jsonable(tree: Tree) -> object:
    if tree is None:
        return ""
    if isinstance(tree, str):
        return tree
    if isinstance(tree, etree._Element):
        return {str(tree.tag): element_to_json(tree)}
    if isinstance(tree, Mapping):
        out: dict[str, object] = {}
        for tag, value in tree.items():
            if isinstance(value, Sequence) and not isinstance(value, str):
                rendered = [_jsonable(v) for v in value]
                if not rendered:
                    continue
                out[tag] = rendered[0] if len(rendered) == 1 else rendered
            else:
                out[tag] = _jsonable(value)
        return out or ""
    raise TypeError(f"a sequence must sit under a tag: {tree!r}")


def element_to_json(el: etree._Element) -> object:
    """An XML element as JSON: attributes as ``@name``, text as ``#text``, repeats as lists."""
    out: dict[str, object] = {f"@{k}": str(v) for k, v in el.attrib.items()}
    for child in el:
        if not isinstance(child.tag, str):
            continue
        value = element_to_json(child)
        tag = str(child.tag)
        if tag in out:
            existing = out[tag]
            if isinstance(existing, list):
                existing.append(value)
            else:
                out[tag] = [existing, value]
        else:
            out[tag] = value
    body = (el.text or "").strip()
    if not out:
        return body
    if body:
        out["#text"] = body
    return out


def render(root_tag: str, tree: Tree, output: str) -> tuple[bytes, str]:
    if output == "JSON":
        return to_json(root_tag, tree), JSON_CONTENT_TYPE
    return to_xml(root_tag, tree), XML_CONTENT_TYPE


def error_document(err: ApiError, output: str = "XML") -> tuple[bytes, str]:
    if output == "JSON":
        rows = [{"@status": str(i.status), "#text": i.message} for i in err.items]
        body = {"errors": {"error": rows[0] if len(rows) == 1 else rows}}
        return json.dumps(body, ensure_ascii=False).encode("utf-8"), JSON_CONTENT_TYPE
    root = etree.Element("errors")
    for item in err.items:
        e = etree.SubElement(root, "error", status=str(item.status))
        # A message may quote what the client sent (a query parameter with control characters).
        e.text = _NOT_XML_CHAR.sub("\ufffd", item.message)
    return XML_DECLARATION + etree.tostring(root, encoding="utf-8"), XML_CONTENT_TYPE
