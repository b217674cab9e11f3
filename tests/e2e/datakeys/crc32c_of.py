#!/usr/bin/python3
"""Prints the CRC32C of each file named (one decimal number per line) with Debian's
python3-crc32c, an implementation independent of kmsd's; with --context JSON, the CRC32C
of the context's canonical bytes as kms.v1.KeyService documents them:
u32(count) || (len32(key) || key || len32(value) || value)* sorted by key bytewise."""
import json
import struct
import sys

import crc32c


def canonical(context):
    out = struct.pack(">I", len(context))
    for key in sorted(context, key=lambda k: k.encode()):
        k, v = key.encode(), context[key].encode()
        out += struct.pack(">I", len(k)) + k + struct.pack(">I", len(v)) + v
    return out


if sys.argv[1] == "--context":
    print(crc32c.crc32c(canonical(json.loads(sys.argv[2]))))
else:
    for path in sys.argv[1:]:
        print(crc32c.crc32c(open(path, "rb").read()))
