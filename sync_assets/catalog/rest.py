"""Catalog models of a REST API source: the connection (base URL, auth, rate limit, retries) and
how a table reads an endpoint (where the records are, pagination, the modified-since filter)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator

from sync_assets.catalog.durations import Duration
from sync_assets.catalog.operations import Retries


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiKey(_Strict):
    """A key sent in a header or in the query string; `value` is usually ${VAR}."""

    value: str = Field(min_length=1, description="the key, usually ${VAR}")
    header: str | None = Field(default=None, description="the header it is sent in; or `query`")
    query: str | None = Field(default=None, description="the query parameter it is sent in; or `header`")

    @model_validator(mode="after")
    def _one_place(self) -> ApiKey:
        if (self.header is None) == (self.query is None):
            msg = "give exactly one of `header` or `query` for the api_key"
            raise ValueError(msg)
        return self


class Basic(_Strict):
    """HTTP basic authentication."""

    username: str = Field(min_length=1, description="the user name")
    password: str = Field(min_length=1, description="usually ${VAR}")


class Login(_Strict):
    """A login endpoint that returns a session token, sent as a bearer token afterwards.

    The body is posted as JSON (its values may hold ${VAR}); `token` is where the token is in
    the response. A 401 later (the token expired) logs in again, once per request.
    """

    endpoint: str = Field(min_length=1, description="path of the login endpoint under base_url")
    body: dict[str, str] = Field(default_factory=dict, description="posted as JSON; values may hold ${VAR}")
    token: str = Field(
        default="token", description="path of the token in the login response, e.g. data.token"
    )


class RestAuth(_Strict):
    """How requests authenticate: exactly one of the keys."""

    bearer: str | None = Field(default=None, description="the token, usually ${VAR}")
    api_key: ApiKey | None = Field(default=None, description="a key in a header or the query string")
    basic: Basic | None = Field(default=None, description="HTTP basic authentication")
    login: Login | None = Field(default=None, description="a login endpoint that returns a session token")

    @model_validator(mode="after")
    def _one_kind(self) -> RestAuth:
        given = [k for k in ("bearer", "api_key", "basic", "login") if getattr(self, k) is not None]
        if len(given) != 1:
            msg = "give exactly one of `bearer`, `api_key`, `basic` or `login`"
            raise ValueError(msg)
        return self


class RateLimit(_Strict):
    """A proactive limit on the requests sent to the API."""

    requests_per_second: PositiveFloat = Field(description="at most this many requests a second")


class HttpRetries(_Strict):
    """Retries of one request that got a 429, a 5xx or no answer, inside the sync.

    A `Retry-After` header sets the wait (up to `max_backoff`); otherwise it doubles from
    `backoff`, with jitter.
    """

    max_attempts: PositiveInt = Field(default=5, description="attempts of one request, the first included")
    backoff: Duration = Field(default=timedelta(seconds=1), description="the first wait; it doubles")
    max_backoff: Duration = Field(
        default=timedelta(seconds=60), description="the longest wait, `Retry-After` included"
    )


class RestConnectionSpec(_Strict):
    """A JSON API; `base_url`, the auth values and `headers` may hold ${VAR} placeholders."""

    type: Literal["rest"] = Field(description="a JSON API")
    base_url: str = Field(min_length=1, description="the API's root URL; endpoints are paths under it")
    auth: RestAuth | None = Field(default=None, description="how requests authenticate; none: they do not")
    headers: dict[str, str] = Field(
        default_factory=dict, description="sent with every request; may hold ${VAR}"
    )
    rate_limit: RateLimit | None = Field(default=None, description="a proactive limit; none: no limit")
    timeout: Duration = Field(
        default=timedelta(seconds=30), description="connect and read timeout of a request"
    )
    http_retries: HttpRetries = Field(
        default_factory=HttpRetries, description="retries of one request inside the sync"
    )
    max_parallel: PositiveInt | None = Field(default=None, description="tables of this source synced at once")
    # Dagster's step retries: a REST source retries inside the sync, so none by default.
    retries: Retries = Field(
        default_factory=lambda: Retries(max_retries=0),
        description="Dagster's retries of the sync; none by default, requests retry inside it",
    )
    demo: Literal[False] = Field(default=False, description="SQL connections only")


class Pagination(_Strict):
    """How an endpoint pages: `offset` (offset and limit), `page` (a page number and a size),
    `cursor` (a token from the body, sent back), `link` (a next URL in the body or the Link
    header), or `none` (one response)."""

    style: Literal["offset", "page", "cursor", "link", "none"] = Field(
        default="none", description="how the endpoint pages"
    )
    page_size: PositiveInt = Field(default=100, description="records asked for per page")
    offset_param: str = Field(default="offset", description="offset: the parameter of the offset")
    limit_param: str = Field(default="limit", description="offset, page: the parameter of the page size")
    page_param: str = Field(default="page", description="page: the parameter of the page number")
    first_page: int = Field(default=1, description="page: the number of the first page")
    cursor_param: str = Field(default="cursor", description="cursor: the parameter the token is sent in")
    cursor_path: str = Field(default="next_cursor", description="cursor: path of the next token in the body")
    next_path: str | None = Field(
        default=None, description="path of the next URL in the body; else the Link header"
    )
    total_path: str | None = Field(
        default=None, description="where a response reports the endpoint's record count (reconciliation)"
    )


class Incremental(_Strict):
    """The query parameter a daily or hourly sends the watermark in (lookback included)."""

    param: str = Field(min_length=1, description="the query parameter, e.g. modified_since")
    format: Literal["iso", "epoch"] = Field(default="iso", description="ISO 8601 text, or seconds since 1970")
