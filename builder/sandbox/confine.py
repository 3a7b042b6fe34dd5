"""What a RUN's command may do once it runs, as `docker build` has it: Docker's default
capabilities (capabilities.py) and seccomp profile (seccomp.py). Prepared once per build in the
parent, where a throwaway child tries it, and applied in each command's process just before it
takes the RUN's user and execs.
"""
from __future__ import annotations

from dataclasses import dataclass

from builder.sandbox import process
from builder.sandbox.capabilities import DockerCapabilities
from builder.sandbox.seccomp import Filter


@dataclass(frozen=True)
class Confinement:
    """`capabilities` None or `seccomp` None: left as the sandbox has them."""

    capabilities: DockerCapabilities | None
    seccomp: Filter | None

    def apply(self) -> None:
        """In the command's process, before it takes the RUN's uid (the filter is installed
        while the process still holds CAP_SYS_ADMIN of its user namespace, and a non-root uid
        then empties the effective and permitted sets, as under Docker)."""
        if self.capabilities is not None:
            self.capabilities.bound()
        if self.seccomp is not None:
            self.seccomp.install()
        if self.capabilities is not None:
            self.capabilities.restrict()


def prepare(seccomp: bool) -> tuple[Confinement, list[str]]:
    """The confinement for this build's RUNs (no filter when `seccomp` is False: `--security-opt
    seccomp=unconfined`), and warnings for what cannot be had here."""
    from builder.sandbox import seccomp as profiles
    warnings = []
    caps: DockerCapabilities | None = DockerCapabilities.for_this_kernel()
    failure = process.attempt(("capabilities", caps.bound), ("capabilities", caps.restrict))
    if failure is not None:
        warnings.append(f"RUN keeps this process's capabilities, not Docker's default set: "
                        f"{failure}")
        caps = None
    if not seccomp:
        return Confinement(caps, None), warnings
    try:
        program: Filter | None = profiles.docker_default()
    except profiles.Unavailable as error:
        warnings.append(f"RUN runs without Docker's default seccomp profile: {error}")
        return Confinement(caps, None), warnings
    failure = process.attempt(("prctl(PR_SET_SECCOMP)", program.install))
    if failure is not None:
        warnings.append(f"RUN runs without Docker's default seccomp profile: {failure}"
                        + (f", {_why_not()}" if "(EACCES)" in failure else ""))
        program = None
    return Confinement(caps, program), warnings


def confinement_record(confinement: Confinement, warnings: list[str]) -> dict:
    """What `prepare` found, as JSON data, to remember between builds (remembered.py)."""
    return {"capabilities": confinement.capabilities is not None,
            "seccomp": confinement.seccomp.program.hex() if confinement.seccomp else None,
            "warnings": warnings}


def confinement_from(record: dict | None) -> tuple[Confinement, list[str]] | None:
    """`prepare`'s answer back from `confinement_record`'s data; None for anything else."""
    if record is None:
        return None
    caps, program, warnings = (record.get("capabilities"), record.get("seccomp"),
                               record.get("warnings"))
    if not isinstance(caps, bool) or not isinstance(warnings, list) \
            or not all(isinstance(w, str) for w in warnings):
        return None
    try:
        seccomp = Filter(bytes.fromhex(program)) if program is not None else None
    except (TypeError, ValueError):
        return None
    if seccomp is not None and (not seccomp.instructions or len(seccomp.program) % 8):
        return None
    return Confinement(DockerCapabilities.for_this_kernel() if caps else None, seccomp), warnings


def _why_not() -> str:
    """Why the kernel refused a filter (EACCES), and what still confines RUN."""
    with open("/proc/self/status") as status:
        filtered = any(line.split() == ["Seccomp:", "2"] for line in status)
    return ("a filter without no_new_privs needs CAP_SYS_ADMIN, which this process lacks; "
            + ("the filter this process runs under (its container's) still applies"
               if filtered else "and this process has no filter of its own"))
