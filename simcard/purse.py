"""The wallet applet's PBOC e-purse (JR/T 0025 Part 2, EP) on the virtual card.

:class:`Purse` is an :class:`~simcard.apdu_dispatch.ApduHandler` for the card's dispatcher
(``card.register(purse)``): the class ``80`` commands of an electronic purse, computed with
:mod:`ota.pboc` exactly as ``PBOC.md`` describes them (and so as the platform verifies them):

====================================  =====================  ================================
command                               APDU                   answer
====================================  =====================  ================================
INITIALIZE FOR LOAD                   ``80 50 00 02 0B ..``  balance, online counter, key
                                                             version, algorithm, random, MAC1
CREDIT FOR LOAD                       ``80 52 00 00 0B ..``  TAC
INITIALIZE FOR PURCHASE               ``80 50 01 02 0B ..``  balance, offline counter,
                                                             overdraft limit, key version,
                                                             algorithm, random
DEBIT FOR PURCHASE                    ``80 54 01 00 0F ..``  TAC || MAC2
GET BALANCE                           ``80 5C 00 02 04``     balance
GET TRANSACTION PROVE                 ``80 5A 00 TT 02 ..``  MAC || TAC of that transaction
====================================  =====================  ================================

The state machine (all of it lives in :meth:`Purse.handle` and the methods it names):

* INITIALIZE FOR LOAD / PURCHASE open a *session*; the next state-changing purse command
  (INITIALIZE, CREDIT, DEBIT) closes it, whatever its outcome. CREDIT FOR LOAD is accepted only
  in a load session and DEBIT FOR PURCHASE only in a purchase session, else ``6901`` (command
  not accepted, invalid state): a replayed CREDIT, or one after a purchase began, is refused.
  The read-only GET BALANCE and GET TRANSACTION PROVE leave a session open, so the platform
  may ask for the proof of an earlier load in the same OTA script as the next CREDIT. Power
  on and warm reset (:meth:`Purse.reset`) drop the session; nothing else is volatile.
* A wrong MAC2 (CREDIT) or MAC1 (DEBIT) is answered ``9302`` and changes no balance and no
  counter. The purse counts *consecutive* MAC failures (a verified MAC resets the count); at
  ``mac_failure_limit`` (3 by default) it locks the application for good, as a PBOC card locks
  an application permanently (``9303``): every INITIALIZE, CREDIT and DEBIT is then answered
  ``9303``, while GET BALANCE and GET TRANSACTION PROVE still answer, so that the business hall
  can read the balance for a card swap and the platform can settle loads in doubt. There is no
  unlock: the product's card "cannot be recovered".
* A successful load adds the amount and increments the online counter; a successful purchase
  subtracts it and increments the offline counter. A counter at ``FFFF`` refuses the next
  INITIALIZE with ``9402`` (counter at its maximum).
* The balance cap (the product's 1000 CNY, ``cap`` in fen) is enforced by the card as well as
  the platform: an INITIALIZE FOR LOAD whose amount would take the balance above the cap is
  answered ``6985`` (conditions of use not satisfied). The public PBOC status word tables give
  ``9401`` as "insufficient funds" only; none names a status for a load above the maximum
  balance, so we answer the generic ISO/IEC 7816-4 "conditions of use" one and keep ``9401``
  for a purchase above the balance (refused at INITIALIZE FOR PURCHASE).
* Each completed transaction is kept in a bounded log (the last ``log_size``, 10 by default, as
  the PBOC EF 18 cyclic file): its 23-byte record, the MAC (the load's MAC2, or the purchase's
  MAC2) and the TAC. GET TRANSACTION PROVE with P2 the transaction type (``02`` EP load, ``06``
  EP purchase) and the counter as INITIALIZE returned it answers ``MAC || TAC`` of that
  transaction, or ``9406`` (the required MAC is unavailable) when no completed transaction of
  that type and counter is in the log: an INITIALIZE not followed by a good CREDIT, or one
  older than the log holds.
* Other refusals: P1/P2 other than the table's ``6A86`` (ED, P2 ``01``, is not offered; a
  P2 naming no transaction type in GET TRANSACTION PROVE likewise), command data of the wrong
  length ``6700``, a date or time that is not BCD ``6A80``, a key index other than the purse's
  ``9403``.

Deterministic and clock-free: the random of each INITIALIZE comes from the injected
``random.Random`` and the date and time of each transaction from the command.
"""

