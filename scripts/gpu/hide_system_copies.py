"""Inside a private mount namespace only: hides this machine's own copy of
every file an unpacked prefix ships, so that a build and a run can only find
the prefix's, as on a machine that never had these packages. A directory all
of whose entries the prefix ships becomes an empty tmpfs (absent, in effect);
a file in a shared directory (/usr/include, /usr/lib/...) is covered by a stub
that fails loudly if used: a header that #errors, a script that exits 127, a
library that is not ELF, a CMake file that stops CMake.

    VLM_OUTER_MOUNT_NS=$(readlink /proc/self/ns/mnt) unshare -m python3 scripts/gpu/hide_system_copies.py PREFIX
"""
import os
import subprocess
import sys
import tempfile

SKIP = ("usr/share/doc", "usr/share/man", "usr/share/lintian", "usr/src")


def entries(root):
    """Every file, link and folder under root, as paths relative to it."""
    found = set()
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(here, name), root))
    return found


def stub_text(path):
    if path.endswith((".h", ".hh", ".hpp", ".inc")) or "/include/" in path:
        return f"#error hidden by hide_system_copies.py: {path}\n", 0o644
    if path.endswith(".cmake"):
        return f'message(FATAL_ERROR "hidden by hide_system_copies.py: {path}")\n', 0o644
    if os.access(path, os.X_OK) and ".so" not in os.path.basename(path):
        return f"#!/bin/sh\necho 'hidden by hide_system_copies.py: {path}' >&2\nexit 127\n", 0o755
    return f"hidden by hide_system_copies.py: {path}\n", 0o644


def mount(*args):
    subprocess.run(["mount", *args], check=True)


def main():
    prefix = os.path.realpath(sys.argv[1])
    # The caller records its namespace before unshare (/proc/1 may be unreadable in a container).
    outer = os.environ.get("VLM_OUTER_MOUNT_NS", "")
    if not outer or os.readlink("/proc/self/ns/mnt") == outer:
        sys.exit("hide_system_copies: refusing: not in a private mount namespace "
                 "(run under unshare -m with VLM_OUTER_MOUNT_NS=<readlink /proc/self/ns/mnt before it>)")
    stubs = tempfile.mkdtemp(prefix="hidden-stubs-")
    dirs_hidden = files_hidden = 0

    def visit(rel):
        nonlocal dirs_hidden, files_hidden
        mine, system = os.path.join(prefix, rel), "/" + rel
        if rel.startswith(SKIP) or not os.path.lexists(system):
            return
        if os.path.islink(mine) and not os.path.realpath(mine).startswith(prefix + "/"):
            return  # e.g. libz.so -> the machine's libz.so.1: nothing of ours to hide
        if os.path.isdir(mine) and not os.path.islink(mine):
            if not os.path.isdir(system):
                sys.exit(f"hide_system_copies: {system} is not a folder, {mine} is")
            # The cheap test first: /usr and its like fail it at once.
            if (not os.path.islink(system) and set(os.listdir(system)) <= set(os.listdir(mine))
                    and entries(system) <= entries(mine)):
                mount("-t", "tmpfs", "-o", "ro,size=4k", "hidden", system)
                dirs_hidden += 1
                return
            for name in sorted(os.listdir(mine)):
                visit(os.path.join(rel, name))
            return
        target = os.path.realpath(system)  # a bind mount lands on the link's target
        if os.path.isdir(target) or not os.path.exists(target):
            return  # a link to a folder (visited under its own name) or into one hidden already
        if not os.path.lexists(os.path.join(prefix, target.lstrip("/"))) and target != system:
            return  # the link leads to a file the prefix does not ship (libcurl.so.4)
        text, mode = stub_text(target)
        stub = os.path.join(stubs, str(files_hidden))
        with open(stub, "w") as f:
            f.write(text)
        os.chmod(stub, mode)
        mount("--bind", "-o", "ro", stub, target)
        files_hidden += 1

    for name in sorted(os.listdir(prefix)):
        if os.path.isdir(os.path.join(prefix, name)):
            visit(name)
    print(f"hide_system_copies: hid {dirs_hidden} folders and {files_hidden} files of the system's own copies")


if __name__ == "__main__":
    main()
