#!/usr/bin/env python3
"""Decode the King James Bible text from Debian's bible-kjv-text package (usr/lib/bible.data).

bible.data is the "Bible Retrieval System" compressed data file: an 'EC02Compressed Data File'
magic, then big-endian 32-bit words at byte 0x50: (0, uncompressed block size, block count,
block count + 1 absolute file offsets). Each block is a Unix compress(1) LZW code stream (16-bit
codes, block mode; the '1f 9d 90' header appears once, before the first block's offset) that
expands to `block size` bytes (the last block to fewer). The text is one verse per line, e.g.
'Ge1:1 In the beginning God created the heaven and the earth.'; we keep it verbatim.
Standard library only.  Usage: extract_kjv.py BIBLE_DATA OUT_TXT
"""
import os
import struct
import sys

MAGIC = b"EC02Compressed Data File"


def unlzw(data, maxbits=16):
    """Expands one compress(1) LZW code stream (block mode, no 3-byte header)."""
    out = bytearray()
    n_bits = 9
    maxcode = (1 << n_bits) - 1
    maxmaxcode = 1 << maxbits
    prefix = [0] * maxmaxcode
    suffix = bytearray(maxmaxcode)
    suffix[:256] = bytes(range(256))
    free_ent, oldcode, finchar = 257, -1, 0
    bits = int.from_bytes(data, "little")
    total_bits = len(data) * 8
    pos = 0
    segment = 0  # bit offset where the current code width started; codes come in groups of 8

    def align(p, width):
        group = width * 8
        return segment + -(-(p - segment) // group) * group

    while True:
        if free_ent > maxcode and n_bits < maxbits:
            pos = align(pos, n_bits)
            segment = pos
            n_bits += 1
            maxcode = maxmaxcode if n_bits == maxbits else (1 << n_bits) - 1
        if pos + n_bits > total_bits:
            return bytes(out)
        code = (bits >> pos) & ((1 << n_bits) - 1)
        pos += n_bits
        if oldcode == -1:
            if code >= 256:
                raise ValueError("LZW stream starts with code %d" % code)
            out.append(code)
            finchar = oldcode = code
            continue
        if code == 256:  # CLEAR: restart the table at 9-bit codes
            free_ent = 256
            pos = align(pos, n_bits)
            segment = pos
            n_bits = 9
            maxcode = (1 << n_bits) - 1
            continue
        incode = code
        stack = bytearray()
        if code >= free_ent:  # the KwKwK case
            if code > free_ent:
                raise ValueError("corrupt LZW code %d (next free %d)" % (code, free_ent))
            stack.append(finchar)
            code = oldcode
        while code >= 256:
            stack.append(suffix[code])
            code = prefix[code]
        finchar = suffix[code]
        stack.append(finchar)
        stack.reverse()
        out += stack
        if free_ent < maxmaxcode:
            prefix[free_ent] = oldcode
            suffix[free_ent] = finchar
            free_ent += 1
        oldcode = incode


def decode_bible_data(data):
    if not data.startswith(MAGIC):
        raise ValueError("not a BRS compressed data file (magic %r)" % data[:24])
    _, block_size, count = struct.unpack_from(">3I", data, 0x50)
    offsets = struct.unpack_from(">%dI" % (count + 1), data, 0x5C)
    if offsets[-1] != len(data):
        raise ValueError("block table ends at %d but the file has %d bytes" % (offsets[-1], len(data)))
    text = bytearray()
    for i in range(count):
        block = unlzw(data[offsets[i]:offsets[i + 1]])
        if i + 1 < count and len(block) != block_size:
            raise ValueError("block %d expanded to %d bytes, expected %d" % (i, len(block), block_size))
        text += block
    return text.decode("ascii")


def main(argv):
    if len(argv) != 3:
        print("usage: extract_kjv.py BIBLE_DATA OUT_TXT", file=sys.stderr)
        return 2
    try:
        with open(argv[1], "rb") as f:
            text = decode_bible_data(f.read())
        with open(argv[2] + ".tmp", "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(argv[2] + ".tmp", argv[2])
    except (OSError, ValueError, struct.error) as e:
        print("extract_kjv: error: %s" % e, file=sys.stderr)
        return 1
    print("  kjv %8d lines %8d chars -> %s" % (text.count("\n"), len(text), argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
