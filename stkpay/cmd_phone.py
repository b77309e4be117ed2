"""``stkpay phone``: one virtual phone with an RF-SIM wallet card against a running SMSC
simulator's HTTP API (``POST /mo``, ``GET /mt``; :mod:`smsc.sim_api`).

The card is personalised from the platform's key file (``--key-file``, else ``[ota]
key_file``): "one card, one key", so the gateway verifies its MO. The card's persistent state
(the applet's MO counter, the IMEI it last saw, the purse's balance and counters, the OTA
counters, the calibration file, the mailbox cursor) is kept in ``--state`` (JSON) between
runs, as a card keeps its EEPROM: without it, a second run would reuse MO counters and be
refused as a replay.

* ``--select PATH`` (``我的手机钱包/充值``) with ``--input TEXT`` (repeatable: amount, PIN):
  drives the menu without a person and prints each screen and each SMS as one JSON line, then
  polls for replies up to ``--wait`` seconds (OTA commands go to the card, which answers with
  its PoR). A hidden input (the PIN) is never printed.
* Without ``--select``: an interactive loop (numbered menu items; hidden input read with
  getpass; an empty line polls for messages; ``q`` quits).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from ota.keys import KeysError
from ota.keystore import FileKeyStore, KeyStoreError
from simcard.card import CALIBRATION_PATH
from simcard.fleet import DEFAULT_MODELS, FleetError, HttpLink, iccid_for, imei_for
from simcard.phone import Event, PhoneError, Screen, SmsReceived, VirtualPhone
from simcard.wallet_applet import (
    DEFAULT_SHORT_CODE,
    AppletState,
    WalletApplet,
    WalletAppletError,
)
from stk_menus.cat import GetInput, GetInputQualifier, SelectItem
from stk_menus.wallet_mo import Language
from stkpay.cli import CliError
from stkpay.config import Config

__all__ = ["register"]

DEFAULT_SIM_API = "http://127.0.0.1:8775"
_POLL = 0.1  # seconds between GET /mt polls
_SETTLE = 1.0  # after an SMS, stop once nothing more came for this long


def register(sub: Any) -> None:
    """Add ``stkpay phone``."""
    p = sub.add_parser("phone", help="drive one virtual phone's STK wallet menu")
    p.add_argument("--msisdn", required=True, help="the phone's number, E.164 digits")
    p.add_argument("--iccid", help="the card's ICCID (default: the fleet's rule for the MSISDN)")
    p.add_argument("--imei", help="the handset's IMEI (default: a virtual model's)")
    p.add_argument("--sim-api", default=DEFAULT_SIM_API, metavar="URL", help="simulator API")
    p.add_argument("--key-file", metavar="FILE", help="master keys (default: [ota] key_file)")
    p.add_argument("--short-code", default=DEFAULT_SHORT_CODE, help="the platform's number")
    p.add_argument("--select", metavar="PATH", help="menu path, e.g. 我的手机钱包/充值")
    p.add_argument("--input", action="append", default=[], metavar="TEXT", help="an answer")
    p.add_argument("--wait", type=float, default=5.0, metavar="SECONDS", help="wait for SMS")
    p.add_argument("--lang", choices=("zh", "en"), default="zh", help="reply language")
    p.add_argument("--state", metavar="FILE", help="card state (default var/phone-ICCID.json)")
    p.set_defaults(func=run)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read the card state {path}: {exc}") from None
    if not isinstance(data, dict):
        raise CliError(f"card state {path} is not a JSON object")
    return data


def _save_state(path: Path, phone: VirtualPhone, link: HttpLink) -> None:
    applet = phone.applet
    purse = applet.purse
    data = {
        "iccid": phone.card.iccid,
        "applet": applet.state.to_json(),
        "purse": {
            "balance": purse.balance,
            "online_counter": purse.online_counter,
            "offline_counter": purse.offline_counter,
        },
        "ota_counters": {str(k): v for k, v in phone.endpoint.counters.items()},
        "calibration": applet.calibration_file().hex(),
        "cursor": link.cursor,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), "utf-8")
    os.replace(tmp, path)


def _build(args: argparse.Namespace, config: Config) -> tuple[VirtualPhone, HttpLink, Path]:
    msisdn = args.msisdn
    try:
        iccid = args.iccid or iccid_for(msisdn)
    except FleetError as exc:
        raise CliError(str(exc)) from None
    imei = args.imei or imei_for(DEFAULT_MODELS[0].tac, int(msisdn[-6:]))
    key_file = args.key_file or os.environ.get("STKPAY_KEY_FILE") or config.ota.key_file
    state_path = Path(args.state or f"var/phone-{iccid}.json")
    saved = _load_state(state_path)
    try:
        keys = FileKeyStore(key_file).card_keys(iccid)
        applet_state = AppletState.from_json(saved.get("applet") or {})
        purse = saved.get("purse") or {}
        applet = WalletApplet.personalise(
            iccid,
            keys,
            balance=int(purse.get("balance", 0)),
            online_counter=int(purse.get("online_counter", 0)),
            offline_counter=int(purse.get("offline_counter", 0)),
            state=applet_state,
            short_code=args.short_code,
        )
        calibration = saved.get("calibration")
        if isinstance(calibration, str):
            applet.card.fs.write_binary(CALIBRATION_PATH, bytes.fromhex(calibration))
        counters = {int(k): int(v) for k, v in (saved.get("ota_counters") or {}).items()}
    except (KeyStoreError, KeysError, WalletAppletError) as exc:
        raise CliError(f"cannot personalise card {iccid}: {exc}") from None
    except (TypeError, ValueError, AttributeError):
        raise CliError(f"card state {state_path} is malformed") from None
    applet.language = Language.EN if args.lang == "en" else Language.ZH
    phone = VirtualPhone(msisdn, imei, applet, endpoint=applet.ota_endpoint(counters))
    link = HttpLink(args.sim_api, phone)
    cursor = saved.get("cursor")
    link.cursor = cursor if isinstance(cursor, int) else None
    return phone, link, state_path


def _emit(events: list[Event]) -> None:
    for event in events:
        print(json.dumps(event.to_json(), ensure_ascii=False), flush=True)


def run(args: argparse.Namespace, config: Config) -> int:
    """Run the phone: scripted with --select, else interactive."""
    phone, link, state_path = _build(args, config)
    try:
        if link.cursor is None:
            link.skip_existing()
        _emit(phone.power_on())
        link.send_outbox()
        _save_state(state_path, phone, link)
        if args.select is None:
            return _interactive(phone, link, state_path)
        events = phone.select(args.select)
        for text in args.input:
            events += phone.input(text)
        _emit(events)
        link.send_outbox()
        _save_state(state_path, phone, link)
        _wait(phone, link, state_path, args.wait)
    except FleetError as exc:
        raise CliError(f"simulator API: {exc}") from None
    except PhoneError as exc:
        raise CliError(str(exc)) from None
    return 0


def _wait(phone: VirtualPhone, link: HttpLink, state_path: Path, seconds: float) -> None:
    deadline = time.monotonic() + max(seconds, 0.0)
    last_sms: float | None = None
    while True:
        events = link.poll()
        _emit(events)
        now = time.monotonic()
        if events:
            _save_state(state_path, phone, link)
        if any(isinstance(e, SmsReceived) for e in events):
            last_sms = now
        if now >= deadline or (last_sms is not None and now - last_sms >= _SETTLE):
            return
        time.sleep(_POLL)


def _interactive(phone: VirtualPhone, link: HttpLink, state_path: Path) -> int:
    menu = _main_menu(phone)
    while True:
        shown = phone.screen
        if isinstance(shown, GetInput):
            prompt = shown.text.text + ": "
            hidden = bool(shown.qualifier & GetInputQualifier.HIDDEN)
            text = getpass.getpass(prompt) if hidden else input(prompt)
            events = phone.input(text) if text else phone.cancel()
        else:
            items = shown.items if isinstance(shown, SelectItem) else ()
            labels = [item.text for item in items] if items else menu
            for number, label in enumerate(labels, start=1):
                print(f"{number}. {label}")
            line = input("> ").strip()
            if line.lower() in ("q", "quit", "exit"):
                return 0
            if not line:
                events = link.poll()
            elif line.isdigit() and 1 <= int(line) <= len(labels):
                if items:
                    events = phone.choose(items[int(line) - 1].identifier)
                else:
                    events = phone.select(labels[int(line) - 1])
            else:
                print("?", file=sys.stderr)
                continue
        for event in events:
            _show(event)
        link.send_outbox()
        _save_state(state_path, phone, link)


def _main_menu(phone: VirtualPhone) -> list[str]:
    return [node.label for node in phone.applet.menu.roots]


def _show(event: Event) -> None:
    if isinstance(event, Screen):
        if event.kind == "text" and event.text is not None:
            print(f"[{event.text}]")
        elif event.title:
            print(f"== {event.title} ==")
    else:
        print(json.dumps(event.to_json(), ensure_ascii=False))
