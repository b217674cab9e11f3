#!/usr/bin/python3
"""Encrypts or decrypts a file with AES-256-GCM from Debian's python3-cryptography: a
tool that is not kmsd's, to show that a kmsd data key is a plain AES-256 key.

Usage: aes_gcm_file.py encrypt|decrypt KEY_FILE IN OUT
KEY_FILE holds the 32 raw key bytes (or 64 hex digits). The output of encrypt is
nonce(12) || ciphertext || tag(16). Exit 1 when decryption fails authentication.
"""
import os
import sys

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def main():
    mode, key_file, src, dst = sys.argv[1:5]
    key = open(key_file, "rb").read()
    if len(key) != 32:
        key = bytes.fromhex(key.decode().strip())
    data = open(src, "rb").read()
    aead = AESGCM(key)
    if mode == "encrypt":
        nonce = os.urandom(12)
        out = nonce + aead.encrypt(nonce, data, None)
    else:
        try:
            out = aead.decrypt(data[:12], data[12:], None)
        except InvalidTag:
            print("authentication failed", file=sys.stderr)
            return 1
    open(dst, "wb").write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
