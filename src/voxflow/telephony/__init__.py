"""Call legs: the one interface the dialer (and later the flow runner) uses to talk to a phone.

:mod:`voxflow.telephony.leg` defines it; :mod:`voxflow.telephony.sandbox` is a simulated far end
and :mod:`voxflow.telephony.sip_leg` a real SIP call through a trunk.
"""
