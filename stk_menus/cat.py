"""CAT proactive commands, terminal responses and menu selection (ETSI TS 102 223, TS 101 220).

A sans-IO codec: bytes in, typed frozen values out, and back. It covers what the wallet's STK
menu needs:

* the COMPREHENSION-TLV layer (TS 101 220 §7.1.1; TS 102 223 §8): single-byte tags ``01``-``7E``
  with the comprehension-required (CR) flag in bit 8, three-byte tags ``7F xx xx`` with CR in
  bit 16; lengths (TS 101 220 §7.1.2) of one octet ``00``-``7F`` or ``81 80``-``81 FF``;
* the simple data objects of TS 102 223 §8: Command details (§8.6), Device identities (§8.7),
  Result (§8.12), Duration (§8.8), Alpha identifier (§8.2), Text string (§8.15, with its data
  coding scheme: ``00`` packed GSM 7-bit, ``04`` 8-bit GSM, ``08`` UCS2), Item (§8.9), Item
  identifier (§8.10), Response length (§8.11), Default text (§8.23), Items next action indicator
  (§8.24), Icon identifier (§8.31), Item icon identifier list (§8.32), and, for the published
  pySim vectors, IMEI (§8.20), IMEISV (§8.74) and Supported radio access technologies (§8.105);
* the proactive commands SET UP MENU (§6.6.7), SELECT ITEM (§6.6.8), GET INPUT (§6.6.3) and
  DISPLAY TEXT (§6.6.1) in their BER-TLV template ``D0`` (TS 101 220 Table 7.17);
* TERMINAL RESPONSE (§6.8) and the MENU SELECTION envelope ``D3`` (§7.2).

Handling of unknown data (TS 102 223 §6.10 for commands, §8 for objects): an object this codec
does not know, or one not defined for the command at hand, is kept as a :class:`RawObject` in
the value's ``extra`` field when its CR flag is clear and refused when it is set. Text attribute
(``50``), item text attribute list (``51``) and frame identifier (``68``) are known and carried
raw. Every refusal is a :class:`CatError` whose ``result`` is the general result a terminal
would answer with (``32`` command data not understood, ``36`` required values missing, ``31``
command type not understood, ``30`` beyond terminal's capabilities).

Alpha identifiers and item texts are coded per TS 102 221 Annex A (:mod:`stk_menus.alpha`,
most compact coding); the CR flag of each simple object is part of its value so that decoding
and re-encoding reproduce the octets. Command details and device identities of a proactive
command are always encoded with CR set (``81``, ``82``), as in TS 102 384's sequences.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self, TypeAlias, TypeVar

from smsc import gsm7
from stk_menus.alpha import AlphaError, decode_alpha, encode_alpha

__all__ = [
    "DCS_8BIT",
    "DCS_PACKED",
    "DCS_UCS2",
    "ENVELOPE_MENU_SELECTION",
    "PROACTIVE_COMMAND",
    "AccessTechnology",
    "AlphaIdentifier",
    "CatError",
    "CommandDetails",
    "CommandType",
    "DataObject",
    "DefaultText",
    "Device",
    "DeviceIdentities",
    "DisplayText",
    "DisplayTextQualifier",
    "Duration",
    "GeneralResult",
    "GetInput",
    "GetInputQualifier",
    "IconIdentifier",
    "Imei",
    "Imeisv",
    "Item",
    "ItemIconIdentifierList",
    "ItemIdentifier",
    "ItemsNextActionIndicator",
    "MenuQualifier",
    "MenuSelection",
    "ProactiveCommand",
    "RawObject",
    "ResponseLength",
    "Result",
    "SelectItem",
    "SelectItemQualifier",
    "SetUpMenu",
    "SupportedRadioAccessTechnologies",
    "Tag",
    "TerminalResponse",
    "TextCoding",
    "TextString",
    "TimeUnit",
    "decode_envelope",
    "decode_object",
    "decode_proactive_command",
    "decode_terminal_response",
    "encode_object",
    "parse_objects",
    "terminal_response",
    "text_coding",
]

PROACTIVE_COMMAND: Final = 0xD0  # TS 101 220 Table 7.17
ENVELOPE_MENU_SELECTION: Final = 0xD3  # TS 101 220 Table 7.17
MAX_LENGTH: Final = 0xFF  # one APDU: lengths above 255 are not used by CAT (TS 101 220 §7.1.2)

DCS_PACKED: Final = 0x00  # TS 23.038 §4: GSM 7-bit default alphabet, packed
DCS_8BIT: Final = 0x04  # 8-bit data: GSM default alphabet, one septet per octet
DCS_UCS2: Final = 0x08  # UCS2

# -- coded values ---------------------------------------------------------------------------


class GeneralResult(enum.IntEnum):
    """General result of a proactive command (TS 102 223 §8.12; 3GPP TS 31.111 §8.12)."""

    PERFORMED_SUCCESSFULLY = 0x00
    PERFORMED_WITH_PARTIAL_COMPREHENSION = 0x01
    PERFORMED_WITH_MISSING_INFORMATION = 0x02
    REFRESH_PERFORMED_WITH_ADDITIONAL_EFS_READ = 0x03
    PERFORMED_BUT_REQUESTED_ICON_NOT_DISPLAYED = 0x04
    PERFORMED_BUT_MODIFIED_BY_CALL_CONTROL = 0x05
    PERFORMED_LIMITED_SERVICE = 0x06
    PERFORMED_WITH_MODIFICATION = 0x07
    REFRESH_PERFORMED_NAA_NOT_ACTIVE = 0x08
    PERFORMED_TONE_NOT_PLAYED = 0x09
    SESSION_TERMINATED_BY_USER = 0x10
    BACKWARD_MOVE_REQUESTED_BY_USER = 0x11
    NO_RESPONSE_FROM_USER = 0x12
    HELP_REQUIRED_BY_USER = 0x13
    USSD_OR_SS_TERMINATED_BY_USER = 0x14
    TERMINAL_CURRENTLY_UNABLE = 0x20
    NETWORK_CURRENTLY_UNABLE = 0x21
    USER_DID_NOT_ACCEPT = 0x22
    USER_CLEARED_DOWN_CALL = 0x23
    CONTRADICTION_WITH_TIMER_STATE = 0x24
    CALL_CONTROL_TEMPORARY_PROBLEM = 0x25
    LAUNCH_BROWSER_ERROR = 0x26
    MMS_TEMPORARY_PROBLEM = 0x27
    COMMAND_BEYOND_TERMINAL_CAPABILITY = 0x30
    COMMAND_TYPE_NOT_UNDERSTOOD = 0x31
    COMMAND_DATA_NOT_UNDERSTOOD = 0x32
    COMMAND_NUMBER_NOT_KNOWN = 0x33
    SS_RETURN_ERROR = 0x34
    SMS_RP_ERROR = 0x35
    REQUIRED_VALUES_MISSING = 0x36
    USSD_RETURN_ERROR = 0x37
    MULTIPLE_CARD_COMMANDS_ERROR = 0x38
    CALL_CONTROL_PERMANENT_PROBLEM = 0x39
    BEARER_INDEPENDENT_PROTOCOL_ERROR = 0x3A
    ACCESS_TECHNOLOGY_UNABLE = 0x3B
    FRAMES_ERROR = 0x3C
    MMS_ERROR = 0x3D


class CatError(ValueError):
    """Input the codec refuses. ``result`` is what a terminal would answer (TS 102 223 §6.10)."""

    def __init__(
        self, message: str, result: GeneralResult = GeneralResult.COMMAND_DATA_NOT_UNDERSTOOD
    ) -> None:
        super().__init__(message)
        self.result = result


class Tag(enum.IntEnum):
    """COMPREHENSION-TLV tag values, CR flag excluded (TS 101 220 Table 7.23)."""

    COMMAND_DETAILS = 0x01
    DEVICE_IDENTITIES = 0x02
    RESULT = 0x03
    DURATION = 0x04
    ALPHA_IDENTIFIER = 0x05
    TEXT_STRING = 0x0D
    ITEM = 0x0F
    ITEM_IDENTIFIER = 0x10
    RESPONSE_LENGTH = 0x11
    IMEI = 0x14
    HELP_REQUEST = 0x15
    DEFAULT_TEXT = 0x17
    ITEMS_NEXT_ACTION_INDICATOR = 0x18
    ICON_IDENTIFIER = 0x1E
    ITEM_ICON_IDENTIFIER_LIST = 0x1F
    IMMEDIATE_RESPONSE = 0x2B
    SUPPORTED_RADIO_ACCESS_TECHNOLOGIES = 0x34  # shares 34 with browser termination cause
    TEXT_ATTRIBUTE = 0x50
    ITEM_TEXT_ATTRIBUTE_LIST = 0x51
    IMEISV = 0x62
    FRAME_IDENTIFIER = 0x68


class CommandType(enum.IntEnum):
    """Type of command (TS 102 223 §9.4)."""

    REFRESH = 0x01
    MORE_TIME = 0x02
    POLL_INTERVAL = 0x03
    POLLING_OFF = 0x04
    SET_UP_EVENT_LIST = 0x05
    SET_UP_CALL = 0x10
    SEND_SS = 0x11
    SEND_USSD = 0x12
    SEND_SHORT_MESSAGE = 0x13
    SEND_DTMF = 0x14
    LAUNCH_BROWSER = 0x15
    GEOGRAPHICAL_LOCATION_REQUEST = 0x16
    PLAY_TONE = 0x20
    DISPLAY_TEXT = 0x21
    GET_INKEY = 0x22
    GET_INPUT = 0x23
    SELECT_ITEM = 0x24
    SET_UP_MENU = 0x25
    PROVIDE_LOCAL_INFORMATION = 0x26
    TIMER_MANAGEMENT = 0x27
    SET_UP_IDLE_MODE_TEXT = 0x28
    PERFORM_CARD_APDU = 0x30
    POWER_ON_CARD = 0x31
    POWER_OFF_CARD = 0x32
    GET_READER_STATUS = 0x33
    RUN_AT_COMMAND = 0x34
    LANGUAGE_NOTIFICATION = 0x35
    OPEN_CHANNEL = 0x40
    CLOSE_CHANNEL = 0x41
    RECEIVE_DATA = 0x42
    SEND_DATA = 0x43
    GET_CHANNEL_STATUS = 0x44
    SERVICE_SEARCH = 0x45
    GET_SERVICE_INFORMATION = 0x46
    DECLARE_SERVICE = 0x47
    SET_FRAMES = 0x50
    GET_FRAMES_STATUS = 0x51
    RETRIEVE_MULTIMEDIA_MESSAGE = 0x60
    SUBMIT_MULTIMEDIA_MESSAGE = 0x61
    DISPLAY_MULTIMEDIA_MESSAGE = 0x62
    ACTIVATE = 0x70
    CONTACTLESS_STATE_CHANGED = 0x71
    COMMAND_CONTAINER = 0x72
    ENCAPSULATED_SESSION_CONTROL = 0x73
    END_OF_PROACTIVE_SESSION = 0x81


class Device(enum.IntEnum):
    """Device identities (TS 102 223 §8.7)."""

    KEYPAD = 0x01
    DISPLAY = 0x02
    EARPIECE = 0x03
    CARD_READER_0 = 0x10
    CARD_READER_1 = 0x11
    CARD_READER_2 = 0x12
    CARD_READER_3 = 0x13
    CARD_READER_4 = 0x14
    CARD_READER_5 = 0x15
    CARD_READER_6 = 0x16
    CARD_READER_7 = 0x17
    CHANNEL_1 = 0x21
    CHANNEL_2 = 0x22
    CHANNEL_3 = 0x23
    CHANNEL_4 = 0x24
    CHANNEL_5 = 0x25
    CHANNEL_6 = 0x26
    CHANNEL_7 = 0x27
    ECAT_CLIENT_1 = 0x31
    ECAT_CLIENT_2 = 0x32
    ECAT_CLIENT_3 = 0x33
    ECAT_CLIENT_4 = 0x34
    ECAT_CLIENT_5 = 0x35
    ECAT_CLIENT_6 = 0x36
    ECAT_CLIENT_7 = 0x37
    ECAT_CLIENT_8 = 0x38
    ECAT_CLIENT_9 = 0x39
    ECAT_CLIENT_A = 0x3A
    ECAT_CLIENT_B = 0x3B
    ECAT_CLIENT_C = 0x3C
    ECAT_CLIENT_D = 0x3D
    ECAT_CLIENT_E = 0x3E
    ECAT_CLIENT_F = 0x3F
    UICC = 0x81
    TERMINAL = 0x82
    NETWORK = 0x83


class TimeUnit(enum.IntEnum):
    """Duration time unit (TS 102 223 §8.8)."""

    MINUTES = 0x00
    SECONDS = 0x01
    TENTHS_OF_SECONDS = 0x02


class AccessTechnology(enum.IntEnum):
    """Access technology (TS 102 223 §8.61)."""

    GSM = 0x00
    TIA_EIA_553 = 0x01
    TIA_EIA_136_C = 0x02
    UTRAN = 0x03
    TETRA = 0x04
    TIA_EIA_95_B = 0x05
    CDMA2000_1X = 0x06
    CDMA2000_HRPD = 0x07
    E_UTRAN = 0x08
    EHRPD = 0x09
    NG_RAN = 0x0A


class TextCoding(enum.IntEnum):
    """The alphabet a data coding scheme selects for a text string (TS 23.038 §4)."""

    GSM7_PACKED = DCS_PACKED
    GSM_8BIT = DCS_8BIT
    UCS2 = DCS_UCS2


class MenuQualifier(enum.IntFlag):
    """Command qualifier of SET UP MENU (TS 102 223 §8.6)."""

    NONE = 0x00
    SOFT_KEY = 0x01  # selection using soft key preferred
    HELP = 0x80  # help information available


class SelectItemQualifier(enum.IntFlag):
    """Command qualifier of SELECT ITEM (TS 102 223 §8.6)."""

    NONE = 0x00
    PRESENTATION_SPECIFIED = 0x01  # bit 2 gives the presentation type
    NAVIGATION_OPTIONS = 0x02  # presentation as navigation options (else data values)
    SOFT_KEY = 0x04
    HELP = 0x80


class GetInputQualifier(enum.IntFlag):
    """Command qualifier of GET INPUT (TS 102 223 §8.6)."""

    NONE = 0x00
    ALPHABET = 0x01  # alphabet set (else digits 0-9, *, #, + only)
    UCS2 = 0x02  # UCS2 alphabet (else SMS default alphabet)
    HIDDEN = 0x04  # the terminal shall not reveal the input (a PIN)
    PACKED = 0x08  # input returned in SMS packed format
    HELP = 0x80


class DisplayTextQualifier(enum.IntFlag):
    """Command qualifier of DISPLAY TEXT (TS 102 223 §8.6)."""

    NONE = 0x00
    HIGH_PRIORITY = 0x01
    WAIT_FOR_USER = 0x80  # wait for the user to clear (else clear after a delay)


# -- the TLV layer --------------------------------------------------------------------------


def _encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes((length,))
    if length <= MAX_LENGTH:
        return bytes((0x81, length))
    raise CatError(f"length {length} exceeds {MAX_LENGTH} (TS 101 220 §7.1.2 as used by CAT)")


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise CatError("truncated: length octet missing")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    if first == 0x81:
        if pos + 1 >= len(data):
            raise CatError("truncated: second length octet missing")
        length = data[pos + 1]
        if length < 0x80:
            raise CatError(f"length 81 {length:02X} is not the one-octet form it must take")
        return length, pos + 2
    raise CatError(f"length octet {first:02X}: CAT uses 00-7F or 81 80-FF (TS 101 220 §7.1.2)")


def _encode_tag(tag: int, cr: bool) -> bytes:
    if 0x01 <= tag <= 0x7E:
        return bytes((tag | (0x80 if cr else 0),))
    if 0x7F <= tag <= 0x7FFF:
        return b"\x7f" + (tag | (0x8000 if cr else 0)).to_bytes(2, "big")
    raise CatError(f"tag {tag:#x} is outside 01-7FFF")


def _read_tag(data: bytes, pos: int) -> tuple[int, bool, int]:
    first = data[pos]
    if first in (0x00, 0x80, 0xFF):
        raise CatError(f"octet {first:02X} at offset {pos} is not a COMPREHENSION-TLV tag")
    if first != 0x7F:
        return first & 0x7F, bool(first & 0x80), pos + 1
    if pos + 3 > len(data):
        raise CatError("truncated three-byte tag")
    word = int.from_bytes(data[pos + 1 : pos + 3], "big")
    tag = word & 0x7FFF
    if tag < 0x7F:
        raise CatError(f"three-byte tag {tag:04X} has a single-byte form (TS 101 220 §7.1.1)")
    return tag, bool(word & 0x8000), pos + 3


@dataclass(frozen=True, slots=True)
class RawObject:
    """One COMPREHENSION-TLV data object, uninterpreted: tag value (CR excluded), CR, value."""

    tag: int
    value: bytes
    cr: bool = False

    def __post_init__(self) -> None:
        if not (0x01 <= self.tag <= 0x7E or 0x7F <= self.tag <= 0x7FFF):
            raise CatError(f"tag {self.tag:#x} is outside 01-7FFF")
        if len(self.value) > MAX_LENGTH:
            raise CatError(f"value of {len(self.value)} octets exceeds {MAX_LENGTH}")

    def encode(self) -> bytes:
        """Tag, length and value."""
        return _encode_tag(self.tag, self.cr) + _encode_length(len(self.value)) + self.value


def parse_objects(data: bytes) -> tuple[RawObject, ...]:
    """Split a sequence of COMPREHENSION-TLV data objects; any malformation raises CatError."""
    data = bytes(data)
    objects: list[RawObject] = []
    pos = 0
    while pos < len(data):
        tag, cr, pos = _read_tag(data, pos)
        length, pos = _read_length(data, pos)
        end = pos + length
        if end > len(data):
            raise CatError(f"object {tag:02X} announces {length} octets, {len(data) - pos} remain")
        objects.append(RawObject(tag, data[pos:end], cr))
        pos = end
    return tuple(objects)


def _template(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _encode_length(len(body)) + body


def _unwrap(data: bytes, tag: int, what: str) -> bytes:
    data = bytes(data)
    if not data:
        raise CatError(f"empty {what}")
    if data[0] != tag:
        raise CatError(f"{what} starts with {data[0]:02X}, expected {tag:02X}")
    length, pos = _read_length(data, 1)
    if pos + length != len(data):
        raise CatError(f"{what} announces {length} octets, {len(data) - pos} follow")
    return data[pos:]


# -- typed data objects ---------------------------------------------------------------------


def _byte(value: int, what: str, low: int = 0, high: int = 0xFF) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CatError(f"{what} must be an integer {low}..{high}, got {value!r}")
    return value


_E = TypeVar("_E", bound=enum.IntEnum)


def _enum_value(cls: type[_E], value: int, what: str) -> _E:
    try:
        return cls(value)
    except ValueError:
        raise CatError(f"unknown {what} {value:02X}") from None


def _exact(value: bytes, size: int, what: str) -> None:
    if len(value) != size:
        raise CatError(f"{what} takes {size} octets, got {len(value)}")


class _Simple:
    """Shared behaviour of the typed data objects: ``TAG``, ``cr``, ``value()``."""

    __slots__ = ()
    TAG: ClassVar[Tag]
    cr: bool

    def value(self) -> bytes:
        """The value field."""
        raise NotImplementedError

    def encode(self) -> bytes:
        """Tag (with CR), length and value."""
        value = self.value()
        return _encode_tag(self.TAG, self.cr) + _encode_length(len(value)) + value

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        """Decode the value field."""
        raise NotImplementedError

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Decode exactly one object of this type (tag, length, value)."""
        objects = parse_objects(data)
        if len(objects) != 1 or objects[0].tag != cls.TAG:
            raise CatError(f"expected exactly one {cls.__name__} object ({cls.TAG:02X})")
        return cls.from_value(objects[0].value, objects[0].cr)

    @classmethod
    def from_raw(cls, raw: RawObject) -> Self:
        """The typed form of a raw object of this type."""
        return cls.from_value(raw.value, raw.cr)

    @classmethod
    def _from_value(cls, value: bytes, cr: bool) -> Self:
        """The decoding :meth:`_memoized` remembers."""
        raise NotImplementedError

    @classmethod
    def _memoized(cls, value: bytes, cr: bool) -> Self:
        """``_from_value(value, cr)``, decoded once per distinct value: for the small
        immutable objects every command and terminal response carries (command details,
        device identities, result). A refused value raises each time (nothing is kept)."""
        key = (cls, bytes(value), cr)
        hit: Self | None = _DECODED.get(key)
        if hit is None:
            hit = cls._from_value(key[1], cr)
            if len(_DECODED) >= _DECODED_SIZE:
                _DECODED.clear()
            _DECODED[key] = hit
        return hit


