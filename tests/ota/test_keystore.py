"""ota.keystore: the key file and the PKCS#11 (SoftHSM2) backends behind one interface.

The PKCS#11 tests need SoftHSM2 (Debian package softhsm2): they skip without it, except under
``CI=true`` where its absence fails. python-pkcs11 loads a PKCS#11 module once per process and
SoftHSM reads ``SOFTHSM2_CONF`` when it is initialised, so one session-scoped fixture writes a
throwaway configuration and token, sets the variable, then (re)initialises the library; each
test gets a store on that token and its keys are destroyed afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ota.keys import (
    ALL_NAMES,
    CardKeys,
    KeyAlgorithm,
    KeyName,
    diversify,
    kcv,
)
from ota.keystore import (
    FileKeyStore,
    KeyExistsError,
    KeyFileError,
    KeyInfo,
    KeyNotFoundError,
    KeyStore,
    KeyStoreError,
    Pkcs11KeyStore,
    generate_keyset,
)

TDES = KeyAlgorithm.TDES
AES = KeyAlgorithm.AES
H = bytes.fromhex

SOFTHSM_LIB = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN = "stkpay-test"
PIN = "1234"

TDES_MK = H("0123456789ABCDEFFEDCBA9876543210")
TDES_MK2 = H("11223344556677888877665544332211")
AES128_MK = bytes(range(16))
AES256_MK = bytes(range(32))
ICCIDS = ["89860012345678901234", "8986001234567890123F", "89860099999999999999"]
ALL_MASTERS = [TDES_MK, TDES_MK2, AES128_MK, AES256_MK]


def _fill(store: KeyStore) -> None:
    """Version 1: AES-128 OTA keys + 3DES wallet keys; version 2: AES-256 OTA keys."""
    store.import_key("ota", "kic", 1, "aes", AES128_MK)
    store.import_key("ota", KeyName.KID, 1, AES, AES128_MK[::-1])
    store.import_key("ota", "dlk", 1, "3des", TDES_MK)
    store.import_key("ota", "dpk", 1, TDES, TDES_MK2)
    store.import_key("ota", "dtk", 1, TDES, TDES_MK2[::-1])
    store.import_key("ota", "kic", 2, AES, AES256_MK)
    store.import_key("ota", "kid", 2, AES, AES256_MK[::-1])
    store.import_key("legacy", "kic", 7, TDES, TDES_MK)
    store.import_key("legacy", "kid", 7, TDES, TDES_MK2)


# --- key file ------------------------------------------------------------------------------


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    """Where a test's key file goes (not created)."""
    return tmp_path / "var" / "keys.json"


def test_missing_file_is_an_empty_store(key_path: Path) -> None:
    """No file yet: nothing listed, no current version, no card keys."""
    store = FileKeyStore(key_path)
    assert store.list_keys() == []
    with pytest.raises(KeyNotFoundError):
        store.current_version("ota")
    with pytest.raises(KeyNotFoundError):
        store.card_keys(ICCIDS[0])


def test_import_creates_private_file_and_reports_kcv(key_path: Path) -> None:
    """The first import creates the file 0600 (its directory 0700) and returns the KCV."""
    info = FileKeyStore(key_path).import_key("ota", "kic", 1, "aes", AES128_MK)
    assert info == KeyInfo("ota", KeyName.KIC, 1, AES, 16, kcv(AES, AES128_MK))
    assert info.kcv_hex == "C35280"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    doc = json.loads(key_path.read_text())
    assert doc["format"] == "stkpay-keys"
    assert doc["keys"][0]["kcv"] == "C35280"
    # a fresh store object reads what the first one wrote
    assert FileKeyStore(key_path).list_keys() == [info]


def test_import_rewrites_atomically(key_path: Path) -> None:
    """Each import leaves exactly the key file and its lock file: no temporary file behind."""
    store = FileKeyStore(key_path)
    _fill(store)
    assert sorted(p.name for p in key_path.parent.iterdir()) == ["keys.json", "keys.json.lock"]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert len(store.list_keys()) == 9


