"""Registry authentication: config.json and credential helpers, htpasswd (Basic) and token
(Bearer) registries, scope escalation, redirects, and secrets that never reach a message or a
log line."""
from __future__ import annotations

import base64
import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from layers.blobstore import BlobStore
from layers.compression import Compression
from layers.image import sha256_digest
from layers.platform import Platform
from layers.reference import Reference
from layers.registry.sessions import session_for
from layers.registry.auth import Challenge, parse_challenge, parse_token, render_scopes
from layers.registry.credentials import Credentials, credentials_for
from layers.registry.errors import RegistryError
from layers.registry.pull import fetch_blob, pull_layers, resolve
from layers.registry.push import push_image
from tests.registry_support import (  # noqa: F401 (fixtures)
    PASSWORD,
    REFRESH_TOKEN,
    USER,
    QuietHandler,
    Registry,
    TokenRequest,
    TokenServer,
    close_sessions,
    htpasswd_auth,
    make_image,
    serve,
    session,
    shut_down,
    signing_key,
    token_registry,
    unique_repository,
    write_docker_config,
)

AMD64 = Platform("linux", "amd64")
ALICE = Credentials(USER, PASSWORD)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def install_helper(bin_dir: Path, suffix: str, known: dict[str, tuple[str, str]]) -> None:
    """A `docker-credential-<suffix>` that answers `get` for the servers in `known`."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    helper = bin_dir / f"docker-credential-{suffix}"
    helper.write_text(f"""#!{sys.executable}
import json, sys
known = {known!r}
server = sys.stdin.read().strip()
if sys.argv[1:] != ["get"] or server not in known:
    print("credentials not found in native keychain")
    sys.exit(1)
