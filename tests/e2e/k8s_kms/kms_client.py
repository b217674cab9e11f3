#!/usr/bin/python3
"""A Kubernetes KMS v2 client generated from the official api.proto (vendored in
proto/third_party/k8s.io/kms): one call over the plugin's unix socket, the answer printed
as one JSON object: {"ok": true, ...fields...} or {"ok": false, "code": NAME, "details": ...}.

  kms_client.py --stubs DIR --socket PATH status
  kms_client.py --stubs DIR --socket PATH encrypt --plaintext-b64 B64 [--uid UID]
  kms_client.py --stubs DIR --socket PATH decrypt --ciphertext-b64 B64 --key-id ID
"""
import argparse
import base64
import json
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stubs", required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("op", choices=["status", "encrypt", "decrypt"])
    p.add_argument("--plaintext-b64")
    p.add_argument("--ciphertext-b64")
    p.add_argument("--key-id", default="")
    p.add_argument("--uid", default="kmsd-e2e")
    p.add_argument("--annotation", action="append", default=[])
    a = p.parse_args()
    sys.path.insert(0, a.stubs)
    import grpc
    import api_pb2
    import api_pb2_grpc

    channel = grpc.insecure_channel("unix:" + a.socket)
    stub = api_pb2_grpc.KeyManagementServiceStub(channel)
    try:
        if a.op == "status":
            r = stub.Status(api_pb2.StatusRequest(), timeout=10)
            out = {"version": r.version, "healthz": r.healthz, "key_id": r.key_id}
        elif a.op == "encrypt":
            r = stub.Encrypt(api_pb2.EncryptRequest(plaintext=base64.b64decode(a.plaintext_b64),
                                                    uid=a.uid), timeout=10)
            out = {"ciphertext": base64.b64encode(r.ciphertext).decode(), "key_id": r.key_id,
                   "annotations": {k: base64.b64encode(v).decode() for k, v in r.annotations.items()}}
        else:
            annotations = {}
            for kv in a.annotation:
                k, v = kv.split("=", 1)
                annotations[k] = v.encode()
            r = stub.Decrypt(api_pb2.DecryptRequest(ciphertext=base64.b64decode(a.ciphertext_b64),
                                                    uid=a.uid, key_id=a.key_id,
                                                    annotations=annotations), timeout=10)
            out = {"plaintext": base64.b64encode(r.plaintext).decode()}
        out["ok"] = True
    except grpc.RpcError as e:
        out = {"ok": False, "code": e.code().name, "details": e.details() or ""}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
