"""Image sizes read from file headers, before any pixel is decoded.

The command line (``tfattr explain``) and the dataset sources (:mod:`tfattr.streaming.sources`) cap
the pixels of a file before OpenCV decodes it (a decompression bomb is refused, not decoded); both
read the size here, so they accept and refuse the same files.
"""

from __future__ import annotations

import re
from typing import Optional, Tuple

__all__ = ["header_size"]


def header_size(data: bytes) -> Optional[Tuple[int, int]]:
    """``(height, width)`` from a PNG, JPEG, GIF, BMP, WebP, TIFF or PNM header (no pixel decoded), else
    ``None`` (other formats: OpenCV's own limit of 2^30 pixels holds, and the decoded size is checked).
    OpenCV decodes by content, not by suffix, so every format it reads is recognised by content here."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return int.from_bytes(data[8:10], "little"), int.from_bytes(data[6:8], "little")
    if data[:2] == b"BM" and len(data) >= 26:
        if int.from_bytes(data[14:18], "little") == 12:  # BITMAPCOREHEADER: 16-bit sizes
            return int.from_bytes(data[20:22], "little"), int.from_bytes(data[18:20], "little")
        return (abs(int.from_bytes(data[22:26], "little", signed=True)),
                abs(int.from_bytes(data[18:22], "little", signed=True)))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and len(data) >= 30:
        kind = data[12:16]
        if kind == b"VP8X":
            return int.from_bytes(data[27:30], "little") + 1, int.from_bytes(data[24:27], "little") + 1
        if kind == b"VP8L":
            bits = int.from_bytes(data[21:25], "little")
            return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
        if kind == b"VP8 ":
            return int.from_bytes(data[28:30], "little") & 0x3FFF, int.from_bytes(data[26:28], "little") & 0x3FFF
        return None
    if data[:4] in (b"II*\x00", b"MM\x00*") and len(data) >= 8:  # TIFF: tags 256/257 of the first IFD
        order = "little" if data[:2] == b"II" else "big"
        ifd = int.from_bytes(data[4:8], order)
        if ifd + 2 > len(data):
            return None
        found = {}
        for k in range(int.from_bytes(data[ifd:ifd + 2], order)):
            entry = data[ifd + 2 + 12 * k: ifd + 14 + 12 * k]
            if len(entry) < 12:
                break
            tag, kind = int.from_bytes(entry[:2], order), int.from_bytes(entry[2:4], order)
            if tag in (256, 257):
                found[tag] = int.from_bytes(entry[8:10] if kind == 3 else entry[8:12], order)
        return (found[257], found[256]) if len(found) == 2 else None
    if data[:1] == b"P" and data[1:2] in b"123456" and len(data) > 2:  # PNM: "P6 <width> <height> ..."
        tokens = re.sub(rb"#[^\n]*", b" ", data[2:256]).split()
        if len(tokens) >= 2 and tokens[0].isdigit() and tokens[1].isdigit():
            return int(tokens[1]), int(tokens[0])
        return None
    if data[:2] == b"\xff\xd8":  # JPEG: the first start-of-frame marker
        i = 2
        while i + 9 <= len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            if marker == 0x01 or 0xD0 <= marker <= 0xD9:
                i += 2
                continue
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None
