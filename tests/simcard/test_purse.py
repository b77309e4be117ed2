"""Tests for simcard.purse: the PBOC e-purse applet on a VirtualCard, driven by a terminal
that computes with ota.pboc's platform helpers (JR/T 0025 EP load, purchase and proof)."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ota.apdu import CommandApdu
from ota.pboc import (
    MAX_COUNTER,
    CreditForLoad,
    CreditForLoadResponse,
    DebitForPurchase,
    DebitForPurchaseResponse,
    GetBalance,
    GetTransactionProve,
    InitializeForLoad,
    InitializeForLoadResponse,
    InitializeForPurchase,
    InitializeForPurchaseResponse,
    PbocError,
    PurseKeys,
    TransactionProve,
    TransactionType,
    mac1_purchase,
    mac2_load,
    verify_mac1_load,
    verify_mac2_purchase,
    verify_tac_load,
    verify_tac_purchase,
)
from simcard.card import VirtualCard
from simcard.purse import LOG_SIZE, Purse

ICCID = "89860012345678901234"
KEYS = PurseKeys(
    bytes.fromhex("7F1637B799149589F1B4AE494CD9E4C2"),
    bytes.fromhex("4237E1F731EEA83622A5F4BABC456106"),
    bytes.fromhex("B16055E01FC850DDB416C9554B2D36F4"),
)
TERMINAL = bytes.fromhex("201000000001")
POS = bytes.fromhex("310000000042")
WHEN = (dt.date(2024, 5, 20), dt.time(10, 30, 0))
OK = 0x9000


def send(card: VirtualCard, apdu: CommandApdu | bytes) -> tuple[bytes, int]:
    """Send one command; the response data and status word."""
    raw = apdu if isinstance(apdu, bytes) else apdu.to_bytes()
    out = card.process(raw)
    return out[:-2], int.from_bytes(out[-2:], "big")


def new_card(**kwargs: object) -> tuple[VirtualCard, Purse]:
    """A virtual card with a purse (seeded randoms) registered on it."""
    card = VirtualCard(ICCID)
    purse = Purse(KEYS, rng=random.Random(1), **kwargs)  # type: ignore[arg-type]
    card.register(purse)
    return card, purse


@dataclass
class LoadAttempt:
    """What the platform holds between INITIALIZE FOR LOAD and CREDIT FOR LOAD."""

    amount: int
    answer: InitializeForLoadResponse

    def credit(self, *, tamper: bool = False) -> CreditForLoad:
        """The CREDIT FOR LOAD the platform sends (a wrong MAC2 if ``tamper``)."""
        date, time = WHEN
        mac2 = mac2_load(
            KEYS.dlk,
            random=self.answer.random,
            online_counter=self.answer.online_counter,
            amount=self.amount,
            terminal_id=TERMINAL,
            date=date,
            time=time,
        )
        if tamper:
            mac2 = bytes([mac2[0] ^ 1]) + mac2[1:]
        return CreditForLoad(date, time, mac2)

    def tac_ok(self, tac: bytes) -> bool:
        """Whether the platform accepts the card's TAC for this load."""
        date, time = WHEN
        return verify_tac_load(
            KEYS.dtk,
            new_balance=self.answer.old_balance + self.amount,
            online_counter=self.answer.online_counter,
            amount=self.amount,
            terminal_id=TERMINAL,
            date=date,
            time=time,
            tac=tac,
        )


def initialize_load(card: VirtualCard, amount: int) -> LoadAttempt:
    """INITIALIZE FOR LOAD, expected to succeed with a MAC1 the platform accepts."""
    data, sw = send(card, InitializeForLoad(KEYS.key_index, amount, TERMINAL).to_apdu())
    assert sw == OK
    answer = InitializeForLoadResponse.from_bytes(data)
    assert verify_mac1_load(KEYS.dlk, answer, amount, TERMINAL)
    return LoadAttempt(amount, answer)


def load(card: VirtualCard, amount: int) -> bytes:
    """A complete load; the TAC."""
    attempt = initialize_load(card, amount)
    data, sw = send(card, attempt.credit().to_apdu())
    assert sw == OK
    tac = CreditForLoadResponse.from_bytes(data).tac
    assert attempt.tac_ok(tac)
    return tac


