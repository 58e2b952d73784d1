"""The one fetcher for every outbound request: http(s) with limits, conditional GET, timeouts, a size cap.

Used for feeds and for article pages alike, so both obey the same limits and the same guard
(newsletter.collect.guard): every connection, including each hop of a redirect, goes only to an address the
guard checked. Redirects are followed here, hop by hop (at most MAX_REDIRECTS), each target passing the http(s)
URL check first; the result keeps the chain. file:// URLs and plain paths are read only when the caller says
so (`local_files`, for the sources a schedule file lists: the operator's own disk), never for a link from a feed.

The HTTP client is libcurl (pycurl's CurlMulti), driven from the asyncio event loop through its socket and timer
callbacks, chosen by measurement (benchmarks/collect.py runs it beside aiohttp and httpx): a conditional GET
answered 304 costs a fraction of aiohttp's client CPU. How the guard sits in it, for every hop:
- the host of the hop's URL is resolved once a run by the guard, every address checked, and the approved
  addresses are pinned with CURLOPT_RESOLVE, so libcurl connects to them (happy eyeballs over that list only)
  without a lookup of its own and starts TLS with the URL's host name: certificate checks are unchanged;
- an address written in the URL is checked by the guard as such (libcurl connects to it without a lookup);
- and every socket is made by `_Transfer._open_socket` (CURLOPT_OPENSOCKETFUNCTION), which refuses an address
  the guard did not approve: whatever path libcurl takes, it cannot connect anywhere unchecked.
Proxies are off (CURLOPT_PROXY ""; libcurl would otherwise read http_proxy and friends from the environment),
libcurl never follows a redirect itself, keeps no cookies, and speaks http and https only (HTTP/1.1). TLS is
verified, peer and host name, against the CA set Python's default context trusts (_ca_locations).
A run is one fetch_all: its client resolves each host once and every connection of the run to that host uses
that checked answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ipaddress
import os
import select
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urljoin, urlparse, urlsplit, urlunsplit

import pycurl

from newsletter import __version__
from newsletter.collect.guard import Guard, IPAddress, Refused
from newsletter.urls import web_url

USER_AGENT = f"newsletter/{__version__} (+https://github.com/newsletter-digest/newsletter)"
DEFAULT_TIMEOUT = 20.0
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_DRAIN_BYTES = 64 * 1024  # a body we do not keep is read (to keep the connection) only up to this size
# Idle keep-alive connections kept: at most `per_host` for each of this many hosts (libcurl closes the least
# recently used past that), so a run over thousands of hosts does not hold thousands of sockets.
IDLE_HOSTS = 32

T = TypeVar("T")


def run_fetches(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run for a batch of fetches, on uvloop where it is installed (a base dependency on CPython off
    Windows, for uvicorn too): the same coroutines for less client CPU per request (benchmarks/collect.py
    measures both loops); on asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


@dataclass(frozen=True)
class FetchLimits:
    timeout: float = DEFAULT_TIMEOUT  # seconds, for the whole response
    max_bytes: int = DEFAULT_MAX_BYTES
    concurrency: int = 64
    per_host: int = 6  # be polite: no site gets more than this many requests at once


@dataclass
class FetchResult:
    url: str
    ok: bool
    status: int | None = None  # HTTP status; 200 for files
    body: bytes = b""
    final_url: str | None = None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    not_modified: bool = False
    error: str | None = None
    elapsed: float = 0.0
    # Each redirect followed, in order: (status, absolute target URL); final_url is the last target.
    redirects: list[tuple[int, str]] = field(default_factory=list)


class TooLarge(Exception):
    pass


def is_local(url: str) -> bool:
    scheme = urlparse(url).scheme
    return scheme == "file" or scheme == "" or (len(scheme) == 1 and url[1:3] in (":\\", ":/"))


def local_path(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(url)


def _read_file(url: str, limits: FetchLimits) -> FetchResult:
    path = local_path(url)
    try:
        size = path.stat().st_size
        if size > limits.max_bytes:
            return FetchResult(url, False, error=f"too large: {size} bytes (limit {limits.max_bytes})")
        return FetchResult(url, True, status=200, body=path.read_bytes(), final_url=url)
    except OSError as exc:
        return FetchResult(url, False, error=f"cannot read {path}: {exc.strerror or exc}")


@functools.cache
def _ca_locations() -> tuple[str | None, str | None]:
    """The CA file and folder Python's own verifying context trusts (ssl.create_default_context: SSL_CERT_FILE
    and SSL_CERT_DIR, else OpenSSL's defaults), read once a process. Given to libcurl explicitly: the wheel's
    libcurl was built with another system's bundle path and would otherwise trust a different set (or none)."""
    paths = ssl.get_default_verify_paths()
    return paths.cafile, paths.capath


