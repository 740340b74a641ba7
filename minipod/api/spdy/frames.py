"""SPDY/3.1 frames (draft-mbelshe-httpbis-spdy-00 with the 3.1 changes): encode and decode.

    control frame: |1| version(15)=3 | type(16) | flags(8) | length(24) | payload
    data frame:    |0| stream id(31)            | flags(8) | length(24) | payload

A header block (SYN_STREAM, SYN_REPLY, HEADERS) is a count and length-prefixed name/value
pairs (names lowercase, several values of one name joined by NUL), deflated with a preset
dictionary. The compression context is one per direction for the whole session, not per
frame: every block is a continuation of the same zlib stream, ended by a sync flush so that
the peer can inflate it at once. So an Encoder and a Decoder each live as long as the
session, and a frame's header block cannot be decoded out of order.

Go's spdystream (kubectl's side) writes its blocks with zlib.BestCompression and the
dictionary below; any level inflates the same.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from minipod.api.spdy import ProtocolError

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS = 1, 2, 3, 4
PING, GOAWAY, HEADERS, WINDOW_UPDATE = 6, 7, 8, 9
FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02  # SYN_STREAM only
# RST_STREAM status codes (the ones we send or may see).
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, CANCEL, STREAM_IN_USE = 1, 2, 3, 5, 8
MAX_LENGTH = (1 << 24) - 1  # the 24-bit length field
MAX_HEADER_BLOCK = 1 << 20  # inflated; a peer's zip bomb stops here

_HEAD = struct.Struct(">II")  # the 8 bytes every frame starts with

# The dictionary of SPDY/3 (section 2.6.10.1): length-prefixed header names and values,
# then a run of status codes, dates and media types. Written as the words it is made of;
# tests/unit/test_spdy_frames.py checks its length and digest.
_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding "
    "accept-language accept-ranges age allow authorization cache-control connection "
    "content-base content-encoding content-language content-length content-location "
    "content-md5 content-range content-type date etag expect expires from host if-match "
    "if-modified-since if-none-match if-range if-unmodified-since last-modified location "
    "max-forwards pragma proxy-authenticate proxy-authorization range referer retry-after "
    "server te trailer transfer-encoding upgrade user-agent vary via warning "
    "www-authenticate method get status"
).split() + ["200 OK"] + "version HTTP/1.1 url public set-cookie keep-alive origin".split()
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()

Headers = dict[str, str]  # lowercase name -> value (several values NUL-joined, as on the wire)


@dataclass
class Data:
    stream_id: int
    data: bytes = b""
    fin: bool = False


@dataclass
class SynStream:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    associated_to: int = 0
    priority: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    fin: bool = False


@dataclass
class RstStream:
    stream_id: int
    status: int = CANCEL


@dataclass
class Settings:
    entries: list[tuple[int, int, int]] = field(default_factory=list)  # (flags, id, value)
    clear: bool = False  # FLAG_SETTINGS_CLEAR_SETTINGS


@dataclass
class Ping:
    id: int


@dataclass
class GoAway:
    last_good_stream_id: int = 0
    status: int = 0  # 0 OK, 1 PROTOCOL_ERROR, 2 INTERNAL_ERROR


@dataclass
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass
class Unknown:
    """A control frame of a type we do not know: ignored, as the spec asks."""
    type: int
    flags: int
    payload: bytes


Frame = (Data | SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway
         | WindowUpdate | Unknown)


def _control(type_: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ProtocolError(f"SPDY control frame of {len(payload)} bytes: over the 24-bit limit")
    return _HEAD.pack(0x80000000 | VERSION << 16 | type_, flags << 24 | len(payload)) + payload


def _header_block(headers: Headers) -> bytes:
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        n, v = name.lower().encode(), value.encode()
        out += [struct.pack(">I", len(n)), n, struct.pack(">I", len(v)), v]
    return b"".join(out)


def _parse_header_block(raw: bytes) -> Headers:
    try:
        (count,), pos, out = struct.unpack_from(">I", raw), 4, {}
        for _ in range(count):
            (n,) = struct.unpack_from(">I", raw, pos)
            name = raw[pos + 4:pos + 4 + n]
            pos += 4 + n
            (n,) = struct.unpack_from(">I", raw, pos)
            value = raw[pos + 4:pos + 4 + n]
            if pos + 4 + n > len(raw):
                raise struct.error("value past the end")
            pos += 4 + n
            out[name.decode("latin-1").lower()] = value.decode("latin-1")
    except struct.error as e:
        raise ProtocolError(f"SPDY header block: truncated ({e})") from None
    return out


class Encoder:
    """Frames to bytes, with this direction's header compression context."""

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._z = zlib.compressobj(level, zlib.DEFLATED, 15, zdict=DICTIONARY)

    def _block(self, headers: Headers) -> bytes:
        return self._z.compress(_header_block(headers)) + self._z.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, f: Frame) -> bytes:
        if isinstance(f, Data):
            if len(f.data) > MAX_LENGTH:
                raise ProtocolError(f"SPDY data frame of {len(f.data)} bytes: over the limit")
            return _HEAD.pack(f.stream_id & 0x7FFFFFFF,
                              (FLAG_FIN if f.fin else 0) << 24 | len(f.data)) + f.data
        if isinstance(f, SynStream):
            flags = (FLAG_FIN if f.fin else 0) | (FLAG_UNIDIRECTIONAL if f.unidirectional else 0)
            return _control(SYN_STREAM, flags, struct.pack(
                ">IIBB", f.stream_id, f.associated_to, (f.priority & 7) << 5, 0)
                + self._block(f.headers))
        if isinstance(f, SynReply):
            return _control(SYN_REPLY, FLAG_FIN if f.fin else 0,
                            struct.pack(">I", f.stream_id) + self._block(f.headers))
        if isinstance(f, HeadersFrame):
            return _control(HEADERS, FLAG_FIN if f.fin else 0,
                            struct.pack(">I", f.stream_id) + self._block(f.headers))
        if isinstance(f, RstStream):
            return _control(RST_STREAM, 0, struct.pack(">II", f.stream_id, f.status))
        if isinstance(f, Settings):
            return _control(SETTINGS, 1 if f.clear else 0, struct.pack(">I", len(f.entries))
                            + b"".join(struct.pack(">II", fl << 24 | i, v)
                                       for fl, i, v in f.entries))
        if isinstance(f, Ping):
            return _control(PING, 0, struct.pack(">I", f.id))
        if isinstance(f, GoAway):
            return _control(GOAWAY, 0, struct.pack(">II", f.last_good_stream_id, f.status))
        if isinstance(f, WindowUpdate):
            return _control(WINDOW_UPDATE, 0, struct.pack(">II", f.stream_id, f.delta))
        raise TypeError(f"not a SPDY frame: {f!r}")