@dataclass
class PurchaseAttempt:
    """What the POS reader holds between INITIALIZE FOR PURCHASE and DEBIT FOR PURCHASE."""

    amount: int
    sequence: int
    answer: InitializeForPurchaseResponse

    def debit(self, *, tamper: bool = False) -> DebitForPurchase:
        """The DEBIT FOR PURCHASE the reader sends (a wrong MAC1 if ``tamper``)."""
        date, time = WHEN
        mac1 = mac1_purchase(
            KEYS.dpk,
            random=self.answer.random,
            offline_counter=self.answer.offline_counter,
            terminal_sequence=self.sequence,
            amount=self.amount,
            terminal_id=POS,
            date=date,
            time=time,
        )
        if tamper:
            mac1 = mac1[:3] + bytes([mac1[3] ^ 0x80])
        return DebitForPurchase(self.sequence, date, time, mac1)


def initialize_purchase(card: VirtualCard, amount: int, sequence: int = 1) -> PurchaseAttempt:
    """INITIALIZE FOR PURCHASE, expected to succeed."""
    data, sw = send(card, InitializeForPurchase(KEYS.key_index, amount, POS).to_apdu())
    assert sw == OK
    return PurchaseAttempt(amount, sequence, InitializeForPurchaseResponse.from_bytes(data))


def purchase(card: VirtualCard, amount: int, sequence: int = 1) -> DebitForPurchaseResponse:
    """A complete purchase whose MAC2 and TAC verify; the card's answer."""
    attempt = initialize_purchase(card, amount, sequence)
    data, sw = send(card, attempt.debit().to_apdu())
    assert sw == OK
    answer = DebitForPurchaseResponse.from_bytes(data)
    assert verify_mac2_purchase(
        KEYS.dpk, attempt.answer, terminal_sequence=sequence, amount=amount, mac2=answer.mac2
    )
    date, time = WHEN
    assert verify_tac_purchase(
        KEYS.dtk,
        amount=amount,
        terminal_id=POS,
        terminal_sequence=sequence,
        date=date,
        time=time,
        tac=answer.tac,
    )
    return answer


def balance(card: VirtualCard) -> int:
    """GET BALANCE."""
    data, sw = send(card, GetBalance().to_apdu())
    assert sw == OK
    return int.from_bytes(data, "big")


def prove(card: VirtualCard, kind: TransactionType, counter: int) -> tuple[bytes, int]:
    """GET TRANSACTION PROVE."""
    return send(card, GetTransactionProve(kind, counter).to_apdu())


# -- flows -----------------------------------------------------------------------------------


def test_load_flow_card_and_platform_agree() -> None:
    """A load: MAC1 verifies, the card accepts MAC2, adds the amount, increments the online
    counter, and its TAC verifies on the platform."""
    card, purse = new_card(balance=500)
    attempt = initialize_load(card, 10_000)
    assert (attempt.answer.old_balance, attempt.answer.online_counter) == (500, 0)
    assert (attempt.answer.key_version, attempt.answer.algorithm_id) == (1, 0)
    data, sw = send(card, attempt.credit().to_apdu())
    assert sw == OK
    assert attempt.tac_ok(CreditForLoadResponse.from_bytes(data).tac)
    assert (purse.balance, purse.online_counter, purse.offline_counter) == (10_500, 1, 0)
    assert balance(card) == 10_500
    (record,) = purse.records()
    assert (record.counter, record.amount, record.transaction_type) == (0, 10_000, 2)
    assert (record.terminal_id, record.date, record.time) == (TERMINAL, *WHEN)


def test_purchase_flow_card_and_terminal_agree() -> None:
    """A purchase: the card checks MAC1, debits, increments the offline counter, and its MAC2
    and TAC verify."""
    card, purse = new_card(balance=2_000)
    purchase(card, 1_250, sequence=7)
    assert (purse.balance, purse.online_counter, purse.offline_counter) == (750, 0, 1)
    assert purse.log[0].record.transaction_type == TransactionType.EP_PURCHASE
    assert purse.log[0].balance_after == 750


def test_successive_loads_use_successive_counters() -> None:
    """Each load's INITIALIZE reports the counter the previous load left, and every TAC verifies
    with its own counter."""
    card, _ = new_card()
    for expected in range(4):
        attempt = initialize_load(card, 100)
        assert attempt.answer.online_counter == expected
        data, sw = send(card, attempt.credit().to_apdu())
        assert sw == OK and attempt.tac_ok(data)
    assert balance(card) == 400


