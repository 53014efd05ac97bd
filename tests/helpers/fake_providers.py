"""Local SMS provider servers for tests and benchmarks: real HTTP on 127.0.0.1.

``FakeTwilio``, ``FakeSmsc`` and ``FakeGateway`` speak the request and response shapes of the
Twilio Messages API, the SMSC.ru HTTP API and the generic JSON gateway the bridge supports,
with their status APIs, and inject faults on send requests from a ``FaultPlan`` (a script,
then seeded random draws):

=============  =============================================================================
``ok``          accept
``429``         429 Too Many Requests with ``Retry-After`` (Twilio code 20429), not accepted
``500``         500, not accepted ("error before processing")
``503``         503 with ``Retry-After``, not accepted
``slow_ok``     accept, then answer only after ``slow_s`` (client read timeout: outcome unknown)
``slow_drop``   wait ``slow_s``, close without accepting
``drop``        read the request, close the connection without accepting or answering
``drop_after``  accept, then close without answering (the worst case: it *was* sent)
``504``         504 Gateway Timeout, not accepted
``504_after``   accept, then answer 504 (maybe processed: it *was* sent)
``507``         507 Insufficient Storage, not accepted (a 5xx nobody lists by name)
=============  =============================================================================

``refuse_for(seconds)`` closes the listening socket (connection refused) for a while.
``requests_seen`` keeps every request (method, path with query string, headers, body) so tests
can check what travelled in URLs.

Twilio: a message stays ``queued`` with an empty ``date_sent`` until ``advance()`` moves it (or
the signed callbacks do), as Twilio does; the list honours ``To``, ``From``, ``DateSent``,
``DateSent<``, ``DateSent>`` (a message without ``date_sent`` never matches a date filter),
``PageSize`` and ``Page`` with ``next_page_uri``, and puts messages without ``date_sent`` last.
SMSC: ``status.php`` answers by client id and phone (GET or POST, as SMSC documents), with
``status_override`` for scripted answers and ``block_for(seconds)`` for error 4 on every
request; ``smsc_callback(...)`` builds a callback body in the charset SMSC would use.
Every accepted message is recorded with our unique key (Twilio: the ``key`` query parameter of
``StatusCallback``; SMSC: the client ``id``; gateway: ``reference``), so ``duplicates()`` counts
keys accepted more than once: the number that must stay 0.

Run one by hand: ``python tests/helpers/fake_providers.py twilio --port 8999``.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import email.utils
import hashlib
import json
import random
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

from cloud_bridge.delivery.providers import twilio_signature

__all__ = [
    "FAULTS",
    "FaultPlan",
    "Accepted",
    "FakeProvider",
    "FakeTwilio",
    "FakeSmsc",
    "FakeGateway",
    "smsc_callback",
    "TWILIO_SID",
    "TWILIO_TOKEN",
]

FAULTS = (
    "ok", "429", "500", "503", "slow_ok", "slow_drop", "drop", "drop_after", "504", "504_after",
    "507",
)  # fmt: skip
TWILIO_SID = "AC" + "0" * 31 + "1"
TWILIO_TOKEN = "fake-twilio-auth-token"
# Twilio's magic test numbers: invalid, not a mobile, unsubscribed (STOP).
TWILIO_MAGIC = {"+15005550001": 21211, "+15005550009": 21614, "+15005550004": 21610}


class FaultPlan:
    """Faults for successive send requests: ``script`` first, then random by ``weights``."""

    def __init__(
        self,
        script: Iterable[str] = (),
        weights: dict[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        self.script = collections.deque(script)
        self.weights = weights or {}
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.drawn: collections.Counter[str] = collections.Counter()
        for f in [*self.script, *self.weights]:
            if f not in FAULTS:
                raise ValueError(f"unknown fault {f!r}")

    def next(self) -> str:
        with self.lock:
            if self.script:
                fault = self.script.popleft()
            elif self.weights:
                r = self.rng.random()
                fault = "ok"
                for name, w in self.weights.items():
                    if r < w:
                        fault = name
                        break
                    r -= w
            else:
                fault = "ok"
            self.drawn[fault] += 1
            return fault


@dataclass
class Accepted:
    key: str
    sid: str
    to: str
    sender: str
    body: str
    received_at: float
    status: str = "queued"
    error_code: int | None = None
    callback: str | None = None
    date_sent: float | None = None  # Twilio: empty while the message is queued
    validity: str | None = None


@dataclass
class _State:
    accepted: list[Accepted] = field(default_factory=list)
    by_sid: dict[str, Accepted] = field(default_factory=dict)
    requests: int = 0
    request_times: list[tuple[float, str]] = field(default_factory=list)  # (arrival, to)
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Drop(Exception):
    """Close the connection without an answer."""


class _Answer(Exception):
    """Answer this instead of the success (the message was taken all the same)."""

    def __init__(self, status: int, headers: dict[str, str], body: Any) -> None:
        super().__init__(status)
        self.answer = (status, headers, body)


class FakeProvider:
    """A ThreadingHTTPServer with a fault plan; subclasses implement ``route``."""

    name = "fake"

    def __init__(
        self,
        plan: FaultPlan | None = None,
        port: int = 0,
        slow_s: float = 1.5,
        retry_after: str = "1",
    ) -> None:
        self.plan = plan or FaultPlan()
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.state = _State()
        self.port = port
        self.httpd: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None
        self._refusing = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeProvider:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                url = urllib.parse.urlsplit(self.path)
                with fake.state.lock:
                    fake.state.seen.append((method, self.path, dict(self.headers.items()), raw))
                try:
                    status, headers, body = fake.route(method, url, self.headers, raw)
                except _Answer as answer:
                    status, headers, body = answer.answer
                except _Drop:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Type" not in headers:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                # The client may have given up (read timeout): that is the point of slow_ok.
                with contextlib.suppress(OSError):
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

        self._handler = Handler
        self._listen()
        return self

    def _listen(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def refuse_for(self, seconds: float) -> None:
        """Connection refused for ``seconds``, then listening again on the same port."""
        with self._refusing:
            self.stop()

        def reopen() -> None:
            time.sleep(seconds)
            with self._refusing:
                self._listen()

        threading.Thread(target=reopen, daemon=True).start()

    def __enter__(self) -> FakeProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- bookkeeping -------------------------------------------------------------------------
    def requests_seen(self) -> list[tuple[str, str, dict[str, str], bytes]]:
        """(method, path with query string, headers, body) of every request so far."""
        with self.state.lock:
            return list(self.state.seen)

    def accepted_keys(self) -> collections.Counter[str]:
        with self.state.lock:
            return collections.Counter(a.key for a in self.state.accepted)

    def duplicates(self) -> int:
        """Messages accepted beyond the first for the same key (must be 0)."""
        return sum(n - 1 for n in self.accepted_keys().values() if n > 1)

    def _arrived(self, to: str) -> None:
        with self.state.lock:
            self.state.requests += 1
            self.state.request_times.append((time.time(), to))

    def _accept(self, a: Accepted) -> None:
        with self.state.lock:
            self.state.accepted.append(a)
            self.state.by_sid[a.sid] = a

    def _fault_before(self, fault: str) -> tuple[int, dict[str, str], Any] | None:
        """Faults that happen before the message is taken."""
        if fault == "429":
            return 429, {"Retry-After": self.retry_after}, self.error_body(429)
        if fault == "500":
            return 500, {}, self.error_body(500)
        if fault == "503":
            return 503, {"Retry-After": self.retry_after}, self.error_body(503)
        if fault in ("504", "507"):
            return int(fault), {}, self.error_body(int(fault))
        if fault == "drop":
            raise _Drop
        if fault == "slow_drop":
            time.sleep(self.slow_s)
            raise _Drop
        return None

    def _fault_after(self, fault: str) -> None:
        """Faults that happen after the message was taken."""
        if fault == "slow_ok":
            time.sleep(self.slow_s)
        elif fault == "drop_after":
            raise _Drop
        elif fault == "504_after":
            raise _Answer(504, {}, self.error_body(504))

    def error_body(self, status: int) -> Any:
        return {"status": status, "message": "fault injected"}

    def route(
        self, method: str, url: urllib.parse.SplitResult, headers: Any, raw: bytes
    ) -> tuple[int, dict[str, str], Any]:
        raise NotImplementedError


def _form(raw: bytes, url: urllib.parse.SplitResult) -> dict[str, str]:
    return {**dict(urllib.parse.parse_qsl(url.query)), **dict(urllib.parse.parse_qsl(raw.decode()))}


class FakeTwilio(FakeProvider):
    """``/2010-04-01/Accounts/{sid}/Messages.json`` (POST create, GET list) and
    ``/Messages/{sid}.json`` (GET), Basic auth; optional signed status callbacks."""

    name = "twilio"
    # statuses after which Twilio has set date_sent
    SENT_STATES = ("sent", "delivered", "undelivered", "failed", "read", "partially_delivered")

    def __init__(self, *args: Any, callbacks: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.callbacks = callbacks
        self._seq = 0
        self._client = httpx.Client(timeout=5.0)
        self.callback_errors = 0

    def error_body(self, status: int) -> Any:
        code = {429: 20429, 500: 20500, 503: 20503}.get(status, status)
        return {"code": code, "message": "fault injected", "more_info": "", "status": status}

    def _auth_ok(self, headers: Any) -> bool:
        expected = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
        return headers.get("Authorization", "") == f"Basic {expected}"

    def advance(self, status: str, key: str | None = None, error_code: int | None = None) -> None:
        """Move accepted messages (all, or the one with ``key``) to ``status`` as Twilio would:
        ``date_sent`` is set once the message has left the queue."""
        with self.state.lock:
            for a in self.state.accepted:
                if key is None or a.key == key:
                    a.status = status
                    a.error_code = error_code
                    if status in self.SENT_STATES and a.date_sent is None:
                        a.date_sent = time.time()

    @staticmethod
    def message_json(a: Accepted) -> dict[str, Any]:
        fmt = email.utils.formatdate
        return {
            "sid": a.sid,
            "account_sid": TWILIO_SID,
            "to": a.to,
            "from": a.sender,
            "body": a.body,
            "status": a.status,
            "direction": "outbound-api",
            "num_segments": "1",
            "error_code": a.error_code,
            "date_created": fmt(a.received_at, usegmt=True),
            "date_updated": fmt(a.received_at, usegmt=True),
            "date_sent": None if a.date_sent is None else fmt(a.date_sent, usegmt=True),
        }

    @staticmethod
    def _date_filter(q: dict[str, str], a: Accepted) -> bool:
        """Twilio's DateSent filters (YYYY-MM-DD, UTC): no date_sent, no match."""
        filters = {k: v for k, v in q.items() if k.startswith("DateSent")}
        if not filters:
            return True
        if a.date_sent is None:
            return False
        day = time.strftime("%Y-%m-%d", time.gmtime(a.date_sent))
        for k, v in filters.items():
            if (k == "DateSent" and day != v) or (k == "DateSent>" and day < v):
                return False
            if k == "DateSent<" and day > v:
                return False
        return True

    def _list(self, url: urllib.parse.SplitResult) -> dict[str, Any]:
        q = dict(urllib.parse.parse_qsl(url.query))
        size = max(1, min(1000, int(q.get("PageSize") or 50)))
        page = int(q.get("Page") or 0)
        with self.state.lock:
            found = [
                a
                for a in self.state.accepted
                if (not q.get("To") or a.to == q["To"])
                and (not q.get("From") or a.sender == q["From"])
                and self._date_filter(q, a)
            ]
        # Most recent date_sent first; messages still queued (no date_sent) come last.
        found.sort(key=lambda a: (a.date_sent is None, -(a.date_sent or 0.0)))
        chunk = found[page * size : (page + 1) * size]
        more = len(found) > (page + 1) * size
        nxt = None
        if more:
            nq = urllib.parse.urlencode({**q, "Page": str(page + 1), "PageSize": str(size)})
            nxt = f"{url.path}?{nq}"
        return {
            "messages": [self.message_json(a) for a in chunk],
            "page": page,
            "page_size": size,
            "next_page_uri": nxt,
        }

    def route(self, method, url, headers, raw):  # type: ignore[no-untyped-def]
        base = f"/2010-04-01/Accounts/{TWILIO_SID}"
        if not self._auth_ok(headers):
            return 401, {}, {"code": 20003, "message": "Authenticate", "status": 401}
        if method == "POST" and url.path == f"{base}/Messages.json":
            form = _form(raw, url)
            self._arrived(form.get("To", ""))
            fault = self.plan.next()
            early = self._fault_before(fault)
            if early is not None:
                return early
            to = form.get("To", "")
            if (
                not to
                or not form.get("Body")
                or not (form.get("From") or form.get("MessagingServiceSid"))
            ):
                return 400, {}, {"code": 21604, "message": "missing parameter", "status": 400}
            validity = form.get("ValidityPeriod")
            if validity is not None and not (validity.isdigit() and 1 <= int(validity) <= 36000):
                return 400, {}, {"code": 21624, "message": "invalid validity", "status": 400}
            if to in TWILIO_MAGIC:
                code = TWILIO_MAGIC[to]
                return 400, {}, {"code": code, "message": "refused", "status": 400}
            callback = form.get("StatusCallback")
            key = ""
            if callback:
                key = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query)).get(
                    "key", ""
                )
            with self.state.lock:
                self._seq += 1
                sid = f"SM{self._seq:032x}"
            a = Accepted(
                key or "body:" + form["Body"],  # without our key, the text (unique link) is
                sid,
                to,
                form.get("From", ""),
                form["Body"],
                time.time(),
                callback=callback,
                validity=validity,
            )
            self._accept(a)
            if self.callbacks and callback:
                threading.Thread(target=self._callback, args=(a,), daemon=True).start()
            self._fault_after(fault)
            return 201, {}, self.message_json(a)
        if method == "GET" and url.path == f"{base}/Messages.json":
            return 200, {}, self._list(url)
        if (
            method == "GET"
            and url.path.startswith(f"{base}/Messages/")
            and url.path.endswith(".json")
        ):
            sid = url.path.rsplit("/", 1)[1].removesuffix(".json")
            a = self.state.by_sid.get(sid)
            if a is None:
                return 404, {}, {"code": 20404, "message": "not found", "status": 404}
            return 200, {}, self.message_json(a)
        return 404, {}, {"code": 20404, "message": "not found", "status": 404}

    def post_status(self, a: Accepted, status: str, error_code: int | None = None) -> int:
        """Post one signed status callback for ``a`` as Twilio does; the HTTP status."""
        assert a.callback
        params = {
            "MessageSid": a.sid,
            "MessageStatus": status,
            "AccountSid": TWILIO_SID,
            "To": a.to,
            "From": a.sender,
        }
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        sig = twilio_signature(a.callback, params, TWILIO_TOKEN)
        r = self._client.post(a.callback, data=params, headers={"X-Twilio-Signature": sig})
        return r.status_code

    def _callback(self, a: Accepted) -> None:
        assert a.callback
        for status in ("sent", "delivered"):
            time.sleep(0.05)
            self.advance(status, a.key)
            try:
                self.post_status(a, status)
            except httpx.HTTPError:
                self.callback_errors += 1


