#!/usr/bin/python3
"""Drives kmsd's Vault transit door with hvac (Debian's python3-hvac), a Vault client
nobody here wrote, and checks every answer. Run by tests/e2e/vault_e2e_test.cc, which
starts kmsd and passes, in the environment:

  VAULT_ADDR            https://127.0.0.1:<port>
  KMSD_CA               the CA that signed kmsd's and the clients' certificates
  KMSD_CERT, KMSD_KEY   a client certificate whose identity may do everything
  KMSD_OTHER_CERT, KMSD_OTHER_KEY  another client's certificate (another identity)
  KMSD_PREFIX           prefix of the key names this run creates
  KMSD_XDOOR_KEY        a key created through gRPC
  KMSD_GRPC_CIPHERTEXT  "vault:v<N>:<base64>" of b"from-grpc" made by gRPC Encrypt under
                        KMSD_XDOOR_KEY with context {"vault.context": base64(b"xdoor")}
  KMSD_OUT              where to write {"ciphertext": ...} of b"from-hvac" under the
                        same key and context, for the test to decrypt through gRPC
  KMSD_MAX_BATCH        vault.max_batch_items; KMSD_MAX_BODY vault.max_body_bytes

Exits 0 when every check passed; prints the failed check otherwise.
"""
import base64
import json
import os
import re
import sys

import hvac
import requests
from hvac import exceptions

ADDR = os.environ["VAULT_ADDR"]
CA = os.environ["KMSD_CA"]
CERT = (os.environ["KMSD_CERT"], os.environ["KMSD_KEY"])
OTHER = (os.environ["KMSD_OTHER_CERT"], os.environ["KMSD_OTHER_KEY"])
PREFIX = os.environ["KMSD_PREFIX"]
MAX_BATCH = int(os.environ["KMSD_MAX_BATCH"])
MAX_BODY = int(os.environ["KMSD_MAX_BODY"])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def check(cond, what):
    if not cond:
        print("FAILED:", what, file=sys.stderr)
        sys.exit(1)


def refused(exc_type, fn, what, message=None):
    """fn() must raise exc_type (Vault's status for it) with {"errors": [...]}."""
    try:
        fn()
    except exc_type as e:
        if message is not None:
            check(any(re.search(message, m) for m in (e.errors or [])),
                  f"{what}: errors {e.errors!r} do not match {message!r}")
        return e
    except exceptions.VaultError as e:
        check(False, f"{what}: got {type(e).__name__} {e}, wanted {exc_type.__name__}")
    check(False, f"{what}: was not refused")


def cache_lookups():
    """DEK cache hits + misses from /metrics: moves whenever a request reaches a key."""
    text = requests.get(ADDR + "/metrics", verify=CA, cert=CERT, timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("kmsd_dek_cache_hits_total", "kmsd_dek_cache_misses_total")):
            total += float(line.split()[-1])
    return total


