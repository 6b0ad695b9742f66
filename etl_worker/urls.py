"""URLs and connection strings as text: the forms a Postgres URL may take, and how any URL or
connection string is shown without its secrets.

`redact_url` is the one way a URL or connection string reaches a message or a log. It
handles URLs of any scheme (the password in the userinfo, secret query parameters), libpq
`key=value` strings (quoted values too), and text it cannot parse: there it hides every
`:...@` userinfo and every secret `key=value` it sees, erring on the side of hiding more.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict

from etl_worker.errors import ConfigError

MASK = "***"

#: Parameter names whose values are secrets: libpq's password and sslpassword, and what
#: other URLs carry (passwd, secret, access_key, token...). Matched anywhere in the name.
_SECRET_NAME = re.compile(r"pass|pwd|secret|token|access_?key|api_?key|credential", re.I)
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
#: A scheme whose '://' is mangled: `postgresql//host`, `postgresql:/host`.
_BROKEN_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*(?::/?|//)(?!/)")
#: libpq's `key = value`: a value is 'quoted' (backslash escapes; unterminated runs to the
#: end), or runs to the next whitespace.
_KEY_VALUE = re.compile(
    r"(?P<key>[A-Za-z_][\w.-]*)(?P<eq>\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*(?:'|$)|\S*)"
)
#: `user:secret@` anywhere (the secret up to the last '@' before whitespace): what is left
#: of a URL's userinfo when the URL does not parse.
_USERINFO = re.compile(r"(?P<user>(?:^|(?<=[\s/\"'(=]))[^\s:/@\"']*):[^\s]*@")

_UNKNOWN_PARAMETER = re.compile(r'invalid (?:connection option|URI query parameter:) "(\w+)"')
#: Postgres URL schemes libpq accepts.
POSTGRES_SCHEMES = ("postgresql", "postgres")
_FORMS = "use postgresql://user:password@host:5432/dbname or host=... dbname=... pairs"


def redact_url(text: str) -> str:
    """`text` (a URL, a libpq connection string, or anything else) with every password and
    secret replaced by '***', for messages and logs."""
    scheme = _SCHEME.match(text)
    if scheme is None:
        return _redact_unparsed(text)
    if ";" in text:  # kombu's failover and sentinel lists: URL;URL
        return ";".join(redact_url(one) for one in text.split(";"))
    return _redact_uri(text, scheme.end())


def _redact_uri(text: str, start: int) -> str:
    rest = text[start:]
    cut = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:cut], rest[cut:]
    if "@" not in authority and "@" in tail:
        # A '/', '?' or '#' in the password ended the authority early, or an '@' sits in
        # the path or query: which part is the password is unclear, so show only the host.
        host = re.split(r"[/?#]", tail.rpartition("@")[2], maxsplit=1)[0]
        return f"{text[:start]}{MASK}@{host}"
    if "@" in authority:
        userinfo, _, hosts = authority.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        authority = f"{user}:{MASK}@{hosts}" if colon else authority
    path, question, query = tail.partition("?")
    if question:
        query, hash_, fragment = query.partition("#")
        query = "&".join(_redact_parameter(p) for p in query.split("&")) + hash_ + fragment
    return f"{text[:start]}{authority}{path}{question}{query}"


def _redact_parameter(parameter: str) -> str:
    name, equals, _ = parameter.partition("=")
    return f"{name}={MASK}" if equals and _SECRET_NAME.search(unquote(name)) else parameter


def _redact_unparsed(text: str) -> str:
    text = _KEY_VALUE.sub(_redact_key_value, text)
    return _USERINFO.sub(lambda m: f"{m['user']}:{MASK}@", text)


def _redact_key_value(match: re.Match[str]) -> str:
    key, equals, value = match["key"], match["eq"], match["value"]
    if _SECRET_NAME.search(key):
        return f"{key}{equals}{MASK}"
    # libpq reads `host= password=x` as the host 'password=x': hide that all the same.
    return f"{key}{equals}{_KEY_VALUE.sub(_redact_key_value, value)}"


def check_database_url(url: str, name: str) -> None:
    """Refuse a database URL libpq would refuse (or misread), before anything connects, in
    one line that never shows its password. Accepts every form libpq accepts: URLs with
    unix socket directories (`postgresql:///db?host=/run/postgresql`), IPv6 hosts, several
    hosts, and `key=value` strings."""
    shown = redact_url(url)
    scheme = _SCHEME.match(url)
    if scheme is not None and scheme["scheme"].lower() not in POSTGRES_SCHEMES:
        kind = scheme["scheme"]
        raise ConfigError(f"{name} ({shown}) is not a Postgres URL ({kind}://) — {_FORMS}")
    if scheme is None and _BROKEN_SCHEME.match(url):
        raise ConfigError(f"{name} ({shown}) lacks '://' after its scheme — {_FORMS}")
    check_userinfo(url, name)
    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:
        # libpq's own message quotes what it could not parse, password and all: name only
        # an unknown parameter from it, and chain nothing (a traceback would print it).
        unknown = _UNKNOWN_PARAMETER.search(str(exc))
        why = f" (libpq knows no parameter {unknown[1]})" if unknown else ""
        # Which word is a password is unclear in what does not parse: show only the host.
        host = re.search(r"\bhost\s*=\s*([^\s']+)", url)
        shown = f"host={host[1]} ..." if host else "..."
        raise ConfigError(
            f"{name} ({shown}) is neither a Postgres URL nor key=value pairs{why} — {_FORMS}"
        ) from None


def check_userinfo(url: str, name: str) -> None:
    """Refuse a URL (of any scheme) whose password would spill into its host, port or path,
    where the client's own errors would quote it: a raw '@' or '/' in the password, or a
    '?' or '#' for clients that read URLs as urllib does (kombu, redis-py). Several URLs
    separated by ';' (kombu's failover and sentinel lists) are checked one by one."""
    if ";" in url:
        for one in url.split(";"):
            check_userinfo(one, name)
        return
    scheme = _SCHEME.match(url)
    if scheme is None:
        return
    rest = url[scheme.end() :]
    if scheme["scheme"].lower() in POSTGRES_SCHEMES:
        # libpq: the userinfo runs to an '@' before the first '/', the hosts to '/' or '?',
        # the database name to '?'.
        at, slash = rest.find("@"), rest.find("/")
        if at >= 0 and (slash < 0 or at < slash):
            rest = rest[at + 1 :]
        hosts = re.split(r"[/?]", rest, maxsplit=1)[0]
        spilled = "@" in hosts or "@" in rest[len(hosts) :].partition("?")[0]
    else:
        # urllib: the userinfo and hosts end at the first '/', '?' or '#'.
        netloc = re.split(r"[/?#]", rest, maxsplit=1)[0]
        hosts = netloc.rpartition("@")[2]
        spilled = netloc.count("@") > 1 or "@" in rest[len(netloc) :]
    if spilled:
        raise ConfigError(
            f"{name} ({redact_url(url)}) has a raw '@', '/', '?' or '#' in its password — "
            "percent-encode them (%40, %2F, %3F, %23)"
        )
    ports = [host.rpartition("]")[2].partition(":")[2] for host in hosts.split(",")]
    if not all(port.isdigit() for port in ports if port):
        # Not shown: what looks like a port may be the start of a password.
        raise ConfigError(
            f"{name} has a port that is not a number — check it; a '/' in a password must "
            "be percent-encoded (%2F)"
        )


#: Broker URL schemes kombu has a transport for, by the broker they reach. Another scheme
#: (http://, a typo) fails in kombu as "No such transport": refused here in one line.
_BROKERS = {
    "redis": "Redis",
    "rediss": "Redis",
    "redis+socket": "Redis",
    "sentinel": "Redis",
    "amqp": "RabbitMQ",
    "amqps": "RabbitMQ",
    "pyamqp": "RabbitMQ",
    "librabbitmq": "RabbitMQ",
}
_BROKER_FORMS = "use redis://host:6379/0 (or amqp://user:password@host:5672/vhost)"


def broker_name(url: str) -> str:
    """The broker a URL reaches, for messages: 'Redis', 'RabbitMQ', or 'the broker'; an
    error about an amqp:// URL must not tell the user to start Redis."""
    scheme = _SCHEME.match(url)
    return _BROKERS.get(scheme["scheme"].lower(), "the broker") if scheme else "the broker"


def check_broker_url(url: str, name: str) -> None:
    """Refuse a broker URL kombu would fail on later with a traceback: a scheme with no
    transport, and a Redis database that is not a number."""
    shown = redact_url(url)
    for one in url.split(";"):
        scheme = _SCHEME.match(one)
        if scheme is None or scheme["scheme"].lower() not in _BROKERS:
            kind = f"{scheme['scheme']}://" if scheme else "no scheme"
            raise ConfigError(f"{name} ({shown}) is not a broker URL ({kind}) — {_BROKER_FORMS}")
        if scheme["scheme"].lower() in ("redis", "rediss"):
            path = re.split(r"[?#]", one[scheme.end() :], maxsplit=1)[0].partition("/")[2]
            if path.strip("/") and not path.strip("/").isdigit():
                raise ConfigError(
                    f"{name} ({shown}) names Redis database {path.strip('/')!r}: a Redis "
                    "database is a number (redis://host:6379/0)"
                )
