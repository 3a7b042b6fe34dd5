"""The packages an image holds, read from its files as syft reads them: the dpkg database
(`var/lib/dpkg/status`, and `status.d/` as distroless images keep it), the apk database, the
rpm database (sqlite: builder/supplychain/rpmdb.py), Python distributions' METADATA/PKG-INFO and
npm's `node_modules/**/package.json`, and the build info of Go executables
(builder/supplychain/gobuildinfo.py). Nothing is run: the files are read from the layer tars, so
a hostile image can only give wrong names, never act."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.parser import HeaderParser
from urllib.parse import quote

from builder.supplychain.gobuildinfo import ELF_MAGIC, go_build_info
from builder.supplychain.rpmdb import rpm_headers
from layers.flatten import FileRegion, file_regions


@dataclass(frozen=True)
class Package:
    kind: str  # deb, apk, rpm, python, npm, go-module: what installed or linked it
    name: str
    version: str
    license: str  # as declared, "" if not
    purl: str
    source: str  # the file it was read from, for the reader


@dataclass(frozen=True)
class _Distro:
    id: str
    version: str

    @property
    def qualifier(self) -> str:
        return f"{self.id}-{self.version}" if self.version else self.id


_DPKG_STATUS = re.compile(r"var/lib/dpkg/status(\.d/[^/]+)?")
_APK = "lib/apk/db/installed"
_RPM = ("var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite")
_PYTHON = re.compile(r".*/(site|dist)-packages/[^/]+\.(dist-info/METADATA|egg-info/PKG-INFO|"
                     r"egg-info)")
_NPM = re.compile(r"(.*/)?node_modules/(@[^/]+/)?[^/@.][^/]*/package\.json")
_OS_RELEASE = ("etc/os-release", "usr/lib/os-release")
_COPYRIGHT = re.compile(r"usr/share/doc/([^/]+)/copyright")
_LICENSE_LINE = re.compile(r"^License:[ \t]*(\S[^\n]*)$", re.MULTILINE)
_DATABASE_LIMIT = 1 << 24  # a hostile image's huge "package database" is not read into memory
_EXECUTABLE = 0o111


def _database(path: str) -> bool:
    return bool(_DPKG_STATUS.fullmatch(path) or path == _APK or path in _RPM
                or _PYTHON.fullmatch(path)
                or _NPM.fullmatch(path) or path in _OS_RELEASE or _COPYRIGHT.fullmatch(path))


def _wanted(path: str, mode: int, size: int) -> bool:
    return _database(path) and size <= _DATABASE_LIMIT or bool(mode & _EXECUTABLE)


def image_packages(layers: Sequence[str]) -> tuple[Package, ...]:
    """Every package the image at `layers` (uncompressed layer tars, lowest first) declares,
    sorted by kind, name and version, each once."""
    files: dict[str, bytes] = {}
    found: set[Package] = set()
    for region in file_regions(layers, _wanted):
        if _database(region.path) and region.size <= _DATABASE_LIMIT:
            files[region.path] = region.read(0, region.size)
        elif region.read(0, len(ELF_MAGIC)) == ELF_MAGIC:
            found.update(_go(region))
    distro = _distro(files)
    licenses = {match[1]: _deb_licenses(files[path]) for path in files
                if (match := _COPYRIGHT.fullmatch(path))}
    for path, data in files.items():
        text = data.decode("utf-8", "replace")
        if _DPKG_STATUS.fullmatch(path) and not path.endswith(".md5sums"):
            found.update(_dpkg(text, path, distro, licenses))
        elif path == _APK:
            found.update(_apk(text, path, distro))
        elif path in _RPM:
            found.update(_rpm(data, path, distro))
        elif _PYTHON.fullmatch(path):
            found.update(_python(text, path))
        elif _NPM.fullmatch(path):
            found.update(_npm(text, path))
    return tuple(sorted(found, key=lambda p: (p.kind, p.name, p.version, p.source)))


def _distro(files: dict[str, bytes]) -> _Distro:
    for path in _OS_RELEASE:
        if path in files:
            fields = dict(_os_release(files[path].decode("utf-8", "replace")))
            return _Distro(fields.get("ID", ""), fields.get("VERSION_ID", ""))
    return _Distro("", "")


def _os_release(text: str) -> Iterable[tuple[str, str]]:
    for line in text.splitlines():
        key, equals, value = line.partition("=")
        if equals:
            yield key.strip(), value.strip().strip("\"'")


def _stanzas(text: str) -> Iterable[dict[str, str]]:
    """RFC 822-style records separated by blank lines (dpkg's status, apk's `K:value`)."""
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        if fields:
            yield fields


def _deb_licenses(copyright: bytes) -> str:
    """The licenses a machine-readable debian/copyright (DEP-5) names, as syft reads them, joined
    into one expression; "" for a free-form file."""
    names = dict.fromkeys(match.strip() for match in _LICENSE_LINE.findall(
        copyright.decode("utf-8", "replace")))
    return " AND ".join(name if " " not in name else f"({name})" for name in names)


def _dpkg(text: str, path: str, distro: _Distro,
          licenses: dict[str, str]) -> Iterable[Package]:
    vendor = distro.id or "debian"
    for fields in _stanzas(text):
        name, version = fields.get("Package", ""), fields.get("Version", "")
        installed = "installed" in fields.get("Status", "install ok installed").split()
        if not name or not version or not installed:
            continue
        qualifiers = [("arch", fields.get("Architecture", ""))]
        if distro.id:
            qualifiers.append(("distro", distro.qualifier))
        yield Package("deb", name, version, licenses.get(name, ""),
                      _purl("deb", vendor, name, version, qualifiers), "/" + path)


def _apk(text: str, path: str, distro: _Distro) -> Iterable[Package]:
    vendor = distro.id or "alpine"
    for fields in _stanzas(text):
        name, version = fields.get("P", ""), fields.get("V", "")
        if name and version:
            qualifiers = [("arch", fields.get("A", ""))]
            if distro.id:
                qualifiers.append(("distro", distro.qualifier))
            yield Package("apk", name, version, fields.get("L", ""),
                          _purl("apk", vendor, name, version, qualifiers), "/" + path)


def _rpm(data: bytes, path: str, distro: _Distro) -> Iterable[Package]:
    for header in rpm_headers(data):
        qualifiers = [("arch", header.arch)]
        if header.epoch is not None:
            qualifiers.append(("epoch", str(header.epoch)))
        if distro.id:
            qualifiers.append(("distro", distro.qualifier))
        yield Package("rpm", header.name, header.version, header.license,
                      _purl("rpm", distro.id, header.name, header.version, qualifiers),
                      "/" + path)


def _python(text: str, path: str) -> Iterable[Package]:
    headers = HeaderParser().parsestr(text.partition("\n\n")[0] + "\n")
    name, version = headers.get("Name", "").strip(), headers.get("Version", "").strip()
    if name and version:
        license = (headers.get("License-Expression") or headers.get("License") or "").strip()
        if license.upper() == "UNKNOWN" or "\n" in license:
            license = ""  # a whole license text, not a name
        normal = re.sub(r"[-_.]+", "-", name).lower()
        yield Package("python", name, version, license, _purl("pypi", "", normal, version, []),
                      "/" + path)


def _npm(text: str, path: str) -> Iterable[Package]:
    try:
        data = json.loads(text)
    except ValueError:
        return
    if not isinstance(data, dict):
        return
    name, version = data.get("name"), data.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return
    license = data.get("license")
    if isinstance(license, dict):
        license = license.get("type")
    scope, _, bare = name.rpartition("/")
    yield Package("npm", name, version, license if isinstance(license, str) else "",
                  _purl("npm", scope, bare, version, []), "/" + path)


def _go(binary: FileRegion) -> Iterable[Package]:
    """The modules a Go executable links, and its standard library, named as syft names them."""
    info = go_build_info(binary)
    if info is None:
        return
    source = "/" + binary.path
    for module in ((info.main,) if info.main else ()) + info.deps:
        if module.version:
            namespace, _, name = module.path.rpartition("/")
            yield Package("go-module", module.path, module.version, "",
                          _purl("golang", namespace, name, module.version, []), source)
    yield Package("go-module", "stdlib", info.go_version, "",
                  _purl("golang", "", "stdlib", info.go_version.removeprefix("go"), []), source)


def _purl(kind: str, namespace: str, name: str, version: str,
          qualifiers: list[tuple[str, str]]) -> str:
    """A package URL (github.com/package-url/purl-spec), percent-encoded as syft writes it."""
    where = "/".join(quote(part, safe=safe) for part, safe in ((namespace, "/"), (name, ""))
                     if part)
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in qualifiers if value)
    return f"pkg:{kind}/{where}@{quote(version, safe='+~:')}" + (f"?{query}" if query else "")