def _looks_like_address(host: str) -> bool:
    """A host libcurl connects to as written, without a lookup: an IP address (IPv6 in brackets in the URL,
    urlsplit drops them). Other spellings of an address (2130706433) are resolved by the guard like names."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def _target(url: str) -> tuple[str, int, str, str] | None:
    """(host, port, scheme, the URL as sent) of a URL that passes web_url, else None. Cached: every run asks for
    the same feeds' URLs, and parsing them again was a tenth of a request's client CPU.

    The URL as sent is ASCII, as libcurl takes it: a non-ASCII host in its IDNA form, other non-ASCII characters
    percent-encoded as UTF-8 (what a browser sends for such a link); the host checked and pinned is that form."""
    if web_url(url) is None:
        return None
    wire = url.strip()
    parts = urlsplit(wire)
    host = parts.hostname or ""
    if not wire.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return None
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (quote(userinfo, safe=_SAFE) + "@" if userinfo else "") + (f"[{host}]" if ":" in host else host)
        if parts.port is not None:
            netloc += f":{parts.port}"
        wire = urlunsplit((parts.scheme, netloc, quote(parts.path, safe=_SAFE), quote(parts.query, safe=_SAFE),
                           quote(parts.fragment, safe=_SAFE)))
    scheme = parts.scheme.lower()
    return host, parts.port or (443 if scheme == "https" else 80), scheme, wire


_SAFE = "/%:@!$&'()*+,;=~?#[]"  # everything that already means something in a URL: only other characters are encoded


@functools.lru_cache(maxsize=4096)
def _netloc(url: str) -> str:
    return urlsplit(url).netloc


def _resolve_entry(host: str, port: int, addresses: list[str]) -> str:
    """A CURLOPT_RESOLVE line pinning host:port to these addresses (IPv6 ones in brackets)."""
    return f"{host}:{port}:" + ",".join(f"[{a}]" if ":" in a else a for a in addresses)


def _safe_header(name: str, value: str) -> bytes | str | None:
    """A request header line, or None when the value could break out of it (CR, LF, NUL: a validator stored
    from a malformed response must not add headers of its own). Non-ASCII values go out as their bytes."""
    if "\r" in value or "\n" in value or "\0" in value:
        return None
    if value.isascii():
        return f"{name}: {value}"
    try:
        return f"{name}: {value}".encode("latin-1")  # how the response carried it (headers are read as latin-1)
    except UnicodeEncodeError:
        return f"{name}: {value}".encode()


def _describe(code: int, message: str) -> str:
    """libcurl's error as a line: its name (COULDNT_CONNECT...) and message, which names the host."""
    if code == pycurl.E_PEER_FAILED_VERIFICATION:
        return f"certificate verify failed: {message}"
    name = _CURL_ERRORS.get(code, f"curl error {code}")
    return f"{name}: {message}" if message else name


_CURL_ERRORS = {value: name[2:] for name, value in vars(pycurl).items()
                if name.startswith("E_") and isinstance(value, int)}


