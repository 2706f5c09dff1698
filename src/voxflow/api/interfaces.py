"""Imports every interface module so that their methods register in the routing table."""

from voxflow.api import (  # noqa: F401
    blocked_numbers,
    callflow,
    calling,
    calls_live,
    contacts,
    link_templates,
    links,
    nodes,
    rules,
    soundfiles,
    time_templates,
)
