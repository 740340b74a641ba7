"""SPDY/3.1 frames: the exact bytes on the wire, and the header compression contexts."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest

from minipod.api.spdy import ProtocolError
from minipod.api.spdy import frames as f


def test_the_dictionary_is_spdy3s():
    # Length and digest of the dictionary in the SPDY/3 draft (and in spdystream's
    # spdy/dictionary.go, which kubectl compresses with).
    assert len(f.DICTIONARY) == 1423
    assert hashlib.sha256(f.DICTIONARY).hexdigest() == \
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    assert f.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert f.DICTIONARY.endswith(b",*,enq=0.")


def test_frame_layouts():
    enc = f.Encoder()
    assert enc.encode(f.Data(5, b"hi", fin=True)) == b"\x00\x00\x00\x05\x01\x00\x00\x02hi"
    assert enc.encode(f.Ping(1)) == b"\x80\x03\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01"
    assert enc.encode(f.RstStream(3, f.CANCEL)) == \
        b"\x80\x03\x00\x03\x00\x00\x00\x08\x00\x00\x00\x03\x00\x00\x00\x05"
    assert enc.encode(f.GoAway(7, 0)) == \
        b"\x80\x03\x00\x07\x00\x00\x00\x08\x00\x00\x00\x07\x00\x00\x00\x00"
    syn = enc.encode(f.SynReply(3, {"a": "b"}, fin=True))
    assert syn[:4] == b"\x80\x03\x00\x02" and syn[4] == f.FLAG_FIN
    assert struct.unpack(">I", syn[4:8])[0] & 0xFFFFFF == len(syn) - 8


def test_every_frame_round_trips():
    frames = [
        f.SynStream(1, {"streamtype": "error", "port": "80", "requestid": "0"}, priority=2),
        f.SynStream(3, {"streamtype": "data", "port": "80", "requestid": "0"}, fin=True),
        f.SynReply(1, {}), f.HeadersFrame(3, {"x": "1\x002"}, fin=True),
        f.Data(3, b"x" * 70000), f.Data(1, b"", fin=True), f.RstStream(3, f.REFUSED_STREAM),
        f.Settings([(0, 7, 65536), (1, 4, 100)]), f.Ping(2), f.GoAway(5, 1),
        f.WindowUpdate(3, 1 << 20),
    ]
    enc, dec = f.Encoder(), f.Decoder()
    assert dec.feed(b"".join(enc.encode(x) for x in frames)) == frames


def test_decoding_is_incremental():
    enc, dec = f.Encoder(), f.Decoder()
    wire = enc.encode(f.SynStream(1, {"streamtype": "stdin"})) + enc.encode(f.Data(1, b"abc"))
    got = []
    for i in range(len(wire)):
        got += dec.feed(wire[i:i + 1])
    assert got == [f.SynStream(1, {"streamtype": "stdin"}), f.Data(1, b"abc")]


def test_one_compression_context_per_direction():
    """The second header block continues the first one's zlib stream: it inflates with the
    session's decoder, not with a fresh one -- and a block deflated as Go does (best
    compression, the dictionary, a sync flush) is read as ours are."""
    enc = f.Encoder()
    first = enc.encode(f.SynStream(1, {"streamtype": "error"}))
    second = enc.encode(f.SynStream(3, {"streamtype": "error"}))
    dec = f.Decoder()
    assert [x.headers for x in dec.feed(first + second)] == [{"streamtype": "error"}] * 2
    with pytest.raises(ProtocolError, match="does not inflate"):
        f.Decoder().feed(second)

    z = zlib.compressobj(9, zlib.DEFLATED, 15, zdict=f.DICTIONARY)
    raw = struct.pack(">I", 1) + struct.pack(">I", 4) + b"Port" + struct.pack(">I", 2) + b"80"
    block = z.compress(raw) + z.flush(zlib.Z_SYNC_FLUSH)
    payload = struct.pack(">IIBB", 5, 0, 0, 0) + block
    wire = struct.pack(">II", 0x80030001, len(payload)) + payload
    assert f.Decoder().feed(wire) == [f.SynStream(5, {"port": "80"})]  # names lowercased
    # Without the dictionary, our block does not inflate: it was really used.
    with pytest.raises(zlib.error):
        zlib.decompressobj().decompress(f.Encoder().encode(f.SynReply(1, {"a": "b"}))[12:])


def test_bad_frames_are_protocol_errors():
    with pytest.raises(ProtocolError, match="version 2"):
        f.Decoder().feed(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")
    with pytest.raises(ProtocolError, match="too short"):
        f.Decoder().feed(b"\x80\x03\x00\x03\x00\x00\x00\x02\x00\x00")
    with pytest.raises(ProtocolError, match="does not inflate"):
        f.Decoder().feed(b"\x80\x03\x00\x02\x00\x00\x00\x08\x00\x00\x00\x01garb")
    z = zlib.compressobj(6, zlib.DEFLATED, 15, zdict=f.DICTIONARY)
    block = z.compress(struct.pack(">II", 1, 100) + b"short") + z.flush(zlib.Z_SYNC_FLUSH)
    with pytest.raises(ProtocolError, match="truncated"):
        f.Decoder().feed(struct.pack(">II", 0x80030002, 4 + len(block)) + b"\0\0\0\1" + block)
    # An unknown control type is skipped, as the spec asks.
    assert f.Decoder().feed(b"\x80\x03\x00\x0a\x00\x00\x00\x01z") == [f.Unknown(10, 0, b"z")]
