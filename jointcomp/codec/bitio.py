"""Bytes and bits: LEB128 varints, a bounds-checked reader, MSB-first bit-field packing.

Every read is checked against the bytes that are there, so a truncated or lying payload
raises CodecError instead of IndexError or an over-allocation.
"""

from __future__ import annotations

import numpy as np

from .base import CodecError

_U64 = np.uint64
_MAX_VARINT_BYTES = 10  # 70 bits: enough for zigzag-coded 64-bit values (65 bits)


def zigzag(v: int) -> int:
    """Map a signed Python int to a non-negative one (0,-1,1,-2 -> 0,1,2,3)."""
    return 2 * v if v >= 0 else -2 * v - 1


def unzigzag(u: int) -> int:
    return u >> 1 if u % 2 == 0 else -((u + 1) >> 1)


def uvarint(v: int) -> bytes:
    if v < 0:
        raise ValueError("uvarint of a negative value")
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def uvarints(values: np.ndarray) -> bytes:
    """Vectorized LEB128 of an array of non-negative integers (< 2**64)."""
    v = np.asarray(values).astype(_U64, copy=False).reshape(-1)
    if v.size == 0:
        return b""
    nbytes = np.ones(v.size, dtype=np.int64)
    t = v >> _U64(7)
    while t.any():
        nbytes += t > 0
        t >>= _U64(7)
    total = int(nbytes.sum())
    owner = np.repeat(np.arange(v.size), nbytes)
    start = np.cumsum(nbytes) - nbytes
    k = np.arange(total) - np.repeat(start, nbytes)
    byte = ((v[owner] >> (_U64(7) * k.astype(_U64))) & _U64(0x7F)).astype(np.uint8)
    last = k == (nbytes[owner] - 1)
    byte[~last] |= 0x80
    return byte.tobytes()


class Reader:
    """A cursor over a payload; every method checks bounds and raises CodecError."""

    def __init__(self, data: bytes, what: str = "payload") -> None:
        self.buf = data
        self.pos = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.buf) - self.pos

    def fail(self, msg: str) -> CodecError:
        return CodecError(f"{self.what}: {msg}")

    def u8(self, name: str) -> int:
        if self.pos >= len(self.buf):
            raise self.fail(f"truncated before {name}")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def uvarint(self, name: str, hi: int | None = None) -> int:
        val = 0
        for i in range(_MAX_VARINT_BYTES):
            if self.pos >= len(self.buf):
                raise self.fail(f"truncated inside varint {name}")
            b = self.buf[self.pos]
            self.pos += 1
            val |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if i > 0 and b == 0:
                    raise self.fail(f"non-canonical varint {name}")
                if hi is not None and val > hi:
                    raise self.fail(f"{name}={val} exceeds limit {hi}")
                return val
        raise self.fail(f"varint {name} longer than {_MAX_VARINT_BYTES} bytes")

    def svarint(self, name: str) -> int:
        return unzigzag(self.uvarint(name))

    def take(self, nbytes: int, name: str) -> bytes:
        if nbytes < 0 or nbytes > self.remaining:
            raise self.fail(f"{name} needs {nbytes} bytes, {self.remaining} left")
        out = self.buf[self.pos : self.pos + nbytes]
        self.pos += nbytes
        return out

    def rest(self) -> bytes:
        out = self.buf[self.pos :]
        self.pos = len(self.buf)
        return out

    def uvarints(self, count: int, name: str) -> np.ndarray:
        """`count` varints (each < 2**64) as uint64, vectorized; needs count <= remaining bytes."""
        if count == 0:
            return np.zeros(0, dtype=_U64)
        if count > self.remaining:
            raise self.fail(
                f"{count} varints of {name} need >= {count} bytes, {self.remaining} left"
            )
        raw = np.frombuffer(self.buf, dtype=np.uint8, offset=self.pos)
        ends = np.flatnonzero(raw < 0x80)
        if ends.size < count:
            raise self.fail(f"truncated inside varints of {name}")
        ends = ends[:count]
        used = int(ends[-1]) + 1
        chunk = raw[:used]
        starts = np.empty(count, dtype=np.int64)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        lens = ends - starts + 1
        if lens.max() > _MAX_VARINT_BYTES:
            raise self.fail(f"varint of {name} longer than {_MAX_VARINT_BYTES} bytes")
        if np.any((lens > 1) & (chunk[ends] == 0)):
            raise self.fail(f"non-canonical varint in {name}")
        k = np.arange(used) - np.repeat(starts, lens)
        if np.any((lens == _MAX_VARINT_BYTES) & (chunk[ends] > 1)):
            raise self.fail(f"varint of {name} exceeds 64 bits")
        part = (chunk & 0x7F).astype(_U64) << (_U64(7) * k.astype(_U64))
        vals = np.bitwise_or.reduceat(part, starts)
        self.pos += used
        return vals

    def expect_end(self) -> None:
        if self.remaining:
            raise self.fail(f"{self.remaining} trailing bytes")