class _Transfer:
    """One libcurl easy handle and what it gathers for the response it is reading. Reused, for the same
    host:port where it can be (its options, the pin included, are then all set), so a request sets only its URL,
    its headers and its timeout; the callbacks are bound once, none is made per request."""

    __slots__ = ("client", "curl", "key", "lines", "chunks", "size", "keep", "over", "refused", "future")

    def __init__(self, client: _Client, key: tuple[str, int, str], resolve: str | None) -> None:
        self.client = client
        self.key = key
        self.lines: list[bytes] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.keep: bool | None = None  # None: this response's body has not started; then keep it or drain it
        self.over = False
        self.refused: str | None = None
        self.future: asyncio.Future[tuple[int, str]] | None = None
        curl = self.curl = client.template.duphandle()
        curl.setopt(pycurl.HEADERFUNCTION, self.lines.append)
        curl.setopt(pycurl.WRITEFUNCTION, self._write)
        curl.setopt(pycurl.OPENSOCKETFUNCTION, self._open_socket)
        if resolve is not None:
            curl.setopt(pycurl.RESOLVE, [resolve])

    def reset(self) -> None:
        self.lines.clear()
        self.chunks = []
        self.size = 0
        self.keep = None
        self.over = False
        self.refused = None

    def _open_socket(self, purpose: int, address: Any) -> Any:
        ip = address.addr[0]
        client = self.client
        # The address as the guard's answer spelled it is approved; any other spelling is compared as an address.
        if ip not in client.approved_text and ipaddress.ip_address(ip) not in client.approved:
            self.refused = f"refused: {ip} was not checked by the guard"
            return pycurl.SOCKET_BAD
        return _Descriptor(socket.socket(address.family, address.socktype, address.protocol).detach())

    def _write(self, data: bytes) -> int | None:
        if self.keep is None:  # the body's first bytes: the status and headers are complete (read from the
            # header lines: libcurl answers no getinfo from inside a callback)
            fields = _fields(self.lines)
            status = fields.get(b":status", 0)
            self.keep = not (status == 304 or status >= 400 or (status in _REDIRECTS and fields.get(b"location")))
            declared = fields.get(b"content-length")
            if not self.keep and declared is not None and (not (declared := declared.strip()).isdigit()
                                                           or int(declared) > _DRAIN_BYTES):
                self.over = True  # not worth reading: the connection is dropped instead
                return 0
        self.size += len(data)
        if self.size > (self.client.max_bytes if self.keep else _DRAIN_BYTES):
            # Decompressed bytes, counted as they arrive (libcurl inflates a buffer's worth at a time, so a
            # small compressed bomb never becomes a large buffer before this check sees it).
            self.over = True
            return 0  # fewer bytes taken than given: libcurl stops the transfer (CURLE_WRITE_ERROR)
        if self.keep:
            self.chunks.append(data)
        return None


