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
from .header_dict_1_5 import HEADER_DICT_1_5

MAGIC = b"\x89JCZ\r\n\x1a\n"  # PNG-style: catches text-mode mangling and non-jcz files early
FORMAT_MAJOR = 1
# 1.1: the header is DEFLATEd with the preset dictionary of header_dict.py; 1.2: scalars packed
# into one table entry per dtype, and no per-layer CRC32 (the SHA-256 covers every byte); 1.3:
# names, shapes and dtypes the rebuilt structure implies are left out of the table (names.py);
# 1.4: edits leave out the arguments the replaced layer and the previous edit of the same type
# imply, and quantizers the shape of their tensor (manifest.py); 1.5: the header dictionary
# extended with quantized T-Basis records (header_dict_1_5.py), and what a type's jc_follows
# implies from its previous edit (a T-Basis layer's rows) is left out too; 1.6: float32 tensors
# on a log grid stored as integer codes (storage "l<steps>", tensors.py), and the children a
# type shares with its previous layer implied (implied_shared.py)
FORMAT_MINOR = 6
_PREFIX = struct.Struct("<8sHHII")  # magic, major, minor, header length, header CRC32
PREFIX_SIZE = _PREFIX.size  # 20
DIGEST_SIZE = 32
MAX_HEADER_BYTES = 64 << 20  # decompressed JSON header: far above any real model's table


@dataclass(frozen=True)
class Frame:
    """A parsed file: its header (plain JSON data), the raw header size and the payload bytes."""

    header: dict[str, Any]
    header_bytes: int
    payload: memoryview
    file_bytes: int
    minor: int = FORMAT_MINOR  # the file's minor version: what its table may leave out


def pack(header: dict[str, Any], payloads: list[bytes]) -> bytes:
    """Serialize ``header`` and the concatenated ``payloads`` into a complete file image."""
    text = json.dumps(header, separators=(",", ":"), sort_keys=False, allow_nan=False)
    deflater = zlib.compressobj(
        9, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, header_dictionary(FORMAT_MINOR)
    )
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
    if major != FORMAT_MAJOR:
        raise FormatError(
            f"unsupported format version {major}.{minor}; this jointcomp reads version "
            f"{FORMAT_MAJOR}.x"
        )
    body = view[: size - DIGEST_SIZE]
    if hashlib.sha256(body).digest() != bytes(view[size - DIGEST_SIZE :]):
        raise FormatError("SHA-256 mismatch: the file is corrupted or truncated")
    if header_len > size - PREFIX_SIZE - DIGEST_SIZE:
        raise FormatError(f"header length {header_len} runs past the end of the file")
    compressed = view[PREFIX_SIZE : PREFIX_SIZE + header_len]
    if zlib.crc32(compressed) != header_crc:
        raise FormatError("header CRC32 mismatch: the header is corrupted")
    try:
        header = _inflate_json(bytes(compressed), header_dictionary(minor))
    except FormatError as exc:
        if minor > FORMAT_MINOR:
            raise FormatError(
                f"{exc}; the file is format {major}.{minor}, newer than this jointcomp's "
                f"{FORMAT_MAJOR}.{FORMAT_MINOR}: upgrade jointcomp to read it"
            ) from None
        raise
    payload = view[PREFIX_SIZE + header_len : size - DIGEST_SIZE]
    return Frame(header, PREFIX_SIZE + header_len + DIGEST_SIZE, payload, size, minor)


def header_dictionary(minor: int) -> bytes:
    """The preset DEFLATE dictionary of a 1.``minor`` header (1.0 headers use none, and
    inflate with any)."""
    return HEADER_DICT_1_5 if minor >= 5 else HEADER_DICT


def _inflate_json(compressed: bytes, dictionary: bytes) -> dict[str, Any]:
    # 1.0 headers carry no dictionary id and inflate as before; 1.1+ headers name their
    # version's dictionary
    inflater = zlib.decompressobj(zdict=dictionary)
    try:
        text = inflater.decompress(compressed, MAX_HEADER_BYTES)
    except zlib.error as exc:
        raise FormatError(f"header is not valid DEFLATE data ({exc})") from None
    if inflater.unconsumed_tail:
        raise FormatError(f"header decompresses to more than {MAX_HEADER_BYTES} bytes")
    if not inflater.eof or inflater.unused_data:
        raise FormatError("header DEFLATE stream is incomplete or has trailing bytes")
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FormatError(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    return header
