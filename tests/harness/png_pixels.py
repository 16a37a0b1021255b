#!/usr/bin/env python3
"""png_pixels.py: counts the kinds of pixels in a PNG screenshot (standard library only).

Usage: python3 tests/harness/png_pixels.py FILE.png [X0 Y0 X1 Y1]

Prints one line: `WIDTH HEIGHT NON_WHITE SATURATED` for the whole image or the
box [X0, X1) x [Y0, Y1). NON_WHITE counts pixels with any channel below 240;
SATURATED counts pixels whose channels differ by more than 80 (chart colours,
not black or grey text). Reads 8-bit RGB or RGBA, non-interlaced PNGs (what
Chromium's --screenshot writes); anything else exits 2 with the reason.
"""

import struct
import sys
import zlib


def die(msg):
    print(f"png_pixels: {msg}", file=sys.stderr)
    sys.exit(2)


def read_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        die(f"{path}: not a PNG")
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if header is None:
        die(f"{path}: no IHDR")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in (2, 6) or interlace != 0:
        die(f"{path}: unsupported PNG (depth {depth}, colour type {colour}, interlace {interlace})")
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[i], bytearray(raw[i + 1 : i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pred) & 255
            elif kind != 0:
                die(f"{path}: bad filter {kind}")
        rows.append(line)
        prev = line
    return width, height, channels, rows


def main():
    if len(sys.argv) not in (2, 6):
        die("usage: png_pixels.py FILE.png [X0 Y0 X1 Y1]")
    width, height, channels, rows = read_png(sys.argv[1])
    x0, y0, x1, y1 = (0, 0, width, height) if len(sys.argv) == 2 else map(int, sys.argv[2:6])
    non_white = saturated = 0
    for y in range(max(0, y0), min(height, y1)):
        line = rows[y]
        for x in range(max(0, x0), min(width, x1)):
            r, g, b = line[x * channels], line[x * channels + 1], line[x * channels + 2]
            if min(r, g, b) < 240:
                non_white += 1
            if max(r, g, b) - min(r, g, b) > 80:
                saturated += 1
    print(width, height, non_white, saturated)


if __name__ == "__main__":
    main()