def pack_fields(values: np.ndarray, widths: np.ndarray | int) -> bytes:
    """Pack values MSB-first, value i in widths[i] bits (each <= 56), no gaps; zero-padded."""
    v = np.asarray(values).astype(_U64, copy=False).reshape(-1)
    n = v.size
    if np.isscalar(widths) or np.ndim(widths) == 0:
        w_const = int(widths)
        if n == 0 or w_const == 0:
            return b""
        if w_const in (8, 16, 32):
            return v.astype(f">u{w_const // 8}").tobytes()
        w = np.full(n, w_const, dtype=np.int64)
    else:
        w = np.asarray(widths, dtype=np.int64).reshape(-1)
        if w.size != n:
            raise ValueError("values and widths differ in length")
    if n == 0:
        return b""
    wmax = int(w.max())
    if wmax > 56:
        raise ValueError("pack_fields supports widths up to 56 bits")
    keep = w > 0
    if not keep.all():
        v, w = v[keep], w[keep]
        if v.size == 0:
            return b""
    ends = np.cumsum(w)
    total_bits = int(ends[-1])
    nbytes = (total_bits + 7) // 8
    start = ends - w
    # Build 64-bit output words. A field (<= 56 bits) touches at most two words, and every
    # word holds the start of some field, so OR-reducing the fields' head parts per word
    # (fields are sorted) and patching in the spilled tails gives every word.
    word = start >> 6
    off = (start & 63).astype(_U64)
    aligned = v << (64 - w).astype(_U64)  # field at the top of a 64-bit value
    head = aligned >> off  # bits that land in the field's first word
    nwords = int(word[-1]) + 1
    seg = np.searchsorted(word, np.arange(nwords))
    words = np.zeros(nwords + 1, dtype=_U64)
    words[:nwords] = np.bitwise_or.reduceat(head, seg)
    spill = np.flatnonzero(off + w.astype(_U64) > _U64(64))  # off >= 9 here, so 64-off < 64
    if spill.size:
        words[word[spill] + 1] |= aligned[spill] << (_U64(64) - off[spill])
    return words.astype(">u8").tobytes()[:nbytes]


def window_view(buf: bytes, pad: int = 8) -> np.ndarray:
    """Big-endian uint64 windows starting at every byte of buf (zero-padded past the end)."""
    raw = np.frombuffer(buf + b"\x00" * pad, dtype=np.uint8)
    return np.ndarray(shape=(len(buf) + pad - 7,), dtype=">u8", buffer=raw.data, strides=(1,))


def unpack_fields(buf: bytes, offsets: np.ndarray, widths: np.ndarray | int) -> np.ndarray:
    """Read fields (each <= 56 bits) at the given bit offsets (caller checks they are in range)."""
    offs = np.asarray(offsets, dtype=np.int64)
    if offs.size == 0:
        return np.zeros(0, dtype=_U64)
    win = window_view(buf)
    words = win[offs >> 3].astype(_U64)
    w = np.asarray(widths, dtype=np.int64)
    shifted = words << (offs & 7).astype(_U64)
    if w.ndim == 0:
        wi = int(w)
        if wi == 0:
            return np.zeros(offs.size, dtype=_U64)
        return shifted >> _U64(64 - wi)
    out = shifted >> (64 - np.maximum(w, 1)).astype(_U64)
    out[w == 0] = 0
    return out


def pack_uniform(values: np.ndarray, width: int) -> bytes:
    """Fixed-width packing for any width 0..64 (values already < 2**width)."""
    v = np.asarray(values).astype(_U64, copy=False).reshape(-1)
    if width == 64:
        return v.astype(">u8").tobytes()
    if width <= 56:
        return pack_fields(v, width)
    # Split wide fields into a high part and a 32-bit low part, interleaved in bit order.
    hi = v >> _U64(32)
    lo = v & _U64(0xFFFFFFFF)
    both = np.empty(2 * v.size, dtype=_U64)
    both[0::2] = hi
    both[1::2] = lo
    widths = np.empty(2 * v.size, dtype=np.int64)
    widths[0::2] = width - 32
    widths[1::2] = 32
    return pack_fields(both, widths)


def unpack_uniform(buf: bytes, count: int, width: int) -> np.ndarray:
    """Inverse of pack_uniform; caller has checked len(buf) == ceil(count*width/8)."""
    if count == 0 or width == 0:
        return np.zeros(count, dtype=_U64)
    if width in (8, 16, 32, 64):
        return np.frombuffer(buf, dtype=f">u{width // 8}", count=count).astype(_U64)
    if width <= 56:
        return unpack_fields(buf, np.arange(count, dtype=np.int64) * width, width)
    base = np.arange(count, dtype=np.int64) * width
    hi = unpack_fields(buf, base, width - 32)
    lo = unpack_fields(buf, base + (width - 32), 32)
    return (hi << _U64(32)) | lo


def padding_is_zero(buf: bytes, total_bits: int) -> bool:
    """True when the bits after total_bits in the last byte are zero (canonical padding)."""
    rem = total_bits & 7
    if rem == 0 or not buf:
        return True
    return (buf[-1] & ((1 << (8 - rem)) - 1)) == 0


def unpack_small(buf: bytes, count: int, width: int) -> np.ndarray:
    """unpack_uniform for widths <= 16 as int32, with byte-aligned fast paths (4, 8, 12, 16)."""
    if count == 0 or width == 0:
        return np.zeros(count, dtype=np.int32)
    raw = np.frombuffer(buf, dtype=np.uint8)
    if width == 8:
        return raw[:count].astype(np.int32)
    if width == 16:
        return np.frombuffer(buf, dtype=">u2", count=count).astype(np.int32)
    if width in (4, 12):
        # 2 fields per (width // 4) bytes: split every group of bytes into two codes.
        gb = width // 4
        groups = -(-count // 2)
        pad = np.zeros(groups * gb, dtype=np.uint8)
        pad[: raw.size] = raw[: groups * gb]
        g = pad.reshape(groups, gb).astype(np.int32)
        out = np.empty((groups, 2), dtype=np.int32)
        if width == 4:
            out[:, 0] = g[:, 0] >> 4
            out[:, 1] = g[:, 0] & 15
        else:
            out[:, 0] = (g[:, 0] << 4) | (g[:, 1] >> 4)
            out[:, 1] = ((g[:, 1] & 15) << 8) | g[:, 2]
        return out.reshape(-1)[:count]
    return unpack_uniform(buf, count, width).astype(np.int32)
