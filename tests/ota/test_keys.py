"""ota.keys: PBOC 3DES and SP 800-108 AES diversification, KCVs, CardKeys, ICCID handling."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFCMAC, CounterLocation, Mode
from hypothesis import given
from hypothesis import strategies as st

from ota.keys import (
    ALL_NAMES,
    CardKeys,
    IccidError,
    KeyAlgorithm,
    KeyFormatError,
    KeyName,
    KeysError,
    aes_fixed_input,
    card_key,
    check_key,
    diversify,
    diversify_3des,
    diversify_aes,
    kcv,
    normalize_iccid,
    parse_key_hex,
    pboc_diversifier,
    sp800_108_cmac_aes,
    tdes_ecb_encrypt,
)

TDES = KeyAlgorithm.TDES
AES = KeyAlgorithm.AES
H = bytes.fromhex

# --- published vectors ----------------------------------------------------------------------

# EMV "Option A" master key derivation is the PBOC method: ZL = 3DES(MK, Y), ZR = 3DES(MK, Y
# XOR FF..FF), Y = the rightmost 16 digits packed BCD. Source: knovichikhin/pyemv,
# pyemv/kd.py (derive_icc_mk_a docstring: iss_mk 0123..3210, PAN 12345678901234567, PSN 01 ->
# 73AD54688CEF2934B0979857E3C719F1, parity-adjusted) and tests/test_kd_hsm.py
# (test_derive_icc_mk_a_psn: issuer MK check digits 08D7; PAN ...567, PSN 45 -> ICC MK check
# digits FF08). EMV 4.3 Book 2 Annex A1.4.1.
EMV_IMK = H("0123456789ABCDEFFEDCBA9876543210")


def test_tdes_diversification_matches_emv_option_a_published_key() -> None:
    """D = 4567890123456701 (PAN||PSN, rightmost 16) gives pyemv's ICC MK, parity aside."""
    d = H("4567890123456701")
    dk = tdes_ecb_encrypt(EMV_IMK, d + bytes(b ^ 0xFF for b in d))
    expected = H("73AD54688CEF2934B0979857E3C719F1")
    assert bytes(b & 0xFE for b in dk) == bytes(b & 0xFE for b in expected)
    assert kcv(TDES, dk) == kcv(TDES, expected)  # DES ignores parity: same key to the card


def test_tdes_diversification_matches_emv_option_a_published_kcvs() -> None:
    """The issuer key's and the derived key's published check digits (08D7, FF08)."""
    assert kcv(TDES, EMV_IMK)[:2] == H("08D7")
    # An ICCID whose rightmost 16 digits are the PAN||PSN digits of the pyemv case.
    iccid = "8986" + "4567890123456745"
    assert pboc_diversifier(iccid) == H("4567890123456745")
    card = diversify_3des(EMV_IMK, iccid)
    assert kcv(TDES, card)[:2] == H("FF08")


# PBOC.md "Published worked examples" (a CSDN worked example of PBOC load/purchase, 2011-12):
# the session keys are 3DES-ECB under the 2-key DLK/DPK, the primitive diversification uses.
PBOC_DLK = H("11223344556677888877665544332211")


def test_tdes_primitive_reproduces_pboc_session_keys() -> None:
    """SESLK 9B1D924E05595603 and SESPK 003238ABC57659DD from PBOC.md's published figures."""
    assert tdes_ecb_encrypt(PBOC_DLK, H("1122334400008000")) == H("9B1D924E05595603")
    assert tdes_ecb_encrypt(PBOC_DLK, H("1122334400000001")) == H("003238ABC57659DD")


# 3DES KCVs: hk.javashuo.com/article/p-ydxxltpk-hg.html (key components and their check
# values: component 1 -> FA16CB, component 2 -> 906256, combined key -> 9BAE3E).
@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("138CE5B32C0E9126C291E970EA98764C", "FA16CB"),
        ("1FD3C2437F6EE6DCD9383E1A49E9674C", "906256"),
        ("0C5F27F0536077FA1BA9D76AA3711100", "9BAE3E"),
    ],
)
def test_tdes_kcv_published(key: str, expected: str) -> None:
    """A 3DES KCV is 3DES-ECB(key, 00*8)[:3], as published for these key components."""
    assert kcv(TDES, H(key)) == H(expected)