#: What :meth:`_Simple._memoized` decoded: (class, value, CR) -> the object.
_DECODED: dict[tuple[type, bytes, bool], Any] = {}
_DECODED_SIZE: Final = 1024


@functools.lru_cache(maxsize=1024)
def _details(number: int, kind: CommandType, qualifier: int) -> CommandDetails:
    """The command details a command's terminal response echoes (immutable: built once)."""
    return CommandDetails(number, kind, qualifier)


@dataclass(frozen=True, slots=True)
class CommandDetails(_Simple):
    """Command details (§8.6): command number, type of command, qualifier."""

    TAG: ClassVar[Tag] = Tag.COMMAND_DETAILS
    number: int
    type: CommandType
    qualifier: int = 0
    cr: bool = True

    def __post_init__(self) -> None:
        _byte(self.number, "command number")
        _byte(self.qualifier, "command qualifier")

    def value(self) -> bytes:
        return bytes((self.number, self.type, self.qualifier))

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        return cls._memoized(value, cr)

    @classmethod
    def _from_value(cls, value: bytes, cr: bool) -> Self:
        _exact(value, 3, "command details")
        code = value[1]
        try:
            kind = CommandType(code)
        except ValueError:
            raise CatError(
                f"type of command {code:02X} is not defined",
                GeneralResult.COMMAND_TYPE_NOT_UNDERSTOOD,
            ) from None
        return cls(value[0], kind, value[2], cr)