class _Descriptor:
    """A new socket as OPENSOCKETFUNCTION hands it to pycurl, which takes a duplicate of its descriptor for
    libcurl and drops this object: the original is closed then. A socket.socket dropped open would be closed too,
    but with an unclosed-socket ResourceWarning made first (its repr and the warnings machinery cost more than
    making the socket), once a connection."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def __del__(self) -> None:
        os.close(self.fd)


def _fields(lines: list[bytes]) -> dict[bytes, Any]:
    """The last response's header fields (lower-case names; the first of repeated ones), as received, and its
    status (an int) as b":status"."""
    fields: dict[bytes, Any] = {}
    for line in lines:
        if line[:5] == b"HTTP/":  # a status line: a new response starts (after a 1xx)
            status = line.split(None, 2)[1:2]
            fields = {b":status": int(status[0]) if status and status[0].isdigit() else 0}
            continue
        name, sep, value = line.partition(b":")
        if sep:
            fields.setdefault(name.lower(), value)
    return fields


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.strip().decode("latin-1")


class _Client:
    """A CurlMulti on the running loop: its sockets watched by the loop (through an epoll set of its own on
    Linux), its timer a call_at, libcurl told with socket_action. Connections are libcurl's, kept alive per
    host:port within the multi.

    Made per run (fetch_all): the guard's answers and the pins last as long as the run, like a connection."""

    def __init__(self, limits: FetchLimits, guard: Guard | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.guard = guard or Guard()
        self.limits = limits
        self.max_bytes = limits.max_bytes
        self.approved: set[IPAddress] = set()
        self.approved_text: set[str] = set()  # the same addresses as the guard wrote them (libcurl's usual form)
        # (host, port) -> the guard's addresses, or the task resolving them (once a run, shared by its requests)
        self._answers: dict[tuple[str, int], list[str] | asyncio.Task[list[str]]] = {}
        self._resolve: dict[tuple[str, int], str] = {}
        self._idle: dict[tuple[str, int, str], list[_Transfer]] = {}  # by the host:port each served last
        self._transfers: dict[Any, _Transfer] = {}  # Curl -> its transfer, while in the multi
        self._want: dict[int, int] = {}  # fd -> the events libcurl wants (1 read, 2 write)
        # Sockets libcurl stopped watching (a connection back in the pool) that were left in the epoll set: see
        # _on_socket. One that has been closed since is out of the set already (the kernel drops a closed file).
        self._kept: set[int] = set()
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        if self._epoll is not None:
            self.loop.add_reader(self._epoll.fileno(), self._on_events)
        self._timer: asyncio.TimerHandle | None = None
        self._due: float | None = None  # when libcurl wants its timeout call (loop time)
        self._soon = False
        self._adding = False  # inside add_handle: a timeout of 0 asked then is acted on right after it
        self._kick = False
        self._closing = False
        self._running = 0
        self.template = self._template(limits)
        multi = self.multi = pycurl.CurlMulti()
        multi.setopt(pycurl.M_SOCKETFUNCTION, self._on_socket)
        multi.setopt(pycurl.M_TIMERFUNCTION, self._on_timer)
        multi.setopt(pycurl.M_MAXCONNECTS, IDLE_HOSTS * limits.per_host)
        multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, limits.per_host)
        multi.setopt(pycurl.M_PIPELINING, 0)

    def _template(self, limits: FetchLimits) -> Any:
        curl = pycurl.Curl()
        for option, value in (
            (pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS),
            (pycurl.PROXY, ""),  # never a proxy: through one the guard would only see the proxy's address
            (pycurl.FOLLOWLOCATION, 0),  # redirects are followed here, each hop checked
            (pycurl.NOSIGNAL, 1),
            (pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_1_1),
            (pycurl.USERAGENT, USER_AGENT),
            (pycurl.ACCEPT_ENCODING, "gzip, deflate"),  # inflated a buffer at a time, counted by _write
            (pycurl.MAXFILESIZE_LARGE, limits.max_bytes),  # a declared Content-Length over the limit: not read
            (pycurl.CONNECTTIMEOUT_MS, int(min(limits.timeout, 10.0) * 1000)),
            (pycurl.SSL_VERIFYPEER, 1),
            (pycurl.SSL_VERIFYHOST, 2),
            (pycurl.DNS_CACHE_TIMEOUT, 0),  # nothing libcurl might look up itself is kept; the pins stay
        ):
            curl.setopt(option, value)
        cafile, capath = _ca_locations()
        curl.setopt(pycurl.CAINFO, cafile)
        curl.setopt(pycurl.CAPATH, capath)
        return curl

    # -- the event loop's side ---------------------------------------------------------------------------------
    # libcurl says which events it wants on each socket (_on_socket: several changes a request, REMOVE before it
    # closes one) and when to call it back (_on_timer). Followed with the loop's add_reader/remove_reader, each
    # change made and dropped a poll handle in uvloop (four system calls and more), more than the request itself
    # cost; so on Linux the sockets are kept in an epoll set of the client's own, one epoll_ctl a change, and
    # the loop watches that set's one descriptor. Elsewhere, add_reader and add_writer directly. The timer is one
    # call_at, moved only when libcurl wants to be called earlier than it fires (it is set again if it fires
    # before libcurl's time).

    def _on_socket(self, what: int, fd: int, multi: Any, socketp: Any) -> None:
        if self._closing:
            return
        want = 0 if what == pycurl.POLL_REMOVE else what
        old = self._want.get(fd, 0)
        if want == old:
            return
        if want:
            self._want[fd] = want
        else:
            del self._want[fd]
        epoll = self._epoll
        if epoll is not None:
            if not want:
                # Left in the set: a pooled connection's socket is mostly watched again by its next request, and
                # one epoll_ctl then (modify) does instead of two (unregister now, register then). An event from it
                # meanwhile nobody wants (_on_events) takes it out; closing it takes it out of the kernel's set.
                self._kept.add(fd)
                return
            events = (select.EPOLLIN if want & 1 else 0) | (select.EPOLLOUT if want & 2 else 0)
            if old:
                epoll.modify(fd, events)
            elif fd in self._kept:
                self._kept.discard(fd)
                try:
                    epoll.modify(fd, events)
                except FileNotFoundError:  # closed since, and this number is another socket's now
                    epoll.register(fd, events)
            else:
                try:
                    epoll.register(fd, events)
                except FileExistsError:
                    epoll.modify(fd, events)
            return
        loop = self.loop
        if old & 1 and not want & 1:
            loop.remove_reader(fd)
        elif want & 1 and not old & 1:
            loop.add_reader(fd, self._act, fd, pycurl.CSELECT_IN)
        if old & 2 and not want & 2:
            loop.remove_writer(fd)
        elif want & 2 and not old & 2:
            loop.add_writer(fd, self._act, fd, pycurl.CSELECT_OUT)

    def _on_events(self) -> None:
        assert self._epoll is not None
        action = self.multi.socket_action
        running = self._running
        try:
            for fd, events in self._epoll.poll(0):
                if fd not in self._want:  # a kept socket (an idle connection the server closed, say): libcurl
                    self._drop_kept(fd)  # finds out when it takes the connection from the pool
                    continue
                mask = 0
                if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    mask |= pycurl.CSELECT_IN
                if events & select.EPOLLOUT:
                    mask |= pycurl.CSELECT_OUT
                if events & select.EPOLLERR:
                    mask |= pycurl.CSELECT_ERR
                _, running = action(fd, mask)
        except pycurl.error as exc:
            self._fail(exc)
            return
        if running < self._running:
            self._collect()

    def _drop_kept(self, fd: int) -> None:
        self._kept.discard(fd)
        if self._epoll is not None:
            with contextlib.suppress(OSError):
                self._epoll.unregister(fd)

    def _on_timer(self, ms: int) -> None:
        if ms < 0:
            self._due = None
            return
        loop = self.loop
        if ms == 0:
            self._due = None
            if self._adding:
                self._kick = True
                return
            if not self._soon:
                self._soon = True
                loop.call_soon(self._timeout_now)
            return
        due = self._due = loop.time() + ms / 1000
        timer = self._timer
        if timer is not None:
            if timer.when() <= due:
                return  # fires first, and is set again for `due` then
            timer.cancel()
        self._timer = loop.call_at(due, self._timer_fired)

    def _timeout_now(self) -> None:
        self._soon = False
        self._act(pycurl.SOCKET_TIMEOUT, 0)

    def _timer_fired(self) -> None:
        self._timer = None
        due = self._due
        if due is None:
            return
        if due > self.loop.time():
            self._timer = self.loop.call_at(due, self._timer_fired)
            return
        self._due = None
        self._act(pycurl.SOCKET_TIMEOUT, 0)

    def _act(self, fd: int, event: int) -> None:
        try:
            _, running = self.multi.socket_action(fd, event)
        except pycurl.error as exc:
            self._fail(exc)
            return
        if running < self._running:
            self._collect()

    def _fail(self, exc: pycurl.error) -> None:
        """The multi handle itself failed: every transfer in it fails with it."""
        for curl in list(self._transfers):
            self._finish(curl, exc.args[0], exc.args[1] if len(exc.args) > 1 else "")

    def _collect(self) -> None:
        multi = self.multi
        while True:
            queued, ok, failed = multi.info_read()
            for curl in ok:
                self._finish(curl, 0, "")
            for curl, code, message in failed:
                self._finish(curl, code, message)
            if not queued:
                return

    def _finish(self, curl: Any, code: int, message: str) -> None:
        transfer = self._transfers.pop(curl, None)
        if transfer is None:
            return
        self.multi.remove_handle(curl)
        self._running -= 1
        future = transfer.future
        if future is not None and not future.done():
            future.set_result((code, message))

    def _start(self, transfer: _Transfer) -> asyncio.Future[tuple[int, str]]:
        """The transfer added to the multi; its future is set to libcurl's (code, message) when it ends. Awaited by
        _hop directly (a coroutine less a request), whose _give_back takes it out of the multi if it is cancelled."""
        future = transfer.future = self.loop.create_future()
        curl = transfer.curl
        self._adding, self._kick = True, False
        try:
            self.multi.add_handle(curl)
        finally:
            self._adding = False
        self._transfers[curl] = transfer
        self._running += 1
        if self._kick:
            # libcurl asked to be called at once (to start this transfer): done here, not a loop turn later
            # through call_soon. Outside any libcurl callback, so socket_action may be called.
            self._kick = False
            self._act(pycurl.SOCKET_TIMEOUT, 0)
        return future

    # -- transfers and the guard -------------------------------------------------------------------------------

    def _take(self, key: tuple[str, int, str]) -> _Transfer:
        """An easy handle for a request to `key`: one that last served the same host:port if there is one (its
        options are all set), else another idle one, re-pinned, else a new one. The handles are closed with the
        client; there are never more than the requests that ran at once (at most `concurrency`)."""
        idle = self._idle
        same = idle.get(key)
        if same is None and idle:
            same = idle[next(iter(idle))]
        if same is None:
            return _Transfer(self, key, self._resolve.get(key[:2]))
        transfer = same.pop()
        if not same:
            del idle[transfer.key]
        if transfer.key != key:
            transfer.key = key
            entry = self._resolve.get(key[:2])
            if entry is not None:
                transfer.curl.setopt(pycurl.RESOLVE, [entry])
        return transfer

    def _give_back(self, transfer: _Transfer) -> None:
        transfer.future = None
        curl = transfer.curl
        if self._transfers.pop(curl, None) is not None:  # cancelled while libcurl still had it
            self.multi.remove_handle(curl)
            self._running -= 1
        transfer.reset()  # and the body it held goes with the result
        self._idle.setdefault(transfer.key, []).append(transfer)

    async def check(self, host: str, port: int, deadline: float) -> None:
        """The guard's answer for host:port (asked once a run), every address approved for connecting and, for a
        name, pinned: the transfers made for it from now on connect only there. Raises Refused or OSError."""
        key = (host, port)
        found = self._answers.get(key)
        if isinstance(found, list):
            return
        if found is None:
            now = self.guard.answer_now(host, port)  # an address in the URL: checked at once, no task to wait for
            if now is not None:
                self._record(key, host, now)
                return
            found = self._answers[key] = self.loop.create_task(self.guard.addresses(host, port))
            # retrieved here too: a lookup whose only waiter timed out must not be reported as never retrieved
            found.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            # Shielded: one request's timeout must not cancel the lookup others wait for too.
            async with asyncio.timeout(deadline - time.monotonic()):
                addresses = await asyncio.shield(found)
        except BaseException:
            if found.done() and self._answers.get(key) is found:
                del self._answers[key]  # asked again by the next request (a failure is not kept)
            raise
        if type(self._answers.get(key)) is not list:  # else recorded by another request waiting for it too
            self._record(key, host, addresses)

    def _record(self, key: tuple[str, int], host: str, addresses: list[str]) -> None:
        """The guard's answer for host:port: every address approved for connecting and, for a name, pinned."""
        for text in addresses:
            ip = ipaddress.ip_address(text)
            self.approved.add(ip)
            self.approved_text.add(str(ip))
        if not _looks_like_address(host):
            self._resolve[key] = _resolve_entry(host, key[1], addresses)
        self._answers[key] = addresses

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = None
        for curl in list(self._transfers):
            self.multi.remove_handle(curl)
        self._transfers.clear()
        # The loop stops watching before libcurl closes what it watches (a closed descriptor must not stay
        # registered: its number is reused by the next socket).
        if self._epoll is not None:
            self.loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
        else:
            for fd, want in self._want.items():
                if want & 1:
                    self.loop.remove_reader(fd)
                if want & 2:
                    self.loop.remove_writer(fd)
        self._want.clear()
        self._closing = True
        self.multi.close()  # first: closing the connections calls back into the easy handles that opened them
        for idle in self._idle.values():
            for transfer in idle:
                transfer.curl.close()
        self._idle.clear()
        self.template.close()
        for pending in self._answers.values():
            if isinstance(pending, asyncio.Task):
                pending.cancel()

    async def __aenter__(self) -> _Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def make_client(limits: FetchLimits, guard: Guard | None = None) -> _Client:
    """A client whose every connection passes `guard` (by default: public addresses and NEWSLETTER_FETCH_ALLOW).

    Proxy settings from the environment are ignored on purpose: through a proxy the guard would only ever see
    the proxy's address, never where the request really goes. Cookies are not kept: a feed's site has no session
    with us, and one site's cookie must not follow a redirect to another. Call inside the running loop."""
    return _Client(limits, guard)