def test_concurrent_imports_all_land(key_path: Path) -> None:
    """Imports from many threads (each its own store object) are all kept: read-modify-write
    is serialised by the file lock."""
    errors: list[BaseException] = []

    def worker(version: int) -> None:
        try:
            FileKeyStore(key_path).import_key("ota", "kic", version, AES, bytes([version]) * 16)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(v,)) for v in range(1, 13)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [i.version for i in FileKeyStore(key_path).list_keys()] == list(range(1, 13))


def test_versions_are_immutable(key_path: Path) -> None:
    """Importing an existing (key set, name, version) is refused and changes nothing."""
    store = FileKeyStore(key_path)
    store.import_key("ota", "kic", 1, AES, AES128_MK)
    before = key_path.read_bytes()
    with pytest.raises(KeyExistsError, match="ota/kic/v1 already exists"):
        store.import_key("ota", "kic", 1, AES, AES256_MK)
    assert key_path.read_bytes() == before


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620])
def test_group_or_world_access_is_refused(key_path: Path, mode: int) -> None:
    """A key file that group or others may access is refused with a clear message."""
    store = FileKeyStore(key_path)
    store.import_key("ota", "kic", 1, AES, AES128_MK)
    key_path.chmod(mode)
    with pytest.raises(KeyFileError, match=r"group or others may access it.*chmod 600"):
        store.list_keys()
    with pytest.raises(KeyFileError):
        store.card_keys(ICCIDS[0])


def test_card_keys_current_and_older_versions(key_path: Path) -> None:
    """The current version is the highest; an older one stays usable by number (rotation)."""
    store = FileKeyStore(key_path)
    _fill(store)
    assert store.current_version("ota") == 2
    assert store.current_version("legacy") == 7
    current = store.card_keys(ICCIDS[0])
    assert (current.keyset, current.version, current.names) == ("ota", 2, OTA)
    assert current.key("kic") == diversify(AES, AES256_MK, KeyName.KIC, ICCIDS[0])
    old = store.card_keys(ICCIDS[0], "ota", 1)
    assert old.names == ALL_NAMES
    assert old.key("dlk") == diversify(TDES, TDES_MK, KeyName.DLK, ICCIDS[0])
    assert old.key("kid") == diversify(AES, AES128_MK[::-1], KeyName.KID, ICCIDS[0])
    with pytest.raises(KeyNotFoundError, match="no version 3"):
        store.card_keys(ICCIDS[0], "ota", 3)
    with pytest.raises(KeyNotFoundError, match="no key set 'nope'"):
        store.card_keys(ICCIDS[0], "nope")


def test_card_keys_normalise_the_iccid(key_path: Path) -> None:
    """The F filler is dropped: 19 digits + F is the same card as the 19 digits."""
    store = FileKeyStore(key_path)
    _fill(store)
    a = store.card_keys("8986001234567890123F", "legacy")
    b = store.card_keys("8986001234567890123", "legacy")
    assert a == b
    assert a.iccid == "8986001234567890123"
    with pytest.raises(KeyStoreError, match="bad ICCID"):
        store.card_keys("8986", "legacy")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("ota", "kic", 1, "aes", bytes(15)), "16, 24 or 32"),
        (("ota", "dlk", 1, "aes", AES128_MK), "always 2-key 3DES"),
        (("ota", "kix", 1, "aes", AES128_MK), "unknown key name"),
        (("ota", "kic", 1, "des", AES128_MK), "unknown algorithm"),
        (("ota", "kic", 0, "aes", AES128_MK), "must be 1-255"),
        (("ota", "kic", 256, "aes", AES128_MK), "must be 1-255"),
        (("o/ta", "kic", 1, "aes", AES128_MK), "bad key set name"),
        (("", "kic", 1, "aes", AES128_MK), "bad key set name"),
    ],
)
def test_bad_imports_are_refused(key_path: Path, args: tuple[object, ...], match: str) -> None:
    """Bad names, versions, algorithms or material: KeyStoreError, and no file written."""
    with pytest.raises(KeyStoreError, match=match):
        FileKeyStore(key_path).import_key(*args)  # type: ignore[arg-type]
    assert not key_path.exists()


