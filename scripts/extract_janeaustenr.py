#!/usr/bin/env python3
"""Extract Jane Austen's six novels from an unpacked r-cran-janeaustenr package, without R.

The package keeps its data in R's lazy-load database: data/Rdata.rdx is a gzip'd R serialization
of an index (variable name -> byte offset and length in data/Rdata.rdb), and each .rdb entry is a
4-byte big-endian uncompressed length followed by a zlib stream holding one serialized object.
Each novel is a character vector (one element per line of the Project Gutenberg text); we join
the lines with '\n' and write one UTF-8 file per novel. Standard library only.

Usage: extract_janeaustenr.py PACKAGE_ROOT OUT_DIR   (PACKAGE_ROOT holds data/Rdata.rdx)
"""
import gzip
import os
import struct
import sys
import zlib

NOVELS = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey",
          "persuasion"]

# SEXP type codes and pseudo-types from R's serialize.c.
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP, VECSXP = 9, 10, 13, 14, 15, 16, 19
ALTREP_SXP, GLOBALENV_SXP, EMPTYENV_SXP, BASEENV_SXP = 238, 253, 242, 241
NILVALUE_SXP, REFSXP, BASENAMESPACE_SXP, MISSINGARG_SXP = 254, 255, 247, 251
UNBOUNDVALUE_SXP = 252
LATIN1_MASK, UTF8_MASK = 1 << 2, 1 << 3


class RError(Exception):
    pass


class XdrReader:
    """Reads one object in R's XDR serialization format (versions 2 and 3)."""

    def __init__(self, data):
        self.data = data
        self.pos = 0
        self.refs = []

    def read_int(self):
        if self.pos + 4 > len(self.data):
            raise RError("truncated R serialization at byte %d" % self.pos)
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def read_bytes(self, n):
        if self.pos + n > len(self.data):
            raise RError("truncated R serialization at byte %d" % self.pos)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def read_header(self):
        if self.read_bytes(2) != b"X\n":
            raise RError("not an XDR R serialization (expected 'X\\n')")
        version = self.read_int()
        self.read_int()  # R version that wrote it
        self.read_int()  # minimal R version to read it
        if version == 3:
            self.read_bytes(self.read_int())  # native encoding name
        elif version != 2:
            raise RError("unsupported R serialization version %d" % version)

    def read_charsxp(self, flags):
        length = self.read_int()
        if length == -1:
            return None  # NA_character_
        raw = self.read_bytes(length)
        levels = flags >> 12
        return raw.decode("latin-1" if levels & LATIN1_MASK else "utf-8")

    def read_item(self):
        flags = self.read_int()
        kind = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))
        if kind in (NILVALUE_SXP, GLOBALENV_SXP, EMPTYENV_SXP, BASEENV_SXP, BASENAMESPACE_SXP,
                    MISSINGARG_SXP, UNBOUNDVALUE_SXP):
            return None
        if kind == REFSXP:
            index = flags >> 8
            if index == 0:
                index = self.read_int()
            return self.refs[index - 1]
        if kind == SYMSXP:
            name = self.read_item()  # a CHARSXP
            self.refs.append(("symbol", name))
            return ("symbol", name)
        if kind == CHARSXP:
            return self.read_charsxp(flags)
        if kind in (LISTSXP, LANGSXP, CLOSXP, PROMSXP):
            items = []
            while True:
                if has_attr:
                    self.read_item()  # pairlist-cell attributes are not needed here
                tag = self.read_item() if has_tag else None
                items.append((tag[1] if tag else None, self.read_item()))
                nxt = self.read_int()
                kind = nxt & 0xFF
                has_attr = bool(nxt & (1 << 9))
                has_tag = bool(nxt & (1 << 10))
                if kind == NILVALUE_SXP:
                    return items
                if kind not in (LISTSXP, LANGSXP, CLOSXP, PROMSXP):
                    self.pos -= 4
                    items.append((None, self.read_item()))
                    return items
        if kind == STRSXP:
            value = [self.read_item() for _ in range(self.read_int())]
        elif kind in (INTSXP, LGLSXP):
            n = self.read_int()
            value = list(struct.unpack_from(">%di" % n, self.read_bytes(4 * n)))
        elif kind == REALSXP:
            n = self.read_int()
            value = list(struct.unpack_from(">%dd" % n, self.read_bytes(8 * n)))
        elif kind == VECSXP:
            value = [self.read_item() for _ in range(self.read_int())]
        elif kind == ALTREP_SXP:
            self.read_item()  # class info
            state = self.read_item()
            self.read_item()  # attributes
            return state
        else:
            raise RError("unsupported R object type %d at byte %d" % (kind, self.pos))
        if has_attr:
            attrs = dict(self.read_item())
            if kind == VECSXP and "names" in attrs:
                return dict(zip(attrs["names"], value))
        return value


def unserialize(data):
    reader = XdrReader(data)
    reader.read_header()
    return reader.read_item()


def read_lazyload_entry(rdb, offset, length):
    blob = rdb[offset:offset + length]
    if len(blob) != length or length < 5:
        raise RError("lazy-load entry at %d (length %d) is outside Rdata.rdb" % (offset, length))
    (expected,) = struct.unpack_from(">I", blob, 0)
    if blob[4:5] in (b"2", b"X"):
        raise RError("bzip2/xz-compressed lazy-load entries are not supported")
    raw = zlib.decompress(blob[5:] if blob[4:5] == b"Z" else blob[4:])
    if len(raw) != expected:
        raise RError("lazy-load entry decompressed to %d bytes, expected %d" % (len(raw), expected))
    return unserialize(raw)


def extract(package_root, out_dir):
    data_dir = os.path.join(package_root, "data")
    with gzip.open(os.path.join(data_dir, "Rdata.rdx"), "rb") as f:
        index = unserialize(f.read())
    if not isinstance(index, dict) or "variables" not in index:
        raise RError("Rdata.rdx does not hold a lazy-load index")
    variables = index["variables"]
    with open(os.path.join(data_dir, "Rdata.rdb"), "rb") as f:
        rdb = f.read()
    os.makedirs(out_dir, exist_ok=True)
    for slug in NOVELS:
        if slug not in variables:
            raise RError("novel %r missing from the package (found: %s)"
                         % (slug, ", ".join(sorted(variables))))
        offset, length = variables[slug]
        lines = read_lazyload_entry(rdb, offset, length)
        if not isinstance(lines, list) or not all(isinstance(s, str) for s in lines):
            raise RError("%s is not a character vector without NA" % slug)
        text = "\n".join(lines)
        path = os.path.join(out_dir, slug + ".txt")
        with open(path + ".tmp", "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
        print("  %-18s %6d lines %8d chars -> %s" % (slug, len(lines), len(text), path))


def main(argv):
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        extract(argv[1], argv[2])
    except (RError, OSError, zlib.error, UnicodeDecodeError) as e:
        print("extract_janeaustenr: error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