# NIST CAVP SP 800-108 KBKDF, counter mode, [PRF=CMAC_AES128|CMAC_AES256]
# [CTRLOCATION=BEFORE_FIXED] [RLEN=8_BITS]; copy in pyca/cryptography,
# vectors/cryptography_vectors/KDF/nist-800-108-KBKDF-CTR.txt (CAVS 14.4).
CAVP = [
    # AES-128, COUNT=0, L=128
    (
        "dff1e50ac0b69dc40f1051d46c2b069c",
        "c16e6e02c5a3dcc8d78b9ac1306877761310455b4e41469951d9e6c2245a064b"
        "33fd8c3b01203a7824485bf0a64060c4648b707d2607935699316ea5",
        "8be8f0869b3c0ba97b71863d1b9f7813",
    ),
    # AES-128, COUNT=10, L=256 (two PRF blocks)
    (
        "682e814d872397eba71170a693514904",
        "e323cdfa7873a0d72cd86ffb4468744f097db60498f7d0e3a43bafd2d1af675e"
        "4a88338723b1236199705357c47bf1d89b2f4617a340980e6331625c",
        "dac9b6ca405749cfb065a0f1e42c7c4224d3d5db32fdafe9dee6ca193316f2c7",
    ),
    # AES-128, COUNT=20, L=160 (a partial last block)
    (
        "7aa9973481d560f3be217ac3341144d8",
        "46f88b5af7fb9e29262dd4e010143a0a9c465c627450ec74ab7251889529193e"
        "995c4b56ff55bc2fc8992a0df1ee8056f6816b7614fba4c12d3be1a5",
        "1746ae4f09903f74bfbe1b8ae2b79d74576a3b09",
    ),
    # AES-256, COUNT=0, L=128
    (
        "aeb7201d055f754212b3e497bd0b25789a49e51da9f363df414a0f80e6f4e42c",
        "11ec30761780d4c44acb1f26ca1eb770f87c0e74505e15b7e456b019ce0c3810"
        "3c4d14afa1de71d340db51410596627512cf199fffa20ef8c5f4841e",
        "2a9e2fe078bd4f5d3076d14d46f39fb2",
    ),
    # AES-256, COUNT=10, L=256
    (
        "5402c978955128558789bee7b571465174a60582a7640037387f99ac16683173",
        "5c7eb447481c2884a5398449eaecbb8b55f1f1981ba0fd187818d8b3581b430c"
        "3da52ab83d444e003625ff36fcbd160c67b18d85b6c9d00da1a15d15",
        "f22a4686abe599c2194d21fc9071ffceb023dd9b24c13f05a3d44cfc77fec44a",
    ),
]


@pytest.mark.parametrize(("ki", "fixed", "ko"), CAVP)
def test_sp800_108_cmac_aes_cavp(ki: str, fixed: str, ko: str) -> None:
    """The KDF the AES method uses reproduces NIST CAVP counter-mode CMAC-AES vectors."""
    assert sp800_108_cmac_aes(H(ki), H(fixed), len(H(ko))) == H(ko)


# --- our own vectors (also in docs/_ota_keys.md) --------------------------------------------

OUR_ICCID = "89860012345678901234"
OUR_ICCID_F = "8986001234567890123F"
AES128_MK = bytes(range(16))
AES256_MK = bytes(range(32))

OWN_3DES = [
    (OUR_ICCID, "0012345678901234", "0A49F428F07E51769F318A78AD430BD4", "4D2D41"),
    (OUR_ICCID_F, "6001234567890123", "6851CB2C91D2B77FCF27CAF71D175F98", "78C4CB"),
]


@pytest.mark.parametrize(("iccid", "d", "dk", "check"), OWN_3DES)
def test_tdes_own_vectors(iccid: str, d: str, dk: str, check: str) -> None:
    """Our ICCID mapping: D (rightmost 16 digits, F filler dropped), DK and its KCV."""
    assert pboc_diversifier(iccid) == H(d)
    card = diversify_3des(EMV_IMK, iccid)
    assert card == H(dk)
    assert kcv(TDES, card) == H(check)
    d_bytes = H(d)
    assert card == tdes_ecb_encrypt(EMV_IMK, d_bytes) + tdes_ecb_encrypt(
        EMV_IMK, bytes(b ^ 0xFF for b in d_bytes)
    )


OWN_AES = [
    (AES128_MK, KeyName.KIC, OUR_ICCID, "C0ACAE92A40B14E9F5BB6469914E79BA", "E0E28C"),
    (AES128_MK, KeyName.KID, OUR_ICCID, "5031EFDDA9436ED4ACDF56E086AEDC89", "C904FC"),
    (AES128_MK, KeyName.KIC, OUR_ICCID_F, "A5890243ED29899B2AEA00BBDF576E89", "04CE1F"),
    (
        AES256_MK,
        KeyName.KIC,
        OUR_ICCID,
        "0846100A5EB90E0C8295192935ADAD20F650854D44B1F64A97DC48F19AE7F373",
        "54EAE7",
    ),
    (
        AES256_MK,
        KeyName.KID,
        OUR_ICCID,
        "F3F15DEAC7E18FE2A903D82624214E57A216D105FE4925BD12E1EE73A876A49D",
        "00AD48",
    ),
]


