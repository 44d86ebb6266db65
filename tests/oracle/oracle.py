#!/usr/bin/env python3
"""Independent search oracle for mailvault.

    oracle.py [--details OUT.json] [--variants OUT.json] MAILDIR QUERIES.jsonl

Reads every file under MAILDIR/cur and MAILDIR/new (Python standard library only: the `email`
package), extracts the searchable fields the way docs/query-language.md describes them, and
evaluates each query of QUERIES.jsonl against them. Prints JSON {query: [sorted vault ids]} on
stdout. A vault id is the lower-case hex SHA-256 of the file's bytes.

QUERIES.jsonl: one JSON object per line (blank lines and lines starting with # are skipped):
    {"q": "<mailvault query>", "oracle": <structured form>, "note": "..."}
"oracle" is optional. Without it the query is parsed by the small parser below (a subset of the
language); with it, the parser's result must equal it (a guard against typos in either).

Structured form (what the oracle evaluates):
    {"all": true}                                   every message (`*`)
    {"and": [X, ...]}  {"or": [X, ...]}  {"not": X}
    {"field": F, "word": "w"}       F: any subject body from to cc attachment atext
    {"field": F, "prefix": "w"}     any word starting with w
    {"field": F, "phrase": ["a", "b", ...]}   consecutive words inside one field
                                    (body/atext: inside one MIME part; any: inside one of the fields)
    {"field": "from"|"to"|"cc", "addr": "a@b"}      exact address, case-insensitive
    {"field": "attachment", "name": "x.gif"}        whole attachment name, case-insensitive
    {"field": "mime", "type": "image/gif"}          or "image/*"
    {"field": "msgid", "value": "a@b"}              normalised Message-ID (no brackets)
    {"field": "date", "ge": ISO, "lt": ISO}         UTC instants, either may be absent
    {"field": "size", "ge": N, "le": N}             bytes, either may be absent
    {"has": "attachment"}

--details OUT.json writes {id: {"file": name, "size": n, "notes": [...]}} for every message; the
notes name the parse problems and interpretation choices that touch the message, so that a person
looking at a mismatch sees at once whether a corner case is involved.

--variants OUT.json re-extracts the corpus under each alternative reading of the spec (VARIANTS,
one at a time) and writes, per query, the answer under every reading that changes it (a summary
goes to stderr). A query listed there is one whose expected answer the spec alone does not settle;
the test runner uses the file to say so when mailvault's answer equals such an alternative.
"""

import argparse
import datetime
import email
import email.policy
import email.utils
import base64
import binascii
import codecs
import hashlib
import html
import html.parser
import json
import os
import quopri
import re
import sys

UTC = datetime.timezone.utc

# ---------------------------------------------------------------------------------------------
# Interpretation options. DEFAULTS is the oracle's reading of the spec; VARIANTS are the other
# plausible readings checked by --variants.

