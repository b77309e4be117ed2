"""Tests of the ESME's sans-IO core (smsc/esme_core.py): window, queue, rate, throttling,
timeouts, drops, keep-alive and reconnect backoff, all on a fake time line."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from smsc.esme_core import (
    ABORTED,
    TIMEOUT,
    Completion,
    EsmeCore,
    KeepAlive,
    Probe,
    ReconnectBackoff,
    TokenBucket,
)
from smsc.pdu import GenericNack, Pdu, Status, SubmitSm, SubmitSmResp

THROTTLED = Status.ESME_RTHROTTLED


class Seq:
    """A session's sequence counter (a new one per connection)."""

    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> int:
        self.value += 1
        return self.value


def make_core(**kwargs: object) -> EsmeCore[int]:
    params: dict[str, object] = {
        "window": 4,
        "response_timeout": 5.0,
        "throughput": 1e9,
        "throttle_backoff": 1.0,
        "rng": random.Random(7),
    }
    params.update(kwargs)
    return EsmeCore(**params)  # type: ignore[arg-type]


def fill(core: EsmeCore[int], count: int, start: int = 0) -> None:
    for token in range(start, start + count):
        core.enqueue(SubmitSm(destination_addr=str(token)), token)


def tokens_of(pdus: list[Pdu]) -> list[int]:
    return [int(p.destination_addr) for p in pdus if isinstance(p, SubmitSm)]


def resp(pdu: Pdu, status: int = 0, message_id: str = "") -> SubmitSmResp:
    return SubmitSmResp(
        sequence_number=pdu.sequence_number, command_status=status, message_id=message_id
    )


# -- window and queue ----------------------------------------------------------------------


def test_nothing_is_sent_before_the_bind() -> None:
    """Requests queue while unbound; the bind releases them."""
    core = make_core()
    fill(core, 3)
    assert core.ready(0.0) == []
    core.bound(0.0, Seq())
    assert tokens_of(core.ready(0.0)) == [0, 1, 2]


def test_window_limits_outstanding_requests() -> None:
    """At most ``window`` requests are outstanding; each response frees one slot."""
    core = make_core(window=4)
    fill(core, 10)
    core.bound(0.0, Seq())
    first = core.ready(0.0)
    assert tokens_of(first) == [0, 1, 2, 3]
    assert core.ready(0.0) == []
    assert core.in_flight == 4
    done = core.on_response(resp(first[1], message_id="m1"), 0.1)
    assert done == Completion(1, 0, "m1")
    assert tokens_of(core.ready(0.1)) == [4]
    assert core.in_flight == 4 and core.queued == 5


def test_sequence_numbers_come_from_the_session_counter() -> None:
    """Each sent request carries the number the session's counter handed out."""
    core = make_core()
    fill(core, 3)
    core.bound(0.0, Seq())
    assert [p.sequence_number for p in core.ready(0.0)] == [1, 2, 3]


def test_error_status_completes_without_retry() -> None:
    """A non-throttle error is final: the caller gets the status, nothing is resent."""
    core = make_core()
    fill(core, 1)
    core.bound(0.0, Seq())
    (pdu,) = core.ready(0.0)
    assert core.on_response(resp(pdu, Status.ESME_RINVDSTADR), 0.0) == Completion(
        0, Status.ESME_RINVDSTADR
    )
    assert core.queued == 0 and core.ready(1.0) == []


def test_generic_nack_for_a_request_completes_it() -> None:
    """A generic_nack answering a submit_sm is that request's (failed) outcome."""
    core = make_core()
    fill(core, 1)
    core.bound(0.0, Seq())
    (pdu,) = core.ready(0.0)
    nack = GenericNack(sequence_number=pdu.sequence_number, command_status=Status.ESME_RINVCMDLEN)
    assert core.on_response(nack, 0.0) == Completion(0, Status.ESME_RINVCMDLEN)


def test_unknown_response_is_ignored_and_counted() -> None:
    """A response for a sequence number not in flight changes nothing but a counter."""
    core = make_core()
    fill(core, 1)
    core.bound(0.0, Seq())
    core.ready(0.0)
    assert core.on_response(SubmitSmResp(sequence_number=99), 0.0) is None
    assert core.stats.late_responses == 1 and core.in_flight == 1


