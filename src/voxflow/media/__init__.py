"""Audio: sound-file conversion now; RTP, G.711 and RFC 4733 with the SIP issue."""
