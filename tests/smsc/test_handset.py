"""Tests of smsc/handset.py: the mailbox directory behind the SMSC simulator."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smsc.handset import Handset, HandsetDirectory, MailboxDirectory, MtMessage, MtPart
from smsc.pdu import SubmitSm
from smsc.reassembly import Message
from smsc.text import Encoding


def _mt(destination: str, text: str = "hi", message_id: str = "1") -> MtMessage:
    pdu = SubmitSm(source_addr="10658888", destination_addr=destination, short_message=b"x")
    message = Message("10658888", destination, 0, 0, 0, text.encode("ascii"), (), 1)
    return MtMessage(message, (MtPart(message_id, "esme", pdu, destination, 1.0),), 2.0)


def test_mailbox_is_a_handset_and_directory_a_handset_directory() -> None:
    """MailboxDirectory satisfies the HandsetDirectory protocol and its mailboxes Handset."""
    directory: HandsetDirectory = MailboxDirectory(retention=3)
    handset: Handset | None = directory.handset("8613800000001")
    assert handset is not None
    assert handset.deliver(_mt("8613800000001")) is True


def test_cursor_numbers_messages_globally_and_after_filters() -> None:
    """Each stored message gets the next global cursor; messages(after=c) returns newer ones."""
    directory = MailboxDirectory(retention=10)
    a, b = "8613800000001", "8613800000002"
    directory.handset(a).deliver(_mt(a, "one"))
    directory.handset(b).deliver(_mt(b, "two"))
    directory.handset(a).deliver(_mt(a, "three"))
    assert directory.cursor == 3
    assert [m.cursor for m in directory.messages(a)] == [1, 3]
    assert [m.cursor for m in directory.messages(a, after=1)] == [3]
    assert directory.messages(a, after=3) == []
    assert [m.message.text() for m in directory.messages(b, after=0)] == ["two"]


def test_retention_keeps_the_newest_per_mailbox() -> None:
    """A mailbox holds at most ``retention`` messages; the oldest fall off first."""
    directory = MailboxDirectory(retention=2)
    box = directory.handset("1")
    for i in range(5):
        box.deliver(_mt("1", f"m{i}"))
    assert [m.message.text() for m in directory.messages("1")] == ["m3", "m4"]
    assert [m.cursor for m in directory.messages("1", after=3)] == [4, 5]


def test_mailboxes_are_lru_bounded() -> None:
    """Beyond max_mailboxes the least recently used mailbox is dropped with its messages."""
    directory = MailboxDirectory(retention=5, max_mailboxes=2)
    directory.handset("a").deliver(_mt("a"))
    directory.handset("b").deliver(_mt("b"))
    directory.handset("a").deliver(_mt("a"))  # "a" is now the most recently used
    directory.handset("c").deliver(_mt("c"))
    assert directory.mailbox("b") is None
    assert len(directory.messages("a")) == 2
    assert len(directory) == 2
    assert directory.evicted_mailboxes == 1


def test_total_messages_are_bounded_oldest_first() -> None:
    """max_messages caps the messages held in all mailboxes together, globally oldest first."""
    directory = MailboxDirectory(retention=100, max_mailboxes=100, max_messages=3)
    for i in range(6):
        directory.handset(str(i % 2)).deliver(_mt(str(i % 2), f"m{i}"))
    assert directory.stored == 3
    kept = sorted(m.cursor for msisdn in ("0", "1") for m in directory.messages(msisdn, after=0))
    assert kept == [4, 5, 6]
    assert directory.evicted_messages == 3


def test_query_does_not_create_mailboxes() -> None:
    """Asking for an unknown MSISDN's messages returns [] and creates nothing."""
    directory = MailboxDirectory()
    assert directory.messages("8613899999999") == []
    assert directory.mailbox("8613899999999") is None
    assert len(directory) == 0


def test_mt_message_exposes_content() -> None:
    """MtMessage forwards source, destination, payload and text of the reassembled message."""
    message = _mt("8613800000001", "hello")
    assert message.source == "10658888"
    assert message.destination == "8613800000001"
    assert message.payload == b"hello"
    assert message.text(default=Encoding.GSM7) == "hello"


def test_bounds_must_be_positive() -> None:
    """A directory cannot be built with a zero bound."""
    with pytest.raises(ValueError, match="must be > 0"):
        MailboxDirectory(retention=0)


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(st.integers(min_value=0, max_value=7), max_size=80),
    retention=st.integers(min_value=1, max_value=5),
    max_mailboxes=st.integers(min_value=1, max_value=4),
    max_messages=st.integers(min_value=1, max_value=12),
)
def test_bounds_and_cursor_order_hold_for_any_sequence(
    ops: list[int], retention: int, max_mailboxes: int, max_messages: int
) -> None:
    """For any delivery sequence: every bound holds, each mailbox is in cursor order, and
    what it holds is exactly the newest deliveries to it that no bound evicted."""
    directory = MailboxDirectory(
        retention=retention, max_mailboxes=max_mailboxes, max_messages=max_messages
    )
    for cursor, target in enumerate(ops, start=1):
        directory.handset(str(target)).deliver(_mt(str(target), f"c{cursor}"))
        assert directory.cursor == cursor
    assert len(directory) <= max_mailboxes
    assert directory.stored <= max_messages
    for target in set(ops):
        held = directory.messages(str(target))
        assert len(held) <= retention
        cursors = [m.cursor for m in held]
        assert cursors == sorted(cursors)
        assert all(m.message.text() == f"c{m.cursor}" for m in held)
        assert all(ops[c - 1] == target for c in cursors)
        # the newest cursors of this target survive unless the global bound took them
        if held:
            newest = max(c for c, t in enumerate(ops, start=1) if t == target)
            assert cursors[-1] == newest