# -- rate ----------------------------------------------------------------------------------


def test_token_bucket_grants_whole_tokens_at_the_rate() -> None:
    """The bucket starts full, then grants ``rate`` tokens per second."""
    bucket = TokenBucket(10.0, 2.0)
    assert bucket.take(0.0, 5) == 2
    assert bucket.take(0.05, 5) == 0
    assert bucket.available_at() == pytest.approx(0.1)
    assert bucket.take(0.1, 5) == 1
    assert bucket.take(10.0, 5) == 2  # never more than the burst


def test_throughput_limits_the_send_rate() -> None:
    """Over 10 s of fake time the core sends ``throughput`` x 10 (+ the burst) requests."""
    core = make_core(window=50, throughput=20.0, burst=5.0)
    fill(core, 1000)
    core.bound(0.0, Seq())
    sent = 0
    now = 0.0
    while now < 10.0:
        for pdu in core.ready(now):
            sent += 1
            core.on_response(resp(pdu), now)
        deadline = core.next_deadline()
        assert deadline is not None and deadline > now
        now = deadline
    assert 200 <= sent <= 206


def test_next_deadline_is_when_the_next_token_comes() -> None:
    """With requests waiting and the bucket empty, the deadline is the next token's time."""
    core = make_core(window=10, throughput=4.0, burst=1.0, response_timeout=100.0)
    fill(core, 3)
    core.bound(0.0, Seq())
    assert len(core.ready(0.0)) == 1
    assert core.next_deadline() == pytest.approx(0.25)
    assert core.ready(0.2) == []
    assert len(core.ready(0.25)) == 1


# -- throttling ----------------------------------------------------------------------------


def test_throttle_requeues_at_head_pauses_and_halves_the_window() -> None:
    """ESME_RTHROTTLED is not a failure: the request is resent first after a pause, and
    the window halves."""
    core = make_core(window=8, throttle_backoff=2.0)
    fill(core, 20)
    core.bound(0.0, Seq())
    sent = core.ready(0.0)
    assert core.on_response(resp(sent[0], THROTTLED), 0.0) is None
    assert core.effective_window == 4
    pause = core.paused_until
    assert 1.0 <= pause <= 2.0  # backoff 2 s with jitter in [50 %, 100 %]
    for pdu in sent[1:]:
        assert core.on_response(resp(pdu), 0.1) is not None
    assert core.ready(pause - 0.01) == []
    assert core.ready(pause) == []  # sending resumes from an empty token bucket
    again = core.ready(pause + 0.01)
    assert tokens_of(again) == [0, 8, 9, 10]  # the throttled one first, then the queue
    assert core.effective_window == 4  # successes sent before the pause do not regrow it
    assert again[0].sequence_number == 9  # a new sequence number
    assert core.stats.resent == 1


def test_a_throttled_window_is_one_episode() -> None:
    """A whole window answered with ESME_RTHROTTLED pauses and shrinks once, and the
    requests go back in their original order."""
    core = make_core(window=8)
    fill(core, 8)
    core.bound(0.0, Seq())
    sent = core.ready(0.0)
    for pdu in reversed(sent):  # answered in any order
        assert core.on_response(resp(pdu, Status.ESME_RMSGQFUL), 0.0) is None
    assert core.stats.throttle_pauses == 1
    assert core.effective_window == 4
    assert tokens_of(core.ready(core.paused_until + 0.01)) == [0, 1, 2, 3]