DEFAULTS = {
    # HTML: inline tags (b, i, font, span, a, ...) do not split words, as in a browser; block tags
    # (p, div, br, td, ...) do. Variant: every tag splits words.
    "html_all_tags_split": False,
    # HTML: the text of <title> counts (only <script> and <style> contents are dropped).
    # Variant: <title> text is dropped too, as a browser does not show it in the page.
    "html_skip_title": False,
    # A part has a filename if Content-Disposition has filename= or Content-Type has name=
    # (GMime's g_mime_part_get_filename and Python's get_filename both fall back to name=).
    "filename_from_ct_name": True,
    # Body = text/plain and text/html only (the spec's wording). Variant: any text/* part.
    "body_all_text_types": False,
    # Undeclared or unknown charset: UTF-8 if the bytes are valid UTF-8, else Latin-1.
    # Declared charset: decoded with replacement characters on errors.
    # Variant: Latin-1 whenever the declared/undeclared decoding is not clean.
    "charset_latin1_fallback": False,
    # Address fields use every header of that name (To: twice = both lists). Variant: first only.
    "addr_first_header_only": False,
    # "jm@jmason.org (Justin Mason)": the comment is the display name (email.utils behaviour).
    # Variant: comments are ignored.
    "addr_comment_is_name": True,
    # The rule "an attachment is a part with Content-Disposition: attachment or a filename" applies
    # to the top-level entity too (one spam is a single text/html part with
    # `Content-Disposition: inline; filename="filename.html"`). Variant: the top level never is.
    "root_can_be_attachment": True,
    # Date: 62 spam messages say "Thu, 22 Aug 0102 12:07:35 +0800". Read literally (RFC 5322's
    # 4-digit year) that is the year 102, outside every 2002 range but inside `date:..2002-06-30`.
    # Variants: "plus1900" (the year 2002, the sender's Y2K bug undone) and "unreadable" (a year
    # before 1969 makes the date unreadable, so the capture time counts, as GMime's date parser
    # would have it).
    # mailvault reads these as 2002: RFC 5322 adds 1900 to a three-digit year, and "0102" is the
    # same Y2K bug zero-padded.
    "date_odd_years": "plus1900",
    # Date: "2002/09/14 Sat 02:29:32 CDT" (2 messages) is unreadable (capture time counts).
    # Variant: such YYYY/MM/DD dates are read.
    # mailvault (GMime) reads them: a mail administrator wants them dated, not undated.
    "date_slash_format": True,
    # A declared CJK charset that does not decode cleanly: the other CJK charsets are tried before
    # replacement characters (spam labels Big5 text as GB2312; mailvault indexes such text as
    # the Chinese it is). Variant: replacement characters straight away.
    "charset_cjk_retry": True,
}

VARIANTS = [
    ("html_all_tags_split", True),
    ("html_skip_title", True),
    ("filename_from_ct_name", False),
    ("body_all_text_types", True),
    ("charset_latin1_fallback", True),
    ("addr_first_header_only", True),
    ("addr_comment_is_name", False),
    ("root_can_be_attachment", False),
    ("date_odd_years", "literal"),
    ("date_odd_years", "unreadable"),
    ("date_slash_format", False),
    ("charset_cjk_retry", False),
]

WORD_RE = re.compile(r"\w+")


def words(text):
    return [w.lower() for w in WORD_RE.findall(text)]


# ---------------------------------------------------------------------------------------------
# Decoding helpers


def codec_for(charset):
    """A Python codec name for a MIME charset, or None if unknown."""
    if not charset:
        return None
    cs = charset.strip().strip('"').lower()
    aliases = {"chinesebig5": "big5", "gb2312_charset": "gb2312", "x-sjis": "shift_jis",
               "ks_c_5601-1987": "cp949", "unicode-1-1-utf-7": "utf-7"}
    cs = aliases.get(cs, cs)
    try:
        return codecs.lookup(cs).name
    except LookupError:
        return None


def decode_bytes(data, charset, opts, notes=None):
    """Text of a part's (transfer-decoded) bytes."""
    codec = codec_for(charset)
    if codec is not None:
        try:
            return data.decode(codec)
        except (UnicodeDecodeError, UnicodeError):
            if notes is not None:
                notes.add("charset-errors:%s" % charset)
            if opts["charset_latin1_fallback"]:
                return data.decode("latin-1")
            if opts["charset_cjk_retry"] and codec in ("gb2312", "gbk", "gb18030", "big5", "big5hkscs"):
                for alt in ("gb18030", "big5hkscs"):
                    try:
                        return data.decode(alt)
                    except UnicodeDecodeError:
                        pass
            return data.decode(codec, errors="replace")
        except Exception:  # codec exists but breaks (e.g. incremental state)
            pass
    elif charset and notes is not None and charset.strip().lower() not in ("", "us-ascii"):
        notes.add("unknown-charset:%s" % charset)
    try:
        text = data.decode("utf-8")
        if opts["charset_latin1_fallback"] and any(b >= 0x80 for b in data):
            return data.decode("latin-1")
        return text
    except UnicodeDecodeError:
        if notes is not None:
            notes.add("8bit-undeclared")
        return data.decode("latin-1")