class Decoder:
    """Bytes to frames, incrementally (feed what the transport gives, take whole frames),
    with the peer's header compression context."""

    def __init__(self) -> None:
        self._z = zlib.decompressobj(15, zdict=DICTIONARY)
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out = []
        while len(self._buf) >= 8:
            w1, w2 = _HEAD.unpack_from(self._buf)
            length = w2 & 0xFFFFFF
            if len(self._buf) < 8 + length:
                break
            payload = bytes(self._buf[8:8 + length])
            del self._buf[:8 + length]
            out.append(self._frame(w1, w2 >> 24, payload))
        return out

    def _headers(self, block: bytes) -> Headers:
        try:
            raw = self._z.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as e:
            raise ProtocolError(f"SPDY header block does not inflate: {e}") from None
        if self._z.unconsumed_tail:
            raise ProtocolError(f"SPDY header block over {MAX_HEADER_BLOCK} bytes inflated")
        return _parse_header_block(raw)

    def _frame(self, w1: int, flags: int, p: bytes) -> Frame:
        if not w1 & 0x80000000:
            return Data(w1 & 0x7FFFFFFF, p, bool(flags & FLAG_FIN))
        version, type_ = w1 >> 16 & 0x7FFF, w1 & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version} (only 3 is spoken here)")
        fin = bool(flags & FLAG_FIN)
        try:
            if type_ == SYN_STREAM:
                sid, assoc, prio = struct.unpack_from(">IIB", p)
                return SynStream(sid & 0x7FFFFFFF, self._headers(p[10:]), assoc & 0x7FFFFFFF,
                                 prio >> 5, fin, bool(flags & FLAG_UNIDIRECTIONAL))
            if type_ in (SYN_REPLY, HEADERS):
                (sid,) = struct.unpack_from(">I", p)
                cls = SynReply if type_ == SYN_REPLY else HeadersFrame
                return cls(sid & 0x7FFFFFFF, self._headers(p[4:]), fin)
            if type_ == RST_STREAM:
                sid, status = struct.unpack_from(">II", p)
                return RstStream(sid & 0x7FFFFFFF, status)
            if type_ == SETTINGS:
                (n,) = struct.unpack_from(">I", p)
                entries = []
                for i in range(n):
                    fi, v = struct.unpack_from(">II", p, 4 + 8 * i)
                    entries.append((fi >> 24, fi & 0xFFFFFF, v))
                return Settings(entries, bool(flags & 1))
            if type_ == PING:
                return Ping(struct.unpack_from(">I", p)[0])
            if type_ == GOAWAY:
                sid, status = struct.unpack_from(">II", p) if len(p) >= 8 else \
                    (struct.unpack_from(">I", p)[0], 0)  # SPDY/3 had no status
                return GoAway(sid & 0x7FFFFFFF, status)
            if type_ == WINDOW_UPDATE:
                sid, delta = struct.unpack_from(">II", p)
                return WindowUpdate(sid & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        except struct.error:
            raise ProtocolError(f"SPDY control frame of type {type_}: {len(p)} bytes is too "
                                "short") from None
        return Unknown(type_, flags, p)