@dataclass(frozen=True, slots=True)
class DeviceIdentities(_Simple):
    """Device identities (§8.7): source and destination."""

    TAG: ClassVar[Tag] = Tag.DEVICE_IDENTITIES
    source: Device
    destination: Device
    cr: bool = True

    def value(self) -> bytes:
        return bytes((self.source, self.destination))

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        return cls._memoized(value, cr)

    @classmethod
    def _from_value(cls, value: bytes, cr: bool) -> Self:
        _exact(value, 2, "device identities")
        source = _enum_value(Device, value[0], "source device")
        destination = _enum_value(Device, value[1], "destination device")
        return cls(source, destination, cr)


@dataclass(frozen=True, slots=True)
class Result(_Simple):
    """Result (§8.12): general result and any additional information."""

    TAG: ClassVar[Tag] = Tag.RESULT
    general: GeneralResult
    additional: bytes = b""
    cr: bool = True

    def __post_init__(self) -> None:
        if len(self.additional) > MAX_LENGTH - 1:
            raise CatError("additional information is too long")

    def value(self) -> bytes:
        return bytes((self.general,)) + self.additional

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        return cls._memoized(value, cr)

    @classmethod
    def _from_value(cls, value: bytes, cr: bool) -> Self:
        if not value:
            raise CatError("result without a general result")
        return cls(_enum_value(GeneralResult, value[0], "general result"), value[1:], cr)


