"""The wallet's toolkit applet on the virtual RF-SIM (sans-IO).

What the card does when the subscriber uses the STK menu (ETSI TS 102 223):

* at power-on it installs its menu with SET UP MENU (§6.6.7, :meth:`WalletApplet.setup_menu`);
* an ENVELOPE (MENU SELECTION) (§7.2) starts a session
  (:meth:`~WalletApplet.envelope_menu_selection`);
  each TERMINAL RESPONSE (§6.8) moves it on (:meth:`~WalletApplet.terminal_response`): SELECT
  ITEM (§6.6.8) for a submenu, GET INPUT (§6.6.3) for the amount and the PIN (hidden), then
  the secured MO (what SEND SHORT MESSAGE, §6.6.9, would carry: an :class:`Outgoing`), then
  the leaf's notice with DISPLAY TEXT (§6.6.1) once the phone reports the message sent
  (:meth:`~WalletApplet.message_sent`);
* the IMEI comes from PROVIDE LOCAL INFORMATION (§6.4.15,
  :meth:`~WalletApplet.provide_local_information`): on first use, on every change, and with
  a back-off while it is not calibrated for this phone, the applet sends the calibration MO
  (issue 6).

MO format: :mod:`stk_menus.wallet_mo` in a command packet (ETSI TS 102 225 §5.1; 3GPP TS
31.115 §4.2, UDH IEI 0x70) to :data:`~stk_menus.wallet_mo.PLATFORM_TAR`, SPI ``16 00`` (CC,
ciphering, counter must be higher, no PoR), KIc/KID ``x2`` (AES-CBC / AES-CMAC; ``x5`` with a
3DES key set) where x is the card's key set version, secured with the card's own OTA keys and
the applet's MO counter (persistent, strictly increasing: :class:`AppletState`).

For a top-up the applet runs INITIALIZE FOR LOAD (JR/T 0025, ``docs/pboc.md``) on its own purse
through ``card.process`` with :data:`TERMINAL_ID`, and adds the purse's answer (tag 83), its
online counter (86) and, when the purse has completed a load before, that load's proof (87,
GET TRANSACTION PROVE). Balance and last-10 queries carry the online counter and the proof.

The platform's OTA commands (CREDIT FOR LOAD to :data:`WALLET_TAR`; UPDATE BINARY of the
calibration file to the RFM TARs of TS 102 226 §7) arrive through the card's
:class:`~simcard.ota_endpoint.OtaEndpoint` (:meth:`WalletApplet.ota_endpoint`), which runs
them on ``card.process``.
"""

from __future__ import annotations

import functools
import random as random_module
from dataclasses import dataclass, field, replace
from typing import Final, TypeAlias

from calibration import profile
from ota.apdu import ApduError, ResponseApdu
from ota.commands import TAR_RFM_ADF, TAR_RFM_UICC
from ota.keys import CardKeys, KeyAlgorithm, KeyName
from ota.pboc import (
    DEFAULT_KEY_INDEX,
    GetTransactionProve,
    InitializeForLoad,
    InitializeForLoadResponse,
    PbocError,
    PurseKeys,
    TransactionProve,
    TransactionType,
)
from ota.secured_packet import (
    ChecksumAlgorithm,
    CipherAlgorithm,
    CounterMode,
    Integrity,
    Keys,
    Kic,
    Kid,
    Spi,
    encode_command,
)
from ota.smspp import DCS_CLASS2_8BIT, TP_PID_SIM_DATA_DOWNLOAD, command_user_data
from simcard.card import CALIBRATION_PATH, VirtualCard
from simcard.ota_endpoint import OtaEndpoint, TarPolicy
from simcard.purse import Purse
from smsc import gsm7
from stk_menus import wallet_mo
from stk_menus.cat import (
    DCS_8BIT,
    DCS_UCS2,
    DisplayText,
    DisplayTextQualifier,
    GeneralResult,
    GetInput,
    SelectItem,
    SetUpMenu,
    TerminalResponse,
    TextString,
)
from stk_menus.menu import Action, MenuError, MenuNode, MenuTree
from stk_menus.wallet_mo import WALLET_TAR

