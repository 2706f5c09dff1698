"""voxflow's own SIP stack.

A sans-IO core (messages, URIs, digest authentication, transactions, dialogs) that takes bytes
and time in and gives bytes and deadlines out, with thin asyncio edges (transports, the user
agent). SDP lives here too; RTP and audio live in :mod:`voxflow.media`.
"""