@dataclass(frozen=True, slots=True)
class Duration(_Simple):
    """Duration (§8.8): time unit and a time interval of 1..255 units."""

    TAG: ClassVar[Tag] = Tag.DURATION
    unit: TimeUnit
    interval: int
    cr: bool = True

    def __post_init__(self) -> None:
        _byte(self.interval, "time interval", 1)

    def value(self) -> bytes:
        return bytes((self.unit, self.interval))

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        _exact(value, 2, "duration")
        return cls(_enum_value(TimeUnit, value[0], "time unit"), value[1], cr)


def _alpha_bytes(text: str, what: str) -> bytes:
    try:
        return encode_alpha(text)
    except AlphaError as exc:
        raise CatError(f"{what}: {exc}") from None


def _alpha_text(data: bytes, what: str) -> str:
    try:
        return decode_alpha(data)
    except AlphaError as exc:
        raise CatError(f"{what}: {exc}") from None


@dataclass(frozen=True, slots=True)
class AlphaIdentifier(_Simple):
    """Alpha identifier (§8.2), coded per TS 102 221 Annex A; empty is allowed."""

    TAG: ClassVar[Tag] = Tag.ALPHA_IDENTIFIER
    text: str
    cr: bool = True

    def __post_init__(self) -> None:
        self.value()

    def value(self) -> bytes:
        return _alpha_bytes(self.text, "alpha identifier")

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        return cls(_alpha_text(value, "alpha identifier"), cr)


@dataclass(frozen=True, slots=True)
class Item(_Simple):
    """Item (§8.9): identifier 1..255 and its text, coded like an alpha identifier."""

    TAG: ClassVar[Tag] = Tag.ITEM
    identifier: int
    text: str
    cr: bool = True

    def __post_init__(self) -> None:
        _byte(self.identifier, "item identifier", 1)
        self.value()

    def value(self) -> bytes:
        return bytes((self.identifier,)) + _alpha_bytes(self.text, "item text")

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        if not value:
            raise CatError("empty item (only SET UP MENU may carry one, to remove the menu)")
        if value[0] == 0:
            raise CatError("item identifier 00")
        return cls(value[0], _alpha_text(value[1:], "item text"), cr)


@dataclass(frozen=True, slots=True)
class ItemIdentifier(_Simple):
    """Item identifier (§8.10): the item chosen, or a default item."""

    TAG: ClassVar[Tag] = Tag.ITEM_IDENTIFIER
    identifier: int
    cr: bool = True

    def __post_init__(self) -> None:
        _byte(self.identifier, "item identifier")

    def value(self) -> bytes:
        return bytes((self.identifier,))

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        _exact(value, 1, "item identifier")
        return cls(value[0], cr)


@dataclass(frozen=True, slots=True)
class ResponseLength(_Simple):
    """Response length (§8.11): minimum and maximum input length, in characters."""

    TAG: ClassVar[Tag] = Tag.RESPONSE_LENGTH
    minimum: int
    maximum: int
    cr: bool = True

    def __post_init__(self) -> None:
        _byte(self.minimum, "minimum response length")
        _byte(self.maximum, "maximum response length")
        if self.minimum > self.maximum:
            raise CatError(f"minimum length {self.minimum} exceeds maximum {self.maximum}")

    def value(self) -> bytes:
        return bytes((self.minimum, self.maximum))

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        _exact(value, 2, "response length")
        return cls(value[0], value[1], cr)


def text_coding(dcs: int) -> TextCoding:
    """The alphabet of a text string's data coding scheme (TS 23.038 §4; TS 102 223 §8.15).

    The general data coding groups (``00xx xxxx``, ``01xx xxxx``, message class bits allowed)
    and the data coding / message class group ``1111 xxxx``; compressed text, the reserved
    alphabet and the other groups are refused.
    """
    _byte(dcs, "data coding scheme")
    group = dcs >> 4
    if group <= 0x7:
        if dcs & 0x20:
            raise CatError(f"data coding scheme {dcs:02X}: compressed text is not supported")
        bits = (dcs >> 2) & 0x03
        if bits == 0x03:
            raise CatError(f"data coding scheme {dcs:02X}: reserved alphabet")
        return (TextCoding.GSM7_PACKED, TextCoding.GSM_8BIT, TextCoding.UCS2)[bits]
    if group == 0xF:
        return TextCoding.GSM_8BIT if dcs & 0x04 else TextCoding.GSM7_PACKED
    raise CatError(f"data coding scheme {dcs:02X} is not a text coding of TS 102 223 §8.15")


_CR_SEPTET = 0x0D


def _pack_text(text: str) -> bytes:
    septets = gsm7.encode(text)
    # TS 23.038 §6.1.2.1.1: 7 spare bits would read as '@'; <CR> fills them instead, and a
    # wanted final <CR> on an octet boundary is followed by another <CR>.
    if len(septets) % 8 == 7 or (len(septets) % 8 == 0 and septets.endswith(b"\r")):
        septets += b"\r"
    return gsm7.pack(septets)


def _unpack_text(body: bytes) -> str:
    count = len(body) * 8 // 7
    septets = gsm7.unpack(body, count)
    if body and len(body) % 7 == 0 and septets[-1] == _CR_SEPTET:
        septets = septets[:-1]
    return gsm7.decode(septets)


def _text_bytes(text: str, dcs: int | None, what: str) -> bytes:
    if dcs is None:
        if text:
            raise CatError(f"{what}: a null text string (no coding scheme) has no text")
        return b""
    coding = text_coding(dcs)
    try:
        if coding is TextCoding.UCS2:
            for position, char in enumerate(text):
                code = ord(char)
                if code > 0xFFFF or 0xD800 <= code <= 0xDFFF:
                    raise CatError(f"{what}: character {position} (U+{code:04X}) is not UCS2")
            body = text.encode("utf-16-be")
        elif coding is TextCoding.GSM_8BIT:
            body = gsm7.encode(text)
        else:
            body = _pack_text(text)
    except gsm7.UnencodableError as exc:
        raise CatError(f"{what}: {exc}") from None
    return bytes((dcs,)) + body


