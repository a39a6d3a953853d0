#!/usr/bin/env python3
"""Independent HYPER-HMAC-SHA256 test vectors for crates/auth (stdlib only).

Written from the algorithm in shared/reference/hyper-extensions.md, not from the Rust code.
Run:  python3 crates/auth/tests/vectors.py > crates/auth/tests/vectors.json
Each vector gives the request as the client builds it (headers before signing, Host included)
and the headers sign() must add: Content-Type if absent, X-Hyper-Date, X-Hyper-Content-Sha256
and Authorization.
"""
import hashlib
import hmac
import json
import urllib.parse

UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"


def enc(b: bytes) -> str:
    return "".join(chr(c) if chr(c) in UNRESERVED else "%%%02X" % c for c in b)


def canon_path(path: str) -> str:
    segs = [s for s in path.split("/") if s]
    return "/".join(enc(urllib.parse.unquote_to_bytes(s)) for s in segs)


def canon_query(query: str) -> str:
    # Form-decode (+ is space), re-encode, sort by name keeping value order (Go's Values.Encode).
    pairs = []
    for part in query.split("&"):
        if not part:
            continue
        k, _, v = part.partition("=")
        k = urllib.parse.unquote_to_bytes(k.replace("+", " "))
        v = urllib.parse.unquote_to_bytes(v.replace("+", " "))
        pairs.append((enc(k), enc(v)))
    pairs.sort(key=lambda p: p[0])
    return "&".join(f"{k}={v}" for k, v in pairs)


def canon_host(h: str) -> str:
    host, sep, port = h.rpartition(":")
    if sep and port in ("80", "443") and (host.endswith("]") or ":" not in host):
        return host
    return h


def hm(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def sign(v):
    headers = {k.lower(): val for k, val in v["headers"].items()}
    headers.setdefault("content-type", "application/json")
    date = v["date"]
    body = v["body"].encode()
    phash = hashlib.sha256(body).hexdigest()
    headers["x-hyper-date"] = date
    headers["x-hyper-content-sha256"] = phash
    names = sorted(
        n for n in headers if n in ("content-type", "content-md5", "host") or n.startswith("x-hyper-")
    )
    lines = ""
    for n in names:
        val = headers[n].strip()
        if n == "host":
            val = canon_host(val)
        lines += f"{n}:{val}\n"
    path, _, query = v["uri"].partition("?")
    signed = ";".join(names)
    creq = "\n".join([v["method"], canon_path(path), canon_query(query), lines, signed, phash])
    day = date[:8]
    scope = f"{day}/{v['region']}/hyper/hyper_request"
    sts = "\n".join(["HYPER-HMAC-SHA256", date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    key = hm(hm(hm(hm(("HYPER" + v["secret_key"]).encode(), day), v["region"]), "hyper"), "hyper_request")
    sig = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
    out = dict(v)
    out["canonical_request"] = creq
    out["expect"] = {
        "content-type": headers["content-type"],
        "x-hyper-date": date,
        "x-hyper-content-sha256": phash,
        "authorization": f"HYPER-HMAC-SHA256 Credential={v['access_key']}/{scope}, "
        f"SignedHeaders={signed}, Signature={sig}",
    }
    return out


def base(name, method, uri, headers, body="", date="20261122T010515Z", ak="ak", sk="sk", region="us-west-1"):
    return {
        "name": name, "access_key": ak, "secret_key": sk, "region": region, "method": method,
        "uri": uri, "headers": headers, "body": body, "date": date,
    }


VECTORS = [
    base("reference vector", "GET", "/v1.23/containers/json", {"Host": "127.0.0.1:18443"}),
    base("query with spaces and several params", "GET",
         "/v1.23/containers/json?filters=%7B%22name%22%3A%5B%22a+b%22%5D%7D&all=1&limit=10&before=x%20y",
         {"Host": "127.0.0.1:18443"}),
    base("repeated name keeps value order", "GET", "/v1.23/images/json?b=2&a=z&a=y", {"Host": "h:8080"}),
    base("POST with body on :443", "POST", "/v1.23/containers/create?name=web",
         {"Host": "us-west-1.hyper.sh:443"},
         body='{"Image":"busybox","Cmd":["sh","-c","echo hi"]}', ak="AKIA123", sk="s3cr3t/+=",
         region="us-west-1", date="20260101T000000Z"),
    base("DELETE on :80 with empty segments", "DELETE", "//v1.23//containers/abc/?force=true&v=1",
         {"Host": "example.com:80"}),
    base("PUT with x-hyper header and content-md5", "PUT", "/v1.23/containers/abc/archive?path=/tmp/a%20b",
         {"Host": "10.0.0.1", "Content-Type": "application/x-tar", "Content-MD5": "1B2M2Y8AsgTpgAmY7PhCfg==",
          "X-Hyper-Region": "eu-central-1"},
         body="tar bytes here", region="eu-central-1", date="20261231T235959Z"),
    base("HEAD on root path", "HEAD", "/", {"Host": "localhost:443"}),
    base("encoded path segment", "POST", "/v1.23/volumes/my%20vol/x~y?", {"Host": "[::1]:443"},
         body="\n"),
]

if __name__ == "__main__":
    print(json.dumps([sign(v) for v in VECTORS], indent=2))