class FakeSmsc(FakeProvider):
    """``/sys/send.php`` and ``/sys/status.php`` (``fmt=3`` JSON, GET or POST), login/psw,
    client ids, SMSC's error 9 for an identical send within ``duplicate_window_s`` and error 4
    for every request while ``block_for`` holds."""

    name = "smsc"
    LOGIN, PASSWORD = "fake-login", "fake-password"

    def __init__(
        self,
        *args: Any,
        duplicate_window_s: float = 60.0,
        not_found_as_error: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.duplicate_window_s = duplicate_window_s
        self._recent: dict[tuple[str, str], float] = {}
        self.blocked_until = 0.0
        self.status_code = 1  # what status.php says of a message it has
        self.status_override: dict[str, Any] = {}  # client id -> the JSON status.php answers
        self.not_found_as_error = not_found_as_error  # older SMSC: error 3 for a single lookup

    def error_body(self, status: int) -> Any:
        return b"Internal Server Error" if status >= 500 else {"error": "too many", "error_code": 4}

    def block_for(self, seconds: float) -> None:
        """Answer error 4 (address blocked) to every request for ``seconds``."""
        self.blocked_until = time.time() + seconds

    def route(self, method, url, headers, raw):  # type: ignore[no-untyped-def]
        form = _form(raw, url)
        if time.time() < self.blocked_until:
            if url.path == "/sys/send.php":
                self._arrived(form.get("phones", ""))
            return 200, {}, {"error": "IP blocked", "error_code": 4}
        if form.get("login") != self.LOGIN or form.get("psw") != self.PASSWORD:
            return 200, {}, {"error": "authorise error", "error_code": 2}
        if url.path == "/sys/send.php":
            phone = form.get("phones", "")
            self._arrived(phone)
            fault = self.plan.next()
            early = self._fault_before(fault)
            if early is not None:
                return early
            msg_id = form.get("id", "")
            if not phone.lstrip("+").isdigit():
                return 200, {}, {"error": "invalid number", "error_code": 7, "id": msg_id}
            sig = (phone, form.get("mes", ""))
            now = time.time()
            with self.state.lock:
                last = self._recent.get(sig)
                self._recent[sig] = now
            if last is not None and now - last < self.duplicate_window_s:
                return 200, {}, {"error": "duplicate request", "error_code": 9, "id": msg_id}
            a = Accepted(msg_id, msg_id, phone, form.get("sender", ""), form.get("mes", ""), now)
            a.validity = form.get("valid")
            self._accept(a)
            self._fault_after(fault)
            return 200, {}, {"id": int(msg_id or 0), "cnt": 1, "cost": "3.5", "balance": "100.0"}
        if url.path == "/sys/status.php":
            msg_id = form.get("id", "").rstrip(",")
            if msg_id in self.status_override:
                return 200, {}, self.status_override[msg_id]
            a = self.state.by_sid.get(msg_id)
            if a is None or a.to != form.get("phone", "").rstrip(","):
                if self.not_found_as_error:
                    return 200, {}, {"error": "message not found", "error_code": 3}
                return 200, {}, {"status": -3, "last_date": "", "last_timestamp": 0, "err": 0}
            return (
                200,
                {},
                {
                    "status": self.status_code,
                    "last_date": "",
                    "last_timestamp": int(a.received_at),
                    "err": 0,
                },
            )
        return 404, {}, b"not found"


def smsc_callback(
    fields: dict[str, str], password: str, charset: str = "windows-1251"
) -> tuple[bytes, dict[str, str]]:
    """A callback as SMSC posts it: the form body in ``charset`` (SMSC's default is
    windows-1251, unless the handler URL asks for another) with the ``md5`` check field over
    the same bytes. Returns (body, headers)."""
    names = ("sms_id", "phone", "mes", "to") if "mes" in fields else ("id", "phone", "status")
    values = [fields.get(n, "") for n in names]
    md5 = hashlib.md5(  # noqa: S324 - SMSC's check field is md5
        b":".join(v.encode(charset) for v in [*values, password])
    ).hexdigest()
    body = urllib.parse.urlencode({**fields, "md5": md5}, encoding=charset).encode("ascii")
    return body, {"Content-Type": "application/x-www-form-urlencoded"}


class FakeGateway(FakeProvider):
    """``POST /send`` (JSON ``{to, from, text, reference}``) -> 202 ``{"id": ...}``;
    ``GET /status/{reference}`` -> 200 ``{"status": "delivered"}`` or 404."""

    name = "http"
    TOKEN = "fake-gateway-token"

    def route(self, method, url, headers, raw):  # type: ignore[no-untyped-def]
        if headers.get("Authorization") != f"Bearer {self.TOKEN}":
            return 401, {}, {"error": "unauthorised"}
        if method == "POST" and url.path == "/send":
            try:
                data = json.loads(raw)
            except ValueError:
                return 400, {}, {"error": "bad json"}
            self._arrived(str(data.get("to", "")))
            fault = self.plan.next()
            early = self._fault_before(fault)
            if early is not None:
                return early
            ref = str(data.get("reference", ""))
            a = Accepted(
                ref,
                f"gw-{ref}",
                str(data.get("to")),
                str(data.get("from")),
                str(data.get("text")),
                time.time(),
            )
            self._accept(a)
            self._fault_after(fault)
            return 202, {}, {"id": a.sid, "status": "queued"}
        if method == "GET" and url.path.startswith("/status/"):
            ref = urllib.parse.unquote(url.path.removeprefix("/status/"))
            with self.state.lock:
                found = [a for a in self.state.accepted if a.key == ref]
            if not found:
                return 404, {}, {"error": "no such message"}
            return 200, {}, {"id": found[0].sid, "status": "delivered"}
        return 404, {}, {"error": "not found"}


def main() -> None:  # pragma: no cover - manual use
    import argparse

    parser = argparse.ArgumentParser(description="run a fake SMS provider on 127.0.0.1")
    parser.add_argument("kind", choices=["twilio", "smsc", "http"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--faults", default="", help="e.g. 429=0.05,drop=0.02")
    args = parser.parse_args()
    weights = {k: float(v) for k, v in (p.split("=") for p in args.faults.split(",") if p)}
    cls = {"twilio": FakeTwilio, "smsc": FakeSmsc, "http": FakeGateway}[args.kind]
    server = cls(FaultPlan(weights=weights), port=args.port).start()
    print(f"{args.kind} fake on {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
