"""HTTP_PROXY / HTTPS_PROXY / NO_PROXY: Go's rules (what docker and BuildKit follow) as a table,
and builds whose ADD <url>, push and pull reach hosts only a proxy on 127.0.0.1 can resolve."""
from __future__ import annotations

import ssl
import subprocess
import uuid
from pathlib import Path

import pytest

from layers.proxy import Proxy, ProxyError, proxy_for
from tests.http_support import file_server, proxy_server
from tests.registry_support import Registry, registry, shut_down  # noqa: F401  (a fixture)
from tests.support import image_file, pybuild

P = Proxy("proxy", 3128, None)
NO_EXEMPTIONS = {"NO_PROXY": "", "no_proxy": ""}  # whatever the machine's environment says


@pytest.mark.parametrize("scheme, netloc, environ, expected", [
    ("http", "files.example", {"HTTP_PROXY": "proxy:3128"}, P),
    ("http", "files.example", {"http_proxy": "http://proxy:3128"}, P),
    ("http", "files.example", {"HTTP_PROXY": "http://proxy:3128", "http_proxy": "http://x:1"}, P),
    ("https", "files.example", {"HTTP_PROXY": "proxy:3128"}, None),
    ("https", "files.example", {"HTTPS_PROXY": "proxy:3128"}, P),
    ("http", "localhost:8080", {"HTTP_PROXY": "proxy:3128"}, None),
    ("http", "127.0.0.1:8080", {"HTTP_PROXY": "proxy:3128"}, None),
    ("http", "[::1]:8080", {"HTTP_PROXY": "proxy:3128"}, None),
    ("http", "files.example", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "*"}, None),
    ("http", "files.example", {"HTTP_PROXY": "proxy:3128", "no_proxy": "files.example"}, None),
    ("http", "a.files.example", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "files.example"}, None),
    ("http", "files.example", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": ".files.example"}, P),
    ("http", "a.files.example", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": ".files.example"},
     None),
    ("http", "xfiles.example", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "files.example"}, P),
    ("http", "files.example:81", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "files.example:80"},
     P),
    ("http", "files.example", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "other, files.example:80"},
     None),
    ("http", "10.1.2.3", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "10.0.0.0/8"}, None),
    ("http", "11.1.2.3", {"HTTP_PROXY": "proxy:3128", "NO_PROXY": "10.0.0.0/8"}, P),
    ("http", "files.example", {"HTTP_PROXY": "http://u%40x:p@proxy:3128"},
     Proxy("proxy", 3128, "Basic dUB4OnA=")),
])
def test_which_proxy(scheme: str, netloc: str, environ: dict, expected: Proxy | None) -> None:
    assert proxy_for(scheme, netloc, environ) == expected


@pytest.mark.parametrize("setting, message", [
    ("socks5://proxy:1080", "only http:// proxies"), ("http://proxy:port", "not a valid port"),
])
def test_proxies_pybuild_cannot_use(setting: str, message: str) -> None:
    with pytest.raises(ProxyError, match=message):
        proxy_for("http", "files.example", {"HTTP_PROXY": setting})


@pytest.fixture
def proxy():
    server = proxy_server()
    yield f"http://127.0.0.1:{server.server_address[1]}", server
    shut_down(server)


def test_add_url_goes_through_the_proxy_unless_no_proxy(tmp_path: Path, proxy) -> None:
    address, server = proxy
    files, served = file_server({"/hello.txt": b"via the proxy\n"})
    try:
        url = f"http://files.invalid:{files.server_address[1]}/hello.txt"
        context = tmp_path / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM scratch\nADD {url} /\n")
        args = ("--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "out.tar"),
                str(context))
        built = pybuild(*args, env={"HTTP_PROXY": "", "http_proxy": address, **NO_EXEMPTIONS})
        assert built.returncode == 0, built.stderr
        assert server.forwarded == ["GET files.invalid/hello.txt"]
        refused = pybuild("--no-cache", *args, env={"HTTP_PROXY": address,
                                                    "NO_PROXY": "example.com,files.invalid"})
        assert refused.returncode == 1 and "Dockerfile:2" in refused.stderr
        assert len(server.forwarded) == 1  # not asked: the name resolves nowhere else
    finally:
        shut_down(files)


def test_push_and_pull_go_through_the_proxy(tmp_path: Path, proxy,
                                            registry: Registry) -> None:  # noqa: F811
    address, server = proxy
    name = f"registry.invalid:{registry.port}"
    image = f"{name}/proxied-{uuid.uuid4().hex[:8]}:1"
    context = tmp_path / "context"
    context.mkdir()
    (context / "file").write_text("pushed through a proxy\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY file /\n")
    env = {"HTTP_PROXY": address, "PYBUILD_CACHE_DIR": str(tmp_path / "cache"), **NO_EXEMPTIONS}
    pushed = pybuild("--insecure-registry", name, "--push", "-t", image, str(context), env=env)
    assert pushed.returncode == 0, pushed.stderr
    assert any(line.startswith("PUT registry.invalid/v2/") for line in server.forwarded)
    (context / "Dockerfile").write_text(f"FROM {image}\n")
    pulled = pybuild("--insecure-registry", name, "-o", str(tmp_path / "out.tar"), str(context),
                     env={**env, "PYBUILD_CACHE_DIR": str(tmp_path / "other-cache")})
    assert pulled.returncode == 0, pulled.stderr
    assert any(line.startswith("GET registry.invalid/v2/") and "/blobs/" in line
               for line in server.forwarded)
    exempt = pybuild("--insecure-registry", name, "--push", "-t", image, str(context),
                     env={**env, "NO_PROXY": "registry.invalid"})
    assert exempt.returncode != 0 and "registry.invalid" in exempt.stderr


def test_https_goes_through_a_connect_tunnel(tmp_path: Path, proxy) -> None:
    """An https:// origin is reached through CONNECT, its certificate checked for its own name
    (trusted here through SSL_CERT_FILE, which OpenSSL's default paths honour)."""
    address, server = proxy
    certificate, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=files.invalid", "-addext", "subjectAltName=DNS:files.invalid",
                    "-keyout", str(key), "-out", str(certificate)], check=True,
                   capture_output=True)
    files, _ = file_server({"/hello.txt": b"over TLS\n"})
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certificate, key)
    files.socket = tls.wrap_socket(files.socket, server_side=True)
    try:
        url = f"https://files.invalid:{files.server_address[1]}/hello.txt"
        context = tmp_path / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM scratch\nADD {url} /\n")
        built = pybuild("--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "out.tar"),
                        str(context), env={"HTTPS_PROXY": address, **NO_EXEMPTIONS,
                                           "SSL_CERT_FILE": str(certificate)})
        assert built.returncode == 0, built.stderr
        assert server.forwarded == ["CONNECT files.invalid"]
        assert image_file(tmp_path / "out.tar", "hello.txt") == b"over TLS\n"
    finally:
        shut_down(files)
