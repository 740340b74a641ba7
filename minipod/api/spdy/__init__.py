"""SPDY/3.1, as far as kubectl's streams need it: frames.py (the wire format, the header
compression) and session.py (streams multiplexed over one byte transport)."""

from minipod.errors import MinipodError


class ProtocolError(MinipodError):
    """The peer sent bytes that are not SPDY/3.1 (a bad frame, a header block that does not
    inflate): the session ends, as spdystream's does on a framer error."""