def _text_value(value: bytes, what: str) -> tuple[str, int | None]:
    if not value:
        return "", None
    dcs, body = value[0], value[1:]
    coding = text_coding(dcs)
    if coding is TextCoding.UCS2:
        if len(body) % 2:
            raise CatError(f"{what}: UCS2 text of odd length {len(body)}")
        units = [int.from_bytes(body[i : i + 2], "big") for i in range(0, len(body), 2)]
        for position, unit in enumerate(units):
            if 0xD800 <= unit <= 0xDFFF:
                raise CatError(f"{what}: UCS2 character {position} is a surrogate ({unit:04X})")
        return "".join(map(chr, units)), dcs
    if coding is TextCoding.GSM_8BIT:
        if not body.isascii():
            raise CatError(f"{what}: an 8-bit GSM text has an octet above 7F")
        return gsm7.decode(body), dcs
    return _unpack_text(body), dcs


@dataclass(frozen=True, slots=True)
class TextString(_Simple):
    """Text string (§8.15): a data coding scheme octet and the text it codes.

    ``dcs=None`` is the null text string (length zero); ``text=""`` with a coding scheme is the
    empty string (the coding scheme octet alone).
    """

    TAG: ClassVar[Tag] = Tag.TEXT_STRING
    text: str
    dcs: int | None = DCS_8BIT
    cr: bool = True

    def __post_init__(self) -> None:
        self.value()

    @property
    def coding(self) -> TextCoding | None:
        """The alphabet the coding scheme selects (None for the null text string)."""
        return None if self.dcs is None else text_coding(self.dcs)

    def value(self) -> bytes:
        return _text_bytes(self.text, self.dcs, "text string")

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        text, dcs = _text_value(value, "text string")
        return cls(text, dcs, cr)


@dataclass(frozen=True, slots=True)
class DefaultText(_Simple):
    """Default text (§8.23), coded as a text string; shown as the initial input of GET INPUT."""

    TAG: ClassVar[Tag] = Tag.DEFAULT_TEXT
    text: str
    dcs: int | None = DCS_8BIT
    cr: bool = False

    def __post_init__(self) -> None:
        self.value()

    def value(self) -> bytes:
        return _text_bytes(self.text, self.dcs, "default text")

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        text, dcs = _text_value(value, "default text")
        return cls(text, dcs, cr)


@dataclass(frozen=True, slots=True)
class ItemsNextActionIndicator(_Simple):
    """Items next action indicator (§8.24): one type-of-command octet per item."""

    TAG: ClassVar[Tag] = Tag.ITEMS_NEXT_ACTION_INDICATOR
    actions: tuple[int, ...]
    cr: bool = False

    def __post_init__(self) -> None:
        for action in self.actions:
            _byte(action, "next action")

    def value(self) -> bytes:
        return bytes(self.actions)

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        return cls(tuple(value), cr)


@dataclass(frozen=True, slots=True)
class IconIdentifier(_Simple):
    """Icon identifier (§8.31): the EF(IMG) record and whether the icon explains itself."""

    TAG: ClassVar[Tag] = Tag.ICON_IDENTIFIER
    record: int
    self_explanatory: bool = True
    cr: bool = True

    def __post_init__(self) -> None:
        _byte(self.record, "icon record")

    def value(self) -> bytes:
        return bytes((0 if self.self_explanatory else 1, self.record))

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        _exact(value, 2, "icon identifier")
        return cls(value[1], not value[0] & 0x01, cr)


@dataclass(frozen=True, slots=True)
class ItemIconIdentifierList(_Simple):
    """Item icon identifier list (§8.32): one EF(IMG) record per item."""

    TAG: ClassVar[Tag] = Tag.ITEM_ICON_IDENTIFIER_LIST
    records: tuple[int, ...]
    self_explanatory: bool = True
    cr: bool = True

    def __post_init__(self) -> None:
        for record in self.records:
            _byte(record, "icon record")

    def value(self) -> bytes:
        return bytes((0 if self.self_explanatory else 1, *self.records))

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        if not value:
            raise CatError("item icon identifier list without its qualifier")
        return cls(tuple(value[1:]), not value[0] & 0x01, cr)


def _encode_identity(digits: str, identity_type: int, what: str) -> bytes:
    """Mobile identity digits (3GPP TS 24.008 §10.5.1.4): type and parity in octet 1."""
    if not digits.isascii() or not digits.isdigit() or not 1 <= len(digits) <= 16:
        raise CatError(f"{what} must be 1..16 decimal digits")
    nibbles = [int(d) for d in digits]
    odd = len(nibbles) % 2
    first = nibbles[0] << 4 | odd << 3 | identity_type
    rest = nibbles[1:] + ([] if odd else [0xF])
    return bytes((first, *(rest[i + 1] << 4 | rest[i] for i in range(0, len(rest), 2))))


def _decode_identity(value: bytes, identity_type: int, what: str) -> str:
    if not value:
        raise CatError(f"empty {what}")
    first = value[0]
    if first & 0x07 != identity_type:
        raise CatError(f"{what}: type of identity {first & 0x07}, expected {identity_type}")
    nibbles = [first >> 4]
    for octet in value[1:]:
        nibbles += [octet & 0x0F, octet >> 4]
    if not first & 0x08:  # even number of digits: the last nibble is the filler
        if nibbles[-1] != 0xF:
            raise CatError(f"{what}: even digit count without the F filler")
        nibbles.pop()
    if any(n > 9 for n in nibbles):
        raise CatError(f"{what}: a digit is not decimal")
    return "".join(map(str, nibbles))


@dataclass(frozen=True, slots=True)
class Imei(_Simple):
    """IMEI (§8.20): the digits, coded as the value part of a TS 24.008 mobile identity."""

    TAG: ClassVar[Tag] = Tag.IMEI
    digits: str
    cr: bool = True

    def __post_init__(self) -> None:
        self.value()

    def value(self) -> bytes:
        return _encode_identity(self.digits, 2, "IMEI")

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        return cls(_decode_identity(value, 2, "IMEI"), cr)


@dataclass(frozen=True, slots=True)
class Imeisv(_Simple):
    """IMEISV (§8.74): the 16 digits, coded as a TS 24.008 mobile identity (type 3)."""

    TAG: ClassVar[Tag] = Tag.IMEISV
    digits: str
    cr: bool = True

    def __post_init__(self) -> None:
        self.value()

    def value(self) -> bytes:
        return _encode_identity(self.digits, 3, "IMEISV")

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        return cls(_decode_identity(value, 3, "IMEISV"), cr)


@dataclass(frozen=True, slots=True)
class SupportedRadioAccessTechnologies(_Simple):
    """Supported radio access technologies (§8.105): (technology, enabled) pairs; the state
    octet's bit 1 is "enabled", its other bits are RFU and ignored."""

    TAG: ClassVar[Tag] = Tag.SUPPORTED_RADIO_ACCESS_TECHNOLOGIES
    entries: tuple[tuple[AccessTechnology, bool], ...]
    cr: bool = True

    def value(self) -> bytes:
        return b"".join(bytes((tech, 1 if on else 0)) for tech, on in self.entries)

    @classmethod
    def from_value(cls, value: bytes, cr: bool) -> Self:
        if len(value) % 2:
            raise CatError("supported radio access technologies: odd value length")
        entries = tuple(
            (_enum_value(AccessTechnology, value[i], "access technology"), bool(value[i + 1] & 1))
            for i in range(0, len(value), 2)
        )
        return cls(entries, cr)