def test_without_le_the_answer_comes_by_get_response() -> None:
    """Sent without Le (as in an OTA script), INITIALIZE answers 6110 and GET RESPONSE gives
    the 16 bytes."""
    card, _ = new_card()
    apdu = InitializeForLoad(1, 100, TERMINAL).to_apdu()
    data, sw = send(card, CommandApdu(apdu.cla, apdu.ins, apdu.p1, apdu.p2, apdu.data))
    assert (data, sw) == (b"", 0x6110)
    data, sw = send(card, bytes.fromhex("00C0000010"))
    assert sw == OK
    assert verify_mac1_load(KEYS.dlk, InitializeForLoadResponse.from_bytes(data), 100, TERMINAL)


# -- refusals that change nothing -----------------------------------------------------------------


def _state(purse: Purse) -> tuple[object, ...]:
    return (purse.balance, purse.online_counter, purse.offline_counter, purse.log)


def test_wrong_mac2_is_refused_and_changes_nothing() -> None:
    """A CREDIT with a wrong MAC2 gets 9302; balance, counters and log stay; the session is
    gone, so even the right MAC2 afterwards gets 6901."""
    card, purse = new_card(balance=100)
    load(card, 50)
    before = _state(purse)
    attempt = initialize_load(card, 1_000)
    assert send(card, attempt.credit(tamper=True).to_apdu())[1] == 0x9302
    assert _state(purse) == before
    assert purse.mac_failures == 1
    assert send(card, attempt.credit().to_apdu())[1] == 0x6901
    assert _state(purse) == before


def test_replayed_credit_is_refused() -> None:
    """The same CREDIT again gets 6901; after a new INITIALIZE (new random, new counter) it
    gets 9302. The load is applied once."""
    card, purse = new_card()
    attempt = initialize_load(card, 300)
    credit = attempt.credit().to_apdu()
    assert send(card, credit)[1] == OK
    assert send(card, credit)[1] == 0x6901
    initialize_load(card, 300)
    assert send(card, credit)[1] == 0x9302
    assert (purse.balance, purse.online_counter) == (300, 1)


@pytest.mark.parametrize(
    ("between", "sw"),
    [
        (InitializeForPurchase(1, 1, POS).to_apdu(), 0x6901),
        (CommandApdu(0x80, 0x54, 0x01, 0x00, bytes(15), 8), 0x6901),  # a stray DEBIT
        (InitializeForLoad(1, 1, TERMINAL).to_apdu(), 0x9302),  # a new session, a new random
    ],
)
def test_credit_only_right_after_its_initialize(between: CommandApdu, sw: int) -> None:
    """Any state-changing purse command between INITIALIZE FOR LOAD and CREDIT ends that
    session: the CREDIT is refused (6901, or 9302 against a newer load session) and nothing
    is loaded."""
    card, purse = new_card(balance=10)
    attempt = initialize_load(card, 300)
    send(card, between)
    assert send(card, attempt.credit().to_apdu())[1] == sw
    assert (purse.balance, purse.online_counter) == (10, 0)


def test_read_only_commands_keep_the_session() -> None:
    """GET BALANCE and GET TRANSACTION PROVE between INITIALIZE and CREDIT leave the session
    open: the load completes."""
    card, purse = new_card()
    attempt = initialize_load(card, 300)
    assert balance(card) == 0
    assert prove(card, TransactionType.EP_LOAD, 0)[1] == 0x9406
    assert send(card, attempt.credit().to_apdu())[1] == OK
    assert purse.balance == 300


def test_reset_drops_the_session() -> None:
    """A warm reset between INITIALIZE and CREDIT: the CREDIT gets 6901, nothing is loaded."""
    card, purse = new_card()
    attempt = initialize_load(card, 300)
    assert purse.in_session
    card.reset()
    assert (purse.in_session, card.powered) == (False, True)
    assert send(card, attempt.credit().to_apdu())[1] == 0x6901
    assert (purse.balance, purse.online_counter) == (0, 0)


def test_credit_and_debit_need_their_own_initialize() -> None:
    """CREDIT without any INITIALIZE, CREDIT after INITIALIZE FOR PURCHASE and DEBIT after
    INITIALIZE FOR LOAD all get 6901."""
    card, purse = new_card(balance=1_000)
    credit = CreditForLoad(*WHEN, bytes(4)).to_apdu()
    assert send(card, credit)[1] == 0x6901
    attempt = initialize_purchase(card, 10)
    assert send(card, credit)[1] == 0x6901
    initialize_load(card, 10)
    assert send(card, attempt.debit().to_apdu())[1] == 0x6901
    assert _state(purse)[:3] == (1_000, 0, 0)
    assert purse.mac_failures == 0