__all__ = [
    "APPLET_VERSION",
    "DEFAULT_SHORT_CODE",
    "MO_SPI",
    "TERMINAL_ID",
    "WALLET_TAR",
    "AppletState",
    "Outgoing",
    "Proactive",
    "WalletApplet",
    "WalletAppletError",
]

#: The wallet applet's own TAR (ASCII "WLA"): where the platform sends CREDIT FOR LOAD.
#: Distinct from the platform's TAR for MO, ``PLATFORM_TAR`` ("WLT").
#: Applet version carried by the calibration MO (tag 8A): 1.0.
APPLET_VERSION: Final = 0x0100
#: The terminal id the applet initialises loads with (tag 84): the platform's short code
#: 10658888 in BCD, left-padded to the 6 octets of JR/T 0025.
TERMINAL_ID: Final = bytes.fromhex("000010658888")
#: The platform's short code the MO go to (the simulator's default account).
DEFAULT_SHORT_CODE: Final = "10658888"
#: SPI ``16 00``: CC, ciphered, counter must be higher; no PoR (docs/protocol.md).
MO_SPI: Final = Spi(counter=CounterMode.HIGHER, integrity=Integrity.CC, ciphered=True)
#: The largest MO counter (5 octets, TS 102 225 §5.1.1).
MAX_MO_COUNTER: Final = (1 << 40) - 1

_YUAN: Final = 100  # fen per yuan: the amount is typed in yuan


class WalletAppletError(ValueError):
    """The applet was driven out of order or with values it cannot take (never shows a PIN
    or a key)."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An SMS the card sends (SEND SHORT MESSAGE / a PoR): each part's user data with its UDH,
    TP-PID and data coding. ``action`` names the wallet action (None for a PoR), ``counter``
    the packet's counter; ``report_of`` the MT message id when the PoR travels in the
    deliver report (the simulator's extension)."""

    destination: str
    user_data: tuple[bytes, ...]
    protocol_id: int = TP_PID_SIM_DATA_DOWNLOAD
    data_coding: int = DCS_CLASS2_8BIT
    action: wallet_mo.Action | None = None
    counter: int | None = None
    report_of: str | None = None


Proactive: TypeAlias = SetUpMenu | SelectItem | GetInput | DisplayText | Outgoing | None