def header_bytes_to_str(value):
    """compat32 keeps undecodable header bytes as surrogate escapes; make them text."""
    if isinstance(value, str):
        raw = value.encode("ascii", "surrogateescape") if any(0xDC80 <= ord(c) <= 0xDCFF for c in value) else None
        if raw is None:
            return value
    else:
        raw = bytes(value)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def unfold(value):
    return re.sub(r"\r?\n(?=[ \t])", "", value).replace("\r", "").replace("\n", "")


ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def decode_rfc2047(text, opts):
    """Decode RFC 2047 encoded words (loosely: also inside words); whitespace between two
    adjacent encoded words is dropped."""
    out = []
    pos = 0
    last_was_ew = False
    for m in ENCODED_WORD.finditer(text):
        between = text[pos:m.start()]
        if not (last_was_ew and between.strip() == ""):
            out.append(between)
        charset = m.group(1).split("*", 1)[0]  # RFC 2231 language suffix
        enc = m.group(2).upper()
        payload = m.group(3)
        try:
            if enc == "B":
                payload = payload + "=" * (-len(payload) % 4)
                data = base64.b64decode(payload)
            else:
                data = quopri.decodestring(payload.replace("_", " ").encode("ascii", "replace"), header=False)
            out.append(decode_bytes(data, charset, opts))
        except (binascii.Error, ValueError):
            out.append(m.group(0))
        pos = m.end()
        last_was_ew = True
    out.append(text[pos:])
    return "".join(out)


def raw_headers(msg, name):
    """All values of a header, as unfolded str (8-bit bytes decoded as UTF-8 or Latin-1)."""
    name = name.lower()
    return [unfold(header_bytes_to_str(v)) for k, v in msg._headers if k.lower() == name]


def content_type(part):
    """type/subtype, lower-case, made of RFC 2045 token characters; text/plain by default
    (and for an unreadable Content-Type, as RFC 2045 says)."""
    values = raw_headers(part, "content-type")
    default = part.get_default_type()
    if not values:
        return default
    m = re.match(r"\s*([^\s()<>@,;:\\\"/\[\]?=]+)\s*/\s*([^\s()<>@,;:\\\"/\[\]?=]+)", values[0])
    if not m:
        return "text/plain"
    return (m.group(1) + "/" + m.group(2)).lower()


def part_filename(part, opts):
    name = None
    try:
        name = part.get_param("filename", None, "content-disposition")
        if name is None and opts["filename_from_ct_name"]:
            name = part.get_param("name", None, "content-type")
    except Exception:
        return None
    if name is None:
        return None
    name = email.utils.collapse_rfc2231_value(name).strip()
    if isinstance(name, str):
        name = header_bytes_to_str(name)
    name = decode_rfc2047(name, opts)
    return name or None


def disposition(part):
    values = raw_headers(part, "content-disposition")
    if not values:
        return ""
    return values[0].split(";", 1)[0].strip().lower()


def transfer_decoded(part, notes):
    """The part's payload bytes after Content-Transfer-Encoding."""
    payload = part.get_payload(decode=False)
    if not isinstance(payload, str):
        return b""
    try:
        raw = payload.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        raw = payload.encode("utf-8", "surrogateescape")
    cte = (raw_headers(part, "content-transfer-encoding") or [""])[0].strip().lower()
    if cte == "base64":
        # Lenient, like mail readers: skip non-alphabet bytes; '=' padding ends a block (spam
        # sometimes concatenates several), a block's missing padding is supplied.
        out = []
        for block in re.split(rb"=+", re.sub(rb"[^A-Za-z0-9+/=]", b"", raw)):
            block = block[: len(block) - 1] if len(block) % 4 == 1 else block
            try:
                out.append(base64.b64decode(block + b"=" * (-len(block) % 4)))
            except binascii.Error:
                notes.add("bad-base64")
        return b"".join(out)
    if cte == "quoted-printable":
        return quopri.decodestring(raw)
    return raw


