"""db.ids.uuid7: version-7 ids, unique and time-ordered, never repeated across a fork."""

from __future__ import annotations

import os

from db.ids import uuid7


def test_ids_are_version_7_unique_and_ordered_by_time():
    ids = [uuid7() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert all(i.version == 7 and i.variant == "specified in RFC 4122" for i in ids)
    assert [i.int >> 80 for i in ids] == sorted(i.int >> 80 for i in ids)  # millisecond prefix never goes back


def test_a_forked_child_does_not_repeat_the_parents_random_bits():
    uuid7()  # the parent has random bytes buffered
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, uuid7().bytes)
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read_end, 16)
    parent = uuid7().bytes
    assert child[6:] != parent[6:]  # the random part (the first 6 bytes are the millisecond clock)