def _write_doc(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    path.chmod(0o600)


GOOD_ENTRY = {
    "keyset": "ota",
    "name": "kic",
    "version": 1,
    "algorithm": "aes",
    "key": AES128_MK.hex(),
    "kcv": "C35280",
}


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ("{not json", "not JSON"),
        ([], "not a key file"),
        ({"format": "other"}, "not a key file"),
        ({"format": "stkpay-keys", "version": 2, "keys": []}, "unsupported key file version"),
        ({"format": "stkpay-keys", "version": 1, "keys": {}}, '"keys" must be a list'),
        ({"format": "stkpay-keys", "version": 1, "keys": [1]}, "must be an object"),
        (
            {"format": "stkpay-keys", "version": 1, "keys": [{**GOOD_ENTRY, "kcv": "000000"}]},
            "does not match the key",
        ),
        (
            {"format": "stkpay-keys", "version": 1, "keys": [{**GOOD_ENTRY, "key": "zz"}]},
            "key is not hex",
        ),
        (
            {"format": "stkpay-keys", "version": 1, "keys": [GOOD_ENTRY, GOOD_ENTRY]},
            "appears twice",
        ),
        (
            {"format": "stkpay-keys", "version": 1, "keys": [{**GOOD_ENTRY, "extra": 1}]},
            "expected exactly the fields",
        ),
        (
            {"format": "stkpay-keys", "version": 1, "keys": [{**GOOD_ENTRY, "version": "1"}]},
            "bad key version",
        ),
    ],
)
def test_malformed_key_file_is_refused(key_path: Path, doc: object, match: str) -> None:
    """A malformed key file raises KeyFileError naming the problem (and the entry)."""
    _write_doc(key_path, doc)
    with pytest.raises(KeyFileError, match=match):
        FileKeyStore(key_path).list_keys()


def test_bad_kcv_error_does_not_show_the_key(key_path: Path) -> None:
    """The KCV mismatch message names the key and both KCVs, never the key hex."""
    _write_doc(
        key_path,
        {"format": "stkpay-keys", "version": 1, "keys": [{**GOOD_ENTRY, "kcv": "ABCDEF"}]},
    )
    with pytest.raises(KeyFileError) as info:
        FileKeyStore(key_path).list_keys()
    assert "ota/kic/v1" in str(info.value)
    assert AES128_MK.hex() not in str(info.value).lower()


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=10), inner, max_size=4)
            ),
            max_leaves=12,
        ).map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda e: json.dumps({"format": "stkpay-keys", "version": 1, "keys": [e]}).encode(),
            st.dictionaries(
                st.sampled_from(sorted(GOOD_ENTRY)),
                st.one_of(st.integers(), st.text(max_size=40)),
            ),
        ),
    )
)
def test_arbitrary_key_file_content_raises_only_key_file_error(content: bytes) -> None:
    """Whatever the file holds, reading it either works or raises KeyFileError."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.json"
        path.write_bytes(content)
        path.chmod(0o600)
        try:
            infos = FileKeyStore(path).list_keys()
        except KeyFileError:
            return
        assert all(isinstance(i, KeyInfo) for i in infos)


def test_generate_makes_every_name(key_path: Path) -> None:
    """generate: kic/kid in the chosen algorithm, PBOC keys always 3DES, fresh each time."""
    store = FileKeyStore(key_path)
    infos = store.generate("demo", 1, "aes")
    assert [i.name for i in infos] == list(ALL_NAMES)
    assert {i.name: i.algorithm for i in infos} == {
        KeyName.KIC: AES,
        KeyName.KID: AES,
        KeyName.DLK: TDES,
        KeyName.DPK: TDES,
        KeyName.DTK: TDES,
    }
    again = generate_keyset(store, "demo", 2, TDES)
    assert all(i.algorithm is TDES for i in again)
    assert {i.kcv for i in infos}.isdisjoint({i.kcv for i in again})
    assert store.card_keys(ICCIDS[0], "demo").version == 2


# --- no key material in reprs, messages, logs ----------------------------------------------


def _secrets(card: CardKeys) -> list[str]:
    return (
        [m.hex() for m in ALL_MASTERS]
        + [m[::-1].hex() for m in ALL_MASTERS]
        + [k.value.hex() for k in card.keys]
    )


def test_nothing_key_bearing_in_reprs_errors_or_logs(
    key_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Formatting CardKeys, the store and its errors, and the import log lines, shows no key hex."""
    caplog.set_level(logging.DEBUG)
    store = FileKeyStore(key_path)
    _fill(store)
    card = store.card_keys(ICCIDS[0], "ota", 1)
    texts = [repr(card), str(card), f"{card!r}", repr(store), str(store), repr(card.ota_keys())]
    texts += [repr(i) for i in store.list_keys()]
    try:
        store.import_key("ota", "kic", 1, AES, AES256_MK)
    except KeyExistsError as exc:
        texts += [str(exc), repr(exc)]
    try:
        store.import_key("ota", "kic", 9, AES, AES256_MK[:15])
    except KeyStoreError as exc:
        texts += [str(exc), repr(exc)]
    texts += [r.getMessage() for r in caplog.records]
    assert any("KCV" in t for t in texts)
    for secret in _secrets(card):
        for text in texts:
            assert secret not in text.lower()
            assert secret[:16] not in text.lower()


