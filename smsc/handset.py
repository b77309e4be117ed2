"""Handsets behind the SMSC simulator: where mobile-terminated messages end up.

The simulator (:mod:`smsc.simulator`) accepts submit_sm / data_sm / submit_multi (SMPP 3.4
§4.4, §4.7, §4.5), reassembles long messages like a real SMSC does (3GPP TS 23.040
§9.2.3.24.1 UDH concatenation, SMPP 3.4 §5.3.2.22-24 sar_* TLVs, §5.3.2.32 message_payload)
and hands each whole message to the handset of its destination MSISDN through the small
interface below. The virtual phones of a later issue implement :class:`Handset` and
:class:`HandsetDirectory`; ``smsc/`` never imports them.

The default directory, :class:`MailboxDirectory`, keeps a mailbox per MSISDN for the control
API (``GET /mt``). Everything in it is bounded: messages per mailbox (``retention``), the
number of mailboxes (least recently used evicted first) and the messages stored in total, so
memory stays flat under millions of messages to millions of destinations. A global cursor
(a monotonic int) numbers every stored message, so a poller asks for ``after=CURSOR``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Protocol

from smsc.pdu import DataSm, SubmitMulti, SubmitSm
from smsc.reassembly import Message
from smsc.text import Encoding

__all__ = [
    "Handset",
    "HandsetDirectory",
    "Mailbox",
    "MailboxDirectory",
    "MtMessage",
    "MtPart",
    "StoredMessage",
]


@dataclass(frozen=True, slots=True)
class MtPart:
    """One MT PDU as the SMSC accepted it (one part of a possibly long message).

    ``pdu`` is the submit_sm, data_sm or submit_multi as decoded (its fields are the
    "PDU fields" the control API shows); ``destination`` is the handset address this part
    was routed to (for submit_multi, one of its destinations).
    """

    message_id: str
    system_id: str
    pdu: SubmitSm | DataSm | SubmitMulti
    destination: str
    received_at: float


@dataclass(frozen=True, slots=True)
class MtMessage:
    """A whole MT message handed to a handset: reassembled content plus the parts it came in."""

    message: Message
    parts: tuple[MtPart, ...]
    delivered_at: float

    @property
    def source(self) -> str:
        """The originator address (the ESME's source_addr)."""
        return self.message.source

    @property
    def destination(self) -> str:
        """The handset MSISDN."""
        return self.message.destination

    @property
    def payload(self) -> bytes:
        """User data of the whole message, without UDH."""
        return self.message.payload

    def text(self, *, default: Encoding = Encoding.GSM7) -> str:
        """The payload decoded per data_coding (``default`` says what 0x00 means)."""
        return self.message.text(default=default)


class Handset(Protocol):
    """A handset that MT messages are delivered to."""

    def deliver(self, message: MtMessage) -> bool:
        """Take one whole message; True when delivered, False when undeliverable."""
        ...


class HandsetDirectory(Protocol):
    """Finds the handset of an MSISDN."""

    def handset(self, msisdn: str) -> Handset | None:
        """The handset reachable at ``msisdn``, or None (the message is undeliverable)."""
        ...


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message in a mailbox, numbered by the directory's global cursor."""

    cursor: int
    message: MtMessage


class Mailbox:
    """The mailbox of one MSISDN: the most recent ``retention`` messages, oldest first."""

    __slots__ = ("_directory", "_entries", "msisdn")

    def __init__(self, directory: MailboxDirectory, msisdn: str, retention: int) -> None:
        self._directory = directory
        self.msisdn = msisdn
        self._entries: deque[StoredMessage] = deque(maxlen=retention)

    def deliver(self, message: MtMessage) -> bool:
        """Store ``message``; a mailbox always accepts (it is a handset that is on)."""
        self._directory._store(self, message)
        return True

    def messages(self, after: int = 0) -> list[StoredMessage]:
        """Stored messages with a cursor greater than ``after``, oldest first."""
        entries = self._entries
        if not entries or entries[-1].cursor <= after:
            return []
        if entries[0].cursor > after:
            return list(entries)
        newer: list[StoredMessage] = []
        for entry in reversed(entries):
            if entry.cursor <= after:
                break
            newer.append(entry)
        newer.reverse()
        return newer

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Mailbox({self.msisdn!r}, {len(self._entries)} messages)"


class MailboxDirectory:
    """The default :class:`HandsetDirectory`: every MSISDN has a mailbox that accepts all.

    Bounds: ``retention`` messages per mailbox (older ones fall off), ``max_mailboxes``
    mailboxes (the least recently used is dropped with its messages) and ``max_messages``
    stored in total (the globally oldest message falls off first).
    """

    def __init__(
        self, retention: int = 1000, *, max_mailboxes: int = 10_000, max_messages: int = 20_000
    ) -> None:
        if retention <= 0 or max_mailboxes <= 0 or max_messages <= 0:
            raise ValueError("retention, max_mailboxes and max_messages must be > 0")
        self.retention = retention
        self.max_mailboxes = max_mailboxes
        self.max_messages = max_messages
        self._mailboxes: OrderedDict[str, Mailbox] = OrderedDict()
        # One (cursor, mailbox) per stored message, globally oldest first: the total bound.
        self._order: deque[tuple[int, Mailbox]] = deque()
        self._cursor = 0
        self.evicted_mailboxes = 0
        self.evicted_messages = 0

    @property
    def cursor(self) -> int:
        """The cursor of the most recently stored message (0 before the first)."""
        return self._cursor

    def handset(self, msisdn: str) -> Mailbox:
        """The mailbox of ``msisdn``, created on first use (and marked recently used)."""
        mailboxes = self._mailboxes
        box = mailboxes.get(msisdn)
        if box is not None:
            mailboxes.move_to_end(msisdn)
            return box
        box = Mailbox(self, msisdn, self.retention)
        mailboxes[msisdn] = box
        if len(mailboxes) > self.max_mailboxes:
            mailboxes.popitem(last=False)
            self.evicted_mailboxes += 1
        return box

    def mailbox(self, msisdn: str) -> Mailbox | None:
        """The mailbox of ``msisdn`` if it exists (a query never creates one)."""
        return self._mailboxes.get(msisdn)

    def messages(self, msisdn: str, after: int = 0) -> list[StoredMessage]:
        """Messages delivered to ``msisdn`` with a cursor greater than ``after``."""
        box = self._mailboxes.get(msisdn)
        return [] if box is None else box.messages(after)

    def __len__(self) -> int:
        """The number of mailboxes."""
        return len(self._mailboxes)

    @property
    def stored(self) -> int:
        """Messages currently held in all mailboxes."""
        return sum(len(box) for box in self._mailboxes.values())

    def _store(self, box: Mailbox, message: MtMessage) -> None:
        self._cursor = cursor = self._cursor + 1
        box._entries.append(StoredMessage(cursor, message))
        order = self._order
        order.append((cursor, box))
        if len(order) > self.max_messages:
            old_cursor, old_box = order.popleft()
            entries = old_box._entries
            if entries and entries[0].cursor == old_cursor:
                entries.popleft()
                self.evicted_messages += 1