@pytest.mark.parametrize(("master", "name", "iccid", "key", "check"), OWN_AES)
def test_aes_own_vectors(master: bytes, name: KeyName, iccid: str, key: str, check: str) -> None:
    """Our AES mapping (label = purpose, context = ICCID ASCII, [L]_16) and the KCVs."""
    card = diversify_aes(master, name, iccid)
    assert card == H(key)
    assert kcv(AES, card) == H(check)


def test_aes_fixed_input_layout() -> None:
    """Fixed input data is label || 00 || ICCID ASCII || [L]_16, as documented."""
    assert aes_fixed_input(KeyName.KID, OUR_ICCID, 16) == (
        b"KID\x00" + b"89860012345678901234" + b"\x00\x80"
    )
    assert aes_fixed_input(KeyName.DLK, OUR_ICCID_F, 32).endswith(b"8986001234567890123\x01\x00")


@pytest.mark.parametrize("name", list(KeyName))
@pytest.mark.parametrize("master", [AES128_MK, bytes(range(24)), AES256_MK])
def test_aes_method_equals_kbkdf_label_context_form(master: bytes, name: KeyName) -> None:
    """Our fixed input equals KBKDFCMAC's own label/context/[L] encoding (llen = 2)."""
    kdf = KBKDFCMAC(
        algorithms.AES,
        Mode.CounterMode,
        len(master),
        1,
        2,
        CounterLocation.BeforeFixed,
        name.label,
        OUR_ICCID.encode(),
        None,
    )
    assert diversify_aes(master, name, OUR_ICCID) == kdf.derive(master)


