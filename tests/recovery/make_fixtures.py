#!/usr/bin/env python3
"""Hand-made edge-case messages for tests/recovery/restore_test.sh (mailvault restore).

usage: make_fixtures.py OUTDIR

Writes the .eml files below into OUTDIR (created if missing), LF line ends, always the same
bytes (nothing random or time-dependent), and prints their paths one per line. Every
message is To: alice@example.test except sent.eml, which alice sent (From: alice) and so
belongs in her Sent folder.

  nomid-1.eml, nomid-2.eml
      No Message-ID at all; the same From, To, Subject and Date; only the bodies differ.
      Two different messages: a restore that keys on header fields alone would take one
      for a copy of the other and restore only one of them.
  samemid-1.eml, samemid-2.eml
      Two DIFFERENT messages that share one Message-ID and one Date (a broken client, or
      a list that re-sends with edits); different bodies. Message-ID+Date match, the
      decoded parts do not: both must be restored, and the one already in the mailbox
      must not stand in for the other.
  reencode.eml
      multipart/mixed: a quoted-printable text/plain part (UTF-8, soft line breaks, an
      encoded trailing space) and a base64 application/pdf attachment. The test delivers
      it re-encoded (imap_tool.py lmtp-deliver --reencode: the text part becomes base64),
      so the mailbox copy differs in bytes but not in decoded content: restore must find
      it present and not append a second copy.
  sent.eml
      From: alice@example.test, To: carol@example.test: mail alice sent; restored into
      alice's Sent folder, not her INBOX.
"""

import os
import sys

FIXTURES = {}

# Two messages without a Message-ID, same headers, different bodies.
NOMID_HEAD = """\
From: Bob Example <bob@example.test>
To: alice@example.test
Subject: lunch?
Date: Tue, 03 Mar 2026 12:00:00 +0000
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii
Content-Transfer-Encoding: 7bit

"""
FIXTURES["nomid-1.eml"] = NOMID_HEAD + "Lunch at noon? (first message, no Message-ID)\n"
FIXTURES["nomid-2.eml"] = NOMID_HEAD + "Make that one o'clock. (second message, no Message-ID)\n"

# Two different messages sharing Message-ID and Date.
SAMEMID_HEAD = """\
From: Dave Example <dave@example.test>
To: alice@example.test
Subject: quarterly figures
Date: Wed, 04 Mar 2026 09:30:00 +0100
Message-ID: <same-id-2026-03-04@example.test>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

"""
FIXTURES["samemid-1.eml"] = SAMEMID_HEAD + "Q1 revenue: 1.2M. (version one)\n"
FIXTURES["samemid-2.eml"] = SAMEMID_HEAD + "Q1 revenue: 1.3M, corrected. (version two)\n"

# multipart/mixed: quoted-printable text part + base64 attachment (76-column lines).
_pdf = b"%PDF-1.4\n" + bytes((i * 37 + 11) % 256 for i in range(1500)) + b"\n%%EOF\n"
_b64 = __import__("base64").encodebytes(_pdf).decode("ascii")
FIXTURES["reencode.eml"] = """\
From: Erin Example <erin@example.test>
To: alice@example.test
Subject: contract draft, =?utf-8?q?r=C3=A9vision?= 2
Date: Thu, 05 Mar 2026 16:45:00 +0000
Message-ID: <reencode-fixture-1@example.test>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=_mv_fixture_boundary"

This is a multi-part message in MIME format.

--=_mv_fixture_boundary
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Bonjour Alice,=20
voici la r=C3=A9vision 2 du contrat. Cette ligne est assez longue pour =
=C3=AAtre coup=C3=A9e par un saut de ligne doux en quoted-printable.
Le fichier est en pi=C3=A8ce jointe.

Erin
--=_mv_fixture_boundary
Content-Type: application/pdf; name="contract-v2.pdf"
Content-Disposition: attachment; filename="contract-v2.pdf"
Content-Transfer-Encoding: base64

""" + _b64 + """--=_mv_fixture_boundary--
"""

# Mail alice sent.
FIXTURES["sent.eml"] = """\
From: Alice Example <alice@example.test>
To: Carol Example <carol@example.test>
Subject: re: the offsite
Date: Fri, 06 Mar 2026 08:15:00 +0000
Message-ID: <sent-by-alice-1@example.test>
MIME-Version: 1.0
Content-Type: text/plain; charset=us-ascii

Carol, count me in for the offsite. -- Alice
"""


def main(argv):
    if len(argv) != 1:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    outdir = argv[0]
    os.makedirs(outdir, exist_ok=True)
    for name, body in FIXTURES.items():
        path = os.path.join(outdir, name)
        with open(path, "wb") as f:
            f.write(body.encode("utf-8"))
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
