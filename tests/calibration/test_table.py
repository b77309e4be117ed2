"""calibration.table: the handset table keyed by TAC, its CSV import/export, and learning a
TAC from instrument results."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibration.imei import parse_imei
from calibration.rf import Profile, Refusal
from calibration.table import (
    CSV_HEADER,
    CsvError,
    HandsetModel,
    HandsetTable,
    LearnStatus,
    Provenance,
    TableError,
    format_csv,
    parse_csv,
)

LAB = HandsetModel("35209900", "Example X1", Decimal("12.5"), Provenance.LAB)
HEAVY = HandsetModel("35007752", "Metal Brick", Decimal("29.0"), Provenance.IMPORT)


def D(text: str | int) -> Decimal:
    return Decimal(text)


# -- the table ---------------------------------------------------------------------------


def test_lookup_by_tac_and_by_imei() -> None:
    """A model is found by its TAC and by any IMEI (or IMEISV) of that TAC."""
    table = HandsetTable([LAB])
    entry = table.get("35209900")
    assert entry is not None
    assert entry.model == LAB
    assert table.lookup("352099001761481") == entry
    assert table.lookup(parse_imei("3520990017614823")) == entry
    assert table.get("35007752") is None
    assert "35209900" in table
    assert len(table) == 1


def test_entry_carries_the_rf_profile_or_refusal() -> None:
    """Each entry holds what the RF model computes: a profile (SMS) or a refusal (hall)."""
    table = HandsetTable([LAB, HEAVY])
    lab, heavy = table.get(LAB.tac), table.get(HEAVY.tac)
    assert lab is not None and heavy is not None
    assert isinstance(lab.calibration, Profile)
    assert lab.sms_calibratable
    assert isinstance(heavy.calibration, Refusal)
    assert not heavy.sms_calibratable


def test_add_replaces_and_remove_forgets() -> None:
    """add() replaces a TAC's model; remove() forgets it and refuses an unknown TAC."""
    table = HandsetTable([LAB])
    table.add(HandsetModel(LAB.tac, "Example X1 rev B", D("13.0"), Provenance.LAB))
    entry = table.get(LAB.tac)
    assert entry is not None and entry.model.a_db == D("13.0")
    table.remove(LAB.tac)
    assert LAB.tac not in table
    with pytest.raises(TableError):
        table.remove(LAB.tac)


def test_lookup_with_malformed_imei_is_refused() -> None:
    """A malformed IMEI raises TableError with the IMEI's reason."""
    with pytest.raises(TableError, match="check digit"):
        HandsetTable([LAB]).lookup("352099001761482")


@pytest.mark.parametrize(
    ("tac", "name", "a_db"),
    [
        ("3520990", "X", D(1)),
        ("35209900", "", D(1)),
        ("35209900", "line\nbreak", D(1)),
        ("35209900", "X", D("30.1")),
        ("35209900", "X", D("-0.1")),
        ("35209900", "X", D("1.25")),
        ("35209900", "X", D("NaN")),
    ],
)
def test_bad_models_are_refused(tac: str, name: str, a_db: Decimal) -> None:
    """TAC 8 digits, a printable non-empty name and A 0..30 dB on the 0.1 grid are required."""
    with pytest.raises(TableError):
        HandsetModel(tac, name, a_db, Provenance.LAB)


# -- CSV -------------------------------------------------------------------------------


def test_export_format() -> None:
    """Export writes the documented header and one row per model, sorted by TAC."""
    table = HandsetTable([LAB, HEAVY])
    assert table.export_csv() == (
        "tac,model,a_db,provenance\r\n"
        "35007752,Metal Brick,29.0,import\r\n"
        "35209900,Example X1,12.5,lab\r\n"
    )