class HTMLText(html.parser.HTMLParser):
    BLOCK = set("""address article aside blockquote body br center dd div dl dt fieldset figcaption
        figure footer form frame frameset h1 h2 h3 h4 h5 h6 head header hr html iframe img input
        legend li link map meta nav noscript ol option p pre section select table tbody td textarea
        tfoot th thead title tr ul""".split())
    SKIP = {"script", "style"}

    def __init__(self, all_tags_split, skip_title):
        super().__init__(convert_charrefs=True)
        self.all_tags_split = all_tags_split
        if skip_title:
            self.SKIP = self.SKIP | {"title"}
        self.out = []
        self.skip = 0

    def _tag(self, tag):
        if self.all_tags_split or tag in self.BLOCK:
            self.out.append("\n")

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        self._tag(tag)

    def handle_startendtag(self, tag, attrs):
        self._tag(tag)

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.skip:
            self.skip -= 1
        self._tag(tag)

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def html_to_text(text, opts):
    p = HTMLText(opts["html_all_tags_split"], opts["html_skip_title"])
    try:
        p.feed(text)
        p.close()
    except Exception:
        pass
    return "".join(p.out)


def parse_date(values, opts, notes):
    if not values:
        notes.add("no-date")
        return None
    value = values[0].strip()
    if opts["date_slash_format"]:
        m = re.match(r"\s*(\d{4})/(\d{1,2})/(\d{1,2})\s+(?:[A-Za-z]{3}\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?\s*(.*)$", value)
        if m and 1 <= int(m.group(2)) <= 12:
            y, mo, d, hh, mi, ss, zone = m.groups()
            value = "%s %s %s %s:%s:%s %s" % (d, "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()[int(mo) - 1],
                                               y, hh, mi, ss or "00", zone)
    try:
        t = email.utils._parsedate_tz(value)
    except Exception:
        t = None
    if not t:
        notes.add("unparseable-date")
        return None
    year = t[0]
    if year < 1000:
        notes.add("year<1000")
        if opts["date_odd_years"] == "plus1900":
            year += 1900
    if year < 1969 and opts["date_odd_years"] == "unreadable":
        return None
    if t[9] is not None and abs(t[9]) > 14 * 3600:
        notes.add("date-zone-beyond-14h")
    if t[9] is None and not re.search(r"-0000\s*(\(.*\))?\s*$", value):
        notes.add("date-zone-unreadable(UTC-assumed)")
    try:
        dt = datetime.datetime(year, t[1], t[2], t[3], t[4], t[5], tzinfo=UTC)
        return dt - datetime.timedelta(seconds=t[9] or 0)
    except (ValueError, OverflowError):
        notes.add("unparseable-date")
        return None


def normalise_msgid(value):
    value = value.strip()
    m = re.search(r"<([^<>]*)>", value)
    if m:
        value = m.group(1)
    return re.sub(r"\s+", "", value)


# ---------------------------------------------------------------------------------------------
# Extraction


class Doc:
    __slots__ = ("id", "file", "size", "date", "addr", "addr_seqs", "subject", "body", "atext",
                 "att_names", "mimes", "has_att", "msgid", "notes", "cache")


def addresses(msg, header, opts, doc):
    values = raw_headers(msg, header)
    if opts["addr_first_header_only"]:
        values = values[:1]
    if len(values) > 1:
        doc.notes.add("several-%s-headers" % header)
    if not opts["addr_comment_is_name"]:
        values = [re.sub(r"\([^()]*\)", " ", v) for v in values]
    addrs, seqs = set(), []
    try:
        pairs = email.utils.getaddresses(values)
    except Exception:
        doc.notes.add("unparseable-%s" % header)
        return addrs, seqs
    for name, addr in pairs:
        name = decode_rfc2047(name or "", opts)
        if words(name):
            seqs.append(words(name))
        addr = (addr or "").strip()
        if addr:
            addrs.add(addr.lower())
            seqs.append(words(addr))
    return addrs, seqs