def test_cap_is_enforced_by_the_card() -> None:
    """A load to exactly the cap is accepted; one fen more is refused 6985 at INITIALIZE and
    nothing changes."""
    card, purse = new_card(balance=99_000)
    assert send(card, InitializeForLoad(1, 1_001, TERMINAL).to_apdu())[1] == 0x6985
    assert (purse.balance, purse.online_counter, purse.in_session) == (99_000, 0, False)
    load(card, 1_000)
    assert purse.balance == 100_000
    assert send(card, InitializeForLoad(1, 1, TERMINAL).to_apdu())[1] == 0x6985


def test_purchase_above_balance_is_insufficient_funds() -> None:
    """A purchase above the balance is refused 9401; the whole balance can be spent."""
    card, purse = new_card(balance=500)
    assert send(card, InitializeForPurchase(1, 501, POS).to_apdu())[1] == 0x9401
    purchase(card, 500)
    assert purse.balance == 0


def test_wrong_mac1_is_refused_and_changes_nothing() -> None:
    """A DEBIT with a wrong MAC1 gets 9302: no debit, no offline counter increment."""
    card, purse = new_card(balance=500)
    attempt = initialize_purchase(card, 100)
    assert send(card, attempt.debit(tamper=True).to_apdu())[1] == 0x9302
    assert (purse.balance, purse.offline_counter, purse.log) == (500, 0, ())


def test_consecutive_mac_failures_lock_the_purse() -> None:
    """Three consecutive wrong MACs lock the purse (9303 for INITIALIZE, CREDIT, DEBIT, also
    after a reset); GET BALANCE and GET TRANSACTION PROVE still answer."""
    card, purse = new_card(balance=100)
    load(card, 1)
    for _ in range(3):
        assert not purse.locked
        attempt = initialize_load(card, 1)
        assert send(card, attempt.credit(tamper=True).to_apdu())[1] == 0x9302
    assert purse.locked
    card.reset()
    assert send(card, InitializeForLoad(1, 1, TERMINAL).to_apdu())[1] == 0x9303
    assert send(card, InitializeForPurchase(1, 1, POS).to_apdu())[1] == 0x9303
    assert send(card, CreditForLoad(*WHEN, bytes(4)).to_apdu())[1] == 0x9303
    assert balance(card) == 101
    assert prove(card, TransactionType.EP_LOAD, 0)[1] == OK


def test_a_verified_mac_resets_the_failure_count() -> None:
    """Two failures, a good load, two failures: not locked (the count is of consecutive
    failures)."""
    card, purse = new_card()
    for _ in range(2):
        for _ in range(2):
            attempt = initialize_load(card, 1)
            assert send(card, attempt.credit(tamper=True).to_apdu())[1] == 0x9302
        load(card, 1)
        assert purse.mac_failures == 0
    assert not purse.locked


def test_wrong_key_index_and_counter_at_maximum() -> None:
    """A key index the purse lacks gets 9403; a counter at FFFF refuses the next INITIALIZE
    with 9402."""
    card, _ = new_card()
    assert send(card, InitializeForLoad(2, 1, TERMINAL).to_apdu())[1] == 0x9403
    assert send(card, InitializeForPurchase(0, 0, POS).to_apdu())[1] == 0x9403
    card, _ = new_card(online_counter=MAX_COUNTER, offline_counter=MAX_COUNTER, balance=10)
    assert send(card, InitializeForLoad(1, 1, TERMINAL).to_apdu())[1] == 0x9402
    assert send(card, InitializeForPurchase(1, 1, POS).to_apdu())[1] == 0x9402
    card, _ = new_card(online_counter=MAX_COUNTER - 1)
    load(card, 1)
    assert send(card, InitializeForLoad(1, 1, TERMINAL).to_apdu())[1] == 0x9402


@pytest.mark.parametrize(
    ("apdu", "sw"),
    [
        ("805000010B0100000001201000000001", 0x6A86),  # ED (P2 01) is not offered
        ("805002020B0100000001201000000001", 0x6A86),  # INITIALIZE with P1 02
        ("805000020A01000000012010000000", 0x6700),  # 10 bytes of data
        ("805200010B2024052010300000000000", 0x6A86),  # CREDIT P2 01
        ("805C000104", 0x6A86),  # GET BALANCE of the ED
        ("805C00020100", 0x6700),  # GET BALANCE with data
        ("805A0008020000", 0x6A86),  # PROVE of type 08 (undefined)
        ("805A010202000008", 0x6A86),  # PROVE with P1 01
        ("805A00020300000008", 0x6700),  # PROVE with 3 bytes of counter
    ],
)
def test_malformed_commands(apdu: str, sw: int) -> None:
    """Wrong P1/P2 get 6A86, wrong data lengths 6700; the purse stays as it was."""
    card, purse = new_card(balance=5)
    assert send(card, bytes.fromhex(apdu))[1] == sw
    assert _state(purse)[:3] == (5, 0, 0)


