"""Requests to a REST source: auth, a proactive rate limit, retries of 429s, 5xx and silence
inside the sync, and errors that name the table and a URL without secrets.

httpx sends, tenacity retries (honouring `Retry-After`), pyrate-limiter paces.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

import httpx
import pyrate_limiter
import tenacity

from sync_assets.catalog import placeholders
from sync_assets.catalog.rest import RestConnectionSpec
from sync_assets.errors import DataError, SyncError
from sync_assets.redact import redact

Log = Callable[[str], None]
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class _Retryable(Exception):
    """A response worth another try (429, 5xx); `retry_after` in seconds when the server said."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response
        self.retry_after = retry_after(response.headers.get("Retry-After"))


def retry_after(value: str | None) -> float | None:
    """A `Retry-After` header in seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class HttpClient:
    """One table's requests to one REST connection (`name`), for the length of a sync."""

    def __init__(self, name: str, spec: RestConnectionSpec, *, table: str, log: Log) -> None:
        self.name, self.spec, self.table, self.log = name, spec, table, log
        self.base_url = self._resolve(spec.base_url).rstrip("/") + "/"
        auth = spec.auth
        headers = {k: self._resolve(v) for k, v in spec.headers.items()}
        self._query: dict[str, str] = {}
        basic = None
        if auth is not None and auth.bearer is not None:
            headers["Authorization"] = f"Bearer {self._resolve(auth.bearer)}"
        elif auth is not None and auth.api_key is not None:
            value = self._resolve(auth.api_key.value)
            if auth.api_key.header:
                headers[auth.api_key.header] = value
            else:
                self._query[str(auth.api_key.query)] = value
        elif auth is not None and auth.basic is not None:
            basic = httpx.BasicAuth(self._resolve(auth.basic.username), self._resolve(auth.basic.password))
        self.secrets = connection_secrets(name, spec, table=table)
        seconds = spec.timeout.total_seconds()
        self.client = httpx.Client(
            headers=headers, auth=basic, timeout=httpx.Timeout(seconds), follow_redirects=True
        )
        self.limiter = _limiter(spec.rate_limit.requests_per_second) if spec.rate_limit else None
        self._logged_in = False

    def _resolve(self, text: str) -> str:
        return placeholders.resolve(text, connection=self.name, table=self.table)

    def close(self) -> None:
        self.client.close()

    def url(self, endpoint: str) -> str:
        """`endpoint` under the base URL; an absolute URL (a next link) as it is."""
        if endpoint.startswith(("http://", "https://")):
            return endpoint
        return self.base_url + endpoint.lstrip("/")

    def shown(self, url: httpx.URL | str) -> str:
        """A URL for messages: no user info, no api_key query parameter, no secret anywhere."""
        parsed = httpx.URL(str(url))
        params = [(k, v) for k, v in parsed.params.multi_items() if k not in self._query]
        query = str(httpx.QueryParams(params)).encode() or None
        return redact(str(parsed.copy_with(userinfo=b"", query=query)), self.secrets)

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> tuple[Any, httpx.Response]:
        """GET `url` and its JSON body; retried as the connection says, failing with a SyncError."""
        response = self._send(url, {**(params or {}), **self._query})
        try:
            return response.json(), response
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            where = (
                f" (line {err.lineno}, column {err.colno})" if isinstance(err, json.JSONDecodeError) else ""
            )
            msg = f"table '{self.table}': GET {self.shown(response.url)} did not return JSON{where}"
            raise DataError(msg, table=self.table) from None

    def _send(self, url: str, params: Mapping[str, Any]) -> httpx.Response:
        retries = self.spec.http_retries
        if self.spec.auth is not None and self.spec.auth.login is not None and not self._logged_in:
            self._login()
        attempts = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(retries.max_attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type((_Retryable, httpx.TransportError)),
            before_sleep=self._say_retry,
            reraise=True,
        )
        try:
            for attempt in attempts:
                with attempt:
                    response = self._request("GET", url, params=params)
                    if response.status_code == 401 and self.spec.auth is not None and self.spec.auth.login:
                        self._login()  # the session token expired: one new login, then the request again
                        response = self._request("GET", url, params=params)
                    if response.status_code in RETRIED_STATUSES:
                        raise _Retryable(response)
        except _Retryable as err:
            raise self._status_error(err.response, attempts=retries.max_attempts) from None
        except httpx.TimeoutException:
            seconds = self.spec.timeout.total_seconds()
            shown = self.shown(with_params(url, params))
            attempts = retries.max_attempts
            msg = (
                f"table '{self.table}': GET {shown}: no answer within {seconds:g} s after {attempts} attempts"
            )
            raise SyncError(self._named(msg), table=self.table) from None
        except httpx.TransportError as err:
            shown = self.shown(with_params(url, params))
            text = redact(f"{type(err).__name__}: {err}", self.secrets)
            msg = f"table '{self.table}': GET {shown}: {text} after {retries.max_attempts} attempts"
            raise SyncError(self._named(msg), table=self.table) from None
        if response.is_error:
            raise self._status_error(response, attempts=None)
        return response

    def _request(
        self, method: str, url: str, *, params: Mapping[str, Any] | None = None, **kwargs: Any
    ) -> httpx.Response:
        if self.limiter is not None:
            self.limiter.try_acquire(self.name)
        # Merged into the URL's own query (an endpoint's filter, a next link's cursor): httpx's
        # `params=` would replace it.
        return self.client.request(method, with_params(url, params), **kwargs)

    def _login(self) -> None:
        login = self.spec.auth.login if self.spec.auth else None
        assert login is not None
        body = {k: self._resolve(v) for k, v in login.body.items()}
        response = self._request("POST", self.url(login.endpoint), json=body)
        if response.is_error:
            raise self._status_error(response, attempts=None, what="login")
        try:
            token = find(response.json(), login.token)
        except (json.JSONDecodeError, KeyError, TypeError, IndexError):
            token = None
        if not isinstance(token, str) or not token:
            shown = self.shown(response.url)
            msg = f"table '{self.table}': the login response of {shown} has no token at `{login.token}`"
            raise SyncError(self._named(msg), table=self.table)
        self.secrets = [*self.secrets, token]
        self.client.headers["Authorization"] = f"Bearer {token}"
        self._logged_in = True

    def _wait(self, state: tenacity.RetryCallState) -> float:
        retries = self.spec.http_retries
        ceiling = retries.max_backoff.total_seconds()
        err = state.outcome.exception() if state.outcome else None
        if isinstance(err, _Retryable) and err.retry_after is not None:
            return min(err.retry_after, ceiling)
        step = retries.backoff.total_seconds()
        return float(tenacity.wait_exponential_jitter(multiplier=step, max=ceiling, jitter=step)(state))

    def _say_retry(self, state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        what = f"HTTP {err.response.status_code}" if isinstance(err, _Retryable) else type(err).__name__
        wait = state.next_action.sleep if state.next_action else 0
        self.log(
            f"{self.table}: {what} from {self.name}, attempt {state.attempt_number} of "
            f"{self.spec.http_retries.max_attempts}; retrying in {wait:.1f} s"
        )

    def _status_error(
        self, response: httpx.Response, *, attempts: int | None, what: str = "GET"
    ) -> SyncError:
        reason = f"{response.status_code} {response.reason_phrase}".strip()
        after = f" after {attempts} attempts" if attempts else ""
        body = redact(response.text[:200].strip(), self.secrets)
        detail = f": {body}" if body else ""
        method = "POST" if what == "login" else "GET"
        msg = f"table '{self.table}': {method} {self.shown(response.url)} returned {reason}{after}{detail}"
        return SyncError(self._named(msg), table=self.table)

    def _named(self, text: str) -> str:
        return f"{text} (source connection '{self.name}')"


def with_params(url: str, params: Mapping[str, Any] | None) -> httpx.URL:
    """`url` with `params` added to its own query (httpx's `params=` would replace that query)."""
    return httpx.URL(url).copy_merge_params(dict(params)) if params else httpx.URL(url)


def find(document: Any, path: str | None) -> Any:
    """The value at a dotted path (`data.items`, `meta.next`); the document itself for no path.

    Raises KeyError (or IndexError, TypeError) when the path is not there.
    """
    value = document
    for part in path.split(".") if path else []:
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def _limiter(per_second: float) -> pyrate_limiter.Limiter:
    """`per_second` requests a second as a whole number of requests per whole milliseconds."""
    rate = Fraction(per_second).limit_denominator(1000)
    return pyrate_limiter.Limiter(pyrate_limiter.Rate(rate.numerator, rate.denominator * 1000))


def connection_secrets(name: str, spec: RestConnectionSpec, *, table: str | None) -> list[str]:
    """What must never appear in a message: the resolved auth values (token, key, password, login
    body) and the headers that come from the environment. Raises SyncError for an unset ${VAR}."""
    auth = spec.auth
    templates = [v for v in spec.headers.values() if placeholders.has_placeholders(v)]
    if auth is not None:
        templates += [auth.bearer or "", auth.api_key.value if auth.api_key else ""]
        templates += [auth.basic.password] if auth.basic else []
        templates += list(auth.login.body.values()) if auth.login else []
    values = (placeholders.resolve(t, connection=name, table=table) for t in templates if t)
    return list(dict.fromkeys(v for v in values if v))