class _TooManyRedirects(Exception):
    pass


class _TimedOut(Exception):
    pass


async def fetch(
    client: _Client,
    url: str,
    limits: FetchLimits,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    accept: str = "*/*",
    local_files: bool = False,
) -> FetchResult:
    """Fetch one URL. Never raises: failures come back as ok=False with a readable error.

    `local_files`: read file:// URLs and paths too (only for sources listed in a schedule file)."""
    started = time.monotonic()
    if _target(url) is None:  # checked first: an http(s) URL is never a local file, and this answer is cached
        if local_files and is_local(url):
            result = await asyncio.to_thread(_read_file, url, limits)
            result.elapsed = time.monotonic() - started
            return result
        return FetchResult(url, False, error="not an http(s) URL")
    headers = [f"Accept: {accept}"]
    for name, value in (("If-None-Match", etag), ("If-Modified-Since", last_modified)):
        line = _safe_header(name, value) if value else None
        if line is not None:
            headers.append(line)  # type: ignore[arg-type]
    try:
        # The timeout bounds the whole exchange, every hop and lookup, not only each socket read: a server that
        # trickles bytes forever must not hold a collect run hostage.
        deadline = started + limits.timeout
        current = url
        redirects: list[tuple[int, str]] = []
        for _ in range(MAX_REDIRECTS + 1):  # (the redirect loop here, not in a coroutine of its own: one a request)
            try:
                hop = await _hop(client, url, current, headers, limits, redirects, deadline)
            except Refused as exc:  # this hop's address: say so with the chain that led there
                hop = FetchResult(url, False, final_url=current, redirects=redirects, error=str(exc))
            if hop is not None:
                result = hop
                break
            current = redirects[-1][1]
        else:
            raise _TooManyRedirects
    except (TimeoutError, _TimedOut):
        result = FetchResult(url, False, error=f"timed out after {limits.timeout:g}s")
    except (TooLarge, Refused) as exc:
        result = FetchResult(url, False, error=str(exc))
    except _TooManyRedirects:
        result = FetchResult(url, False, error=f"too many redirects (more than {MAX_REDIRECTS})")
    except (OSError, ValueError) as exc:  # OSError: the guard's lookup failed; ValueError: a URL we cannot take
        result = FetchResult(url, False, error=str(exc) or type(exc).__name__)
    except pycurl.error as exc:  # libcurl refused the request itself (out of memory, a bad option)
        result = FetchResult(url, False, error=_describe(*exc.args))
    result.elapsed = time.monotonic() - started
    return result