def test_consecutive_throttle_episodes_back_off_exponentially_then_reset() -> None:
    """Each new episode doubles the pause (up to the cap); a success resets it."""
    core = make_core(window=1, throttle_backoff=1.0, throttle_backoff_max=4.0, burst=10.0)
    fill(core, 10)
    core.bound(0.0, Seq())
    now = 0.0
    pauses = []
    for _ in range(5):
        (pdu,) = core.ready(now)
        core.on_response(resp(pdu, THROTTLED), now)
        pauses.append(core.paused_until - now)
        now = core.paused_until + 1.0  # nothing accepted: the rate fell to 1/s
    for pause, base in zip(pauses, [1.0, 2.0, 4.0, 4.0, 4.0], strict=True):
        assert base / 2 <= pause <= base
    assert core.rate == 1.0
    (pdu,) = core.ready(now)
    core.on_response(resp(pdu), now)
    now += 1.0
    (pdu,) = core.ready(now)
    core.on_response(resp(pdu, THROTTLED), now)
    assert 0.5 <= core.paused_until - now <= 1.0


def test_window_regrows_additively_after_throttling() -> None:
    """After a halving, the window grows by one per ``regrow_after`` successes up to its size."""
    core = make_core(window=8, regrow_after=3)
    fill(core, 200)
    core.bound(0.0, Seq())
    sent = core.ready(0.0)
    core.on_response(resp(sent[0], THROTTLED), 0.0)
    for pdu in sent[1:]:
        core.on_response(resp(pdu), 0.0)
    assert core.effective_window == 4
    now = core.paused_until + 0.01
    sizes = []
    while core.queued:
        batch = core.ready(now)
        assert len(batch) <= core.effective_window
        for pdu in batch:
            core.on_response(resp(pdu), now)
        sizes.append(core.effective_window)
        now += 0.01
    # +1 per 3 successes: batches of 4 (-> 5), 5 (-> 7), 7 (-> 8), then the full size.
    assert sizes[:3] == [5, 7, 8]
    assert sizes[-1] == 8 and max(sizes) == 8
    assert sizes == sorted(sizes)


def test_rate_adapts_to_an_smsc_limit() -> None:
    """Against an SMSC that throttles above 100/s (0.1 s burst), the adapted rate settles
    near the limit: most of the limit is used and throttling stays occasional."""
    core = make_core(window=64, throughput=1e6, throttle_backoff=1.0)
    fill(core, 100_000)
    smsc = TokenBucket(100.0, 10.0)
    core.bound(0.0, Seq())
    now, accepted, throttled = 0.0, 0, 0
    while now < 60.0:
        for pdu in core.ready(now):
            status = 0 if smsc.take(now, 1) else THROTTLED
            throttled += status != 0
            if core.on_response(resp(pdu, status), now) is not None and now >= 30.0:
                accepted += 1
        now += 0.001
    assert accepted / 30.0 > 70.0  # pausing alone (full-speed bursts) gets about 25/s
    assert throttled < 200
    assert 50.0 < core.rate < 150.0


def test_rate_recovers_after_throttling_stops() -> None:
    """Each second without throttling raises the rate 10 % (+1) up to ``throughput``."""
    core = make_core(window=8, throughput=50.0, throttle_backoff=0.5)
    fill(core, 10_000)
    core.bound(0.0, Seq())
    sent = core.ready(0.0)
    core.on_response(resp(sent[0], THROTTLED), 0.0)
    low = core.rate
    assert low < 50.0
    now = 0.0
    while now < 40.0:
        for pdu in core.ready(now):
            core.on_response(resp(pdu), now)
        now += 0.01
    assert core.rate == 50.0


def test_throttle_while_draining_aborts_the_request() -> None:
    """A stopping ESME does not resend: a throttled request completes as ABORTED."""
    core = make_core()
    fill(core, 2)
    core.bound(0.0, Seq())
    first, second = core.ready(0.0)
    core.drain()
    assert core.on_response(resp(first, THROTTLED), 0.0) == Completion(0, ABORTED)
    assert core.on_response(resp(second), 0.0) == Completion(1, 0)


# -- timeouts and drops --------------------------------------------------------------------


