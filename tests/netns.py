"""Network namespaces and a PostgreSQL server of a test's own, for the partition tests (tests/test_scale_partitions.py).

A `Namespace` is an `ip netns` with one veth pair per link: the host end gets x.x.x.1/30, the namespace end
x.x.x.2/30, on a private /30 per link chosen at random in 10.200-249.x.x (several engineers may run these tests on
one machine at once). A process started with `Namespace.argv(...)` can reach the host only through those links,
so `cut(link)` partitions it from whatever listens on that link's host address, and `restore(link)` heals it.
Cutting takes the namespace end of the veth down: its route goes with it, so a new connection fails at once
(ENETUNREACH) and an open one hears nothing more, as when a machine loses its network.

`PrivatePostgres` is a throwaway server (initdb + pg_ctl as the `postgres` user, since initdb refuses root) on a
free port, listening on loopback and on the host ends of the links, never the machine's shared server. It drops
connections whose peer stopped answering within seconds (TCP keepalives and a user timeout), as a production
server tuned for it would; with PostgreSQL's defaults a partitioned worker's locks would be held for hours.

Hand-written on `ip` and `pg_ctl` rather than a library: pyroute2 would be a new dependency for six commands,
and testing.postgresql does not let the server listen on addresses of our choosing.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path(os.environ.get("NEWSLETTER_TEST_PG_BIN", "/usr/local/bin"))


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can): not root, no `ip`, or the kernel refuses."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) to make network namespaces"
    name = f"nlprobe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip() or made.returncode}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    veth = subprocess.run(["ip", "link", "add", f"nlp{os.getpid() % 100000}a", "type", "veth", "peer", "name",
                           f"nlp{os.getpid() % 100000}b"], capture_output=True, text=True, check=False)
    if veth.returncode != 0:
        return f"cannot make veth pairs: {veth.stderr.strip() or veth.returncode}"
    subprocess.run(["ip", "link", "del", f"nlp{os.getpid() % 100000}a"], capture_output=True, check=False)
    return None


def postgres_unavailable() -> str | None:
    """Why a private PostgreSQL server cannot be started here (None: it can)."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"no {PG_BIN / tool} to start a private PostgreSQL server"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "initdb refuses root and there is no `postgres` user to run it as"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass
class Link:
    host_if: str
    ns_if: str
    host_ip: str
    ns_ip: str


@dataclass
class Namespace:
    name: str
    links: dict[str, Link] = field(default_factory=dict)

    def argv(self, *command: str) -> list[str]:
        """The command line that runs `command` inside the namespace."""
        return ["ip", "netns", "exec", self.name, *command]

    def host_ip(self, link: str) -> str:
        """The address on the host the namespace reaches over `link` (servers listen there)."""
        return self.links[link].host_ip

    def cut(self, link: str) -> None:
        _ip("netns", "exec", self.name, "ip", "link", "set", self.links[link].ns_if, "down")

    def restore(self, link: str) -> None:
        _ip("netns", "exec", self.name, "ip", "link", "set", self.links[link].ns_if, "up")
        # Back only once its route is: a connection right after must not fail for want of it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            routes = subprocess.run(["ip", "netns", "exec", self.name, "ip", "-o", "route", "show", "dev",
                                     self.links[link].ns_if], capture_output=True, text=True, check=False)
            if routes.stdout.strip() and "linkdown" not in routes.stdout:
                return
            time.sleep(0.05)
        raise RuntimeError(f"link {link} of {self.name} did not come back up")


def _free_subnets(count: int) -> list[str]:
    """`count` /30s (as their first three octets plus the base of the last) not on any interface now."""
    used = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False).stdout
    rng = random.Random()
    out: list[str] = []
    while len(out) < count:
        base = f"10.{rng.randint(200, 249)}.{rng.randint(0, 255)}"
        last = rng.randrange(0, 256, 4)
        if f"{base}.{last + 1}/" in used or f"{base}.{last + 2}/" in used or f"{base}.{last}" in out:
            continue
        out.append(f"{base}.{last}")
    return out


@contextlib.contextmanager
def namespace(tag: str, links: tuple[str, ...]) -> Iterator[Namespace]:
    """A fresh namespace with one veth link per name in `links`; deleted afterwards, whatever happened."""
    uid = f"{os.getpid() % 100000}{tag}"
    ns = Namespace(f"nl{uid}")
    try:
        _ip("netns", "add", ns.name)
        _ip("netns", "exec", ns.name, "ip", "link", "set", "lo", "up")
        for i, (link, subnet) in enumerate(zip(links, _free_subnets(len(links)), strict=True)):
            prefix, last = subnet.rsplit(".", 1)
            item = Link(f"nl{uid}{i}h", f"nl{uid}{i}n", f"{prefix}.{int(last) + 1}", f"{prefix}.{int(last) + 2}")
            _ip("link", "add", item.host_if, "type", "veth", "peer", "name", item.ns_if)
            ns.links[link] = item
            _ip("link", "set", item.ns_if, "netns", ns.name)
            _ip("addr", "add", f"{item.host_ip}/30", "dev", item.host_if)
            _ip("link", "set", item.host_if, "up")
            _ip("netns", "exec", ns.name, "ip", "addr", "add", f"{item.ns_ip}/30", "dev", item.ns_if)
            ns.restore(link)
        yield ns
    finally:
        # The namespace ends of the veths go with the namespace, and each pair with either end.
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True, check=False)
        for item in ns.links.values():
            subprocess.run(["ip", "link", "del", item.host_if], capture_output=True, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL server of the test's own on a free port: start(), stop(), restart(); url(host)."""

    def __init__(self, listen: list[str]) -> None:
        self.listen = ["127.0.0.1", *listen]
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="nl-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self._as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *argv: str, timeout: float = 60) -> None:
        done = subprocess.run([*self._as_postgres, *argv], capture_output=True, text=True, timeout=timeout,
                              check=False)
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")

    def init(self) -> PrivatePostgres:
        if self._as_postgres:
            shutil.chown(self.dir, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        hba = ["local all all trust", "host all all 127.0.0.1/32 trust"]
        hba += [f"host all all {ip.rsplit('.', 1)[0]}.0/24 trust" for ip in self.listen[1:]]
        (self.data / "pg_hba.conf").write_text("\n".join(hba) + "\n", encoding="utf-8")
        settings = {
            "listen_addresses": "'" + ",".join(self.listen) + "'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
            "max_connections": "100",
            # A peer gone silent is dropped in about three seconds: its advisory locks go with it.
            "tcp_keepalives_idle": "1", "tcp_keepalives_interval": "1", "tcp_keepalives_count": "2",
            "tcp_user_timeout": "3000",
        }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("".join(f"{k} = {v}\n" for k, v in settings.items()))
        return self

    def start(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, host: str = "127.0.0.1", database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@{host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import sqlalchemy as sa

        admin = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return name

    def destroy(self) -> None:
        if self.running():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def private_postgres(listen: list[str]) -> Iterator[PrivatePostgres]:
    server = PrivatePostgres(listen)
    try:
        server.init().start()
        yield server
    finally:
        server.destroy()
