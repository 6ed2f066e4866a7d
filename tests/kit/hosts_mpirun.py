"""`mpirun` for tests: several "hosts" on this one machine, each rank on a host but the launcher's seeing
another filesystem, as the ranks on a multi-node TrainJob's node pods do.

It accepts the command line `kubevolve.sdk.training.launcher.launch_command` builds for mpirun (`-n N
--hostfile F --map-by ppr:G:node -x NAME[=VALUE]... PROGRAM ARGS...`) and, like OpenMPI, places ranks G per
host in the hostfile's order and gives each its place in OMPI_COMM_WORLD_RANK, _SIZE and _LOCAL_RANK.
The host named by HOSTS_MPIRUN_HOME (Trainer's launcher, last in its hostfile) runs its ranks as this
process's children, in this environment and working directory. Every other host's ranks run in bubblewrap
with a fresh /tmp and HOSTS_MPIRUN_HIDE (the launcher's folders) hidden under empty tmpfs mounts, in `/`,
with only the `-x` variables (and a plain PATH), as sshd would start them; each first checks that it cannot
see anything in the hidden folders. Sharing the network (127.0.0.1) is all they keep of this host.
A rank that fails ends the others, as mpirun does. HOSTS_MPIRUN_PORT replaces the exported MASTER_PORT: a shared test machine cannot promise 29500 is free.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from kubevolve.sdk.training.launcher import read_hostfile

# before the rank starts: each hidden folder is empty (arguments: the folders, --, the rank's command)
CHECK = 'while [ "$1" != -- ]; do [ -z "$(ls -A "$1")" ] || { echo "sees $1" >&2; exit 97; }; shift; done'


def parse(argv: list[str]) -> tuple[int, str, int, dict[str, str], list[str]]:
    n, hostfile, per_host, exported = 0, "", 1, {}
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        flag, value = argv[i], argv[i + 1]
        if flag == "-n":
            n = int(value)
        elif flag == "--hostfile":
            hostfile = value
        elif flag == "--map-by":
            per_host = int(value.split(":")[1])
        elif flag == "-x":
            name, _, given = value.partition("=")
            exported[name] = given if "=" in value else os.environ.get(name, "")
        else:
            raise SystemExit(f"hosts_mpirun: unexpected option {flag}")
        i += 2
    return n, hostfile, per_host, exported, argv[i:]


def main(argv: list[str]) -> int:
    n, hostfile, per_host, exported, command = parse(argv)
    if os.environ.get("HOSTS_MPIRUN_PORT"):
        exported["MASTER_PORT"] = os.environ["HOSTS_MPIRUN_PORT"]
    hosts, home = read_hostfile(hostfile), os.environ["HOSTS_MPIRUN_HOME"]
    hidden = [d for d in os.environ.get("HOSTS_MPIRUN_HIDE", "").split(os.pathsep) if d]
    procs = []
    for rank in range(n):
        host, local = hosts[rank // per_host], rank % per_host
        place = {"OMPI_COMM_WORLD_RANK": str(rank), "OMPI_COMM_WORLD_SIZE": str(n)}
        place["OMPI_COMM_WORLD_LOCAL_RANK"] = str(local)
        if host == home:
            procs.append(subprocess.Popen(command, env={**os.environ, **exported, **place}))
            continue
        env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", **exported, **place}
        wrap = ["bwrap", "--dev-bind", "/", "/", "--tmpfs", "/tmp", "--die-with-parent", "--chdir", "/"]
        for folder in hidden:
            wrap += ["--tmpfs", folder]
        check = ["sh", "-c", CHECK + '; shift; exec "$@"', "sh", *hidden, "--", *command]
        procs.append(subprocess.Popen(wrap + check, env=env))
    while any(p.poll() is None for p in procs):  # like mpirun: a rank that fails ends the others
        if any(p.returncode for p in procs):
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.1)
    return max(abs(p.returncode) for p in procs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