def test_response_timeout_drops_the_link_and_resends_up_to_max_attempts() -> None:
    """A request with no response makes the link bad; after max_attempts timed-out sends
    its caller gets TIMEOUT, while the other in-flight requests are resent."""
    core = make_core(window=2, response_timeout=5.0, max_attempts=3)
    fill(core, 2)
    now = 0.0
    for attempt in range(1, 4):
        core.bound(now, Seq())
        sent = core.ready(now)
        assert tokens_of(sent)[0] == 0
        if len(sent) == 2:
            core.on_response(resp(sent[1]), now)  # the other request is answered
        assert core.next_deadline() == pytest.approx(now + 5.0)
        assert not core.on_timer(now + 4.9).drop_link
        result = core.on_timer(now + 5.0)
        assert result.drop_link and not core.linked
        if attempt < 3:
            assert result.completions == []
            assert core.queued == 1
        else:
            assert result.completions == [Completion(0, TIMEOUT)]
        now += 10.0
    assert core.stats.timeouts == 3 and core.queued == 0 and core.in_flight == 0


def test_timeout_requeues_untimed_requests_without_counting_an_attempt() -> None:
    """Requests sent later than the timed-out one go back to the queue, in order."""
    core = make_core(window=3, response_timeout=5.0, max_attempts=1)
    fill(core, 1)
    core.bound(0.0, Seq())
    core.ready(0.0)
    fill(core, 2, start=1)
    core.ready(3.0)
    result = core.on_timer(5.0)
    assert result.completions == [Completion(0, TIMEOUT)]
    core.bound(6.0, Seq())
    assert tokens_of(core.ready(6.0)) == [1, 2]


def test_connection_lost_with_a_full_window_resends_all_in_order() -> None:
    """A drop puts the whole window back at the head of the queue, in the original order,
    resent after the rebind with new numbers; each caller completes exactly once, and
    responses from the dead connection are ignored."""
    core = make_core(window=5)
    fill(core, 8)
    core.bound(0.0, Seq())
    old = core.ready(0.0)
    core.on_response(resp(old[2]), 0.0)  # one answered before the drop
    assert core.connection_lost(0.5) == []
    assert core.ready(0.6) == []  # unbound: nothing goes out
    core.bound(1.0, Seq())
    new = core.ready(1.0)
    assert tokens_of(new) == [0, 1, 3, 4, 5]
    assert [p.sequence_number for p in new] == [1, 2, 3, 4, 5]
    assert core.stats.requeued_on_drop == 4
    done = Counter[int]()
    done[2] += 1
    for pdu in new:
        completion = core.on_response(resp(pdu), 1.1)
        assert completion is not None
        done[completion.token] += 1
    for pdu in core.ready(1.1):
        completion = core.on_response(resp(pdu), 1.2)
        assert completion is not None
        done[completion.token] += 1
    assert done == Counter(range(8))
    # A late duplicate of an already-answered sequence number changes nothing.
    assert core.on_response(resp(new[0]), 1.3) is None
    assert core.stats.late_responses == 1


def test_link_closing_stops_sending_but_accepts_responses() -> None:
    """After the peer's unbind nothing new is sent, responses still complete requests."""
    core = make_core()
    fill(core, 3)
    core.bound(0.0, Seq())
    first = core.ready(0.0)[0]
    fill(core, 1, start=3)
    core.link_closing()
    assert core.ready(0.0) == []
    assert core.on_response(resp(first), 0.0) == Completion(0, 0)


def test_drain_aborts_queued_and_awaits_in_flight() -> None:
    """drain(): queued requests complete as ABORTED at once, in order; in-flight ones keep
    their responses; a drop while draining completes them as TIMEOUT."""
    core = make_core(window=2)
    fill(core, 5)
    core.bound(0.0, Seq())
    first, _second = core.ready(0.0)
    assert core.drain() == [Completion(2, ABORTED), Completion(3, ABORTED), Completion(4, ABORTED)]
    assert core.ready(1.0) == [] and core.draining
    assert core.on_response(resp(first), 0.5) == Completion(0, 0)
    assert core.connection_lost(0.6) == [Completion(1, TIMEOUT)]


def test_abort_completes_everything() -> None:
    """abort(): in-flight -> TIMEOUT (outcome unknown), waiting -> ABORTED."""
    core = make_core(window=1)
    fill(core, 2)
    core.bound(0.0, Seq())
    core.ready(0.0)
    assert sorted(core.abort(), key=lambda c: c.token) == [
        Completion(0, TIMEOUT),
        Completion(1, ABORTED),
    ]
    assert core.in_flight == 0 and core.queued == 0