def test_import_reads_quoted_names_lf_and_bom() -> None:
    """Import accepts RFC 4180 quoting, LF line ends, a UTF-8 BOM and blank lines."""
    text = (
        '\ufefftac,model,a_db,provenance\n86012345,"华为, ""Pro""",7,lab\n\n86012346,B,0.5,import\n'
    )
    models = parse_csv(text)
    assert [m.name for m in models] == ['华为, "Pro"', "B"]
    assert models[0].a_db == D("7.0")
    table = HandsetTable()
    assert table.import_csv(text) == 2
    assert len(table) == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("3520990,X,1.0,lab", "line 3: TAC must be 8 digits"),
        ("3520990a,X,1.0,lab", "line 3: TAC must contain decimal digits"),
        ("35209901,X,30.5,lab", "line 3: A = 30.5 dB is out of range"),
        ("35209901,X,-1,lab", "line 3: A = -1 dB is out of range"),
        ("35209901,X,12.25,lab", "line 3: A = 12.25 dB has more than 0.1 dB resolution"),
        ("35209901,X,1e1,lab", "line 3: a_db must be a decimal number"),
        ("35209901,X,,lab", "line 3: a_db must be a decimal number"),
        ("35209901,X,abc,lab", "line 3: a_db must be a decimal number"),
        ("35209901,X,1.0,vendor", "line 3: provenance must be one of lab, instrument, import"),
        ("35209901,X,1.0", "line 3: expected 4 fields, got 3"),
        ("35209900,Dup,1.0,lab", "line 3: TAC 35209900 repeats line 2"),
        ("35209901,,1.0,lab", "line 3: model name must be non-empty"),
    ],
)
def test_bad_rows_name_their_line(body: str, message: str) -> None:
    """Each bad row raises CsvError whose one-line message names the line and the problem."""
    text = "tac,model,a_db,provenance\n35209900,Example X1,12.5,lab\n" + body + "\n"
    with pytest.raises(CsvError) as info:
        parse_csv(text)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("header", ["", "tac,model,a,provenance\n", "model,tac,a_db,provenance\n"])
def test_bad_header_is_refused_on_line_1(header: str) -> None:
    """A missing or different header raises CsvError on line 1."""
    with pytest.raises(CsvError, match=r"^line 1: the header must be tac,model,a_db,provenance"):
        parse_csv(header + "35209900,X,1.0,lab\n")


def test_import_is_all_or_nothing() -> None:
    """A file with one bad line imports nothing: the table is unchanged."""
    table = HandsetTable([LAB])
    text = "tac,model,a_db,provenance\n86012345,Good,5.0,lab\n86012346,Bad,31,lab\n"
    with pytest.raises(CsvError, match="line 3"):
        table.import_csv(text)
    assert [e.model for e in table] == [LAB]


def test_unterminated_quote_names_its_line() -> None:
    """A CSV syntax error (quote left open) is a CsvError naming a line."""
    with pytest.raises(CsvError, match=r"^line \d+: "):
        parse_csv('tac,model,a_db,provenance\n86012345,"open,5.0,lab\n')


