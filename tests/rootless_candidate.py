"""The differential harness's candidate command for rootless builds: run as root by the harness,
it runs pybuild as the test's unprivileged user. The user cannot read the harness's work tree,
so the context (with `cp -a`: modes, times and hardlinks kept) and the Dockerfile are copied
into a job directory the user owns (its modes put back after the chown), and the tarball is
copied back to where the harness wants it.

    rootless_candidate.py USER WORK PYTHON CACHE -f DOCKERFILE -o OUT [pybuild options] CONTEXT
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import uuid


def main(argv: list[str]) -> int:
    user, work, python, cache, *args = argv
    *options, context = args
    job = os.path.join(work, "jobs", uuid.uuid4().hex)
    os.makedirs(job)
    try:
        subprocess.run(["cp", "-a", context, os.path.join(job, "context")], check=True)
        dockerfile_at = options.index("-f") + 1
        shutil.copy2(options[dockerfile_at], os.path.join(job, "Dockerfile"))
        options[dockerfile_at] = os.path.join(job, "Dockerfile")
        options = ["--secret=" + _secret_copied(option[len("--secret="):], job)
                   if option.startswith("--secret=") else option for option in options]
        out_at = options.index("-o") + 1
        out = options[out_at]
        options[out_at] = os.path.join(job, "image.tar")
        subprocess.run(["chown", "-R", f"{user}:{user}", job], check=True)
        _restore_modes(context, os.path.join(job, "context"))
        env = [f"HOME={work}/home", f"PYTHONPATH={work}/lib", f"PYBUILD_CACHE_DIR={cache}"]
        done = subprocess.run(["runuser", "-u", user, "--", "env", *env, python, "-m",
                               "builder.cli", "--isolation", "rootless", *options,
                               os.path.join(job, "context")], cwd=job)
        if done.returncode == 0:
            shutil.copyfile(os.path.join(job, "image.tar"), out)
        return done.returncode
    finally:
        shutil.rmtree(job, ignore_errors=True)


def _secret_copied(spec: str, job: str) -> str:
    """A `--secret=id=ID,src=PATH` whose file is copied into the job (the user cannot read the
    harness's tree, so pybuild would find the secret missing)."""
    fields = dict(item.split("=", 1) for item in spec.split(",") if "=" in item)
    if "src" not in fields:
        return spec
    copy = os.path.join(job, f"secret-{fields['id']}")
    shutil.copyfile(fields["src"], copy)
    return ",".join(f"{key}={copy if key == 'src' else value}" for key, value in fields.items())


def _restore_modes(source: str, copy: str) -> None:
    """chown clears set-user-ID and set-group-ID bits: put the context's modes back."""
    for directory, dirs, files in os.walk(source):
        for name in (*dirs, *files):
            path = os.path.join(directory, name)
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(os.path.join(copy, os.path.relpath(path, source)), stat.S_IMODE(st.st_mode))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