DataObject: TypeAlias = (
    CommandDetails
    | DeviceIdentities
    | Result
    | Duration
    | AlphaIdentifier
    | TextString
    | Item
    | ItemIdentifier
    | ResponseLength
    | Imei
    | DefaultText
    | ItemsNextActionIndicator
    | IconIdentifier
    | ItemIconIdentifierList
    | SupportedRadioAccessTechnologies
    | Imeisv
    | RawObject
)

_TYPED: Final[dict[int, Callable[[bytes, bool], DataObject]]] = {
    cls.TAG: cls.from_value
    for cls in (
        CommandDetails,
        DeviceIdentities,
        Result,
        Duration,
        AlphaIdentifier,
        TextString,
        Item,
        ItemIdentifier,
        ResponseLength,
        Imei,
        DefaultText,
        ItemsNextActionIndicator,
        IconIdentifier,
        ItemIconIdentifierList,
        SupportedRadioAccessTechnologies,
        Imeisv,
    )
}


def decode_object(data: bytes) -> DataObject:
    """Decode one data object: typed when this module knows its tag, else a RawObject."""
    objects = parse_objects(data)
    if len(objects) != 1:
        raise CatError(f"expected one data object, found {len(objects)}")
    raw = objects[0]
    decoder = _TYPED.get(raw.tag)
    return raw if decoder is None else decoder(raw.value, raw.cr)


def encode_object(obj: DataObject) -> bytes:
    """Tag, length and value of any data object."""
    return obj.encode()


# -- commands: shared decoding machinery ----------------------------------------------------

_S = TypeVar("_S", bound=_Simple)

# Formatting objects a command may carry; kept raw whatever their CR flag.
_CARRIED: Final = frozenset(
    {Tag.TEXT_ATTRIBUTE, Tag.ITEM_TEXT_ATTRIBUTE_LIST, Tag.FRAME_IDENTIFIER}
)


class _Objects:
    """The objects of one command, sorted by tag, with §6.10's rules for the unexpected."""

    def __init__(
        self, objects: Iterable[RawObject], known: frozenset[Tag], repeatable: frozenset[Tag]
    ) -> None:
        self.found: dict[int, list[RawObject]] = {}
        extra: list[RawObject] = []
        for raw in objects:
            if raw.tag in known:
                bucket = self.found.setdefault(raw.tag, [])
                if bucket and raw.tag not in repeatable:
                    raise CatError(f"object {raw.tag:02X} appears twice")
                bucket.append(raw)
            elif raw.tag in _CARRIED or not raw.cr:
                extra.append(raw)
            else:
                raise CatError(f"comprehension required for unknown object {raw.tag:02X}")
        self.extra = tuple(extra)

    def optional(self, cls: type[_S]) -> _S | None:
        bucket = self.found.get(cls.TAG)
        return cls.from_raw(bucket[0]) if bucket else None

    def required(self, cls: type[_S], command: str) -> _S:
        obj = self.optional(cls)
        if obj is None:
            raise CatError(
                f"{command} without its {cls.__name__}", GeneralResult.REQUIRED_VALUES_MISSING
            )
        return obj

    def has(self, tag: Tag) -> bool:
        return tag in self.found

    def all(self, tag: Tag) -> list[RawObject]:
        return self.found.get(tag, [])


def _extras(extra: Sequence[RawObject]) -> bytes:
    return b"".join(raw.encode() for raw in extra)


def _encode_optional(*objects: _Simple | None) -> bytes:
    return b"".join(obj.encode() for obj in objects if obj is not None)


def _check_items(items: tuple[Item, ...]) -> None:
    seen: set[int] = set()
    for item in items:
        if item.identifier in seen:
            raise CatError(f"item identifier {item.identifier} appears twice")
        seen.add(item.identifier)


def _check_per_item(
    items: tuple[Item, ...],
    next_actions: ItemsNextActionIndicator | None,
    item_icons: ItemIconIdentifierList | None,
) -> None:
    _check_items(items)
    if next_actions is not None and len(next_actions.actions) != len(items):
        raise CatError(f"{len(next_actions.actions)} next actions for {len(items)} items")
    if item_icons is not None and len(item_icons.records) != len(items):
        raise CatError(f"{len(item_icons.records)} item icons for {len(items)} items")


def _proactive(
    number: int, kind: CommandType, qualifier: int, destination: Device, body: bytes
) -> bytes:
    head = CommandDetails(number, kind, qualifier).encode()
    head += DeviceIdentities(Device.UICC, destination).encode()
    return _template(PROACTIVE_COMMAND, head + body)


# -- the proactive commands -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetUpMenu:
    """SET UP MENU (§6.6.7): the card's menu in the terminal's menu system.

    No items (encoded as one empty Item object) removes the menu.
    """

    TYPE: ClassVar[CommandType] = CommandType.SET_UP_MENU
    alpha: AlphaIdentifier
    items: tuple[Item, ...]
    qualifier: MenuQualifier = MenuQualifier.NONE
    number: int = 1
    next_actions: ItemsNextActionIndicator | None = None
    icon: IconIdentifier | None = None
    item_icons: ItemIconIdentifierList | None = None
    extra: tuple[RawObject, ...] = ()

    def __post_init__(self) -> None:
        _byte(self.number, "command number")
        _byte(int(self.qualifier), "command qualifier")
        _check_per_item(self.items, self.next_actions, self.item_icons)

    @property
    def details(self) -> CommandDetails:
        """The command details a terminal response echoes."""
        return _details(self.number, self.TYPE, int(self.qualifier))

    def encode(self) -> bytes:
        """The proactive command template (``D0``)."""
        items = b"".join(item.encode() for item in self.items) or b"\x8f\x00"
        body = self.alpha.encode() + items
        body += _encode_optional(self.next_actions, self.icon, self.item_icons)
        return _proactive(
            self.number, self.TYPE, int(self.qualifier), Device.TERMINAL, body + _extras(self.extra)
        )

    @classmethod
    def _from(cls, details: CommandDetails, objects: Sequence[RawObject]) -> SetUpMenu:
        found = _Objects(objects, _SET_UP_MENU_TAGS, frozenset({Tag.ITEM}))
        raw_items = found.all(Tag.ITEM)
        if not raw_items:
            raise CatError("SET UP MENU without items", GeneralResult.REQUIRED_VALUES_MISSING)
        if len(raw_items) == 1 and not raw_items[0].value:
            items: tuple[Item, ...] = ()
        else:
            items = tuple(Item.from_raw(raw) for raw in raw_items)
        return cls(
            alpha=found.required(AlphaIdentifier, "SET UP MENU"),
            items=items,
            qualifier=MenuQualifier(details.qualifier),
            number=details.number,
            next_actions=found.optional(ItemsNextActionIndicator),
            icon=found.optional(IconIdentifier),
            item_icons=found.optional(ItemIconIdentifierList),
            extra=found.extra,
        )


_SET_UP_MENU_TAGS: Final = frozenset(
    {
        Tag.ALPHA_IDENTIFIER,
        Tag.ITEM,
        Tag.ITEMS_NEXT_ACTION_INDICATOR,
        Tag.ICON_IDENTIFIER,
        Tag.ITEM_ICON_IDENTIFIER_LIST,
    }
)


