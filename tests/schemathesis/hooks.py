"""Schemathesis hooks for the moka-ingest ingress (written for schemathesis 4.32; see tests/requirements.txt).

Load with `SCHEMATHESIS_HOOKS=tests/schemathesis/hooks.py schemathesis run ...`.

Generated data almost never carries a valid signature, so without help every request to
`POST /api/v2/moka_candidates` stops at 401 (or earlier). For a fraction of those requests this
`before_call` hook signs the request the way Moka does:

- `access_key` becomes `MOKA_ST_ACCESS_KEY`, `tonce` the current unix time (as text; in a JSON body
  sometimes as a number), and `signature` the hex HMAC-SHA256 with `MOKA_ST_SECRET` of
  `POST|/api/v2/moka_candidates|` + every other parameter (query string and body), sorted by name,
  `name=value` joined with `&`, in the key's encoding (`raw` by default, as the ingress assumes
  for a key not listed in `key_encodings`);
- a few (MOKA_ST_TAMPER_FRACTION) are spoiled on purpose, a stale tonce or a wrong signature, so
  that the 2002 and 2003 refusals, which need a known key, are reached too;
- for some of them `payload` becomes a minimal valid candidate with a fresh unique `id`, so that
  accepted (200) submissions are generated too; the others keep the generated payload and reach
  the payload check (1004) with a valid signature;
- so that a signed request can get that far, the values are made into the text the ingress will
  see (values that cannot be sent as text are dropped), a name sent both in the query string and
  the body is kept only in the body, and extra parameters past the cap of 32 are dropped.

The rest of the requests are sent as generated: they exercise the parsing and presence refusals
(1001, 1002, 1003, 1006) and 2001 (a generated access_key is unknown).

A `filter_failure` hook also drops the `not_a_server_error` failure of a documented 503 (the
endpoint's code 5001 while the broker is down or slow, and `/readyz` while it is not ready), as the
document declares both. Set MOKA_ST_ALLOW_503=0 to keep them.

Environment:
  MOKA_ST_ACCESS_KEY, MOKA_ST_SECRET   the test key (required unless MOKA_ST_SIGN_FRACTION=0)
  MOKA_ST_ENCODING                     raw (default), form or plus: the key's declared encoding
  MOKA_ST_SIGN_FRACTION                share of POST requests signed (default 0.5)
  MOKA_ST_VALID_PAYLOAD_FRACTION       share of the signed ones given a valid candidate (default 0.5)
  MOKA_ST_TAMPER_FRACTION              share of the signed ones spoiled on purpose (default 0.2): half get
                                       a tonce an hour old (signed: 2003), half a wrong signature (2002)
  MOKA_ST_SEED                         seed of the choices above (default "moka-ingest")
  MOKA_ST_ALLOW_503                    1 (default) drops the not_a_server_error failure of a documented 503
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import os
import random
import sys
import time
import uuid
from urllib.parse import quote_plus

import schemathesis
from schemathesis.core import NotSet
from schemathesis.core.failures import ServerError

PATH = "/api/v2/moka_candidates"
REQUIRED = ("payload", "access_key", "tonce", "signature")
MAX_PARAMETERS = 32
# The query-string key schemathesis uses for a raw (pre-encoded) query; such a query is not signed.
RAW_QUERY_KEY = "x-schemathesis-raw-query-string"

ACCESS_KEY = os.environ.get("MOKA_ST_ACCESS_KEY", "")
SECRET = os.environ.get("MOKA_ST_SECRET", "")
ENCODING = os.environ.get("MOKA_ST_ENCODING", "raw")
SIGN_FRACTION = float(os.environ.get("MOKA_ST_SIGN_FRACTION", "0.5"))
VALID_PAYLOAD_FRACTION = float(os.environ.get("MOKA_ST_VALID_PAYLOAD_FRACTION", "0.5"))
TAMPER_FRACTION = float(os.environ.get("MOKA_ST_TAMPER_FRACTION", "0.2"))
ALLOW_503 = os.environ.get("MOKA_ST_ALLOW_503", "1") not in ("0", "false", "no", "")

if ENCODING not in ("raw", "form", "plus"):
    raise RuntimeError(f"MOKA_ST_ENCODING={ENCODING!r}: use raw, form or plus")
if SIGN_FRACTION > 0 and not (ACCESS_KEY and SECRET):
    raise RuntimeError(
        "set MOKA_ST_ACCESS_KEY and MOKA_ST_SECRET to a key the ingress knows (or MOKA_ST_SIGN_FRACTION=0)"
    )

_rng = random.Random(os.environ.get("MOKA_ST_SEED", "moka-ingest"))
_stats = {"posts": 0, "signed": 0, "valid_payloads": 0, "stale_tonce": 0, "bad_signature": 0, "unsignable": 0}


def _write(value: str) -> str:
    """A name or value as the canonical query writes it in the key's encoding (src/signing.rs)."""
    if ENCODING == "form":
        # Everything but A-Za-z0-9 and -._~ as %XX (uppercase hex), space as +.
        return quote_plus(value, safe="", encoding="utf-8")
    if ENCODING == "plus":
        return value.replace(" ", "+")
    return value