user, secret = known[server]
print(json.dumps({{"ServerURL": server, "Username": user, "Secret": secret}}))
""")
    helper.chmod(0o755)


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in (PASSWORD, _b64(f"{USER}:{PASSWORD}"), REFRESH_TOKEN, "Authorization",
                       "Basic ", "Bearer "):
            assert secret not in text


# -- config.json -------------------------------------------------------------------------

_ALICE_AUTH = {"auth": _b64("alice:pw")}


@pytest.mark.parametrize("auths,registry,expected", [
    ({"reg.example:5000": _ALICE_AUTH}, "reg.example:5000", Credentials("alice", "pw")),
    ({"https://reg.example": _ALICE_AUTH}, "reg.example", Credentials("alice", "pw")),
    ({"http://reg.example/v1/": _ALICE_AUTH}, "reg.example", Credentials("alice", "pw")),
    ({"https://index.docker.io/v1/": _ALICE_AUTH}, "docker.io", Credentials("alice", "pw")),
    ({"reg.example": {"username": "bob", "password": "pw2"}}, "reg.example",
     Credentials("bob", "pw2")),
    ({"reg.example": {"auth": _b64("bob:pa:ss")}}, "reg.example", Credentials("bob", "pa:ss")),
    ({"reg.example": {"auth": _b64("alice:pw"), "identitytoken": "refresh"}}, "reg.example",
     Credentials("alice", "", "refresh")),
    ({"https://reg.example": {"auth": _b64("url:x")}, "reg.example": _ALICE_AUTH},
     "reg.example", Credentials("alice", "pw")),
    ({"other.example": _ALICE_AUTH}, "reg.example", None),
    ({"reg.example": _ALICE_AUTH}, "reg.example:5000", None),
    ({"reg.example": {}}, "reg.example", None),
    ({}, "reg.example", None),
], ids=["bare host", "https key", "http key with path", "docker hub legacy key",
        "username and password", "colon in password", "identity token", "bare host first",
        "other host", "port matters", "empty entry", "no auths"])
def test_config_json_lookup(tmp_path, auths, registry, expected):
    write_docker_config(tmp_path, {"auths": auths})
    assert credentials_for(registry, str(tmp_path)) == expected


def test_docker_config_directory_comes_from_the_environment(tmp_path, monkeypatch):
    write_docker_config(tmp_path / "elsewhere", {"auths": {"reg.example": _ALICE_AUTH}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "elsewhere"))
    assert credentials_for("reg.example") == Credentials("alice", "pw")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "missing"))
    assert credentials_for("reg.example") is None


def test_a_broken_config_is_an_error_that_shows_no_content(tmp_path):
    (tmp_path / "config.json").write_text('{"auths": {"reg.example": {"auth": "secret')
    with pytest.raises(RegistryError) as error:
        credentials_for("reg.example", str(tmp_path))
    assert "config.json" in str(error.value) and "secret" not in str(error.value)


def test_credential_helpers_come_before_auths(tmp_path, monkeypatch):
    install_helper(tmp_path / "bin", "test", {"reg.example": ("helper-user", "helper-pw"),
                                              "tok.example": ("<token>", "refresh")})
    install_helper(tmp_path / "bin", "store", {"https://index.docker.io/v1/": ("hub", "pw")})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    write_docker_config(tmp_path, {
        "auths": {"reg.example": _ALICE_AUTH, "fallback.example": _ALICE_AUTH},
        "credHelpers": {"reg.example": "test", "tok.example": "test",
                        "fallback.example": "test"},
        "credsStore": "store"})
    assert credentials_for("reg.example", str(tmp_path)) == Credentials("helper-user",
                                                                        "helper-pw")
    assert credentials_for("tok.example", str(tmp_path)) == Credentials(identity_token="refresh")
    assert credentials_for("fallback.example", str(tmp_path)) == Credentials("alice", "pw")
    assert credentials_for("docker.io", str(tmp_path)) == Credentials("hub", "pw")
    assert credentials_for("unknown.example", str(tmp_path)) is None


def test_a_missing_helper_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    write_docker_config(tmp_path, {"credsStore": "nonexistent"})
    with pytest.raises(RegistryError, match="docker-credential-nonexistent .* not on PATH"):
        credentials_for("reg.example", str(tmp_path))


def test_credentials_hide_their_secrets_in_repr():
    shown = repr(Credentials("alice", PASSWORD, REFRESH_TOKEN))
    assert "alice" in shown
    assert_no_secret(shown)


# -- challenges and token answers ------------------------------------------------------

@pytest.mark.parametrize("header,expected", [
    ('Bearer realm="https://auth.example/token",service="registry.example",'
     'scope="repository:team/app:pull,push"',
     Challenge("bearer", "https://auth.example/token", "registry.example",
               frozenset({("repository:team/app", "pull"), ("repository:team/app", "push")}))),
    ('bearer realm="https://a/t?x=1", service=reg, error="insufficient_scope"',
     Challenge("bearer", "https://a/t?x=1", "reg")),
    ('Bearer realm="https://a/\\"q\\"",service="s"', Challenge("bearer", 'https://a/"q"', "s")),
    ('Basic realm="Registry Realm"', Challenge("basic")),
    ('Basic realm="basic", Bearer realm="https://a/t",service="s"',
     Challenge("bearer", "https://a/t", "s")),
    ("Negotiate abc", None),
    ("", None),
], ids=["docker hub", "unquoted and extra params", "escaped quotes", "basic",
        "bearer preferred", "unknown scheme", "none"])
def test_www_authenticate_challenges(header, expected):
    assert parse_challenge(header) == expected


def test_scopes_render_one_resource_per_parameter():
    scopes = frozenset({("repository:b", "pull"), ("repository:a", "push"),
                        ("repository:a", "pull")})
    assert render_scopes(scopes) == ["repository:a:pull,push", "repository:b:pull"]


@pytest.mark.parametrize("answer,value,lifetime", [
    ({"token": "t", "expires_in": 300}, "t", 300),
    ({"access_token": "a"}, "a", 60),
    ({"token": "t", "access_token": "a", "expires_in": 5}, "t", 60),
])
def test_token_answers(answer, value, lifetime):
    token = parse_token(json.dumps(answer).encode(), now=1000.0)
    assert (token.value, token.expires_at) == (value, 1000.0 + lifetime)


@pytest.mark.parametrize("body, message", [
    (b'{"expires_in": 60}', "no token"),
    (b'["token"]', "not a JSON object"),
    (b"<html>", "not JSON"),
    (b"[" * 100_000, "not JSON"),  # nested past the recursion limit
])
def test_a_token_answer_without_a_token_is_refused(body, message):
    with pytest.raises(ValueError, match=message):
        parse_token(body)


# -- htpasswd (Basic) --------------------------------------------------------------------

@pytest.fixture
def basic_registry(tmp_path) -> Iterator[Registry]:
    server = Registry(htpasswd_auth(tmp_path))
    yield server
    server.stop()


def test_basic_auth_without_credentials_is_a_401_naming_the_reference(basic_registry):
    lines: list[str] = []
    ref = Reference(basic_registry.address, unique_repository(), "1")
    with pytest.raises(RegistryError) as error:
        resolve(session(basic_registry.address, lines), ref, AMD64)
    assert error.value.status == 401
    assert str(error.value) == (
        f"pull {basic_registry.address}/{ref.repository}:1: 401 UNAUTHORIZED authentication "
        f"required (no credentials for {basic_registry.address}: docker login, or an auths "
        "entry in config.json)")
    assert len(lines) == 1  # no second try without anything new to send


def test_basic_auth_with_a_wrong_password_shows_no_password(basic_registry, tmp_path):
    lines: list[str] = []
    wrong = "wr0ng-Pa55word"
    client = session(basic_registry.address, lines, credentials=Credentials(USER, wrong))
    image = make_image(tmp_path, (Compression.GZIP,), salt="wrong")
    ref = Reference(basic_registry.address, unique_repository(), "1")
    with pytest.raises(RegistryError) as error:
        push_image(client, ref, image.config, image.layers)
    message = str(error.value)
    assert message.startswith(f"push {basic_registry.address}/{ref.repository}:1: 401 ")
    assert "were not accepted" in message
    assert wrong not in message + "\n".join(lines) and _b64(f"{USER}:{wrong}") not in message
    assert_no_secret(message, *lines)


def test_basic_auth_from_config_json_auths(basic_registry, tmp_path, monkeypatch):
    config_dir = write_docker_config(tmp_path / "docker", {
        "auths": {basic_registry.address: {"auth": _b64(f"{USER}:{PASSWORD}")}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    lines: list[str] = []
    ref = Reference(basic_registry.address, unique_repository(), "1")
    client = session_for(ref, log=lines.append)
    assert session_for(ref, log=lines.append) is client
    image = make_image(tmp_path, salt="config auths")
    digest = push_image(client, ref, image.config, image.layers)
    resolved = resolve(client, ref, AMD64)
    assert resolved.manifest_digest == digest
    assert pull_layers(client, ref, resolved, BlobStore(str(tmp_path / "store"))) == \
        image.diff_ids
    assert any(" 201" in line for line in lines)
    assert_no_secret(*lines)
    client.close()


def test_basic_auth_from_a_credential_helper_on_path(basic_registry, tmp_path, monkeypatch):
    install_helper(tmp_path / "bin", "test", {basic_registry.address: (USER, PASSWORD)})
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    config_dir = write_docker_config(tmp_path / "docker",
                                     {"credHelpers": {basic_registry.address: "test"}})
    credentials = credentials_for(basic_registry.address, str(config_dir))
    assert credentials == ALICE
    lines: list[str] = []
    client = session(basic_registry.address, lines, credentials=credentials)
    image = make_image(tmp_path, (Compression.ZSTD,), salt="helper")
    ref = Reference(basic_registry.address, unique_repository(), "1")
    push_image(client, ref, image.config, image.layers)
    assert resolve(client, ref, AMD64).config == image.config
    assert_no_secret(*lines)


# -- token (Bearer) --------------------------------------------------------------------

def test_token_auth_anonymous_pull_credentialed_push_and_escalation(token_registry, tmp_path):
    registry, tokens = token_registry
    image = make_image(tmp_path, salt="token")
    repository = unique_repository()
    ref = Reference(registry.address, repository, "1")
    alice_lines: list[str] = []
    alice = session(registry.address, alice_lines, credentials=ALICE)

    with pytest.raises(RegistryError) as missing:
        resolve(alice, ref, AMD64)  # a pull token first: nothing is there yet
    assert missing.value.status == 404
    digest = push_image(alice, ref, image.config, image.layers)
    assert [(r.user, r.scopes) for r in tokens.requests] == [
        (USER, (f"repository:{repository}:pull",)),
        (USER, (f"repository:{repository}:pull,push",))]
    push_image(alice, ref, image.config, image.layers)
    assert len(tokens.requests) == 2  # the escalated token serves pulls and pushes alike
    base = unique_repository("base")
    with pytest.raises(RegistryError):
        resolve(alice, Reference(registry.address, base, "1"), AMD64)
    assert tokens.requests[2].scopes == tuple(sorted((f"repository:{base}:pull",
                                                      f"repository:{repository}:pull,push")))

    anonymous_lines: list[str] = []
    anonymous = session(registry.address, anonymous_lines)
    resolved = resolve(anonymous, ref, AMD64)
    assert resolved.manifest_digest == digest
    assert pull_layers(anonymous, ref, resolved, BlobStore(str(tmp_path / "store"))) == \
        image.diff_ids
    assert tokens.requests[3:] == [TokenRequest("", (f"repository:{repository}:pull",), "GET")]

    other = Reference(registry.address, unique_repository(), "1")
    with pytest.raises(RegistryError) as refused:
        push_image(anonymous, other, image.config, image.layers)
    assert refused.value.status == 401
    assert str(refused.value).startswith(f"push {registry.address}/{other.repository}:1: "
                                         "401 UNAUTHORIZED authentication required (no "
                                         "credentials")
    assert_no_secret(str(refused.value), *alice_lines, *anonymous_lines)
    for token in tokens.issued:
        assert token not in "\n".join([str(refused.value), *alice_lines, *anonymous_lines])


def test_an_identity_token_is_exchanged_through_the_oauth2_post(signing_key, tmp_path):
    tokens = TokenServer(signing_key, field="access_token")
    registry = Registry(tokens.auth_section())
    try:
        client = session(registry.address, credentials=Credentials(identity_token=REFRESH_TOKEN))
        image = make_image(tmp_path, (Compression.GZIP,), salt="identity token")
        ref = Reference(registry.address, unique_repository(), "1")
        push_image(client, ref, image.config, image.layers)
        assert resolve(client, ref, AMD64).config == image.config
        assert tokens.requests and all(r.method == "POST" and r.user == USER
                                       for r in tokens.requests)
    finally:
        registry.stop()
        tokens.stop()


def test_wrong_credentials_at_the_token_server_are_named_without_secrets(token_registry):
    registry, _ = token_registry
    lines: list[str] = []
    client = session(registry.address, lines, credentials=Credentials(USER, "wr0ng"))
    ref = Reference(registry.address, unique_repository(), "1")
    with pytest.raises(RegistryError) as error:
        resolve(client, ref, AMD64)
    message = str(error.value)
    assert message.startswith(f"pull {registry.address}/{ref.repository}:1: token server "
                              "http://127.0.0.1:")
    assert "401 UNAUTHORIZED bad credentials (the credentials were refused)" in message
    assert "wr0ng" not in message + "\n".join(lines)


# -- redirects -------------------------------------------------------------------------

def test_a_redirect_to_another_host_gets_no_authorization():
    data = os.urandom(4096)
    digest = sha256_digest(data)
    alice = "Basic " + _b64(f"{USER}:{PASSWORD}")

    class Storage(QuietHandler):
        def do_GET(self) -> None:
            self.server.authorizations.append(self.headers.get("Authorization"))
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Front(QuietHandler):
        def do_GET(self) -> None:
            authorization = self.headers.get("Authorization")
            self.server.authorizations.append(authorization)
            if authorization != alice:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
            else:
                self.send_response(307)
                self.send_header("Location", f"http://127.0.0.1:{storage.server_port}/{digest}")
            self.send_header("Content-Length", "0")
            self.end_headers()

    storage = serve(Storage, authorizations=[])
    front = serve(Front, authorizations=[])
    address = f"127.0.0.1:{front.server_port}"
    try:
        out = io.BytesIO()
        client = session(address, credentials=ALICE)
        assert fetch_blob(client, Reference(address, "app"), digest, out) == len(data)
        assert out.getvalue() == data
        assert front.authorizations == [None, alice]
        assert storage.authorizations == [None]
    finally:
        close_sessions()
        shut_down(front)
        shut_down(storage)