async def _hop(client: _Client, url: str, current: str, headers: list[Any], limits: FetchLimits,
               redirects: list[tuple[int, str]], deadline: float) -> FetchResult | None:
    """One request: the result, or None after appending a redirect to follow to `redirects`."""
    key = _target(current)
    if key is None:  # never: the first URL and every redirect target passed web_url
        raise ValueError(f"not an http(s) URL: {current}")
    host, port, scheme, wire = key
    if type(client._answers.get((host, port))) is not list:  # not yet asked this run (a coroutine less a hop)
        await client.check(host, port, deadline)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _TimedOut
    transfer = client._take((host, port, scheme))
    curl = transfer.curl
    curl.setopt(pycurl.URL, wire)
    curl.setopt(pycurl.HTTPHEADER, headers)
    curl.setopt(pycurl.TIMEOUT_MS, max(1, int(remaining * 1000)))
    try:
        code, message = await client._start(transfer)
        status = curl.getinfo(pycurl.RESPONSE_CODE)
        fields = _fields(transfer.lines)
        over, body, refused = transfer.over, transfer.chunks, transfer.refused
    finally:
        client._give_back(transfer)  # cancelled too: out of the multi by then, ready for another request
    location = _text(fields.get(b"location"))
    if code:
        if refused is not None:
            raise Refused(refused)
        if code == pycurl.E_OPERATION_TIMEDOUT:
            raise _TimedOut
        if not (code == pycurl.E_FILESIZE_EXCEEDED or (code == pycurl.E_WRITE_ERROR and over)) or not status:
            return FetchResult(url, False, final_url=current, redirects=redirects, error=_describe(code, message))
        if not (status == 304 or status >= 400 or (status in _REDIRECTS and location)):
            declared = _text(fields.get(b"content-length")) or ""
            if declared.isdigit() and int(declared) > limits.max_bytes:
                raise TooLarge(f"too large: {declared} bytes (limit {limits.max_bytes})")
            raise TooLarge(f"too large: over {limits.max_bytes} bytes")
        # else: a body we do not keep, too long to be worth reading: dropped with its connection; the answer stands
    if status in _REDIRECTS and location:
        target = urljoin(current, location)
        if web_url(target) is None:
            return FetchResult(url, False, status=status, final_url=current, redirects=redirects,
                               error=f"HTTP {status} redirect to a non-http(s) URL")
        redirects.append((status, target))
        return None
    ok = status < 400  # a 304 too: not_modified, no body
    return FetchResult(url, ok, status=status, body=b"".join(body) if ok and status != 304 else b"",
                       final_url=current, content_type=_text(fields.get(b"content-type")),
                       etag=_text(fields.get(b"etag")), last_modified=_text(fields.get(b"last-modified")),
                       not_modified=status == 304, error=None if ok else f"HTTP {status}", redirects=redirects)