# --- PKCS#11 (SoftHSM2) --------------------------------------------------------------------

OTA = (KeyName.KIC, KeyName.KID)


def _softhsm_missing() -> list[str]:
    missing = [] if Path(SOFTHSM_LIB).exists() else [SOFTHSM_LIB]
    if shutil.which("softhsm2-util") is None:
        missing.append("softhsm2-util")
    return missing


@pytest.fixture(scope="session")
def softhsm_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway SoftHSM2 token (label TOKEN, PIN PIN); yields the module path."""
    missing = _softhsm_missing()
    if missing:
        reason = f"SoftHSM2 is not installed ({', '.join(missing)} missing)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; under CI=true it is required (Debian package softhsm2)")
        pytest.skip(reason)
    import pkcs11

    base = tmp_path_factory.mktemp("softhsm")
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\nslots.removable = false\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    try:
        subprocess.run(
            [
                *("softhsm2-util", "--init-token", "--free", "--label", TOKEN),
                *("--so-pin", "0000", "--pin", PIN),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        # Loaded once per process: re-initialise so that SoftHSM reads this configuration
        # even if an earlier test in the process loaded it with another one.
        pkcs11.lib(SOFTHSM_LIB).reinitialize()
        yield SOFTHSM_LIB
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture
def hsm(softhsm_token: str) -> Iterator[Pkcs11KeyStore]:
    """A store on the test token; every secret key on it is destroyed afterwards."""
    import pkcs11

    store = Pkcs11KeyStore(softhsm_token, TOKEN, PIN)
    try:
        yield store
    finally:
        store.close()
        token = pkcs11.lib(softhsm_token).get_token(token_label=TOKEN)
        with token.open(rw=True, user_pin=PIN) as session:
            for obj in list(
                session.get_objects({pkcs11.Attribute.CLASS: pkcs11.ObjectClass.SECRET_KEY})
            ):
                obj.destroy()


def test_pkcs11_import_lists_kcvs_like_software(hsm: Pkcs11KeyStore, key_path: Path) -> None:
    """Token and file stores list the same infos (KCVs computed on the token)."""
    soft = FileKeyStore(key_path)
    _fill(hsm)
    _fill(soft)
    assert hsm.list_keys() == soft.list_keys()
    assert hsm.current_version("ota") == 2
    assert hsm.current_version("legacy") == 7


def test_pkcs11_3des_kcv_matches_token_check_value(hsm: Pkcs11KeyStore) -> None:
    """SoftHSM's own CKA_CHECK_VALUE of a DES2 key is our 3DES KCV (3DES-ECB of 00*8)."""
    import pkcs11

    info = hsm.import_key("ota", "dlk", 1, TDES, TDES_MK)
    token = pkcs11.lib(SOFTHSM_LIB).get_token(token_label=TOKEN)
    with token.open() as session:  # the store's login holds for the whole process
        key = session.get_key(label="ota/dlk/v1")
        assert bytes(key[pkcs11.Attribute.CHECK_VALUE]) == info.kcv == kcv(TDES, TDES_MK)


