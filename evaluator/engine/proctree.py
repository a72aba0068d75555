"""The process tree of a sandboxed child, read from /proc: who belongs to it, how much
memory it holds, and killing all of it (grandchildren that left the group included).

Stdlib only, like engine.sandbox: the worker's main process uses it.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Proc:
    ppid: int
    pgrp: int
    start: int  # start time in clock ticks: tells a reused pid from the one we saw
    rss: int  # bytes


def scan() -> dict[int, Proc]:
    table: dict[int, Proc] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue  # exited meanwhile
        # comm (field 2) may contain spaces and parentheses: split after the last ')'.
        fields = raw[raw.rfind(b")") + 2 :].split()
        table[int(name)] = Proc(
            ppid=int(fields[1]), pgrp=int(fields[2]), start=int(fields[19]),
            rss=int(fields[21]) * _PAGE,
        )
    return table


def tree(table: dict[int, Proc], root: int, seen: dict[int, int]) -> set[int]:
    """The root, its process group, its descendants and anything seen in an earlier scan
    (matched by start time), so a process that left the group is still counted."""
    members = {pid for pid, p in table.items() if p.pgrp == root}
    members |= {pid for pid, t0 in seen.items() if pid in table and table[pid].start == t0}
    if root in table:
        members.add(root)
    children: dict[int, list[int]] = {}
    for pid, p in table.items():
        children.setdefault(p.ppid, []).append(pid)
    stack = list(members)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in members:
                members.add(child)
                stack.append(child)
    return members


def kill_tree(root: int, seen: dict[int, int]) -> None:
    # The root is still unreaped here (zombie at worst), so its pgid cannot be reused.
    try:
        os.killpg(root, signal.SIGKILL)
    except OSError:
        pass
    for pid in tree(scan(), root, seen):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
