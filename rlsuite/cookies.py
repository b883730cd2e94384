"""Each user's cookies, kept as Locust's FastHttpUser keeps them, at no cost while there are none.

geventhttpclient asks the user's cookie jar to add its cookies to every request and to take those of every answer.
The standard library's jar does both under a lock and walks its (empty) store every time: about 6 us per request,
5% of a request's CPU at 4,000/s (bench/OVERLOAD.md, section 2). A rate limiter seldom sets cookies, so this jar
skips both steps when there is nothing to do: no cookie stored, no cookie header in the answer. When there is, it is
the standard jar, so a limiter keyed on a session cookie sees the same requests as from plain Locust.
"""

from __future__ import annotations

from http.cookiejar import CookieJar
from typing import Any


class UserCookieJar(CookieJar):
    def add_cookie_header(self, request: Any) -> None:
        if self._cookies:  # (a domain once set stays, emptied, when its cookies expire: then the full path runs)
            super().add_cookie_header(request)

    def extract_cookies(self, response: Any, request: Any) -> None:
        headers = response.info()  # what the standard jar reads them from (geventhttpclient's Headers: any case)
        if "set-cookie" in headers or "set-cookie2" in headers:
            super().extract_cookies(response, request)


def install(session: Any) -> UserCookieJar:
    """Give a FastHttpSession (``self.client`` of a FastHttpUser) a ``UserCookieJar`` in place of its empty one."""
    jar = session.cookiejar = session.client.cookiejar = UserCookieJar()
    return jar
