#!/usr/bin/env python3
"""A tiny S3 client for the offsite tests: path-style requests signed with AWS Signature V4
(x-amz-content-sha256 included), stdlib only, so the tests need no boto3. It is a second,
independent implementation to check mailvault's own S3 client against.

Endpoint and keys come from the environment that servers.sh exports:
  MV_S3_ENDPOINT (http://127.0.0.1:PORT), MV_S3_ACCESS, MV_S3_SECRET, MV_S3_REGION (default
  us-east-1; RGW accepts any region in the signature's scope).

  s3req.py raw METHOD PATH [QUERY] [BODY_FILE|-]
      One request, e.g. `raw GET /bucket list-type=2&prefix=a/`. Prints the response body to
      stdout and "HTTP STATUS REASON" to stderr; exit 0 on 2xx, 1 otherwise.
  s3req.py versioning BUCKET [Enabled|Suspended]
      Sets the bucket's versioning state, or prints it (Enabled, Suspended, or Off).
  s3req.py versions BUCKET [PREFIX]
      Lists every object version and delete marker (ListObjectVersions, all pages), one per
      line: "version KEY VERSION_ID SIZE" or "deletemarker KEY VERSION_ID". Prints nothing for
      a bucket with no object left in any form.
  s3req.py purge BUCKET
      Deletes every version and delete marker, then the bucket (test clean-up).
Exit 2 on usage or connection errors.
"""
import datetime
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


def _quote(s, safe="-_.~"):
    return urllib.parse.quote(s, safe=safe)


def request(method, path, query="", body=b"", headers=None):
    """Sends one signed request; returns (status, reason, headers, body)."""
    endpoint = urllib.parse.urlsplit(os.environ["MV_S3_ENDPOINT"])
    access, secret = os.environ["MV_S3_ACCESS"], os.environ["MV_S3_SECRET"]
    region = os.environ.get("MV_S3_REGION", "us-east-1")
    now = datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(body).hexdigest()

    # canonical query: every parameter URI-encoded, sorted, "key=" for valueless ones
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    canon_query = "&".join("%s=%s" % (_quote(k), _quote(v)) for k, v in sorted(pairs))
    canon_path = _quote(path, safe="-_.~/")
    hdrs = {"host": endpoint.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    for k, v in (headers or {}).items():
        hdrs[k.lower()] = v
    signed = ";".join(sorted(hdrs))
    canon_headers = "".join("%s:%s\n" % (k, hdrs[k].strip()) for k in sorted(hdrs))
    canon_req = "\n".join([method, canon_path, canon_query, canon_headers, signed, payload_hash])
    scope = "%s/%s/s3/aws4_request" % (day, region)
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canon_req.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    hdrs["authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s"
                             % (access, scope, signed, signature))

    conn = http.client.HTTPConnection(endpoint.hostname, endpoint.port or 80, timeout=60)
    try:
        conn.request(method, canon_path + ("?" + canon_query if canon_query else ""), body=body,
                     headers=hdrs)
        resp = conn.getresponse()
        return resp.status, resp.reason, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def must(method, path, query="", body=b"", headers=None):
    status, reason, _, data = request(method, path, query, body, headers)
    if status // 100 != 2:
        sys.stderr.write("s3req.py: %s %s?%s: HTTP %d %s\n%s\n"
                         % (method, path, query, status, reason, data.decode(errors="replace")))
        sys.exit(1)
    return data


def versions(bucket, prefix=""):
    """Yields ("version", key, id, size) and ("deletemarker", key, id, None) for all pages."""
    key_marker = vid_marker = None
    while True:
        q = {"versions": "", "prefix": prefix}
        if key_marker is not None:
            q["key-marker"] = key_marker
            q["version-id-marker"] = vid_marker
        root = ET.fromstring(must("GET", "/" + bucket, urllib.parse.urlencode(q)))
        for el in root:
            if el.tag == NS + "Version":
                yield ("version", el.findtext(NS + "Key"), el.findtext(NS + "VersionId"),
                       el.findtext(NS + "Size"))
            elif el.tag == NS + "DeleteMarker":
                yield ("deletemarker", el.findtext(NS + "Key"), el.findtext(NS + "VersionId"), None)
        if root.findtext(NS + "IsTruncated") != "true":
            return
        key_marker = root.findtext(NS + "NextKeyMarker")
        vid_marker = root.findtext(NS + "NextVersionIdMarker")


def main(argv):
    if len(argv) < 2:
        sys.stderr.write(__doc__)
        return 2
    cmd = argv[1]
    if cmd == "raw" and 4 <= len(argv) <= 6:
        body = b""
        if len(argv) == 6:
            body = sys.stdin.buffer.read() if argv[5] == "-" else open(argv[5], "rb").read()
        status, reason, _, data = request(argv[2], argv[3], argv[4] if len(argv) > 4 else "", body)
        sys.stdout.buffer.write(data)
        sys.stderr.write("HTTP %d %s\n" % (status, reason))
        return 0 if status // 100 == 2 else 1
    if cmd == "versioning" and len(argv) in (3, 4):
        if len(argv) == 4:
            if argv[3] not in ("Enabled", "Suspended"):
                sys.stderr.write("s3req.py: versioning state is Enabled or Suspended\n")
                return 2
            xml = ('<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                   "<Status>%s</Status></VersioningConfiguration>" % argv[3]).encode()
            must("PUT", "/" + argv[2], "versioning", xml)
            return 0
        root = ET.fromstring(must("GET", "/" + argv[2], "versioning"))
        print(root.findtext(NS + "Status") or "Off")
        return 0
    if cmd == "versions" and len(argv) in (3, 4):
        for kind, key, vid, size in versions(argv[2], argv[3] if len(argv) == 4 else ""):
            print(" ".join(x for x in (kind, key, vid, size) if x is not None))
        return 0
    if cmd == "purge" and len(argv) == 3:
        for _, key, vid, _ in list(versions(argv[2])):
            must("DELETE", "/%s/%s" % (argv[2], key), urllib.parse.urlencode({"versionId": vid}))
        must("DELETE", "/" + argv[2])
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (OSError, http.client.HTTPException, KeyError) as e:
        sys.stderr.write("s3req.py: %s: %s\n" % (type(e).__name__, e))
        sys.exit(2)