@dataclass(frozen=True, slots=True)
class SelectItem:
    """SELECT ITEM (§6.6.8): a list of items, of which the user chooses one."""

    TYPE: ClassVar[CommandType] = CommandType.SELECT_ITEM
    items: tuple[Item, ...]
    alpha: AlphaIdentifier | None = None
    qualifier: SelectItemQualifier = SelectItemQualifier.NONE
    number: int = 1
    next_actions: ItemsNextActionIndicator | None = None
    default_item: ItemIdentifier | None = None
    icon: IconIdentifier | None = None
    item_icons: ItemIconIdentifierList | None = None
    extra: tuple[RawObject, ...] = ()

    def __post_init__(self) -> None:
        _byte(self.number, "command number")
        _byte(int(self.qualifier), "command qualifier")
        if not self.items:
            raise CatError("SELECT ITEM needs at least one item")
        _check_per_item(self.items, self.next_actions, self.item_icons)

    @property
    def details(self) -> CommandDetails:
        """The command details a terminal response echoes."""
        return _details(self.number, self.TYPE, int(self.qualifier))

    def encode(self) -> bytes:
        """The proactive command template (``D0``)."""
        body = _encode_optional(self.alpha) + b"".join(item.encode() for item in self.items)
        body += _encode_optional(self.next_actions, self.default_item, self.icon, self.item_icons)
        return _proactive(
            self.number, self.TYPE, int(self.qualifier), Device.TERMINAL, body + _extras(self.extra)
        )

    @classmethod
    def _from(cls, details: CommandDetails, objects: Sequence[RawObject]) -> SelectItem:
        found = _Objects(objects, _SELECT_ITEM_TAGS, frozenset({Tag.ITEM}))
        raw_items = found.all(Tag.ITEM)
        if not raw_items:
            raise CatError("SELECT ITEM without items", GeneralResult.REQUIRED_VALUES_MISSING)
        return cls(
            items=tuple(Item.from_raw(raw) for raw in raw_items),
            alpha=found.optional(AlphaIdentifier),
            qualifier=SelectItemQualifier(details.qualifier),
            number=details.number,
            next_actions=found.optional(ItemsNextActionIndicator),
            default_item=found.optional(ItemIdentifier),
            icon=found.optional(IconIdentifier),
            item_icons=found.optional(ItemIconIdentifierList),
            extra=found.extra,
        )


_SELECT_ITEM_TAGS: Final = _SET_UP_MENU_TAGS | {Tag.ITEM_IDENTIFIER}

_DIGITS: Final = frozenset("0123456789*#+")


@dataclass(frozen=True, slots=True)
class GetInput:
    """GET INPUT (§6.6.3): ask the user for a string (an amount, a PIN).

    The qualifier says what may be entered (digits or an alphabet, SMS default alphabet or
    UCS2), whether the terminal hides it (a PIN), and whether it comes back packed.
    """

    TYPE: ClassVar[CommandType] = CommandType.GET_INPUT
    text: TextString
    response_length: ResponseLength
    qualifier: GetInputQualifier = GetInputQualifier.NONE
    number: int = 1
    default_text: DefaultText | None = None
    icon: IconIdentifier | None = None
    duration: Duration | None = None
    extra: tuple[RawObject, ...] = ()

    def __post_init__(self) -> None:
        _byte(self.number, "command number")
        _byte(int(self.qualifier), "command qualifier")

    @property
    def details(self) -> CommandDetails:
        """The command details a terminal response echoes."""
        return _details(self.number, self.TYPE, int(self.qualifier))

    @property
    def response_dcs(self) -> int:
        """The coding scheme of the text string the terminal answers with."""
        if self.qualifier & GetInputQualifier.UCS2:
            return DCS_UCS2
        return DCS_PACKED if self.qualifier & GetInputQualifier.PACKED else DCS_8BIT

    def check_input(self, text: str) -> None:
        """Refuse input this command does not allow: wrong length, or not of its alphabet.

        The length counts characters. The message names lengths and positions only, never the
        input (which may be a PIN).
        """
        self._answer_text(text)

    def _answer_text(self, text: str) -> TextString:
        """:meth:`check_input`, then the text string that carries ``text`` back (coded as
        :attr:`response_dcs` says)."""
        low, high = self.response_length.minimum, self.response_length.maximum
        if not low <= len(text) <= high:
            raise CatError(f"input of {len(text)} characters, {low}..{high} allowed")
        if not self.qualifier & GetInputQualifier.ALPHABET:
            for position, char in enumerate(text):
                if char not in _DIGITS:
                    raise CatError(f"input character {position} is not a digit, *, # or +")
        elif not self.qualifier & GetInputQualifier.UCS2 and not gsm7.can_encode(text):
            raise CatError("input is outside the SMS default alphabet")
        return TextString(text, self.response_dcs)

    def encode(self) -> bytes:
        """The proactive command template (``D0``)."""
        body = self.text.encode() + self.response_length.encode()
        body += _encode_optional(self.default_text, self.icon, self.duration)
        return _proactive(
            self.number, self.TYPE, int(self.qualifier), Device.TERMINAL, body + _extras(self.extra)
        )

    @classmethod
    def _from(cls, details: CommandDetails, objects: Sequence[RawObject]) -> GetInput:
        found = _Objects(objects, _GET_INPUT_TAGS, frozenset())
        return cls(
            text=found.required(TextString, "GET INPUT"),
            response_length=found.required(ResponseLength, "GET INPUT"),
            qualifier=GetInputQualifier(details.qualifier),
            number=details.number,
            default_text=found.optional(DefaultText),
            icon=found.optional(IconIdentifier),
            duration=found.optional(Duration),
            extra=found.extra,
        )


_GET_INPUT_TAGS: Final = frozenset(
    {Tag.TEXT_STRING, Tag.RESPONSE_LENGTH, Tag.DEFAULT_TEXT, Tag.ICON_IDENTIFIER, Tag.DURATION}
)


@dataclass(frozen=True, slots=True)
class DisplayText:
    """DISPLAY TEXT (§6.6.1): show a text on the terminal's display."""

    TYPE: ClassVar[CommandType] = CommandType.DISPLAY_TEXT
    text: TextString
    qualifier: DisplayTextQualifier = DisplayTextQualifier.NONE
    number: int = 1
    icon: IconIdentifier | None = None
    immediate_response: bool = False
    duration: Duration | None = None
    extra: tuple[RawObject, ...] = ()

    def __post_init__(self) -> None:
        _byte(self.number, "command number")
        _byte(int(self.qualifier), "command qualifier")

    @property
    def details(self) -> CommandDetails:
        """The command details a terminal response echoes."""
        return _details(self.number, self.TYPE, int(self.qualifier))

    def encode(self) -> bytes:
        """The proactive command template (``D0``)."""
        body = self.text.encode() + _encode_optional(self.icon)
        if self.immediate_response:
            body += RawObject(Tag.IMMEDIATE_RESPONSE, b"", cr=True).encode()
        body += _encode_optional(self.duration)
        return _proactive(
            self.number, self.TYPE, int(self.qualifier), Device.DISPLAY, body + _extras(self.extra)
        )

    @classmethod
    def _from(cls, details: CommandDetails, objects: Sequence[RawObject]) -> DisplayText:
        found = _Objects(objects, _DISPLAY_TEXT_TAGS, frozenset())
        immediate = found.all(Tag.IMMEDIATE_RESPONSE)
        if immediate and immediate[0].value:
            raise CatError("immediate response object with a value")
        return cls(
            text=found.required(TextString, "DISPLAY TEXT"),
            qualifier=DisplayTextQualifier(details.qualifier),
            number=details.number,
            icon=found.optional(IconIdentifier),
            immediate_response=bool(immediate),
            duration=found.optional(Duration),
            extra=found.extra,
        )


