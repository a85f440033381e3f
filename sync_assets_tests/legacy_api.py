"""A legacy JSON API on 127.0.0.1 for the REST source tests: a real HTTP server (werkzeug, via
pytest-httpserver) that pages, filters by modification time, checks tokens, and misbehaves on
purpose at a request number the test picks (429 bursts, 5xx, a page that never comes, a bad record).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def product(i: int, *, modified: datetime | None = None, **changes: Any) -> dict[str, Any]:
    when = modified or START + timedelta(minutes=i)
    return {
        "id": i,
        "name": f"product {i}",
        "price": round(i * 1.25, 2),
        "modified_date": when.isoformat().replace("+00:00", "Z"),
        "active": i % 2 == 0,
        "dims": {"width": i, "height": 2 * i},
        "tags": [f"t{i % 3}"],
        **changes,
    }


Fault = Callable[[Request], Response | None]


@dataclass
class LegacyApi:
    """Products under /api/products, paged in the `style` the test sets."""

    server: HTTPServer
    records: list[dict[str, Any]] = field(default_factory=list)
    style: str = "offset"
    token: str | None = None  # a bearer token or session token every request must carry
    api_key: str | None = None  # an api_key query parameter every request must carry
    faults: dict[int, Fault] = field(default_factory=dict)  # by request number, from 1
    requests: list[Request] = field(default_factory=list)
    logins: int = 0
    sessions: list[str] = field(default_factory=list)  # tokens handed out by /api/login, newest last
    expire_after: int | None = None  # a session token stops working after this many data requests
    served_with_session: int = 0
    released: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return self.server.url_for("/")

    def data_requests(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/api/products"]

    def handle(self, request: Request) -> Response:
        self.requests.append(request)
        number = len(self.data_requests())
        if (fault := self.faults.get(number)) is not None and (answer := fault(request)) is not None:
            return answer
        if refused := self._refused(request, number):
            return refused
        selected = self._modified_since(request)
        return self._page(request, selected)

    def login(self, request: Request) -> Response:
        self.requests.append(request)
        body = json.loads(request.get_data() or b"{}")
        if body != {"user": "sync", "password": "s3cret-pw"}:
            return Response("bad credentials", status=401)
        self.logins += 1
        self.sessions.append(f"session-{self.logins}")
        self.served_with_session = 0
        return _json({"data": {"token": self.sessions[-1]}})

    def _refused(self, request: Request, number: int) -> Response | None:
        if self.api_key is not None and request.args.get("api_key") != self.api_key:
            return Response("wrong api key", status=403)
        if self.sessions:
            bearer = request.headers.get("Authorization", "")
            self.served_with_session += 1
            expired = self.expire_after is not None and self.served_with_session > self.expire_after
            if bearer != f"Bearer {self.sessions[-1]}" or expired:
                return Response("token expired", status=401)
        elif self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            return Response("unauthorized", status=401)
        return None

    def _modified_since(self, request: Request) -> list[dict[str, Any]]:
        records = self.records
        if request.args.get("active") == "true":  # a filter an endpoint's own query can carry
            records = [r for r in records if r["active"]]
        since = request.args.get("modified_since")
        if since is None:
            return records
        if since.isdigit():
            low = datetime.fromtimestamp(int(since), UTC)
        else:
            low = datetime.fromisoformat(since)
            low = low if low.tzinfo else low.replace(tzinfo=UTC)
        return [r for r in records if _stamp(r) >= low]

    def _page(self, request: Request, selected: list[dict[str, Any]]) -> Response:
        args = request.args
        if self.style == "none":
            return _json(selected)
        if self.style == "offset":
            offset, limit = int(args["offset"]), int(args["limit"])
            return _json({"data": selected[offset : offset + limit], "total": len(selected)})
        if self.style == "page":
            page, size = int(args["page"]), int(args["limit"])
            return _json({"data": selected[(page - 1) * size : page * size]})
        size = 10
        start = int(args.get("cursor", "0"))
        chunk = selected[start : start + size]
        following = start + size if start + size < len(selected) else None
        if self.style == "cursor":
            return _json({"data": chunk, "next_cursor": str(following) if following is not None else None})
        query = {k: v for k, v in args.items() if k != "cursor"}
        link = None
        if following is not None:
            params = "&".join(f"{k}={v}" for k, v in {**query, "cursor": following}.items())
            link = f"/api/products?{params}"
        if self.style == "link":
            return _json({"data": chunk, "links": {"next": link}})
        headers = {"Link": f'<{link}>; rel="next"'} if link else {}
        return _json({"data": chunk}, headers=headers)  # link_header


def start_api(records: list[dict[str, Any]], **options: Any) -> LegacyApi:
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    api = LegacyApi(server, records, **options)
    server.expect_request("/api/products").respond_with_handler(api.handle)
    server.expect_request("/api/login", method="POST").respond_with_handler(api.login)
    return api


def stop_api(api: LegacyApi) -> None:
    api.released.set()  # a page held back by the test is let go, so the server can stop
    api.server.clear()
    api.server.stop()


def too_many(retry_after: str = "1") -> Fault:
    return lambda request: Response("slow down", status=429, headers={"Retry-After": retry_after})


def unavailable(request: Request) -> Response:
    return Response("upstream down", status=503)


def held_back(api: LegacyApi) -> Fault:
    """A page that does not come while the sync waits for it (released when the test ends)."""

    def hold(request: Request) -> Response:
        api.released.wait()
        return _json({"data": []})

    return hold


def _stamp(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["modified_date"])


def _json(body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=200, headers=headers or {}, content_type="application/json")