def test_credit_with_a_bad_date_is_incorrect_data() -> None:
    """A CREDIT whose date is not BCD gets 6A80 and loads nothing (and ends the session)."""
    card, purse = new_card()
    initialize_load(card, 100)
    assert send(card, bytes.fromhex("805200000B202413201030000000000004"))[1] == 0x6A80
    assert (purse.balance, purse.in_session, purse.mac_failures) == (0, False, 0)


# -- proof -----------------------------------------------------------------------------------------


def test_prove_after_a_completed_load() -> None:
    """GET TRANSACTION PROVE of a completed load answers its MAC2 and TAC."""
    card, _ = new_card()
    attempt = initialize_load(card, 700)
    credit = attempt.credit()
    data, sw = send(card, credit.to_apdu())
    assert sw == OK
    answer, sw = prove(card, TransactionType.EP_LOAD, attempt.answer.online_counter)
    assert sw == OK
    assert TransactionProve.from_bytes(answer) == TransactionProve(credit.mac2, data)
    assert attempt.tac_ok(TransactionProve.from_bytes(answer).tac)


def test_prove_after_an_interrupted_load() -> None:
    """An INITIALIZE without CREDIT: the counter does not move (the next INITIALIZE reports
    it again) and the proof of that counter is 9406."""
    card, purse = new_card()
    load(card, 100)
    lost = initialize_load(card, 200)
    assert lost.answer.online_counter == 1
    assert prove(card, TransactionType.EP_LOAD, 1) == (b"", 0x9406)
    again = initialize_load(card, 200)
    assert again.answer.online_counter == 1
    assert purse.balance == 100


def test_prove_of_a_purchase_and_type_mismatch() -> None:
    """A purchase's proof is its MAC2 and TAC under type 06; the same counter under type 02
    (no such load) is 9406."""
    card, _ = new_card(balance=1_000)
    answer = purchase(card, 10, sequence=3)
    assert prove(card, TransactionType.EP_PURCHASE, 0) == (answer.mac2 + answer.tac, OK)
    assert prove(card, TransactionType.EP_LOAD, 0)[1] == 0x9406
    assert prove(card, TransactionType.ED_PURCHASE, 0)[1] == 0x9406


def test_log_keeps_the_last_ten() -> None:
    """After 11 purchases the first one's proof is gone (9406); the last 10 answer."""
    card, purse = new_card(balance=1_000)
    for i in range(LOG_SIZE + 1):
        purchase(card, 1, sequence=i)
    assert len(purse.log) == LOG_SIZE
    assert [r.counter for r in purse.records()] == list(range(LOG_SIZE, 0, -1))
    assert prove(card, TransactionType.EP_PURCHASE, 0)[1] == 0x9406
    assert prove(card, TransactionType.EP_PURCHASE, 1)[1] == OK


# -- determinism, construction, secrets -----------------------------------------------------------


def _transcript() -> list[bytes]:
    card, _ = new_card(balance=1_000)
    out = []
    for apdu in (
        InitializeForLoad(1, 5, TERMINAL).to_apdu(),
        InitializeForPurchase(1, 5, POS).to_apdu(),
        GetBalance().to_apdu(),
    ):
        out.append(card.process(apdu.to_bytes()))
    return out


def test_deterministic_under_a_seeded_rng() -> None:
    """The same seed gives the same randoms and MACs, byte for byte."""
    assert _transcript() == _transcript()
    card = VirtualCard(ICCID)
    card.register(Purse(KEYS, rng=random.Random(2)))
    assert card.process(InitializeForLoad(1, 5, TERMINAL).to_apdu().to_bytes()) != _transcript()[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"balance": -1},
        {"balance": 100_001},
        {"cap": 2**32},
        {"online_counter": 0x10000},
        {"offline_counter": -1},
        {"mac_failure_limit": 0},
        {"log_size": 0},
    ],
)
def test_bad_construction_is_refused(kwargs: dict[str, int]) -> None:
    """Out-of-range initial state raises PbocError."""
    with pytest.raises(PbocError):
        Purse(KEYS, **kwargs)  # type: ignore[arg-type]


