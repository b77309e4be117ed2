"""End to end over loopback TCP: a ciphered, checksummed command packet goes from the
platform (ota/platform.py) through stkpay's ESME and the SMSC simulator to the card model
plugged in behind the simulator's handset interface (simcard/handset.py), which verifies it,
runs its APDUs and answers with a PoR by SMS-SUBMIT; the PoR comes back to the ESME as an MO
and is verified (issue 4, acceptance: the end-to-end test)."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from ota.apdu import CommandApdu
from ota.counters import open_counter_store
from ota.errors import ResponseStatus
from ota.keys import KeyAlgorithm
from ota.keystore import FileKeyStore, generate_keyset
from ota.platform import (
    DEFAULT_PROFILE,
    OtaPlatform,
    OutgoingCommand,
    PorResult,
    SecurityProfile,
    UnmatchedPor,
)
from ota.secured_packet import ChecksumAlgorithm, CipherAlgorithm, Keys, PorTransport
from ota.smspp import DCS_CLASS2_8BIT, TP_PID_SIM_DATA_DOWNLOAD
from simcard.card import CALIBRATION_PATH, VirtualCard
from simcard.handset import CardDirectory, CardHandset
from simcard.ota_endpoint import OtaEndpoint, TarPolicy
from smsc.esme import Esme
from smsc.message import OutboundMessage
from smsc.reassembly import Message
from smsc.udh import IEI_RESPONSE_PACKET, build_udh
from stkpay.config import Secret, SmscConfig
from tests.smsc.conftest import SimHandle, start_simulator, stop_simulator
from tests.smsc.test_esme_tcp import until

ICCID = "8986001234567890123"
MSISDN = "8613912345678"
TAR_RFM = bytes.fromhex("B00001")


def select_path(path: str) -> list[CommandApdu]:
    """SELECT by FID along ``path`` (``3F00/7F50/6F60``), no response data."""
    return [CommandApdu(0x00, 0xA4, 0x00, 0x0C, bytes.fromhex(fid)) for fid in path.split("/")]


class Rig:
    """Platform, ESME, simulator and one card phone, wired together."""

    def __init__(self, sim: SimHandle, directory: CardDirectory, tmp: Path, profile: Any) -> None:
        self.sim = sim
        self.directory = directory
        self.keystore = FileKeyStore(tmp / "keys.json")
        algorithm = (
            KeyAlgorithm.AES if profile.cipher is CipherAlgorithm.AES_CBC else KeyAlgorithm.TDES
        )
        generate_keyset(self.keystore, "ota", 1, algorithm)
        self.counters = open_counter_store(f"sqlite:///{tmp / 'counters.db'}")
        self.platform = OtaPlatform(
            self.keystore, self.counters, clock=time.monotonic, profile=profile
        )
        self.card = VirtualCard(ICCID)
        pair = self.keystore.card_keys(ICCID, "ota").ota_keys()
        self.endpoint = OtaEndpoint(
            self.card.process,
            keys={1: Keys(kic=pair.kic, kid=pair.kid)},
            tars={TAR_RFM: TarPolicy("RFM")},
        )
        self.phone = CardHandset(
            MSISDN,
            self.endpoint,
            send_mo=sim.simulator.submit_mo,
            later=lambda f: reactor.callLater(0, f),
        )
        directory.add(self.phone)
        self.pors: list[PorResult] = []
        self.refused: list[Exception] = []
        self.esme: Esme | None = None

    def on_message(self, message: Message) -> None:
        if not any(ie.iei == IEI_RESPONSE_PACKET for ie in message.ies):
            return
        user_data = build_udh(message.ies) + message.payload
        try:
            self.pors.append(self.platform.receive_por(message.source, user_data))
        except Exception as exc:
            self.refused.append(exc)

    async def send(self, apdus: list[CommandApdu]) -> OutgoingCommand:
        assert self.esme is not None
        out = self.platform.command(iccid=ICCID, msisdn=MSISDN, tar=TAR_RFM, apdus=apdus)
        result = await self.esme.send(
            OutboundMessage(
                MSISDN,
                user_data=out.user_data,
                protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
                data_coding=DCS_CLASS2_8BIT,
            )
        )
        assert result.ok, result
        return out


@pytest_twisted.async_yield_fixture
async def rig_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``await rig_factory(profile)`` starts a simulator with a card phone and a bound ESME."""
    started: list[Rig] = []

    async def make(profile: SecurityProfile = DEFAULT_PROFILE) -> Rig:
        directory = CardDirectory()
        sim = await start_simulator(directory=directory)
        rig = Rig(sim, directory, tmp_path / str(len(started)), profile)
        started.append(rig)
        config = SmscConfig(
            host=sim.host,
            port=sim.port,
            system_id=sim.system_id,
            password=Secret(sim.password),
            source_addr=sim.short_code,
            registered_delivery=False,
        )
        esme = Esme(config, reactor=reactor, on_message=rig.on_message, rng=random.Random(1))
        rig.esme = esme
        esme.startService()
        await esme.when_bound()
        return rig

    yield make
    for rig in started:
        if rig.esme is not None and rig.esme.running:
            await rig.esme.stopService()
        rig.counters.close()
        await stop_simulator(rig.sim)


