"""Bounds-checked reads of lib0's binary primitives, the encoding under every Yjs message.

pycrdt's `Decoder` trusts declared lengths and reads unbounded integers; input from the
network needs neither. Each reader raises the error type its caller gives it, so the
protocol reports `ProtocolError` and the update reader `UpdateFormatError`.
"""

from __future__ import annotations

_MAX_VARUINT_BYTES = 10  # enough for 64 bits; lib0 itself stops at 53
_MAX_VARUINT = 2**64 - 1


class Reader:
    """Reads varuints, length-prefixed bytes and fixed-size fields from `data`."""

    __slots__ = ("data", "error", "pos")

    def __init__(self, data: bytes, error: type[Exception]) -> None:
        self.data = data
        self.pos = 0
        self.error = error

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise self.error("data ends early")
        self.pos += 1
        return self.data[self.pos - 1]

    def var_uint(self) -> int:
        data, pos = self.data, self.pos
        try:
            byte = data[pos]
            if byte < 0x80:  # most are one byte
                self.pos = pos + 1
                return byte
            result, shift = byte & 0x7F, 7
            while True:
                pos += 1
                byte = data[pos]
                result |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
                if shift >= 7 * _MAX_VARUINT_BYTES:
                    raise self.error("integer longer than 64 bits")
        except IndexError:
            raise self.error("data ends inside an integer") from None
        if result > _MAX_VARUINT:  # ten bytes carry 70 bits
            raise self.error("integer longer than 64 bits")
        self.pos = pos + 1
        return result

    def var_bytes(self) -> bytes:
        length = self.var_uint()
        end = self.pos + length
        if end > len(self.data):
            raise self.error(f"declared length {length} exceeds the data")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def skip(self, count: int) -> None:
        if self.pos + count > len(self.data):
            raise self.error("data ends early")
        self.pos += count

    def expect_end(self) -> None:
        if self.pos != len(self.data):
            raise self.error(f"{len(self.data) - self.pos} unexpected bytes at the end")