@pytest.mark.parametrize("how", ["dropped", "timed out"])
def test_giving_up_on_an_unanswered_send_is_timeout_not_aborted(how: str) -> None:
    """A request whose send went unanswered (link dropped, or response deadline passed) may
    have been accepted by the SMSC: when the ESME then stops before resending it, its caller
    must learn TIMEOUT (outcome unknown), never ABORTED (which means safe to resend). Requests
    that were never sent stay ABORTED."""
    core = make_core(window=1, response_timeout=1.0)
    fill(core, 2)
    core.bound(0.0, Seq())
    assert len(core.ready(0.0)) == 1
    if how == "dropped":
        assert core.connection_lost(0.5) == []
    else:
        assert core.on_timer(1.5).drop_link
    assert sorted(core.abort(), key=lambda c: c.token) == [
        Completion(0, TIMEOUT),
        Completion(1, ABORTED),
    ]


def test_throttled_then_stopped_stays_aborted() -> None:
    """A request the SMSC refused with ESME_RTHROTTLED was not accepted: stopping before the
    resend completes it as ABORTED."""
    core = make_core(window=1)
    fill(core, 1)
    core.bound(0.0, Seq())
    (first,) = core.ready(0.0)
    assert core.on_response(resp(first, THROTTLED), 0.1) is None
    assert core.drain() == [Completion(0, ABORTED)]


# -- keep-alive and reconnect backoff ------------------------------------------------------


def test_keepalive_probes_after_silence_and_declares_dead() -> None:
    """enquire_link after ``interval`` of inbound silence; dead ``timeout`` later."""
    ka = KeepAlive(30.0, 10.0, now=0.0)
    assert ka.next_deadline() == 30.0
    assert ka.on_timer(29.9) is None
    ka.activity(20.0)
    assert ka.on_timer(30.0) is None
    assert ka.on_timer(50.0) is Probe.SEND
    assert ka.next_deadline() == 60.0
    assert ka.on_timer(59.0) is None
    assert ka.on_timer(60.0) is Probe.DEAD


def test_keepalive_any_inbound_data_answers_the_probe() -> None:
    """A reply (or anything else from the peer) clears the outstanding probe."""
    ka = KeepAlive(5.0, 2.0, now=0.0)
    assert ka.on_timer(5.0) is Probe.SEND
    ka.activity(6.0)
    assert ka.on_timer(7.5) is None
    assert ka.next_deadline() == 11.0


@pytest.mark.parametrize("jitter", ["full", "decorrelated"])
def test_reconnect_backoff_grows_with_jitter_to_the_cap(jitter: str) -> None:
    """Delays stay within [minimum, maximum], grow on repeated failures and reach the cap."""
    backoff = ReconnectBackoff(1.0, 60.0, rng=random.Random(3), jitter=jitter)
    delays = [backoff.next_delay() for _ in range(40)]
    assert all(1.0 <= d <= 60.0 for d in delays)
    assert max(delays[:2]) < 9.0  # the first ones are short
    assert max(delays[20:]) > 30.0  # later ones approach the cap
    assert backoff.failures == 40


def test_reconnect_backoff_resets_only_after_a_lasting_bind() -> None:
    """A bind that lasted ``stable_after`` resets the backoff; a brief one does not."""
    backoff = ReconnectBackoff(1.0, 60.0, rng=random.Random(3), jitter="full", stable_after=30)
    for _ in range(5):
        backoff.next_delay()
    backoff.bound(100.0)
    backoff.lost(110.0)
    assert backoff.failures == 5
    backoff.bound(200.0)
    backoff.lost(230.0)
    assert backoff.failures == 0
    assert backoff.next_delay() <= 1.0


def test_invalid_parameters_are_refused() -> None:
    """Nonsense configurations fail at construction, not at run time."""
    with pytest.raises(ValueError):
        EsmeCore[int](window=0)
    with pytest.raises(ValueError):
        EsmeCore[int](max_attempts=0)
    with pytest.raises(ValueError):
        ReconnectBackoff(5.0, 1.0, rng=random.Random())
    with pytest.raises(ValueError):
        TokenBucket(0.0, 1.0)


