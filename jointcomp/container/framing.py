"""The byte framing of a .jcz file (see docs/FORMAT.md): magic, version, a DEFLATE-compressed JSON
header, the payloads, and a SHA-256 over everything before it. Pure bytes in and out: reading
checks every length and checksum before anything is trusted or allocated."""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from ..errors import FormatError
from .header_dict import HEADER_DICT
from .limits import MAX_HEADER_BYTES, MAX_JSON_DEPTH, MAX_JSON_INT, MAX_JSON_VALUES

MAGIC = b"\x89JCZ\r\n\x1a\n"  # PNG-style: catches text-mode mangling and non-jcz files early
# The one version this jointcomp reads and writes. Earlier minors were pre-release formats: they
# are refused rather than read, since re-running a recipe writes them again. A change to the
# bytes a file holds needs a new version and new golden files (tests/golden/).
FORMAT_MAJOR = 1
FORMAT_MINOR = 7
_PREFIX = struct.Struct("<8sHHII")  # magic, major, minor, header length, header CRC32
PREFIX_SIZE = _PREFIX.size  # 20
DIGEST_SIZE = 32


@dataclass(frozen=True)
class Frame:
    """A parsed file: its header (plain JSON data), the raw header size and the payload bytes."""

    header: dict[str, Any]
    header_bytes: int
    payload: memoryview
    file_bytes: int


def pack(header: dict[str, Any], payloads: list[bytes]) -> bytes:
    """Serialize ``header`` and the concatenated ``payloads`` into a complete file image."""
    text = json.dumps(header, separators=(",", ":"), sort_keys=False, allow_nan=False)
    deflater = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, HEADER_DICT)
    compressed = deflater.compress(text.encode("utf-8")) + deflater.flush()
    prefix = _PREFIX.pack(
        MAGIC, FORMAT_MAJOR, FORMAT_MINOR, len(compressed), zlib.crc32(compressed)
    )
    body = b"".join([prefix, compressed, *payloads])
    return body + hashlib.sha256(body).digest()


def unpack(data: bytes | bytearray | memoryview) -> Frame:
    """Check the framing of a file image and return its parts. Raises FormatError."""
    view = memoryview(data)
    size = len(view)
    if size < PREFIX_SIZE + DIGEST_SIZE:
        raise FormatError(f"file is {size} bytes, shorter than the smallest .jcz file (52 bytes)")
    magic, major, minor, header_len, header_crc = _PREFIX.unpack_from(view, 0)
    if magic != MAGIC:
        raise FormatError("not a .jcz file (bad magic bytes)")
    check_version(major, minor)
    body = view[: size - DIGEST_SIZE]
    if hashlib.sha256(body).digest() != bytes(view[size - DIGEST_SIZE :]):
        raise FormatError("SHA-256 mismatch: the file is corrupted or truncated")
    if header_len > size - PREFIX_SIZE - DIGEST_SIZE:
        raise FormatError(f"header length {header_len} runs past the end of the file")
    compressed = view[PREFIX_SIZE : PREFIX_SIZE + header_len]
    if zlib.crc32(compressed) != header_crc:
        raise FormatError("header CRC32 mismatch: the header is corrupted")
    header = _inflate_json(bytes(compressed))
    payload = view[PREFIX_SIZE + header_len : size - DIGEST_SIZE]
    return Frame(header, PREFIX_SIZE + header_len + DIGEST_SIZE, payload, size)


def check_version(major: int, minor: int) -> None:
    """Refuse a file of any version but this one, saying what its owner can do about it."""
    version, ours = f"{major}.{minor}", f"{FORMAT_MAJOR}.{FORMAT_MINOR}"
    if (major, minor) > (FORMAT_MAJOR, FORMAT_MINOR):
        raise FormatError(
            f"the file is format {version}, newer than this jointcomp's {ours}: "
            "upgrade jointcomp to read it"
        )
    if (major, minor) < (FORMAT_MAJOR, FORMAT_MINOR):
        raise FormatError(
            f"the file is format {version}, a pre-release format this jointcomp no longer "
            "reads: re-run the recipe that wrote it (jointcomp run RECIPE) to write it again, "
            f"as format {ours}"
        )


def _inflate_json(compressed: bytes) -> dict[str, Any]:
    inflater = zlib.decompressobj(zdict=HEADER_DICT)
    try:
        # max_length bounds what inflating allocates, however well the stream compresses
        text = inflater.decompress(compressed, MAX_HEADER_BYTES)
    except zlib.error as exc:
        raise FormatError(f"header is not valid DEFLATE data ({exc})") from None
    if inflater.unconsumed_tail:
        raise FormatError(f"header decompresses to more than {MAX_HEADER_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise FormatError("header DEFLATE stream is incomplete or has trailing bytes")
    return parse_header_json(text)


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > 19:  # |value| < 2**63 has at most 19 digits
        raise FormatError(f"header: integer {text[:24]}... is too large")
    value = int(text)
    if abs(value) >= MAX_JSON_INT:
        raise FormatError(f"header: integer {value} is too large")
    return value


def _parse_float(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise FormatError(f"header: number {text[:24]} is not finite")
    return value


def _parse_constant(name: str) -> float:
    raise FormatError(f"header: {name} is not a JSON number")


def parse_header_json(text: bytes) -> dict[str, Any]:
    """The header object of inflated ``text``: valid UTF-8 JSON of at most MAX_JSON_VALUES
    values, nested at most MAX_JSON_DEPTH deep, with integers below 2**63 and finite numbers.
    The value count is bounded from the text before it is parsed (every value but a
    container's first follows a comma, every key a colon), so parsing never builds more
    Python objects than that."""
    values = 1 + sum(text.count(c) for c in (b",", b":", b"[", b"{"))
    if values > MAX_JSON_VALUES:
        raise FormatError(f"header holds more than {MAX_JSON_VALUES} JSON values")
    try:
        header = json.loads(
            text.decode("utf-8"),
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    check_depth(header, MAX_JSON_DEPTH, "header")
    return header


def check_depth(value: Any, limit: int, what: str) -> None:
    """Refuse JSON data nested deeper than ``limit`` (iteratively: no recursion to exhaust)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= limit:
                raise FormatError(f"{what} is nested more than {limit} levels deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