_DISPLAY_TEXT_TAGS: Final = frozenset(
    {Tag.TEXT_STRING, Tag.ICON_IDENTIFIER, Tag.IMMEDIATE_RESPONSE, Tag.DURATION}
)

ProactiveCommand: TypeAlias = SetUpMenu | SelectItem | GetInput | DisplayText

_Decoder: TypeAlias = Callable[[CommandDetails, Sequence[RawObject]], ProactiveCommand]
_COMMANDS: Final[dict[CommandType, tuple[Device, _Decoder]]] = {
    CommandType.SET_UP_MENU: (Device.TERMINAL, SetUpMenu._from),
    CommandType.SELECT_ITEM: (Device.TERMINAL, SelectItem._from),
    CommandType.GET_INPUT: (Device.TERMINAL, GetInput._from),
    CommandType.DISPLAY_TEXT: (Device.DISPLAY, DisplayText._from),
}


def _leading(objects: Sequence[RawObject], what: str) -> tuple[CommandDetails, DeviceIdentities]:
    if len(objects) < 2:
        raise CatError(
            f"{what} without command details and device identities",
            GeneralResult.REQUIRED_VALUES_MISSING,
        )
    first, second = objects[0], objects[1]
    if first.tag != Tag.COMMAND_DETAILS or second.tag != Tag.DEVICE_IDENTITIES:
        raise CatError(f"{what} must open with command details, then device identities")
    return CommandDetails.from_raw(first), DeviceIdentities.from_raw(second)


def decode_proactive_command(data: bytes) -> ProactiveCommand:
    """Decode a proactive command template (``D0``), as FETCH returns it."""
    objects = parse_objects(_unwrap(data, PROACTIVE_COMMAND, "proactive command"))
    details, devices = _leading(objects, "proactive command")
    entry = _COMMANDS.get(details.type)
    if entry is None:
        raise CatError(
            f"{details.type.name} is not supported by this codec",
            GeneralResult.COMMAND_BEYOND_TERMINAL_CAPABILITY,
        )
    destination, decode = entry
    if devices.source is not Device.UICC or devices.destination is not destination:
        raise CatError(
            f"{details.type.name} from {devices.source.name} to {devices.destination.name}; "
            f"expected UICC to {destination.name}"
        )
    return decode(details, objects[2:])


# -- terminal response and envelope ---------------------------------------------------------


#: The device identities of every terminal response (immutable, shared).
_TERMINAL_TO_UICC: Final = DeviceIdentities(Device.TERMINAL, Device.UICC)


@dataclass(frozen=True, slots=True)
class TerminalResponse:
    """TERMINAL RESPONSE (§6.8): the outcome of a proactive command.

    Carries the command details of the command it answers, the result, and the command's
    answer: the text entered (GET INPUT) or the item chosen (SELECT ITEM).
    """

    details: CommandDetails
    result: Result
    text: TextString | None = field(default=None, repr=False)  # may be a PIN
    item: ItemIdentifier | None = None
    duration: Duration | None = None
    devices: DeviceIdentities = field(default_factory=lambda: _TERMINAL_TO_UICC)
    extra: tuple[RawObject, ...] = ()

    @property
    def general(self) -> GeneralResult:
        """The general result."""
        return self.result.general

    def encode(self) -> bytes:
        """The APDU data of TERMINAL RESPONSE (no template: the objects in sequence)."""
        data = self.details.encode() + self.devices.encode() + self.result.encode()
        data += _encode_optional(self.duration, self.text, self.item) + _extras(self.extra)
        if len(data) > MAX_LENGTH:
            raise CatError(f"terminal response of {len(data)} octets exceeds {MAX_LENGTH}")
        return data


_RESPONSE_TAGS: Final = frozenset({Tag.RESULT, Tag.TEXT_STRING, Tag.ITEM_IDENTIFIER, Tag.DURATION})


def decode_terminal_response(data: bytes) -> TerminalResponse:
    """Decode the data of a TERMINAL RESPONSE."""
    data = bytes(data)
    if len(data) > MAX_LENGTH:
        raise CatError(f"terminal response of {len(data)} octets exceeds {MAX_LENGTH}")
    objects = parse_objects(data)
    details, devices = _leading(objects, "terminal response")
    if devices.source is not Device.TERMINAL or devices.destination is not Device.UICC:
        raise CatError(
            f"terminal response from {devices.source.name} to {devices.destination.name}"
        )
    found = _Objects(objects[2:], _RESPONSE_TAGS, frozenset())
    return TerminalResponse(
        details=details,
        result=found.required(Result, "terminal response"),
        text=found.optional(TextString),
        item=found.optional(ItemIdentifier),
        duration=found.optional(Duration),
        devices=devices,
        extra=found.extra,
    )


def terminal_response(
    command: ProactiveCommand,
    result: GeneralResult = GeneralResult.PERFORMED_SUCCESSFULLY,
    *,
    item: int | None = None,
    text: str | None = None,
    additional: bytes = b"",
) -> TerminalResponse:
    """The terminal response a phone sends for ``command``.

    ``item`` answers a SELECT ITEM (it must be one of its items); ``text`` answers a GET INPUT
    and is checked against it (:meth:`GetInput.check_input`) and coded as its qualifier asks.
    """
    answer_text: TextString | None = None
    answer_item: ItemIdentifier | None = None
    if item is not None:
        if not isinstance(command, SelectItem):
            raise CatError("an item answers SELECT ITEM only")
        if item not in {entry.identifier for entry in command.items}:
            raise CatError(f"item {item} is not offered")
        answer_item = ItemIdentifier(item)
    if text is not None:
        if not isinstance(command, GetInput):
            raise CatError("a text answers GET INPUT only")
        answer_text = command._answer_text(text)
    return TerminalResponse(command.details, Result(result, additional), answer_text, answer_item)


@dataclass(frozen=True, slots=True)
class MenuSelection:
    """ENVELOPE (MENU SELECTION) (§7.2): the user chose an item of the SET UP MENU."""

    item: ItemIdentifier
    help_requested: bool = False
    devices: DeviceIdentities = field(
        default_factory=lambda: DeviceIdentities(Device.KEYPAD, Device.UICC)
    )
    extra: tuple[RawObject, ...] = ()

    def encode(self) -> bytes:
        """The envelope template (``D3``)."""
        body = self.devices.encode() + self.item.encode()
        if self.help_requested:
            body += RawObject(Tag.HELP_REQUEST, b"").encode()
        return _template(ENVELOPE_MENU_SELECTION, body + _extras(self.extra))


def decode_envelope(data: bytes) -> MenuSelection:
    """Decode an ENVELOPE; MENU SELECTION (``D3``) is the one this codec knows."""
    body = _unwrap(data, ENVELOPE_MENU_SELECTION, "menu selection envelope")
    objects = parse_objects(body)
    if not objects or objects[0].tag != Tag.DEVICE_IDENTITIES:
        raise CatError("menu selection must open with device identities")
    devices = DeviceIdentities.from_raw(objects[0])
    if devices.source is not Device.KEYPAD or devices.destination is not Device.UICC:
        raise CatError(f"menu selection from {devices.source.name} to {devices.destination.name}")
    found = _Objects(objects[1:], frozenset({Tag.ITEM_IDENTIFIER, Tag.HELP_REQUEST}), frozenset())
    help_request = found.all(Tag.HELP_REQUEST)
    if help_request and help_request[0].value:
        raise CatError("help request object with a value")
    return MenuSelection(
        item=found.required(ItemIdentifier, "menu selection"),
        help_requested=bool(help_request),
        devices=devices,
        extra=found.extra,
    )
