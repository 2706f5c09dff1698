"""Audio and RTP: WAV conversion, G.711, RTP packets, RFC 4733 telephone-events, one shared
20 ms media clock, per-leg RTP sessions, players and recorders."""