def extract(path, data, opts):
    d = Doc()
    d.id = hashlib.sha256(data).hexdigest()
    d.file = os.path.basename(path)
    d.size = len(data)
    d.notes = set()
    d.cache = {}
    d.addr, d.addr_seqs = {}, {}
    d.subject, d.body, d.atext, d.att_names, d.mimes = [], [], [], [], set()
    d.has_att, d.msgid, d.date = False, None, None
    try:
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
    except Exception as e:  # never seen, but never crash
        d.notes.add("unparseable-message:%s" % e)
        return d

    for h in ("from", "to", "cc"):
        d.addr[h], d.addr_seqs[h] = addresses(msg, h, opts, d)
    subj = raw_headers(msg, "subject")
    if subj:
        d.subject = words(decode_rfc2047(subj[0], opts))
    mid = raw_headers(msg, "message-id")
    if mid:
        d.msgid = normalise_msgid(mid[0])
    d.date = parse_date(raw_headers(msg, "date"), opts, d.notes)

    # Walk the whole MIME tree, into attached messages too: a text part inside an attached
    # message/rfc822 is body unless it is an attachment itself.
    for part in msg.walk():
        for defect in part.defects:
            d.notes.add("defect:" + type(defect).__name__)
        ctype = content_type(part)
        d.mimes.add(ctype)
        name = part_filename(part, opts)
        is_att = disposition(part) == "attachment" or name is not None
        if part is msg and not opts["root_can_be_attachment"]:
            is_att = False
        if is_att:
            d.has_att = True
            if part is msg:
                d.notes.add("whole-message-is-an-attachment")
            if name:
                d.att_names.append(name)
        if part.is_multipart():
            continue
        if ctype == "message/rfc822" or part.get_content_maintype() == "multipart":
            continue
        if not ctype.startswith("text/"):
            continue
        is_body_type = ctype in ("text/plain", "text/html") or opts["body_all_text_types"]
        if ctype not in ("text/plain", "text/html"):
            d.notes.add("text-part:" + ctype)
        data_bytes = transfer_decoded(part, d.notes)
        charset = part.get_param("charset", None)
        if isinstance(charset, tuple):
            charset = email.utils.collapse_rfc2231_value(charset)
        text = decode_bytes(data_bytes, charset, opts, d.notes)
        if ctype == "text/html":
            text = html_to_text(text, opts)
        if is_att:
            d.atext.append(words(text))
        elif is_body_type:
            d.body.append(words(text))
    return d


def load_corpus(maildir, opts):
    docs = []
    for sub in ("cur", "new"):
        folder = os.path.join(maildir, sub)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                data = f.read()
            docs.append(extract(path, data, opts))
    return docs


# ---------------------------------------------------------------------------------------------
# Evaluation


def has_phrase(seq, phrase):
    n = len(phrase)
    first = phrase[0]
    for i, w in enumerate(seq):
        if w == first and seq[i:i + n] == phrase:
            return True
    return False


def field_sequences(d, field):
    """The word sequences of a field; a phrase must lie inside one sequence. Address fields: one
    sequence per display name and one per address."""
    if field in ("from", "to", "cc"):
        return d.addr_seqs[field]
    if field == "subject":
        return [d.subject]
    if field == "body":
        return d.body
    if field == "atext":
        return d.atext
    if field == "attachment":
        return [words(n) for n in d.att_names]
    if field == "any":
        return ([d.subject] + d.body + d.atext + [words(n) for n in d.att_names]
                + d.addr_seqs["from"] + d.addr_seqs["to"] + d.addr_seqs["cc"])
    raise ValueError("no word sequences for field %r" % field)


def field_wordset(d, field):
    s = d.cache.get(field)
    if s is None:
        s = d.cache[field] = set()
        for seq in field_sequences(d, field):
            s.update(seq)
    return s