def test_aes_kcv_is_gp_convention() -> None:
    """AES KCV = AES-ECB(key, 01*16)[:3], not the zero block (GP Card Spec B.6)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    enc = Cipher(algorithms.AES(AES128_MK), modes.ECB()).encryptor()
    ones = enc.update(b"\x01" * 16)
    enc2 = Cipher(algorithms.AES(AES128_MK), modes.ECB()).encryptor()
    zeros = enc2.update(bytes(16))
    assert kcv(AES, AES128_MK) == ones[:3] == H("C35280")
    assert kcv(AES, AES128_MK) != zeros[:3]


# --- behaviour -------------------------------------------------------------------------------


def test_one_card_one_key() -> None:
    """Different cards, and different purposes, get different keys from one master."""
    other = "89860012345678901235"
    assert diversify_3des(EMV_IMK, OUR_ICCID) != diversify_3des(EMV_IMK, other)
    assert diversify_aes(AES128_MK, KeyName.KIC, OUR_ICCID) != diversify_aes(
        AES128_MK, KeyName.KIC, other
    )
    assert diversify_aes(AES128_MK, KeyName.KIC, OUR_ICCID) != diversify_aes(
        AES128_MK, KeyName.KID, OUR_ICCID
    )


def test_diversify_dispatches_on_algorithm() -> None:
    """diversify() picks the PBOC method for 3DES and the KDF for AES."""
    assert diversify(TDES, EMV_IMK, KeyName.DLK, OUR_ICCID) == diversify_3des(EMV_IMK, OUR_ICCID)
    assert diversify(AES, AES128_MK, KeyName.KIC, OUR_ICCID) == diversify_aes(
        AES128_MK, KeyName.KIC, OUR_ICCID
    )


@pytest.mark.parametrize(
    ("text", "digits"),
    [
        ("89860012345678901234", "89860012345678901234"),
        ("8986001234567890123F", "8986001234567890123"),
        ("8986001234567890123f", "8986001234567890123"),
        ("1234567890123456", "1234567890123456"),
    ],
)
def test_normalize_iccid(text: str, digits: str) -> None:
    """One trailing F filler is dropped; the check digit is kept; nothing else changes."""
    assert normalize_iccid(text) == digits


@pytest.mark.parametrize(
    "text",
    [
        "",
        "F",
        "123456789012345",
        "898600123456789012345",
        "8986001234567890123FF",
        "89860012345678901 34",
        "8986001234567890123A",
        "８９８６００１２３４５６７８９０１２",
    ],
)
def test_bad_iccid_refused(text: str) -> None:
    """Too short, too long, non-digits (incl. non-ASCII digits), two fillers: IccidError."""
    with pytest.raises(IccidError):
        normalize_iccid(text)


@given(st.text(max_size=40))
def test_arbitrary_iccid_text_raises_only_iccid_error(text: str) -> None:
    """Any string either normalises to 16-20 ASCII digits or raises IccidError."""
    try:
        digits = normalize_iccid(text)
    except IccidError:
        return
    assert digits.isascii() and digits.isdigit() and 16 <= len(digits) <= 20


@given(st.binary(min_size=16, max_size=16), st.from_regex(r"[0-9]{16,20}", fullmatch=True))
def test_tdes_card_key_halves_relate_to_not_d(master: bytes, iccid: str) -> None:
    """For any master and ICCID, DK's right half is the left half's method applied to NOT D."""
    dk = diversify_3des(master, iccid)
    d = bytes.fromhex(iccid[-16:])
    assert dk[:8] == tdes_ecb_encrypt(master, d)
    assert dk[8:] == tdes_ecb_encrypt(master, bytes(b ^ 0xFF for b in d))


@pytest.mark.parametrize(
    ("alg", "name", "material"),
    [
        (AES, KeyName.DLK, bytes(16)),  # wallet keys are 3DES
        (TDES, KeyName.KIC, bytes(24)),  # only 2-key 3DES
        (TDES, KeyName.KIC, H("0123456789ABCDEF0123456789ABCDEF")),  # halves equal
        (AES, KeyName.KIC, bytes(20)),
        (AES, KeyName.KID, b""),
    ],
)
def test_check_key_refuses_unfit_material(
    alg: KeyAlgorithm, name: KeyName, material: bytes
) -> None:
    """Wrong length, AES for a PBOC key, or single-DES-equivalent 3DES: KeyFormatError."""
    with pytest.raises(KeyFormatError):
        check_key(alg, name, material)


@pytest.mark.parametrize("text", ["", "0", "zz" * 16, "0123456789ABCDEF0"])
def test_parse_key_hex_refuses_without_echo(text: str) -> None:
    """A malformed key is refused with a message that does not repeat it."""
    with pytest.raises(KeyFormatError) as info:
        parse_key_hex(text)
    if text:
        assert text not in str(info.value)


def test_parse_key_hex_ignores_whitespace() -> None:
    """Spaces and the newline of a pasted key are ignored."""
    assert parse_key_hex(" 0123 4567\t89AB cdef \n") == H("0123456789ABCDEF")


def test_primitives_refuse_bad_lengths() -> None:
    """Bad key or block lengths raise KeysError, never a cryptography exception."""
    with pytest.raises(KeysError):
        tdes_ecb_encrypt(bytes(8), bytes(8))
    with pytest.raises(KeysError):
        tdes_ecb_encrypt(EMV_IMK, bytes(7))
    with pytest.raises(KeysError):
        sp800_108_cmac_aes(bytes(15), b"x", 16)
    with pytest.raises(KeysError):
        diversify_aes(EMV_IMK[:15], KeyName.KIC, OUR_ICCID)
    with pytest.raises(KeysError):
        kcv(AES, bytes(5))


def _card() -> CardKeys:
    keys = tuple(
        card_key(
            name,
            TDES if name.wallet else AES,
            3,
            diversify(
                TDES if name.wallet else AES, EMV_IMK if name.wallet else AES128_MK, name, OUR_ICCID
            ),
        )
        for name in ALL_NAMES
    )
    return CardKeys(OUR_ICCID, "ota", 3, keys)


def test_card_keys_ota_pair() -> None:
    """ota_keys() gives the KIc and KID bytes, unpackable as a pair."""
    card = _card()
    pair = card.ota_keys()
    kic, kid = pair
    assert kic == card.key(KeyName.KIC) == diversify_aes(AES128_MK, KeyName.KIC, OUR_ICCID)
    assert kid == card.key("kid")
    assert card.names == ALL_NAMES


def test_card_keys_missing_name() -> None:
    """Asking a key set for a key it lacks raises KeysError naming the key."""
    card = CardKeys(OUR_ICCID, "wallet", 1, tuple(k for k in _card().keys if k.name.wallet))
    with pytest.raises(KeysError, match="no kic key"):
        card.ota_keys()


def test_reprs_show_kcvs_never_keys() -> None:
    """repr/str of CardKeys, CardKey and the OTA pair carry names, versions, KCVs, no key hex."""
    card = _card()
    texts = [repr(card), str(card), repr(card.ota_keys()), str(card.ota_keys())]
    texts += [repr(k) for k in card.keys] + [f"{card}", f"{card.keys}"]
    for key in card.keys:
        for text in texts:
            assert key.value.hex() not in text.lower()
            assert key.value.hex()[:12] not in text.lower()
    assert "kic v3 aes-128 KCV E0E28C" in repr(card)
    assert "dlk v3 3des-128" in repr(card)