def test_pkcs11_token_reproduces_pboc_session_key(hsm: Pkcs11KeyStore) -> None:
    """The token's CKM_DES3_ECB under an imported DLK gives PBOC.md's published SESLK
    (load key 1122..2211, input 1122334400008000 -> 9B1D924E05595603)."""
    import pkcs11

    hsm.import_key("w", "dlk", 1, TDES, TDES_MK2)
    token = pkcs11.lib(SOFTHSM_LIB).get_token(token_label=TOKEN)
    with token.open() as session:
        key = session.get_key(label="w/dlk/v1")
        seslk = key.encrypt(H("1122334400008000"), mechanism=pkcs11.Mechanism.DES3_ECB)
    assert seslk == H("9B1D924E05595603")


def test_pkcs11_masters_are_sensitive_and_not_extractable(hsm: Pkcs11KeyStore) -> None:
    """The master's value cannot be read back from the token."""
    import pkcs11

    hsm.import_key("ota", "kic", 1, AES, AES128_MK)
    hsm.import_key("ota", "dlk", 1, TDES, TDES_MK)
    token = pkcs11.lib(SOFTHSM_LIB).get_token(token_label=TOKEN)
    with token.open() as session:
        for label in ("ota/kic/v1", "ota/dlk/v1"):
            key = session.get_key(label=label)
            assert key[pkcs11.Attribute.SENSITIVE] is True
            assert key[pkcs11.Attribute.EXTRACTABLE] is False
            with pytest.raises(pkcs11.AttributeSensitive):
                _ = key[pkcs11.Attribute.VALUE]


@pytest.mark.parametrize("iccid", ICCIDS)
def test_pkcs11_and_file_give_identical_card_keys(
    hsm: Pkcs11KeyStore, key_path: Path, iccid: str
) -> None:
    """Same masters, same ICCID: the token (3DES on-token ECB, AES on-token CMAC KDF) and the
    software path give byte-identical card keys, in every key set and version."""
    soft = FileKeyStore(key_path)
    _fill(hsm)
    _fill(soft)
    for keyset, version in (("ota", 1), ("ota", 2), ("legacy", 7), ("ota", None)):
        a = hsm.card_keys(iccid, keyset, version)
        b = soft.card_keys(iccid, keyset, version)
        assert a == b
        assert [k.value for k in a.keys] == [k.value for k in b.keys]


def test_pkcs11_card_keys_match_the_reference_functions(hsm: Pkcs11KeyStore) -> None:
    """On-token diversification equals ota.keys.diversify for 3DES, AES-128 and AES-256."""
    hsm.import_key("x", "kic", 1, AES, AES256_MK)
    hsm.import_key("x", "kid", 1, AES, AES128_MK)
    hsm.import_key("x", "dtk", 1, TDES, TDES_MK)
    card = hsm.card_keys(ICCIDS[0], "x")
    assert card.key("kic") == diversify(AES, AES256_MK, KeyName.KIC, ICCIDS[0])
    assert card.key("kid") == diversify(AES, AES128_MK, KeyName.KID, ICCIDS[0])
    assert card.key("dtk") == diversify(TDES, TDES_MK, KeyName.DTK, ICCIDS[0])