from __future__ import annotations

import hmac
import random as random_module
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from ota.pboc import (
    INS_CREDIT_FOR_LOAD,
    INS_DEBIT_FOR_PURCHASE,
    INS_GET_BALANCE,
    INS_GET_TRANSACTION_PROVE,
    INS_INITIALIZE,
    MAX_AMOUNT,
    MAX_COUNTER,
    P1_LOAD,
    P1_PURCHASE,
    Balance,
    CreditForLoad,
    CreditForLoadResponse,
    DebitForPurchase,
    DebitForPurchaseResponse,
    InitializeForLoad,
    InitializeForLoadResponse,
    InitializeForPurchase,
    InitializeForPurchaseResponse,
    MalformedPbocData,
    PbocError,
    PbocStatus,
    PurseKeys,
    PurseKind,
    TransactionProve,
    TransactionRecord,
    TransactionType,
    mac1_load,
    mac1_purchase,
    mac2_load,
    mac2_purchase,
    tac_load,
    tac_purchase,
)
from simcard.apdu_dispatch import CardError, ClassGroup, Command, Response, reply

__all__ = ["DEFAULT_CAP", "LOG_SIZE", "MAC_FAILURE_LIMIT", "LogEntry", "Purse", "PurseKeys"]

#: The product's card (e-purse) balance cap: 1000 CNY in fen.
DEFAULT_CAP: Final = 100_000
#: Completed transactions the purse remembers (PBOC EF 18 holds the last 10).
LOG_SIZE: Final = 10
#: Consecutive wrong MACs after which the application locks for good.
MAC_FAILURE_LIMIT: Final = 3

