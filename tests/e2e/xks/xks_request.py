#!/usr/bin/python3
"""Sends one XKS proxy API request signed by botocore's SigV4 signer (Debian's
python3-botocore), an implementation independent of kmsd's. Prints the HTTP status on the
first line and the response body after it.

  xks_request.py --url URL --access-key-id ID --secret-file FILE --region REGION
                 --body JSON [--time-offset SECONDS] [--send-body JSON] [--cacert PEM]
                 [--service NAME]

--time-offset signs with a clock that far from now (a stale or future request);
--send-body sends other bytes than were signed (a tampered body).
"""
import argparse
import datetime
import http.client
import ssl
import sys
import urllib.parse

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class _ShiftedDatetime(datetime.datetime):
    offset = 0

    @classmethod
    def utcnow(cls):
        return datetime.datetime.utcnow() + datetime.timedelta(seconds=cls.offset)


class _ShiftedModule:
    datetime = _ShiftedDatetime

    def __getattr__(self, name):
        return getattr(datetime, name)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--access-key-id", required=True)
    p.add_argument("--secret-file", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--service", default="kms-xks-proxy")
    p.add_argument("--body", required=True)
    p.add_argument("--send-body")
    p.add_argument("--time-offset", type=int, default=0)
    p.add_argument("--cacert")
    p.add_argument("--method", default="POST")
    a = p.parse_args()

    with open(a.secret_file) as f:
        secret = f.read().strip()
    body = a.body.encode()
    request = AWSRequest(method=a.method, url=a.url, data=body,
                         headers={"Content-Type": "application/json"})
    _ShiftedDatetime.offset = a.time_offset
    botocore.auth.datetime = _ShiftedModule()
    botocore.auth.SigV4Auth(Credentials(a.access_key_id, secret), a.service, a.region).add_auth(request)
    prepared = request.prepare()

    url = urllib.parse.urlsplit(a.url)
    context = ssl.create_default_context(cafile=a.cacert)
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=10)
    sent = a.send_body.encode() if a.send_body is not None else body
    headers = dict(prepared.headers.items())
    headers["Content-Length"] = str(len(sent))
    conn.request(a.method, url.path, body=sent, headers=headers)
    response = conn.getresponse()
    sys.stdout.write(f"{response.status}\n{response.read().decode()}")


if __name__ == "__main__":
    main()