def iso(s):
    dt = datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def match(node, d, now):
    if "all" in node:
        return True
    if "and" in node:
        return all(match(x, d, now) for x in node["and"])
    if "or" in node:
        return any(match(x, d, now) for x in node["or"])
    if "not" in node:
        return not match(node["not"], d, now)
    if "has" in node:
        assert node["has"] == "attachment"
        return d.has_att
    f = node["field"]
    if f == "date":
        # No parseable Date: the first capture time (the import, i.e. about now).
        when = d.date if d.date is not None else now
        return ("ge" not in node or when >= iso(node["ge"])) and ("lt" not in node or when < iso(node["lt"]))
    if f == "size":
        return ("ge" not in node or d.size >= node["ge"]) and ("le" not in node or d.size <= node["le"])
    if f == "msgid":
        return d.msgid is not None and d.msgid == normalise_msgid(node["value"])
    if f == "mime":
        t = node["type"].lower()
        if t.endswith("/*"):
            return any(m.startswith(t[:-1]) for m in d.mimes)
        return t in d.mimes
    if "addr" in node:
        return node["addr"].lower() in d.addr[f]
    if "name" in node:
        return any(n.lower() == node["name"].lower() for n in d.att_names)
    if "word" in node:
        return node["word"] in field_wordset(d, f)
    if "prefix" in node:
        p = node["prefix"]
        return any(w.startswith(p) for w in field_wordset(d, f))
    if "phrase" in node:
        return any(has_phrase(s, node["phrase"]) for s in field_sequences(d, f))
    raise ValueError("cannot evaluate %r" % node)


# ---------------------------------------------------------------------------------------------
# A parser for the subset of the query language the queries file uses


FIELD_ALIASES = {"file": "attachment", "type": "mime", "message-id": "msgid"}
WORD_FIELDS = {"subject", "body", "attachment", "atext"}
ADDR_FIELDS = {"from", "to", "cc"}
TOKEN_RE = re.compile(r'\s*(?:(\()|(\))|(-?)([A-Za-z-]+:)?("[^"]*"|[^\s()"]+))')


def tokenize(q):
    toks, pos = [], 0
    while pos < len(q):
        if q[pos:].strip() == "":
            break
        m = TOKEN_RE.match(q, pos)
        if not m:
            raise ValueError("cannot tokenize %r at %d" % (q, pos + 1))
        if m.group(1):
            toks.append(("(",))
        elif m.group(2):
            toks.append((")",))
        else:
            neg, fld, val = m.group(3), m.group(4), m.group(5)
            if not fld and not neg and val in ("AND", "OR", "NOT"):
                toks.append((val,))
            else:
                if neg:
                    toks.append(("NOT",))
                toks.append(("term", fld[:-1].lower() if fld else None, val))
        pos = m.end()
    return toks


def parse_day(s):
    """'YYYY-MM-DD' or 'YYYY-MM' -> (start, end) half-open UTC instants of that day/month."""
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        start = datetime.datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=UTC)
        return start, start + datetime.timedelta(days=1)
    if re.fullmatch(r"\d{4}-\d{2}", s):
        start = datetime.datetime.strptime(s, "%Y-%m").replace(tzinfo=UTC)
        nxt = (start.replace(day=28) + datetime.timedelta(days=4)).replace(day=1)
        return start, nxt
    raise ValueError("unsupported date %r" % s)