# -- the core under arbitrary interleavings -------------------------------------------------


class CoreMachine(RuleBasedStateMachine):
    """Any interleaving of enqueue / bind / send / responses (ok, throttled, error, late) /
    drops / timer ticks: every request completes exactly once or is still pending, the
    window is never exceeded, and once the SMSC behaves everything completes."""

    def __init__(self) -> None:
        super().__init__()
        self.window = 4
        self.core = make_core(
            window=self.window,
            response_timeout=5.0,
            throughput=50.0,
            throttle_backoff=0.5,
            max_attempts=2,
        )
        self.now = 0.0
        self.next_token = 0
        self.outstanding: dict[int, Pdu] = {}
        self.completed: Counter[int] = Counter()
        self.order_sent: list[int] = []
        self.seq = Seq()

    def _record(self, completions: Iterator[Completion[int]] | list[Completion[int]]) -> None:
        for completion in completions:
            self.completed[completion.token] += 1

    @rule(count=st.integers(1, 5))
    def enqueue(self, count: int) -> None:
        fill(self.core, count, start=self.next_token)
        self.next_token += count

    @rule()
    def bind(self) -> None:
        if not self.core.linked:
            self.seq = Seq()
            self.outstanding.clear()
            self.core.bound(self.now, self.seq)

    @rule()
    def send(self) -> None:
        for pdu in self.core.ready(self.now):
            self.outstanding[pdu.sequence_number] = pdu

    @precondition(lambda self: bool(self.outstanding))
    @rule(
        pick=st.integers(0, 100),
        status=st.sampled_from([0, 0, 0, THROTTLED, Status.ESME_RMSGQFUL, Status.ESME_RSYSERR]),
    )
    def respond(self, pick: int, status: int) -> None:
        seqs = sorted(self.outstanding)
        pdu = self.outstanding.pop(seqs[pick % len(seqs)])
        completion = self.core.on_response(resp(pdu, status), self.now)
        if completion is not None:
            self.completed[completion.token] += 1

    @rule(seq=st.integers(0, 50))
    def stray_response(self, seq: int) -> None:
        if seq not in self.outstanding:
            before = sum(self.completed.values())
            assert self.core.on_response(SubmitSmResp(sequence_number=seq), self.now) is None
            assert sum(self.completed.values()) == before

    @rule()
    def drop(self) -> None:
        self._record(self.core.connection_lost(self.now))
        self.outstanding.clear()

    @rule(step=st.floats(0.0, 8.0))
    def tick(self, step: float) -> None:
        self.now += step
        result = self.core.on_timer(self.now)
        self._record(result.completions)
        if result.drop_link:
            self.outstanding.clear()

    @invariant()
    def window_never_exceeded(self) -> None:
        assert self.core.in_flight <= self.window
        assert 1 <= self.core.effective_window <= self.window

    @invariant()
    def each_request_completes_at_most_once_or_is_pending(self) -> None:
        assert all(n == 1 for n in self.completed.values())
        pending = self.core.in_flight + self.core.queued
        assert len(self.completed) + pending == self.next_token

    def teardown(self) -> None:
        # The SMSC now answers everything: every request completes exactly once.
        core = self.core
        for _ in range(10_000):
            if core.in_flight + core.queued == 0:
                break
            if not core.linked:
                self.outstanding.clear()
                core.bound(self.now, Seq())
            for pdu in core.ready(self.now):
                self.outstanding[pdu.sequence_number] = pdu
            for pdu in list(self.outstanding.values()):
                completion = core.on_response(resp(pdu), self.now)
                if completion is not None:
                    self.completed[completion.token] += 1
            self.outstanding.clear()
            deadline = core.next_deadline()
            self.now = max(self.now, deadline if deadline is not None else self.now)
        assert core.in_flight + core.queued == 0
        assert self.completed == Counter(range(self.next_token))


CoreMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_core_machine = CoreMachine.TestCase