TDES_PROFILE = SecurityProfile(
    spi=DEFAULT_PROFILE.spi,
    cipher=CipherAlgorithm.TDES_2KEY_CBC,
    checksum=ChecksumAlgorithm.TDES_2KEY_MAC,
)


#: PoR requested by SMS-DELIVER-REPORT: carried to the ESME by the simulator's extension.
REPORT_PROFILE = SecurityProfile(
    spi=dataclasses.replace(DEFAULT_PROFILE.spi, por_transport=PorTransport.DELIVER_REPORT),
    cipher=CipherAlgorithm.AES_CBC,
    checksum=ChecksumAlgorithm.AES_CMAC,
)


@pytest.mark.parametrize(
    "profile",
    [DEFAULT_PROFILE, TDES_PROFILE, REPORT_PROFILE],
    ids=["aes", "3des", "aes-por-by-deliver-report"],
)
@pytest_twisted.ensureDeferred
async def test_update_binary_reaches_the_card_and_the_por_verifies(
    rig_factory: Callable[..., Any], profile: SecurityProfile
) -> None:
    """An UPDATE BINARY of the calibration file, ciphered and checksummed, long enough to
    need two SMS, is executed by the card; the PoR comes back, verifies, and carries the
    READ BINARY that follows it."""
    rig = await rig_factory(profile)
    content = bytes(range(32))
    apdus = [
        *select_path(CALIBRATION_PATH),
        CommandApdu(0x00, 0xD6, 0x00, 0x00, content),
        CommandApdu(0x00, 0xB0, 0x00, 0x00, le=32),
    ]
    # Pad the script with harmless SELECTs so that it needs concatenation.
    apdus = select_path(CALIBRATION_PATH) * 6 + apdus
    out = await rig.send(apdus)
    assert len(out.user_data) >= 2
    await until(lambda: rig.pors or rig.refused, 10, "the PoR")
    assert not rig.refused, rig.refused
    (por,) = rig.pors
    assert por.ok
    assert por.status is ResponseStatus.POR_OK
    assert por.response is not None
    assert por.response.executed == len(apdus)
    assert por.response.last.data == content
    assert rig.card.fs.read_binary(CALIBRATION_PATH) == content
    assert rig.platform.pending == 0


@pytest_twisted.ensureDeferred
async def test_replayed_packet_is_refused_by_the_card(rig_factory: Callable[..., Any]) -> None:
    """The same command packet delivered twice (an SMSC duplicate, or an attacker's replay):
    the card executes it once and answers the second with 'counter too low'; the platform
    finds no command awaiting that PoR, so the replay's refusal changes nothing there."""
    rig = await rig_factory()
    apdus = [*select_path(CALIBRATION_PATH), CommandApdu(0x00, 0xD6, 0x00, 0x00, b"\x01")]
    out = rig.platform.command(iccid=ICCID, msisdn=MSISDN, tar=TAR_RFM, apdus=apdus)
    assert rig.esme is not None
    for _ in range(2):
        result = await rig.esme.send(
            OutboundMessage(
                MSISDN,
                user_data=out.user_data,
                protocol_id=TP_PID_SIM_DATA_DOWNLOAD,
                data_coding=DCS_CLASS2_8BIT,
            )
        )
        assert result.ok
    await until(lambda: len(rig.pors) + len(rig.refused) >= 2, 10, "two PoRs")
    statuses = [o.status for o in rig.phone.outcomes]
    assert statuses == [ResponseStatus.POR_OK, ResponseStatus.COUNTER_LOW]
    assert len(rig.pors) == 1 and rig.pors[0].ok
    assert len(rig.refused) == 1 and isinstance(rig.refused[0], UnmatchedPor)
    assert rig.endpoint.last_counter(1) == out.pending.counter