class _Slots:
    """A counting semaphore, first come first served, for fetch_all's overall limit. asyncio.Semaphore scans all
    its waiters on every acquire; this hands a freed slot straight to the next waiter."""

    __slots__ = ("free", "waiters")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_now(self) -> bool:
        """A slot if one is free with nobody waiting (no coroutine made for the usual case), else False."""
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot, then cancelled: pass it on
                self.give()
            raise

    def give(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():  # a cancelled waiter is skipped
                waiter.set_result(None)
                return
        self.free += 1


async def fetch_all(
    requests: Sequence[tuple[str, str | None, str | None]],
    limits: FetchLimits,
    *,
    accept: str = "*/*",
    on_done: Callable[[FetchResult], Awaitable[None] | None] | None = None,
    local_files: bool = False,
    guard: Guard | None = None,
) -> list[FetchResult]:
    """Fetch (url, etag, last_modified) triples concurrently, capped overall and per host; keeps order.

    `local_files` lets file paths through (a schedule's own sources); `guard` defaults to Guard()."""
    # One worker per allowed connection of a host (at most per_host), each taking the host's requests in turn:
    # no site gets more than per_host at once. The host's turn first, then an overall slot: a request waiting for
    # its host must not hold one of the `concurrency` slots meanwhile (it did, and a run's first hosts kept the
    # others waiting). Fewer tasks than one a request, and no per-host semaphore to queue on.
    results: list[FetchResult | None] = [None] * len(requests)
    by_host: dict[str, collections.deque[int]] = {}
    for index, request in enumerate(requests):
        queue = by_host.get(_netloc(request[0]))
        if queue is None:
            queue = by_host[_netloc(request[0])] = collections.deque()
        queue.append(index)
    overall = _Slots(limits.concurrency)
    callbacks: list[Awaitable[None]] = []  # on_done coroutines, run beside the fetches, awaited before the end

    async with make_client(limits, guard) as client:

        async def worker(queue: collections.deque[int]) -> None:
            while queue:
                index = queue.popleft()
                url, etag, last_modified = requests[index]
                if not overall.take_now():
                    await overall.take()
                try:
                    result = await fetch(client, url, limits, etag=etag, last_modified=last_modified,
                                         accept=accept, local_files=local_files)
                finally:
                    overall.give()
                results[index] = result
                if on_done is not None:
                    maybe = on_done(result)
                    if asyncio.iscoroutine(maybe):
                        callbacks.append(asyncio.ensure_future(maybe))

        await asyncio.gather(*(worker(queue) for queue in by_host.values()
                               for _ in range(min(limits.per_host, len(queue)))))
        if callbacks:
            await asyncio.gather(*callbacks)
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]