_KIND: Final = PurseKind.EP


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One completed transaction: its record, the balance after it, its MAC and TAC."""

    record: TransactionRecord
    balance_after: int
    mac: bytes
    tac: bytes


@dataclass(frozen=True, slots=True)
class _LoadSession:
    command: InitializeForLoad
    response: InitializeForLoadResponse


@dataclass(frozen=True, slots=True)
class _PurchaseSession:
    command: InitializeForPurchase
    response: InitializeForPurchaseResponse


def _fail(status: PbocStatus, reason: str) -> CardError:
    return CardError(int(status), reason)


def _need_length(command: Command, length: int) -> bytes:
    if len(command.data) != length:
        raise _fail(PbocStatus.WRONG_LENGTH, f"command data is {length} bytes")
    return command.data


class Purse:
    """The PBOC electronic purse of the wallet applet; see the module docstring."""

    __slots__ = (
        "_balance",
        "_cap",
        "_keys",
        "_locked",
        "_log",
        "_mac_failure_limit",
        "_mac_failures",
        "_offline_counter",
        "_online_counter",
        "_rng",
        "_session",
    )

    def __init__(
        self,
        keys: PurseKeys,
        *,
        balance: int = 0,
        online_counter: int = 0,
        offline_counter: int = 0,
        cap: int = DEFAULT_CAP,
        rng: random_module.Random | None = None,
        mac_failure_limit: int = MAC_FAILURE_LIMIT,
        log_size: int = LOG_SIZE,
    ) -> None:
        if not isinstance(keys, PurseKeys):
            raise PbocError("keys must be PurseKeys")
        if not 0 <= cap <= MAX_AMOUNT:
            raise PbocError(f"cap must be 0..{MAX_AMOUNT} fen, got {cap}")
        if not 0 <= balance <= cap:
            raise PbocError(f"balance must be 0..cap ({cap}) fen, got {balance}")
        for name, value in (
            ("online counter", online_counter),
            ("offline counter", offline_counter),
        ):
            if not 0 <= value <= MAX_COUNTER:
                raise PbocError(f"{name} must be 0..{MAX_COUNTER}, got {value}")
        if mac_failure_limit < 1:
            raise PbocError(f"mac_failure_limit must be at least 1, got {mac_failure_limit}")
        if log_size < 1:
            raise PbocError(f"log_size must be at least 1, got {log_size}")
        self._keys = keys
        self._balance = balance
        self._online_counter = online_counter
        self._offline_counter = offline_counter
        self._cap = cap
        self._rng = rng if rng is not None else random_module.Random()
        self._mac_failure_limit = mac_failure_limit
        self._mac_failures = 0
        self._locked = False
        self._log: deque[LogEntry] = deque(maxlen=log_size)
        self._session: _LoadSession | _PurchaseSession | None = None

    def __repr__(self) -> str:
        return (
            f"Purse(balance={self._balance}, online_counter={self._online_counter}, "
            f"offline_counter={self._offline_counter}, cap={self._cap}, locked={self._locked})"
        )

    # -- state, read-only -------------------------------------------------------------------

    @property
    def balance(self) -> int:
        """The balance in fen."""
        return self._balance

    @property
    def online_counter(self) -> int:
        """The online (load) transaction counter: the value the next INITIALIZE FOR LOAD
        returns."""
        return self._online_counter

    @property
    def offline_counter(self) -> int:
        """The offline (purchase) transaction counter."""
        return self._offline_counter

    @property
    def cap(self) -> int:
        """The balance cap in fen."""
        return self._cap

    @property
    def locked(self) -> bool:
        """Whether the application is locked after too many wrong MACs."""
        return self._locked

    @property
    def mac_failures(self) -> int:
        """Consecutive wrong MACs so far."""
        return self._mac_failures

    @property
    def in_session(self) -> bool:
        """Whether an INITIALIZE is waiting for its CREDIT or DEBIT."""
        return self._session is not None

    @property
    def log(self) -> tuple[LogEntry, ...]:
        """The completed transactions kept, newest first."""
        return tuple(self._log)

    def records(self) -> tuple[TransactionRecord, ...]:
        """The transaction detail records kept, newest first (the last-10 list)."""
        return tuple(entry.record for entry in self._log)

    # -- ApduHandler ------------------------------------------------------------------------

    def commands(self) -> Iterable[tuple[ClassGroup, int]]:
        """The proprietary-class INS this purse answers."""
        return [
            (ClassGroup.PROPRIETARY, ins)
            for ins in (
                INS_INITIALIZE,
                INS_CREDIT_FOR_LOAD,
                INS_DEBIT_FOR_PURCHASE,
                INS_GET_BALANCE,
                INS_GET_TRANSACTION_PROVE,
            )
        ]

    def reset(self) -> None:
        """Power on / warm reset: an open session is dropped; the rest is non-volatile."""
        self._session = None

    def handle(self, command: Command) -> Response:
        """Answer one purse command (see the module docstring for the state machine)."""
        ins = command.ins
        if ins == INS_GET_BALANCE:
            return self._get_balance(command)
        if ins == INS_GET_TRANSACTION_PROVE:
            return self._get_transaction_prove(command)
        session, self._session = self._session, None  # every other command ends a session
        if ins == INS_INITIALIZE:
            if command.p1 == P1_LOAD:
                return self._initialize_for_load(command)
            if command.p1 == P1_PURCHASE:
                return self._initialize_for_purchase(command)
            raise _fail(PbocStatus.INCORRECT_P1_P2, "INITIALIZE P1 is 00 (load) or 01 (purchase)")
        if ins == INS_CREDIT_FOR_LOAD:
            return self._credit_for_load(command, session)
        if ins == INS_DEBIT_FOR_PURCHASE:
            return self._debit_for_purchase(command, session)
        raise _fail(PbocStatus.INCORRECT_P1_P2, f"INS {ins:02X} is not a purse command")

    # -- the commands -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._locked:
            raise _fail(PbocStatus.APPLICATION_LOCKED, "the purse is locked")

    def _check_key_index(self, key_index: int) -> None:
        if key_index != self._keys.key_index:
            raise _fail(PbocStatus.KEY_INDEX_NOT_SUPPORTED, f"no key index {key_index:02X}")

    def _random(self) -> bytes:
        return self._rng.getrandbits(32).to_bytes(4, "big")

    def _mac_failed(self) -> CardError:
        self._mac_failures += 1
        if self._mac_failures >= self._mac_failure_limit:
            self._locked = True
        return _fail(PbocStatus.MAC_INVALID, "MAC does not verify")

    def _initialize_for_load(self, command: Command) -> Response:
        if command.p2 != _KIND:
            raise _fail(PbocStatus.INCORRECT_P1_P2, "only the EP (P2 02) is offered")
        data = _need_length(command, InitializeForLoad.LENGTH)
        self._check_open()
        init = InitializeForLoad.from_bytes(data, _KIND)
        self._check_key_index(init.key_index)
        if self._online_counter >= MAX_COUNTER:
            raise _fail(PbocStatus.COUNTER_AT_MAXIMUM, "online counter at its maximum")
        if self._balance + init.amount > self._cap:
            raise _fail(PbocStatus.CONDITIONS_NOT_SATISFIED, "the load would pass the cap")
        rand = self._random()
        mac1 = mac1_load(
            self._keys.dlk,
            random=rand,
            online_counter=self._online_counter,
            old_balance=self._balance,
            amount=init.amount,
            terminal_id=init.terminal_id,
            transaction_type=_KIND.load_type,
        )
        response = InitializeForLoadResponse(
            old_balance=self._balance,
            online_counter=self._online_counter,
            key_version=self._keys.key_version,
            algorithm_id=self._keys.algorithm_id,
            random=rand,
            mac1=mac1,
        )
        self._session = _LoadSession(init, response)
        return reply(response.to_bytes())

    def _credit_for_load(
        self, command: Command, session: _LoadSession | _PurchaseSession | None
    ) -> Response:
        if (command.p1, command.p2) != (0x00, 0x00):
            raise _fail(PbocStatus.INCORRECT_P1_P2, "CREDIT FOR LOAD is P1 P2 00 00")
        data = _need_length(command, CreditForLoad.LENGTH)
        self._check_open()
        if not isinstance(session, _LoadSession):
            raise _fail(PbocStatus.COMMAND_NOT_ACCEPTED, "no INITIALIZE FOR LOAD before it")
        try:
            credit = CreditForLoad.from_bytes(data)
        except MalformedPbocData as exc:
            raise _fail(PbocStatus.INCORRECT_DATA, str(exc)) from None
        init, answer = session.command, session.response
        expected = mac2_load(
            self._keys.dlk,
            random=answer.random,
            online_counter=answer.online_counter,
            amount=init.amount,
            terminal_id=init.terminal_id,
            date=credit.date,
            time=credit.time,
            transaction_type=_KIND.load_type,
        )
        if not hmac.compare_digest(expected, credit.mac2):
            raise self._mac_failed()
        self._mac_failures = 0
        new_balance = answer.old_balance + init.amount
        tac = tac_load(
            self._keys.dtk,
            new_balance=new_balance,
            online_counter=answer.online_counter,
            amount=init.amount,
            terminal_id=init.terminal_id,
            date=credit.date,
            time=credit.time,
            transaction_type=_KIND.load_type,
        )
        self._balance = new_balance
        self._online_counter = answer.online_counter + 1
        record = TransactionRecord(
            counter=answer.online_counter,
            overdraft_limit=0,
            amount=init.amount,
            transaction_type=_KIND.load_type,
            terminal_id=init.terminal_id,
            date=credit.date,
            time=credit.time,
        )
        self._log.appendleft(LogEntry(record, new_balance, credit.mac2, tac))
        return reply(CreditForLoadResponse(tac).to_bytes())

    def _initialize_for_purchase(self, command: Command) -> Response:
        if command.p2 != _KIND:
            raise _fail(PbocStatus.INCORRECT_P1_P2, "only the EP (P2 02) is offered")
        data = _need_length(command, InitializeForPurchase.LENGTH)
        self._check_open()
        init = InitializeForPurchase.from_bytes(data, _KIND)
        self._check_key_index(init.key_index)
        if self._offline_counter >= MAX_COUNTER:
            raise _fail(PbocStatus.COUNTER_AT_MAXIMUM, "offline counter at its maximum")
        if init.amount > self._balance:
            raise _fail(PbocStatus.INSUFFICIENT_FUNDS, "amount above the balance")
        response = InitializeForPurchaseResponse(
            balance=self._balance,
            offline_counter=self._offline_counter,
            overdraft_limit=0,
            key_version=self._keys.key_version,
            algorithm_id=self._keys.algorithm_id,
            random=self._random(),
        )
        self._session = _PurchaseSession(init, response)
        return reply(response.to_bytes())

    def _debit_for_purchase(
        self, command: Command, session: _LoadSession | _PurchaseSession | None
    ) -> Response:
        if (command.p1, command.p2) != (0x01, 0x00):
            raise _fail(PbocStatus.INCORRECT_P1_P2, "DEBIT FOR PURCHASE is P1 P2 01 00")
        data = _need_length(command, DebitForPurchase.LENGTH)
        self._check_open()
        if not isinstance(session, _PurchaseSession):
            raise _fail(PbocStatus.COMMAND_NOT_ACCEPTED, "no INITIALIZE FOR PURCHASE before it")
        try:
            debit = DebitForPurchase.from_bytes(data)
        except MalformedPbocData as exc:
            raise _fail(PbocStatus.INCORRECT_DATA, str(exc)) from None
        init, answer = session.command, session.response
        expected = mac1_purchase(
            self._keys.dpk,
            random=answer.random,
            offline_counter=answer.offline_counter,
            terminal_sequence=debit.terminal_sequence,
            amount=init.amount,
            terminal_id=init.terminal_id,
            date=debit.date,
            time=debit.time,
            transaction_type=_KIND.purchase_type,
        )
        if not hmac.compare_digest(expected, debit.mac1):
            raise self._mac_failed()
        self._mac_failures = 0
        new_balance = answer.balance - init.amount
        tac = tac_purchase(
            self._keys.dtk,
            amount=init.amount,
            terminal_id=init.terminal_id,
            terminal_sequence=debit.terminal_sequence,
            date=debit.date,
            time=debit.time,
            transaction_type=_KIND.purchase_type,
        )
        mac2 = mac2_purchase(
            self._keys.dpk,
            random=answer.random,
            offline_counter=answer.offline_counter,
            terminal_sequence=debit.terminal_sequence,
            amount=init.amount,
        )
        self._balance = new_balance
        self._offline_counter = answer.offline_counter + 1
        record = TransactionRecord(
            counter=answer.offline_counter,
            overdraft_limit=0,
            amount=init.amount,
            transaction_type=_KIND.purchase_type,
            terminal_id=init.terminal_id,
            date=debit.date,
            time=debit.time,
        )
        self._log.appendleft(LogEntry(record, new_balance, mac2, tac))
        return reply(DebitForPurchaseResponse(tac, mac2).to_bytes())

    def _get_balance(self, command: Command) -> Response:
        if (command.p1, command.p2) != (0x00, _KIND):
            raise _fail(PbocStatus.INCORRECT_P1_P2, "GET BALANCE is P1 P2 00 02")
        _need_length(command, 0)
        return reply(Balance(self._balance).to_bytes())

    def _get_transaction_prove(self, command: Command) -> Response:
        if command.p1 != 0x00:
            raise _fail(PbocStatus.INCORRECT_P1_P2, "GET TRANSACTION PROVE has P1 00")
        try:
            kind = TransactionType(command.p2)
        except ValueError:
            raise _fail(PbocStatus.INCORRECT_P1_P2, "P2 is no transaction type") from None
        data = _need_length(command, 2)
        counter = int.from_bytes(data, "big")
        for entry in self._log:
            if (entry.record.transaction_type, entry.record.counter) == (kind, counter):
                return reply(TransactionProve(entry.mac, entry.tac).to_bytes())
        raise _fail(PbocStatus.MAC_UNAVAILABLE, "no completed transaction with that counter")