def main():
    client = hvac.Client(url=ADDR, cert=CERT, verify=CA)

    # --- health and cert login
    health = client.sys.read_health_status(method="GET")
    check(health["initialized"] and not health["sealed"], f"health {health}")
    check(client.sys.is_initialized() and not client.sys.is_sealed(), "seal status")
    login = client.auth.cert.login()
    token = login["auth"]["client_token"]
    check(token and client.token == token, "login sets the client token")
    check(login["auth"]["lease_duration"] > 0 and not login["auth"]["renewable"], f"login {login}")
    self_info = client.auth.token.lookup_self()["data"]
    check(self_info["ttl"] > 0 and self_info["meta"]["identity"].startswith("spiffe://"), f"lookup-self {self_info}")
    check(client.is_authenticated(), "is_authenticated")

    t = client.secrets.transit
    key = f"{PREFIX}-orders"

    # --- create, read, list
    t.create_key(name=key)
    read = t.read_key(name=key)["data"]
    check(read["name"] == key and read["type"] == "aes256-gcm96" and read["latest_version"] == 1,
          f"read key {read}")
    check(list(read["keys"].keys()) == ["1"], f"key versions {read['keys']}")
    check(key in t.list_keys()["data"]["keys"], "list keys")
    t.create_key(name=key)  # creating again is a no-op, as in Vault

    # --- encrypt / decrypt, with and without context
    ct = t.encrypt_data(name=key, plaintext=b64(b"4111-1111-1111-1111"))["data"]["ciphertext"]
    check(ct.startswith("vault:v1:"), f"ciphertext {ct}")
    check(unb64(t.decrypt_data(name=key, ciphertext=ct)["data"]["plaintext"]) == b"4111-1111-1111-1111",
          "decrypt")
    ctx = b64(b"tenant-42")
    ct_ctx = t.encrypt_data(name=key, plaintext=b64(b"with context"), context=ctx)["data"]["ciphertext"]
    check(unb64(t.decrypt_data(name=key, ciphertext=ct_ctx, context=ctx)["data"]["plaintext"]) == b"with context",
          "decrypt with context")
    refused(exceptions.InvalidRequest, lambda: t.decrypt_data(name=key, ciphertext=ct_ctx),
            "decrypt without the context", "decryption failed")
    refused(exceptions.InvalidRequest,
            lambda: t.decrypt_data(name=key, ciphertext=ct_ctx, context=b64(b"tenant-43")),
            "decrypt with another context", "decryption failed")

    # --- batch
    items = [{"plaintext": b64(f"item {i}".encode()), "context": b64(f"c{i}".encode())} for i in range(5)]
    batch = t.encrypt_data(name=key, plaintext="", batch_input=items)["data"]["batch_results"]
    check(len(batch) == 5 and all(r["ciphertext"].startswith("vault:v1:") for r in batch), f"batch encrypt {batch}")
    dec = t.decrypt_data(name=key, ciphertext="", batch_input=[
        {"ciphertext": r["ciphertext"], "context": b64(f"c{i}".encode())} for i, r in enumerate(batch)])
    check([unb64(r["plaintext"]) for r in dec["data"]["batch_results"]] == [f"item {i}".encode() for i in range(5)],
          f"batch decrypt {dec}")
    # One bad item: its own error, the others decrypted; the request says 400 as Vault does.
    bad = refused(exceptions.InvalidRequest, lambda: t.decrypt_data(name=key, ciphertext="", batch_input=[
        {"ciphertext": batch[0]["ciphertext"], "context": b64(b"c0")},
        {"ciphertext": batch[1]["ciphertext"], "context": b64(b"wrong")}]), "batch with a bad item")

    # --- rotate, rewrap, min versions
    rotated = t.rotate_key(name=key)
    check(t.read_key(name=key)["data"]["latest_version"] == 2, "rotate")
    ct2 = t.encrypt_data(name=key, plaintext=b64(b"v2"))["data"]["ciphertext"]
    check(ct2.startswith("vault:v2:"), "encrypt after rotate uses v2")
    rewrapped = t.rewrap_data(name=key, ciphertext=ct)["data"]["ciphertext"]
    check(rewrapped.startswith("vault:v2:"), f"rewrap {rewrapped}")
    check(unb64(t.decrypt_data(name=key, ciphertext=rewrapped)["data"]["plaintext"]) == b"4111-1111-1111-1111",
          "decrypt rewrapped")
    rewrapped_ctx = t.rewrap_data(name=key, ciphertext=ct_ctx, context=ctx)["data"]["ciphertext"]
    check(unb64(t.decrypt_data(name=key, ciphertext=rewrapped_ctx, context=ctx)["data"]["plaintext"]) == b"with context",
          "rewrap with context")
    refused(exceptions.InvalidRequest, lambda: t.encrypt_data(name=key, plaintext=b64(b"x"), key_version=1),
            "encrypt under an old version", "latest")
    t.update_key_configuration(name=key, min_decryption_version=2)
    check(t.read_key(name=key)["data"]["min_decryption_version"] == 2, "min_decryption_version")
    check(list(t.read_key(name=key)["data"]["keys"].keys()) == ["2"], "v1 no longer listed")
    refused(exceptions.InvalidRequest, lambda: t.decrypt_data(name=key, ciphertext=ct), "decrypt under a retired version",
            "retired")
    refused(exceptions.InvalidRequest, lambda: t.update_key_configuration(name=key, min_decryption_version=1),
            "lowering min_decryption_version", "never lowers")
    cfg = t.update_key_configuration(name=key, min_encryption_version=2)
    refused(exceptions.InvalidRequest, lambda: t.update_key_configuration(name=key, min_encryption_version=9),
            "min_encryption_version above latest", "greater than the latest")

    # --- datakey: kmsd's GenerateDataKey; the wrapped form decrypts with decrypt/:name
    dk = t.generate_data_key(name=key, key_type="plaintext", context=ctx)["data"]
    check(len(unb64(dk["plaintext"])) == 32 and dk["ciphertext"].startswith("vault:v2:"),
          f"datakey/plaintext {sorted(dk)}")
    check(unb64(t.decrypt_data(name=key, ciphertext=dk["ciphertext"], context=ctx)["data"]["plaintext"])
          == unb64(dk["plaintext"]), "the wrapped data key decrypts to the data key")
    refused(exceptions.InvalidRequest, lambda: t.decrypt_data(name=key, ciphertext=dk["ciphertext"]),
            "the wrapped data key without its context")
    wrapped = t.generate_data_key(name=key, key_type="wrapped")["data"]
    check("plaintext" not in wrapped and
          len(unb64(t.decrypt_data(name=key, ciphertext=wrapped["ciphertext"])["data"]["plaintext"])) == 32,
          f"datakey/wrapped {sorted(wrapped)}")
    refused(exceptions.InvalidRequest, lambda: t.generate_data_key(name=key, key_type="plaintext", bits=128),
            "datakey bits 128", "256 bits")

    # --- hmac / verify (per key version)
    mac = t.generate_hmac(name=key, hash_input=b64(b"message"))["data"]["hmac"]
    check(mac.startswith("vault:v2:"), f"hmac {mac}")
    check(t.verify_signed_data(name=key, hash_input=b64(b"message"), hmac=mac)["data"]["valid"] is True, "verify")
    check(t.verify_signed_data(name=key, hash_input=b64(b"messagE"), hmac=mac)["data"]["valid"] is False,
          "verify other input")
    mac512 = t.generate_hmac(name=key, hash_input=b64(b"message"), algorithm="sha2-512")["data"]["hmac"]
    check(len(unb64(mac512.split(":")[2])) == 64, "hmac sha2-512 length")
    check(t.verify_signed_data(name=key, hash_input=b64(b"message"), hmac=mac512,
                               hash_algorithm="sha2-512")["data"]["valid"] is True, "verify sha2-512")
    t.rotate_key(name=key)
    check(t.verify_signed_data(name=key, hash_input=b64(b"message"), hmac=mac)["data"]["valid"] is True,
          "an HMAC of v2 verifies after a rotation")
    mac3 = t.generate_hmac(name=key, hash_input=b64(b"message"))["data"]["hmac"]
    check(mac3.startswith("vault:v3:") and mac3.split(":")[2] != mac.split(":")[2], "v3 has its own HMAC key")

    # --- random, hash
    rnd = t.generate_random_bytes(n_bytes=48)["data"]["random_bytes"]
    check(len(unb64(rnd)) == 48, "random bytes")
    rnd_hex = t.generate_random_bytes(n_bytes=16, output_format="hex")["data"]["random_bytes"]
    check(re.fullmatch("[0-9a-f]{32}", rnd_hex) is not None, "random hex")
    import hashlib
    s = t.hash_data(hash_input=b64(b"abc"), algorithm="sha2-256")["data"]["sum"]
    check(s == hashlib.sha256(b"abc").hexdigest(), "hash sha2-256")
    s = t.hash_data(hash_input=b64(b"abc"), algorithm="sha2-512", output_format="base64")["data"]["sum"]
    check(unb64(s) == hashlib.sha512(b"abc").digest(), "hash sha2-512 base64")

    # --- ciphertexts across doors
    xkey = os.environ["KMSD_XDOOR_KEY"]
    xctx = b64(b"xdoor")
    got = unb64(t.decrypt_data(name=xkey, ciphertext=os.environ["KMSD_GRPC_CIPHERTEXT"], context=xctx)["data"]["plaintext"])
    check(got == b"from-grpc", "a gRPC ciphertext decrypts through the Vault door")
    out = t.encrypt_data(name=xkey, plaintext=b64(b"from-hvac"), context=xctx)["data"]["ciphertext"]
    with open(os.environ["KMSD_OUT"], "w") as f:
        json.dump({"ciphertext": out}, f)

    # --- unsupported options: Vault's 400 with a message, nothing created
    name = f"{PREFIX}-refused"
    for opts, msg in [({"convergent_encryption": True, "derived": True}, "convergent"),
                      ({"exportable": True}, "exportable"),
                      ({"type": "rsa-2048"}, "key type")]:
        refused(exceptions.InvalidRequest, lambda: client.write(f"transit/keys/{name}", **opts),
                f"create with {opts}", msg)
        refused(exceptions.InvalidPath, lambda: t.read_key(name=name), f"{opts} created nothing")
    refused(exceptions.InvalidRequest, lambda: t.encrypt_data(name=key, plaintext=b64(b"x"), nonce=b64(b"123456789012")),
            "a caller's nonce", "nonce")
    refused(exceptions.InvalidRequest, lambda: t.update_key_configuration(name=key, deletion_allowed=False),
            "deletion_allowed=false", "shred")
    refused(exceptions.InvalidRequest, lambda: client.write(f"transit/export/encryption-key/{key}"), "export",
            "not supported")

    # --- bad input: Vault errors, nothing done
    refused(exceptions.InvalidRequest, lambda: t.encrypt_data(name=f"{PREFIX}-missing", plaintext=b64(b"x")),
            "unknown key", "encryption key not found")
    refused(exceptions.InvalidPath, lambda: t.read_key(name=f"{PREFIX}-missing"), "unknown key: nothing created")
    # Input the door refuses never reaches a key: the DEK cache sees no lookup.
    before = cache_lookups()
    refused(exceptions.InvalidRequest, lambda: t.encrypt_data(name=key, plaintext="not base64!"),
            "bad base64 plaintext", "base64")
    refused(exceptions.InvalidRequest, lambda: t.decrypt_data(name=key, ciphertext="vault:v2:@@@"),
            "bad base64 ciphertext", "base64")
    refused(exceptions.InvalidRequest, lambda: t.decrypt_data(name=key, ciphertext="v2:abcd"),
            "no vault prefix", "prefix")
    refused(exceptions.InvalidRequest, lambda: t.encrypt_data(name=key, plaintext="", batch_input=[
        {"plaintext": b64(b"x")}] * (MAX_BATCH + 1)), "batch over the limit", "more than")
    after = cache_lookups()
    check(after == before, f"refused requests reached a key ({before} -> {after} cache lookups)")
    other_key = f"{PREFIX}-other"
    t.create_key(name=other_key)
    ct_other = t.encrypt_data(name=other_key, plaintext=b64(b"other"))["data"]["ciphertext"]
    refused(exceptions.InvalidRequest, lambda: t.decrypt_data(name=xkey, ciphertext=ct_other),
            "another key's ciphertext", "decryption failed")
    # A body over vault.max_body_bytes: 413 in Vault's error shape, before any handler runs.
    big = b64(b"x" * (MAX_BODY * 3 // 4 + 100))
    e = refused(exceptions.VaultError, lambda: t.encrypt_data(name=key, plaintext=big), "body over the limit")
    check("too large" in str(e), f"413 message {e}")

    # --- tokens: missing, from another certificate, garbage
    after = cache_lookups()
    anon = hvac.Client(url=ADDR, cert=CERT, verify=CA)
    refused(exceptions.Forbidden, lambda: anon.secrets.transit.encrypt_data(name=key, plaintext=b64(b"x")),
            "no token", "permission denied")
    stolen = hvac.Client(url=ADDR, cert=OTHER, verify=CA, token=token)
    refused(exceptions.Forbidden, lambda: stolen.secrets.transit.encrypt_data(name=key, plaintext=b64(b"x")),
            "a token with another certificate", "permission denied")
    no_cert = hvac.Client(url=ADDR, verify=CA, token=token)
    refused(exceptions.Forbidden, lambda: no_cert.secrets.transit.encrypt_data(name=key, plaintext=b64(b"x")),
            "a token without its certificate", "permission denied")
    forged = hvac.Client(url=ADDR, cert=CERT, verify=CA, token=token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB"))
    refused(exceptions.Forbidden, lambda: forged.secrets.transit.encrypt_data(name=key, plaintext=b64(b"x")),
            "a forged token", "permission denied")
    check(cache_lookups() == after, "refused tokens reached no key")

    # --- policy: the other identity (encrypt/decrypt/reencrypt only) may not rotate or delete
    other = hvac.Client(url=ADDR, cert=OTHER, verify=CA)
    other.auth.cert.login()
    check(unb64(other.secrets.transit.decrypt_data(name=key, ciphertext=ct2)["data"]["plaintext"]) == b"v2",
          "the other identity decrypts")
    refused(exceptions.Forbidden, lambda: other.secrets.transit.rotate_key(name=key), "rotate without the grant")
    refused(exceptions.Forbidden, lambda: other.secrets.transit.delete_key(name=key), "delete without the grant")

    # --- delete (crypto-shredding, with the shred grant)
    t.delete_key(name=other_key)
    refused(exceptions.InvalidPath, lambda: t.read_key(name=other_key), "deleted key")
    refused(exceptions.InvalidRequest, lambda: t.decrypt_data(name=other_key, ciphertext=ct_other), "decrypt under a deleted key")
    print("hvac: all checks passed")


if __name__ == "__main__":
    main()