def string_to_sign(params: dict[str, str]) -> str:
    """`POST|/api/v2/moka_candidates|` + the parameters but `signature`, sorted by name (bytes)."""
    names = sorted((n for n in params if n != "signature"), key=lambda n: n.encode("utf-8"))
    return f"POST|{PATH}|" + "&".join(f"{_write(n)}={_write(params[n])}" for n in names)


def sign(secret: str, params: dict[str, str]) -> str:
    text = string_to_sign(params).encode("utf-8")
    return hmac.new(secret.encode("utf-8"), text, hashlib.sha256).hexdigest()


def _text(value: object) -> str | None:
    """The text the ingress reads for a generated value, or None when it cannot be sent as text
    that both sides agree on (booleans, nulls, floats, containers, lone surrogates)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, int):
        text = str(value)
    else:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return text


def _texts(container: dict) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for name, value in container.items():
        if not isinstance(name, str) or _text(name) is None or isinstance(value, list):
            return None  # repeated or odd names: leave the request as generated
        text = _text(value)
        if text is not None:
            out[name] = text
    return out


def candidate() -> str:
    """A minimal candidate that the workers accept (the upstream API's required fields), with an
    id no earlier request used."""
    return json.dumps(
        {
            "id": f"st-{uuid.uuid4().hex}",
            "name": "张三",
            "phone": "13203030303",
            "email": "a@b.com",
            "jobTitle": "前端工程师",
            "operator": {"name": "李四"},
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _is_submission(case) -> bool:
    return case.operation.path == PATH and str(case.method).upper() == "POST"


def _sign_case(case) -> bool:
    """Signs `case` in place; False when its shape cannot be signed (left as generated)."""
    query = case.query
    if query is not None and not isinstance(query, dict):
        return False
    if isinstance(query, dict) and RAW_QUERY_KEY in query:
        return False
    media_type = (case.media_type or "").split(";")[0].strip().lower()
    body = case.body
    has_body = isinstance(body, dict)
    if has_body and media_type not in ("application/json", "application/x-www-form-urlencoded"):
        return False
    if not has_body and media_type and not _body_is_unset(body):
        return False  # a string or list body: the request is malformed on purpose

    query_params = _texts(query or {})
    body_params = _texts(body) if has_body else {}
    if query_params is None or body_params is None:
        return False
    # A name sent twice is refused before the signature is looked at: keep the body's copy.
    for name in list(query_params):
        if name in body_params:
            del query_params[name]

    target = body_params if has_body else query_params
    fixed = {"access_key": ACCESS_KEY, "tonce": str(int(time.time()))}
    if _rng.random() < VALID_PAYLOAD_FRACTION:
        fixed["payload"] = candidate()
        _stats["valid_payloads"] += 1
    for name, value in fixed.items():
        query_params.pop(name, None)
        body_params.pop(name, None)
        target[name] = value
    query_params.pop("signature", None)
    body_params.pop("signature", None)

    # At most 32 parameters in all (signature included): drop extras past the cap.
    extras = [n for n in list(query_params) + list(body_params) if n not in REQUIRED]
    while len(query_params) + len(body_params) + 1 > MAX_PARAMETERS and extras:
        name = extras.pop()
        query_params.pop(name, None)
        body_params.pop(name, None)

    # A few are spoiled on purpose, so that the refusals that need a known key are reached too.
    spoil = _rng.random()
    if spoil < TAMPER_FRACTION / 2:
        target["tonce"] = str(int(time.time()) - 3600)  # signed, but out of the window: 2003
        _stats["stale_tonce"] += 1
    signature = sign(SECRET, {**query_params, **body_params})
    if TAMPER_FRACTION / 2 <= spoil < TAMPER_FRACTION:
        signature = signature[:-1] + ("0" if signature[-1] != "0" else "1")  # 2002
        _stats["bad_signature"] += 1
    target["signature"] = signature if _rng.random() < 0.75 else signature.upper()

    if has_body and media_type == "application/json" and _rng.random() < 0.5:
        body_params["tonce"] = int(body_params["tonce"])  # a JSON number is signed as its text
    case.query = query_params
    if has_body:
        case.body = body_params
    return True


def _body_is_unset(body) -> bool:
    return isinstance(body, NotSet)


@schemathesis.hook
def before_call(context, case, kwargs):
    if not _is_submission(case) or SIGN_FRACTION <= 0:
        return
    _stats["posts"] += 1
    if _rng.random() >= SIGN_FRACTION:
        return
    if _sign_case(case):
        _stats["signed"] += 1
    else:
        _stats["unsignable"] += 1


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keeps every failure but `not_a_server_error` on a documented 503."""
    if not ALLOW_503 or response.status_code != 503 or not isinstance(failure, ServerError):
        return True
    if case.operation.path == "/readyz":
        return False
    if _is_submission(case):
        try:
            return json.loads(response.content).get("error_code") != 5001
        except (ValueError, AttributeError):
            return True
    return True


@atexit.register
def _report() -> None:
    if _stats["posts"]:
        print(
            "moka hooks: {posts} submissions, {signed} signed ({valid_payloads} with a valid candidate, "
            "{stale_tonce} with a stale tonce, {bad_signature} with a spoiled signature), "
            "{unsignable} left unsigned for their shape".format(**_stats),
            file=sys.stderr,
        )
