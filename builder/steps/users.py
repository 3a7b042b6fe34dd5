"""User and group names resolved through the image's own /etc/passwd and /etc/group.

`COPY --chown=app:staff` and (later) `USER app` mean what the image says, never the host.
"""
from __future__ import annotations

import stat
from dataclasses import dataclass

from builder.sources.tree import Tree, resolve


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


class UnknownUser(LookupError):
    """A name the image's passwd or group file does not list (or the file is missing)."""


def _read(tree: Tree, path: str) -> list[list[str]]:
    """The entries of the image's passwd or group file. pybuild reads it on the host, as root:
    anything but a regular file (a device node of the image, which could be the host's disk or
    a tty) counts as missing and is never opened."""
    found = resolve(tree, path, confined=False)
    if found is None or not stat.S_ISREG(found.st.st_mode):
        return []
    with open(found.host, encoding="utf-8", errors="replace") as handle:
        return [line.rstrip("\n").split(":") for line in handle if line.strip() and not line.startswith("#")]


def resolve_owner(spec: str, tree: Tree) -> Owner:
    """`user`, `uid`, `user:group`, `uid:gid` as Docker's --chown reads them: a user alone gets its
    primary group from passwd (a bare uid gets gid = uid); an unknown group name falls back to the
    user's primary group, as BuildKit does."""
    user, has_group, group = spec.partition(":")
    if user.isdigit():
        uid = int(user)
        primary = uid
    else:
        passwd = _read(tree, "etc/passwd")
        row = next((r for r in passwd if r[0] == user and len(r) > 3), None)
        if row is None:
            raise UnknownUser(f"unable to find user {user}: no matching entries in passwd file")
        uid, primary = int(row[2]), int(row[3])
    if not has_group or not group:
        return Owner(uid, primary)
    if group.isdigit():
        return Owner(uid, int(group))
    groups = _read(tree, "etc/group")
    row = next((r for r in groups if r[0] == group and len(r) > 2), None)
    return Owner(uid, int(row[2]) if row is not None else primary)


@dataclass(frozen=True)
class RunUser:
    """Who a RUN command runs as."""

    uid: int
    gid: int
    home: str
    groups: tuple[int, ...] = ()


def resolve_run_user(spec: str, tree: Tree) -> RunUser:
    """USER as BuildKit's RUN reads it: a name must be in the image's passwd; a bare uid not
    listed there runs with gid 0 (not gid = uid, unlike --chown); `:group` by name or number.
    Supplementary groups are the user's memberships in /etc/group (the primary gid not added),
    and none at all when a group is given explicitly."""
    user, has_group, group = (spec or "0").partition(":")
    passwd = _read(tree, "etc/passwd")
    if user.isdigit():
        row = next((r for r in passwd if len(r) > 5 and r[2] == user), None)
    else:
        row = next((r for r in passwd if len(r) > 5 and r[0] == user), None)
        if row is None:
            raise UnknownUser(f"unable to find user {user}: no matching entries in passwd file")
    uid = int(user) if user.isdigit() else int(row[2])
    gid = int(row[3]) if row is not None else 0
    home = row[5] if row is not None and row[5] else "/"
    if has_group and group:
        if group.isdigit():
            gid = int(group)
        else:
            found = next((r for r in _read(tree, "etc/group") if len(r) > 2 and r[0] == group), None)
            if found is None:
                raise UnknownUser(f"unable to find group {group}: no matching entries in group file")
            gid = int(found[2])
        return RunUser(uid, gid, home)
    name = row[0] if row is not None else None
    groups = tuple(sorted({int(r[2]) for r in _read(tree, "etc/group")
                           if name and len(r) > 3 and r[2].isdigit() and name in r[3].split(",")}))
    return RunUser(uid, gid, home, groups)