def test_repr_shows_no_key() -> None:
    """The purse's repr shows its state, not its keys."""
    _, purse = new_card(balance=3)
    text = repr(purse)
    assert "balance=3" in text
    for key in (KEYS.dlk, KEYS.dpk, KEYS.dtk):
        assert key.hex() not in text.lower()


# -- random sequences --------------------------------------------------------------------------


class PurseMachine(RuleBasedStateMachine):
    """Random loads, purchases, tampered MACs, resets and proofs: the balance stays in
    0..cap and equals the sum of accepted transactions; the counters never go back."""

    def __init__(self) -> None:
        super().__init__()
        self.card, self.purse = new_card(cap=5_000)
        self.expected = 0
        self.online = 0
        self.offline = 0
        self.failures = 0
        self.locked = False
        self.load: LoadAttempt | None = None
        self.buy: PurchaseAttempt | None = None

    def _mac_result(self, sw: int, *, good: bool) -> bool:
        """Update the model after a CREDIT or DEBIT in session; True if it was applied."""
        if good:
            assert sw == OK
            self.failures = 0
            return True
        assert sw == 0x9302
        self.failures += 1
        self.locked = self.failures >= 3
        return False

    @rule(amount=st.integers(0, 6_000))
    def initialize_load(self, amount: int) -> None:
        data, sw = send(self.card, InitializeForLoad(1, amount, TERMINAL).to_apdu())
        self.load, self.buy = None, None
        if self.locked:
            assert sw == 0x9303
        elif self.expected + amount > 5_000:
            assert sw == 0x6985
        else:
            assert sw == OK
            self.load = LoadAttempt(amount, InitializeForLoadResponse.from_bytes(data))

    @rule(amount=st.integers(0, 3_000), sequence=st.integers(0, 2**32 - 1))
    def initialize_purchase(self, amount: int, sequence: int) -> None:
        data, sw = send(self.card, InitializeForPurchase(1, amount, POS).to_apdu())
        self.load, self.buy = None, None
        if self.locked:
            assert sw == 0x9303
        elif amount > self.expected:
            assert sw == 0x9401
        else:
            assert sw == OK
            answer = InitializeForPurchaseResponse.from_bytes(data)
            self.buy = PurchaseAttempt(amount, sequence, answer)

    @precondition(lambda self: self.load is not None)
    @rule(tamper=st.booleans())
    def credit(self, tamper: bool) -> None:
        attempt = self.load
        assert attempt is not None
        _, sw = send(self.card, attempt.credit(tamper=tamper).to_apdu())
        self.load = None
        if self._mac_result(sw, good=not tamper):
            self.expected += attempt.amount
            self.online += 1

    @precondition(lambda self: self.buy is not None)
    @rule(tamper=st.booleans())
    def debit(self, tamper: bool) -> None:
        attempt = self.buy
        assert attempt is not None
        _, sw = send(self.card, attempt.debit(tamper=tamper).to_apdu())
        self.buy = None
        if self._mac_result(sw, good=not tamper):
            self.expected -= attempt.amount
            self.offline += 1

    @rule()
    def stray_credit(self) -> None:
        """A CREDIT with a made-up MAC2: refused whatever the state."""
        _, sw = send(self.card, CreditForLoad(*WHEN, bytes(4)).to_apdu())
        if self.locked:
            assert sw == 0x9303
        elif self.load is None:
            assert sw == 0x6901
        else:
            self._mac_result(sw, good=False)
        self.load, self.buy = None, None

    @rule()
    def reset(self) -> None:
        self.card.reset()
        self.load, self.buy = None, None

    @rule(counter=st.integers(0, 20))
    def prove_load(self, counter: int) -> None:
        _, sw = prove(self.card, TransactionType.EP_LOAD, counter)
        assert sw in (OK, 0x9406)
        if counter >= self.online:
            assert sw == 0x9406

    @invariant()
    def lock_matches(self) -> None:
        assert (self.purse.locked, self.purse.mac_failures) == (self.locked, self.failures)

    @invariant()
    def balance_matches(self) -> None:
        assert 0 <= self.purse.balance <= self.purse.cap
        assert self.purse.balance == self.expected
        assert balance(self.card) == self.expected

    @invariant()
    def counters_only_move_forward(self) -> None:
        assert (self.purse.online_counter, self.purse.offline_counter) == (
            self.online,
            self.offline,
        )


PurseMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestPurseMachine = PurseMachine.TestCase