@dataclass(frozen=True, slots=True)
class AppletState:
    """The applet's persistent (EEPROM) state: the last MO counter used, the IMEI last seen,
    the reply language, and the start-ups in this phone since the card last sent its
    calibration MO without being calibrated for it (the retry back-off)."""

    mo_counter: int = 0
    imei: str | None = None
    language: wallet_mo.Language = wallet_mo.Language.ZH
    uncalibrated_starts: int = 0

    def to_json(self) -> dict[str, object]:
        """A JSON-able dict (what a phone saves between runs)."""
        return {
            "mo_counter": self.mo_counter,
            "imei": self.imei,
            "language": self.language.name,
            "uncalibrated_starts": self.uncalibrated_starts,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> AppletState:
        """Inverse of :meth:`to_json`; :class:`WalletAppletError` if malformed."""
        try:
            counter = data.get("mo_counter", 0)
            imei = data.get("imei")
            language = wallet_mo.Language[str(data.get("language", "ZH"))]
        except KeyError:
            raise WalletAppletError("applet state: unknown language") from None
        if isinstance(counter, bool) or not isinstance(counter, int):
            raise WalletAppletError("applet state: mo_counter must be an integer")
        if not 0 <= counter <= MAX_MO_COUNTER:
            raise WalletAppletError("applet state: mo_counter out of range")
        if imei is not None and not isinstance(imei, str):
            raise WalletAppletError("applet state: imei must be a string")
        starts = data.get("uncalibrated_starts", 0)
        if isinstance(starts, bool) or not isinstance(starts, int) or starts < 0:
            raise WalletAppletError("applet state: uncalibrated_starts must be an integer >= 0")
        return cls(counter, imei, language, starts)


@dataclass(slots=True)
class _Session:
    """The menu session in progress: the leaf or submenu, the command awaiting its terminal
    response, the inputs typed so far (the PIN among them: never shown)."""

    node: MenuNode | None
    command: SelectItem | GetInput | DisplayText
    inputs: list[str] = field(default_factory=list, repr=False)
    then: DisplayText | None = None


def _text(text: str) -> TextString:
    return TextString(text, DCS_8BIT if gsm7.can_encode(text) else DCS_UCS2)


@functools.lru_cache(maxsize=256)
def _notice(text: str) -> DisplayText:
    """The DISPLAY TEXT of a notice (immutable: built once per text, as the leaves' labels
    and the refusals repeat for every session)."""
    return DisplayText(_text(text), DisplayTextQualifier.WAIT_FOR_USER)


@functools.lru_cache(maxsize=64)
def _init_for_load_apdu(amount: int) -> bytes:
    """INITIALIZE FOR LOAD of ``amount`` fen with :data:`TERMINAL_ID` (JR/T 0025), as bytes:
    the same for every card, so coded once per amount."""
    return InitializeForLoad(DEFAULT_KEY_INDEX, amount, TERMINAL_ID).to_apdu().to_bytes()


@functools.lru_cache(maxsize=1024)
def _prove_apdu(counter: int) -> bytes:
    """GET TRANSACTION PROVE of the EP load at online ``counter``, as bytes (the cards of a
    fleet pass the same counters: coded once per counter)."""
    return GetTransactionProve(TransactionType.EP_LOAD, counter).to_apdu().to_bytes()


_MO_ACTIONS: Final = {
    Action.TOPUP: wallet_mo.Action.TOPUP,
    Action.BALANCE: wallet_mo.Action.BALANCE,
    Action.LAST10: wallet_mo.Action.LAST10,
}
_SUCCESS: Final = frozenset(
    {
        GeneralResult.PERFORMED_SUCCESSFULLY,
        GeneralResult.PERFORMED_WITH_PARTIAL_COMPREHENSION,
        GeneralResult.PERFORMED_WITH_MISSING_INFORMATION,
        GeneralResult.PERFORMED_BUT_REQUESTED_ICON_NOT_DISPLAYED,
    }
)


class WalletApplet:
    """The card's wallet toolkit applet; see the module docstring.

    ``card`` is the virtual UICC with ``purse`` registered on it; ``card_keys`` the card's
    key set (its KIc/KID secure the MO; the same per-card keys the platform derives).
    """

    def __init__(
        self,
        card: VirtualCard,
        purse: Purse,
        card_keys: CardKeys,
        *,
        menu: MenuTree | None = None,
        state: AppletState | None = None,
        short_code: str = DEFAULT_SHORT_CODE,
    ) -> None:
        if not 1 <= card_keys.version <= 15:
            raise WalletAppletError("the key set version must fit the KIc/KID nibble (1..15)")
        pair = card_keys.ota_keys()
        self.card = card
        self.purse = purse
        self.menu = menu if menu is not None else MenuTree.load()
        self.short_code = short_code
        self.key_version = card_keys.version
        self._keys = Keys(kic=pair.kic, kid=pair.kid)
        aes = card_keys.get(KeyName.KIC).algorithm is KeyAlgorithm.AES
        cipher = CipherAlgorithm.AES_CBC if aes else CipherAlgorithm.TDES_2KEY_CBC
        checksum = ChecksumAlgorithm.AES_CMAC if aes else ChecksumAlgorithm.TDES_2KEY_MAC
        self.kic = Kic(cipher, card_keys.version).to_byte()
        self.kid = Kid(checksum, card_keys.version).to_byte()
        self._state = state if state is not None else AppletState()
        self._session: _Session | None = None
        self._reference = 0

    @classmethod
    def personalise(
        cls,
        iccid: str,
        card_keys: CardKeys,
        *,
        balance: int = 0,
        online_counter: int = 0,
        offline_counter: int = 0,
        rng: random_module.Random | None = None,
        state: AppletState | None = None,
        menu: MenuTree | None = None,
        short_code: str = DEFAULT_SHORT_CODE,
    ) -> WalletApplet:
        """A new card ``iccid`` with its purse (keys from ``card_keys``) and this applet."""
        try:
            purse_keys = PurseKeys.from_card_keys(card_keys)
            purse = Purse(
                purse_keys,
                balance=balance,
                online_counter=online_counter,
                offline_counter=offline_counter,
                rng=rng,
            )
        except PbocError as exc:
            raise WalletAppletError(f"cannot personalise the purse: {exc}") from None
        card = VirtualCard(iccid)
        card.register(purse)
        return cls(card, purse, card_keys, menu=menu, state=state, short_code=short_code)

    def __repr__(self) -> str:
        return (
            f"WalletApplet(iccid={self.card.iccid!r}, mo_counter={self._state.mo_counter}, "
            f"key version {self.key_version})"
        )

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> AppletState:
        """The persistent state to save (pass it back as ``state=`` after a restart)."""
        return self._state

    @property
    def mo_counter(self) -> int:
        """The counter of the last MO sent (0: none yet)."""
        return self._state.mo_counter

    @property
    def language(self) -> wallet_mo.Language:
        """The language the platform is asked to reply in."""
        return self._state.language

    @language.setter
    def language(self, value: wallet_mo.Language) -> None:
        self._state = replace(self._state, language=wallet_mo.Language(value))

    @property
    def in_session(self) -> bool:
        """Whether a menu session awaits a terminal response."""
        return self._session is not None

    def calibration_file(self) -> bytes:
        """The content of EF calibration ('7F50/6F60')."""
        return self.card.fs.read_binary(CALIBRATION_PATH)

    def ota_endpoint(self, counters: dict[int, int] | None = None) -> OtaEndpoint:
        """The card's OTA endpoint: the applet's TAR and the RFM TARs, with the card's keys."""
        return OtaEndpoint(
            self.card.process,
            keys={self.key_version: self._keys},
            tars={
                WALLET_TAR: TarPolicy("wallet"),
                TAR_RFM_UICC: TarPolicy("RFM UICC"),
                TAR_RFM_ADF: TarPolicy("RFM ADF"),
            },
            counters=counters,
        )

    # -- the CAT session --------------------------------------------------------------------

    def setup_menu(self) -> SetUpMenu:
        """The SET UP MENU the phone installs at power-on."""
        return self.menu.setup_menu()

    def envelope_menu_selection(self, item_id: int) -> Proactive:
        """ENVELOPE (MENU SELECTION) of top-level item ``item_id``: a new session begins."""
        try:
            node = self.menu.root(item_id)
        except MenuError as exc:
            raise WalletAppletError(str(exc)) from None
        self._session = None
        return self._enter(node)

    def terminal_response(self, response: TerminalResponse) -> Proactive:
        """The phone's TERMINAL RESPONSE to the command last issued."""
        session = self._session
        if session is None:
            raise WalletAppletError("no proactive command awaits a terminal response")
        if response.details.type != session.command.TYPE:
            raise WalletAppletError(
                f"terminal response for {response.details.type.name}, "
                f"expected {session.command.TYPE.name}"
            )
        if response.general not in _SUCCESS:
            self._session = None  # cancelled, backward, timed out: the session ends
            return None
        command = session.command
        if isinstance(command, DisplayText):
            self._session = None
            return None
        if isinstance(command, SelectItem):
            if response.item is None or session.node is None:
                raise WalletAppletError("SELECT ITEM answered without an item")
            try:
                child = session.node.child(response.item.identifier)
            except MenuError as exc:
                raise WalletAppletError(str(exc)) from None
            return self._enter(child)
        if response.text is None or session.node is None:
            raise WalletAppletError("GET INPUT answered without a text")
        session.inputs.append(response.text.text)
        return self._next_input(session)

    def message_sent(self, outgoing: Outgoing) -> Proactive:
        """The phone reports ``outgoing`` sent (the TERMINAL RESPONSE to SEND SHORT MESSAGE):
        the leaf's notice follows, if it has one."""
        session = self._session
        if session is None or session.then is None:
            self._session = None
            return None
        notice = session.then
        self._session = _Session(session.node, notice)
        return notice

    def _show(
        self, node: MenuNode | None, command: SelectItem | GetInput | DisplayText
    ) -> Proactive:
        self._session = _Session(node, command)
        return command

    def _enter(self, node: MenuNode) -> Proactive:
        if not node.is_leaf:
            return self._show(node, node.select_item())
        if node.inputs:
            return self._next_input(_Session(node, node.inputs[0].get_input()))
        return self._finish(node, [])

    def _next_input(self, session: _Session) -> Proactive:
        node = session.node
        assert node is not None
        asked = len(session.inputs)
        if asked < len(node.inputs):
            command = node.inputs[asked].get_input()
            session.command = command
            self._session = session
            return command
        inputs, session.inputs = session.inputs, []
        return self._finish(node, inputs)

    def _finish(self, node: MenuNode, inputs: list[str]) -> Proactive:
        """Run the leaf's action with its inputs."""
        assert node.action is not None
        mo_action = _MO_ACTIONS.get(node.action)
        if mo_action is None:
            return self._show(node, _notice(self._local_text(node)))
        try:
            if mo_action is wallet_mo.Action.TOPUP:
                action: wallet_mo.WalletMo = self._topup(inputs[0], inputs[1])
            elif mo_action is wallet_mo.Action.BALANCE:
                action = wallet_mo.Balance(self.language, *self._counter_and_proof())
            else:
                action = wallet_mo.Last10(self.language, *self._counter_and_proof())
        except _RefusedError as refused:
            return self._show(node, _notice(refused.text))
        outgoing = self._secure(action, mo_action)
        self._session = _Session(node, _notice(node.label), then=node.display_text())
        return outgoing

    def _local_text(self, node: MenuNode) -> str:
        if node.action is Action.SIM_INFO:
            return f"ICCID {self.card.iccid}"
        return f"{node.label}: 暂未开通"

    # -- purse calls (APDUs through the card, as a toolkit applet calls the purse) -----------

    def _apdu(self, raw: bytes) -> ResponseApdu:
        try:
            return ResponseApdu.from_bytes(self.card.process(raw))
        except ApduError:
            return ResponseApdu(b"", 0x6F00)

    def _load_proof(self, online_counter: int) -> wallet_mo.LoadProof | None:
        if online_counter == 0:
            return None
        last = online_counter - 1
        answer = self._apdu(_prove_apdu(last))
        if answer.sw != 0x9000:
            return None
        try:
            prove = TransactionProve.from_bytes(answer.data)
        except PbocError:
            return None
        return wallet_mo.LoadProof(last, prove.mac, prove.tac)

    def _counter_and_proof(self) -> tuple[int, wallet_mo.LoadProof | None]:
        counter = self.purse.online_counter
        return counter, self._load_proof(counter)

    def _topup(self, amount_text: str, pin: str) -> wallet_mo.TopUp:
        if not (amount_text.isascii() and amount_text.isdigit()) or int(amount_text) == 0:
            raise _RefusedError("金额无效 / invalid amount")
        amount = int(amount_text) * _YUAN
        try:
            block = wallet_mo.pin_block(pin)
        except wallet_mo.WalletMoError:
            raise _RefusedError("密码格式错误 / invalid PIN") from None
        answer = self._apdu(_init_for_load_apdu(amount))
        if answer.sw != 0x9000:
            raise _RefusedError(
                _PURSE_REFUSALS.get(answer.sw, f"充值失败 / load refused ({answer.sw:04X})")
            )
        try:
            response = InitializeForLoadResponse.from_bytes(answer.data)
        except PbocError:
            raise _RefusedError("充值失败 / load refused") from None
        return wallet_mo.TopUp(
            language=self.language,
            online_counter=response.online_counter,
            load_proof=self._load_proof(response.online_counter),
            amount=amount,
            pin_block=block,
            load_init=answer.data,
            terminal_id=TERMINAL_ID,
        )

    # -- MO ---------------------------------------------------------------------------------

    def _secure(self, action: wallet_mo.WalletMo, kind: wallet_mo.Action) -> Outgoing:
        counter = self._state.mo_counter + 1
        if counter > MAX_MO_COUNTER:
            raise WalletAppletError("the MO counter is exhausted")
        # The counter is stored before the packet exists: a packet is never built twice with
        # one counter.
        self._state = replace(self._state, mo_counter=counter)
        self._reference = (self._reference + 1) & 0xFF
        parts = self.secured_user_data(action, counter=counter, reference=self._reference)
        return Outgoing(self.short_code, parts, action=kind, counter=counter)

    def secured_user_data(
        self,
        action: wallet_mo.WalletMo,
        *,
        counter: int,
        reference: int | None = None,
        keys: Keys | None = None,
    ) -> tuple[bytes, ...]:
        """The SMS user data of ``action`` secured as this card secures it (TS 102 225 §5.1
        command packet, its KIc/KID and keys, TS 31.115 §4.2 concatenation) at ``counter``,
        without using up a counter: what a replayed or redelivered MO, or with other
        ``keys`` a forged one, looks like. ``reference``: the concatenation reference
        (default: the counter's low octet)."""
        packet = encode_command(
            spi=MO_SPI,
            kic=self.kic,
            kid=self.kid,
            tar=wallet_mo.PLATFORM_TAR,
            counter=counter,
            data=wallet_mo.encode(action),
            keys=self._keys if keys is None else keys,
        )
        ref = counter & 0xFF if reference is None else reference
        return tuple(command_user_data(packet, reference=ref))

    def provide_local_information(self, imei: str) -> Outgoing | None:
        """The IMEI the terminal reported (PROVIDE LOCAL INFORMATION, TS 102 223 §6.4.15, at
        each start-up): the calibration MO on first use and whenever it changed; in the same
        phone, while the calibration file is not for this IMEI (the command or its PoR was
        lost, or the model is not known yet), again at the 1st, 2nd, 4th, 8th... start-up
        (a back-off, so an unknown model does not cost an SMS at every start); else None."""
        if not (isinstance(imei, str) and imei.isascii() and imei.isdigit() and len(imei) == 15):
            raise WalletAppletError("an IMEI is 15 decimal digits")
        if imei == self._state.imei:
            if self._calibrated_for(imei):
                if self._state.uncalibrated_starts:
                    self._state = replace(self._state, uncalibrated_starts=0)
                return None
            starts = self._state.uncalibrated_starts + 1
            self._state = replace(self._state, uncalibrated_starts=starts)
            if starts & (starts - 1):
                return None  # not a power of two: wait
        else:
            self._state = replace(self._state, imei=imei, uncalibrated_starts=0)
        action = wallet_mo.Calibration(
            language=self.language,
            iccid=self.card.iccid,
            imei=imei,
            applet_version=APPLET_VERSION,
            profile=self.calibration_file(),
        )
        return self._secure(action, wallet_mo.Action.CALIBRATION)

    def _calibrated_for(self, imei: str) -> bool:
        """Whether the calibration file holds a calibration for this handset (TAC and SNR)."""
        try:
            record = profile.decode(self.calibration_file())
        except profile.ProfileError:
            return False
        found = record.imei
        return record.method is not profile.Method.NONE and (
            found is not None and found.tac + found.snr == imei[:14]
        )


class _RefusedError(Exception):
    """The applet refuses a top-up locally (shown to the user; nothing sent)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


_PURSE_REFUSALS: Final = {
    0x6985: "超过卡内余额上限 / above the card balance cap",
    0x9303: "钱包已锁定 / purse locked",
    0x9402: "交易次数已满 / counter exhausted",
}