def fmt(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_size(s):
    m = re.fullmatch(r"(\d+)([KMG]?)", s)
    if not m:
        raise ValueError("unsupported size %r" % s)
    return int(m.group(1)) * {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}[m.group(2)]


def term_node(field, val):
    field = FIELD_ALIASES.get(field, field)
    quoted = val.startswith('"')
    if quoted:
        val = val[1:-1]
    if field is None and val == "*":
        return {"all": True}
    if field == "has":
        assert val == "attachment", val
        return {"has": "attachment"}
    if field == "date":
        if ".." in val:
            a, b = val.split("..", 1)
            node = {"field": "date"}
            if a:
                node["ge"] = fmt(parse_day(a)[0])
            if b:
                node["lt"] = fmt(parse_day(b)[1])
            return node
        a, b = parse_day(val)
        return {"field": "date", "ge": fmt(a), "lt": fmt(b)}
    if field == "size":
        a, b = val.split("..", 1) if ".." in val else (val, val)
        node = {"field": "size"}
        if a:
            node["ge"] = parse_size(a)
        if b:
            node["le"] = parse_size(b)
        return node
    if field == "mime":
        return {"field": "mime", "type": val.lower()}
    if field == "msgid":
        return {"field": "msgid", "value": normalise_msgid(val)}
    f = field or "any"
    if f not in WORD_FIELDS | ADDR_FIELDS | {"any"}:
        raise ValueError("field %r not supported by the oracle's parser" % field)
    if f in ADDR_FIELDS and "@" in val and not quoted:
        return {"field": f, "addr": val.lower()}
    if val.endswith("*") and not quoted:
        ws = words(val[:-1])
        assert len(ws) == 1, val
        return {"field": f, "prefix": ws[0]}
    ws = words(val)  # a value made of several words (quoted, or like e-mail) is a phrase
    node = {"field": f, "word": ws[0]} if len(ws) == 1 else {"field": f, "phrase": ws}
    if f == "attachment" and "." in val and not quoted:
        return {"or": [{"field": "attachment", "name": val.lower()}, node]}
    return node


def parse_query(q):
    toks = tokenize(q)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else None

    def parse_or():
        nonlocal pos
        items = [parse_and()]
        while peek() == ("OR",):
            pos += 1
            items.append(parse_and())
        return items[0] if len(items) == 1 else {"or": items}

    def parse_and():
        nonlocal pos
        items = [parse_not()]
        while True:
            t = peek()
            if t == ("AND",):
                pos += 1
                items.append(parse_not())
            elif t is not None and t[0] in ("term", "(", "NOT"):
                items.append(parse_not())
            else:
                break
        return items[0] if len(items) == 1 else {"and": items}

    def parse_not():
        nonlocal pos
        t = peek()
        if t == ("NOT",):
            pos += 1
            return {"not": parse_not()}
        if t == ("(",):
            pos += 1
            node = parse_or()
            if peek() != (")",):
                raise ValueError("')' expected in %r" % q)
            pos += 1
            return node
        if t is not None and t[0] == "term":
            pos += 1
            return term_node(t[1], t[2])
        raise ValueError("unexpected %r in %r" % (t, q))

    node = parse_or()
    if pos != len(toks):
        raise ValueError("trailing tokens in %r" % q)
    return node


def load_queries(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            entry = json.loads(line)
            parsed = parse_query(entry["q"])
            if "oracle" in entry and entry["oracle"] != parsed:
                sys.exit("%s:%d: the structured form does not match the query %r\n  given:  %s\n  parsed: %s"
                         % (path, lineno, entry["q"], json.dumps(entry["oracle"]), json.dumps(parsed)))
            if any(entry["q"] == q for q, _ in out):
                sys.exit("%s:%d: duplicate query %r" % (path, lineno, entry["q"]))
            out.append((entry["q"], entry.get("oracle", parsed)))
    return out


def evaluate(docs, queries, now):
    return {q: sorted({d.id for d in docs if match(node, d, now)}) for q, node in queries}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("maildir")
    ap.add_argument("queries")
    ap.add_argument("--details", metavar="OUT.json", help="write per-message file names and notes to this file")
    ap.add_argument("--variants", metavar="OUT.json", help="evaluate every query under each alternative reading "
                    "(VARIANTS); write {query: {\"option=value\": [ids]}} for the readings that change the "
                    "answer, and a summary on stderr")
    args = ap.parse_args()

    queries = load_queries(args.queries)
    now = datetime.datetime.now(UTC)
    docs = load_corpus(args.maildir, DEFAULTS)
    result = evaluate(docs, queries, now)
    json.dump(result, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")

    if args.details:
        with open(args.details, "w") as f:
            json.dump({d.id: {"file": d.file, "size": d.size, "notes": sorted(d.notes)} for d in docs}, f)

    if args.variants:
        files = {d.id: d.file for d in docs}
        out = {}
        for key, value in VARIANTS:
            label = "%s=%s" % (key, value)
            opts = dict(DEFAULTS, **{key: value})
            alt = evaluate(load_corpus(args.maildir, opts), queries, now)
            for q, _ in queries:
                base, other = set(result[q]), set(alt[q])
                if base != other:
                    out.setdefault(q, {})[label] = alt[q]
                    print("variant %s changes %r: %d -> %d (only default: %s; only variant: %s)"
                          % (label, q, len(base), len(other),
                             [files[i] for i in sorted(base - other)][:5],
                             [files[i] for i in sorted(other - base)][:5]), file=sys.stderr)
        with open(args.variants, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