names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Cf", "Co", "Cn")),
    min_size=1,
    max_size=30,
).filter(lambda s: s.strip() != "" and s.isprintable())
models = st.builds(
    HandsetModel,
    tac=st.from_regex(r"\A[0-9]{8}\Z"),
    name=names,
    a_db=st.integers(0, 300).map(lambda n: Decimal(n).scaleb(-1)),
    provenance=st.sampled_from(list(Provenance)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(models, max_size=8, unique_by=lambda m: m.tac))
def test_csv_round_trip(items: list[HandsetModel]) -> None:
    """parse_csv(format_csv(models)) gives the models back, whatever the names contain."""
    assert parse_csv(format_csv(items)) == items
    table = HandsetTable(items)
    again = HandsetTable()
    again.import_csv(table.export_csv())
    assert [e.model for e in again] == [e.model for e in table]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_raises_only_csv_error(text: str) -> None:
    """Any text parses to models or raises CsvError, never another exception."""
    try:
        parsed = parse_csv(",".join(CSV_HEADER) + "\n" + text)
    except CsvError:
        return
    assert all(isinstance(m, HandsetModel) for m in parsed)


# -- learning from the instrument ------------------------------------------------------

UNKNOWN = "86099999"


def test_three_agreeing_results_teach_the_tac() -> None:
    """Two results leave the TAC pending; the third agreeing one makes it known, with A the
    mean of the three, provenance instrument, and a profile for later SMS calibration."""
    table = HandsetTable()
    assert table.record_instrument_result(UNKNOWN, D("10.0")).status is LearnStatus.PENDING
    second = table.record_instrument_result(UNKNOWN, D("10.4"), name="Mystery 5")
    assert second.status is LearnStatus.PENDING
    assert second.results == (D("10.0"), D("10.4"))
    assert table.get(UNKNOWN) is None
    third = table.record_instrument_result(UNKNOWN, D("10.5"))
    assert third.status is LearnStatus.LEARNED
    assert third.entry is not None
    model = third.entry.model
    assert model.a_db == D("10.3")  # mean 10.3 exactly
    assert model.provenance is Provenance.INSTRUMENT
    assert model.name == "Mystery 5"
    assert isinstance(third.entry.calibration, Profile)
    assert table.get(UNKNOWN) == third.entry
    assert table.instrument_results(UNKNOWN) == ()


def test_agreement_is_within_one_db_of_the_mean_inclusive() -> None:
    """10, 11, 12 agree (each exactly 1 dB or less from the mean 11); 10, 10, 12 do not
    (12 is 1.33 dB from the mean 10.67) even though max - min is 2 dB in both."""
    table = HandsetTable()
    for a in ("10.0", "11.0", "12.0"):
        outcome = table.record_instrument_result(UNKNOWN, D(a))
    assert outcome.status is LearnStatus.LEARNED
    assert outcome.entry is not None and outcome.entry.model.a_db == D("11.0")

    other = HandsetTable()
    for a in ("10.0", "10.0", "12.0"):
        outcome = other.record_instrument_result(UNKNOWN, D(a))
    assert outcome.status is LearnStatus.PENDING


def test_latest_results_count_so_an_outlier_ages_out() -> None:
    """Only the latest three results are compared: an outlier blocks learning until three
    newer agreeing results follow it."""
    table = HandsetTable()
    for a in ("10.0", "20.0", "10.5", "10.2"):
        assert table.record_instrument_result(UNKNOWN, D(a)).status is LearnStatus.PENDING
    learned = table.record_instrument_result(UNKNOWN, D("10.4"))
    assert learned.status is LearnStatus.LEARNED
    assert learned.results == (D("10.5"), D("10.2"), D("10.4"))
    assert learned.entry is not None and learned.entry.model.a_db == D("10.4")  # 10.366...
    assert learned.entry.model.name == f"TAC {UNKNOWN}"


def test_mean_rounds_half_to_even() -> None:
    """With two results 10.0 and 10.1 the mean 10.05 rounds to 10.0 (half to even)."""
    table = HandsetTable(learn_count=2)
    table.record_instrument_result(UNKNOWN, D("10.0"))
    learned = table.record_instrument_result(UNKNOWN, D("10.1"))
    assert learned.entry is not None and learned.entry.model.a_db == D("10.0")


def test_known_tac_is_not_changed_by_instrument_results() -> None:
    """A TAC already in the table (lab, import or learnt) keeps its model."""
    table = HandsetTable([LAB])
    outcome = table.record_instrument_result(LAB.tac, D("20.0"))
    assert outcome.status is LearnStatus.ALREADY_KNOWN
    entry = table.get(LAB.tac)
    assert entry is not None and entry.model == LAB


def test_result_outside_the_model_range_is_not_recorded() -> None:
    """A phone measured outside 0..30 dB is not recorded against its TAC."""
    table = HandsetTable()
    outcome = table.record_instrument_result(UNKNOWN, D("30.6"))
    assert outcome.status is LearnStatus.OUT_OF_RANGE
    assert table.instrument_results(UNKNOWN) == ()
    with pytest.raises(TableError):
        table.record_instrument_result(UNKNOWN, 12.0)  # type: ignore[arg-type]
    with pytest.raises(TableError):
        table.record_instrument_result("8609999", D("12.0"))


def test_learned_refusal_model_sends_later_phones_to_the_hall() -> None:
    """A model learnt at A = 29 dB becomes known as not SMS-calibratable."""
    table = HandsetTable()
    for a in ("28.8", "29.0", "29.2"):
        outcome = table.record_instrument_result(UNKNOWN, D(a))
    assert outcome.entry is not None
    assert isinstance(outcome.entry.calibration, Refusal)


def test_bad_learning_settings_are_refused() -> None:
    """learn_count must be >= 1 and the tolerance a non-negative Decimal."""
    with pytest.raises(TableError):
        HandsetTable(learn_count=0)
    with pytest.raises(TableError):
        HandsetTable(learn_tolerance_db=Decimal(-1))