def test_pkcs11_versions_are_immutable(hsm: Pkcs11KeyStore) -> None:
    """A second import of the same label is refused; the first key stays."""
    first = hsm.import_key("ota", "kic", 1, AES, AES128_MK)
    with pytest.raises(KeyExistsError, match="ota/kic/v1 already exists"):
        hsm.import_key("ota", "kic", 1, AES, AES256_MK)
    assert hsm.list_keys() == [first]
    with pytest.raises(KeyNotFoundError):
        hsm.card_keys(ICCIDS[0], "ota", 2)


def test_pkcs11_stores_share_the_login(hsm: Pkcs11KeyStore) -> None:
    """A second store on the token needs the same PIN; closing it keeps the first working."""
    hsm.import_key("ota", "kic", 1, AES, AES128_MK)
    with pytest.raises(KeyStoreError, match="PIN was refused"):
        Pkcs11KeyStore(SOFTHSM_LIB, TOKEN, "4321")
    with Pkcs11KeyStore(SOFTHSM_LIB, TOKEN, PIN) as second:
        assert second.list_keys() == hsm.list_keys()
    assert hsm.card_keys(ICCIDS[0]).version == 1
    second.close()  # idempotent
    with pytest.raises(KeyStoreError, match="closed"):
        second.list_keys()


def test_pkcs11_bad_pin_and_token_are_clear_errors(softhsm_token: str) -> None:
    """A refused PIN or an unknown token: KeyStoreError, the PIN never in the message."""
    with pytest.raises(KeyStoreError, match="PIN was refused") as info:
        Pkcs11KeyStore(softhsm_token, TOKEN, "987654")
    assert "987654" not in str(info.value)
    with pytest.raises(KeyStoreError, match="no such token"):
        Pkcs11KeyStore(softhsm_token, "no-such-token", PIN)


def test_pkcs11_nothing_key_bearing_in_reprs_or_errors(
    hsm: Pkcs11KeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The token store's repr, its errors, its card keys and log lines show no key hex or PIN."""
    caplog.set_level(logging.DEBUG)
    _fill(hsm)
    card = hsm.card_keys(ICCIDS[1], "ota", 1)
    texts = [repr(hsm), str(hsm), repr(card), str(card)]
    try:
        hsm.import_key("ota", "dlk", 1, TDES, TDES_MK2)
    except KeyExistsError as exc:
        texts.append(str(exc))
    texts += [r.getMessage() for r in caplog.records]
    assert any("KCV" in t for t in texts)
    for text in texts:
        assert f"'{PIN}'" not in text
        for secret in _secrets(card):
            assert secret not in text.lower()


def test_parsed_file_is_reused_until_it_changes(key_path: Path) -> None:
    """The key file is parsed once per version of it: another process's import is seen at
    the next lookup, and a chmod that opens it to others is refused at once."""
    store = FileKeyStore(key_path)
    generate_keyset(store, "ota", 1)
    first = store.card_keys(ICCIDS[0])
    assert store.card_keys(ICCIDS[0]) == first
    other = FileKeyStore(key_path)  # another process, in effect
    generate_keyset(other, "ota", 2)
    assert store.card_keys(ICCIDS[0]).version == 2
    os.chmod(key_path, 0o644)
    with pytest.raises(KeyFileError):
        store.card_keys(ICCIDS[0])


def test_derived_card_keys_follow_a_replaced_file(key_path: Path, tmp_path: Path) -> None:
    """Derived card keys are reused only while the key file is the same: a file replaced by
    another with other masters under the same versions gives the new keys at once."""
    store = FileKeyStore(key_path)
    generate_keyset(store, "ota", 1)
    before = store.card_keys(ICCIDS[0])
    assert store.card_keys(ICCIDS[0]) is before  # derived once, reused
    other_path = tmp_path / "other" / "keys.json"
    generate_keyset(FileKeyStore(other_path), "ota", 1)
    os.replace(other_path, key_path)
    after = store.card_keys(ICCIDS[0])
    assert after.version == 1 and after.key("kic") != before.key("kic")
