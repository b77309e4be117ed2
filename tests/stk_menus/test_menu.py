"""Tests for stk_menus.menu (the menu tree as data, and the CAT commands built from it) and for
docs/stk.md, whose worked example is rebuilt from the code octet for octet."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from stk_menus.cat import (
    DCS_8BIT,
    DCS_UCS2,
    DisplayText,
    DisplayTextQualifier,
    GetInput,
    GetInputQualifier,
    ItemIdentifier,
    MenuSelection,
    ResponseLength,
    SelectItem,
    SetUpMenu,
    decode_envelope,
    decode_proactive_command,
    decode_terminal_response,
    terminal_response,
)
from stk_menus.menu import Action, InputKind, MenuError, MenuTree
from tests.docvectors import doc_vectors, hex_lines

DOC = Path(__file__).resolve().parents[2] / "docs" / "stk.md"
TOPUP = "我的手机钱包/充值"


@pytest.fixture(scope="module")
def tree() -> MenuTree:
    return MenuTree.load()


def _data() -> dict[str, Any]:
    """A valid tree as parsed TOML, to be broken by the validation tests."""
    return {
        "title": "T",
        "items": [
            {
                "id": 1,
                "label": "Wallet",
                "items": [
                    {
                        "id": 1,
                        "label": "Top-up",
                        "action": "topup",
                        "inputs": [
                            {
                                "name": "amount",
                                "prompt": "Amount",
                                "kind": "digits",
                                "min": 1,
                                "max": 6,
                            },
                            {
                                "name": "pin",
                                "prompt": "PIN",
                                "kind": "digits",
                                "min": 6,
                                "max": 6,
                                "hidden": True,
                            },
                        ],
                    },
                    {"id": 2, "label": "Balance", "action": "balance"},
                ],
            },
            {"id": 2, "label": "SIM", "action": "sim_info"},
        ],
    }


# -- the shipped tree -----------------------------------------------------------------------


def test_shipped_tree_shape(tree: MenuTree) -> None:
    """The shipped menu has the four top-level entries and the wallet's three leaves."""
    assert [node.label for node in tree.roots] == [
        "我的手机钱包",
        "我的一卡通",
        "手机票",
        "SIM卡信息",
    ]
    assert [node.id for node in tree.roots] == [1, 2, 3, 4]
    wallet = tree.node("我的手机钱包")
    assert [(n.label, n.action) for n in wallet.children] == [
        ("充值", Action.TOPUP),
        ("余额查询", Action.BALANCE),
        ("最近10笔交易", Action.LAST10),
    ]
    assert [tree.root(i).action for i in (2, 3, 4)] == [
        Action.ONECARD,
        Action.TICKETS,
        Action.SIM_INFO,
    ]


def test_topup_asks_amount_then_pin(tree: MenuTree) -> None:
    """充值 asks the amount (digits 1..6, echoed) then the PIN (hidden digits, exactly 6)."""
    amount, pin = tree.node(TOPUP).inputs
    assert (amount.name, amount.kind, amount.min_length, amount.max_length) == (
        "amount",
        InputKind.DIGITS,
        1,
        6,
    )
    assert (pin.name, pin.kind, pin.min_length, pin.max_length, pin.hidden) == (
        "pin",
        InputKind.DIGITS,
        6,
        6,
        True,
    )
    ask_amount, ask_pin = tree.node(TOPUP).get_inputs()
    assert ask_amount.qualifier == GetInputQualifier.NONE
    assert ask_amount.response_length == ResponseLength(1, 6)
    assert ask_pin.qualifier == GetInputQualifier.HIDDEN
    assert ask_pin.response_length == ResponseLength(6, 6)


def test_setup_menu_lists_the_top_level(tree: MenuTree) -> None:
    """SET UP MENU carries the title and one item per top-level entry, and decodes back."""
    command = tree.setup_menu()
    assert command.alpha.text == "中国移动"
    assert [(item.identifier, item.text) for item in command.items] == [
        (node.id, node.label) for node in tree.roots
    ]
    assert decode_proactive_command(command.encode()) == command


def test_every_command_of_the_tree_round_trips(tree: MenuTree) -> None:
    """Every command the tree builds decodes back to itself."""
    commands: list[SetUpMenu | SelectItem | GetInput | DisplayText] = [tree.setup_menu()]
    for node in tree.walk():
        if node.is_leaf:
            commands += node.get_inputs()
            notice = node.display_text()
            if notice is not None:
                commands.append(notice)
        else:
            commands.append(node.select_item())
    assert len(commands) > 5
    for command in commands:
        assert decode_proactive_command(command.encode()) == command


def test_prompts_choose_their_coding(tree: MenuTree) -> None:
    """A Chinese prompt is UCS2; a prompt the GSM alphabet carries is 8-bit."""
    assert tree.node(TOPUP).get_inputs()[0].text.dcs == DCS_UCS2
    english = MenuTree.from_dict(_data())
    assert english.node("Wallet/Top-up").get_inputs()[0].text.dcs == DCS_8BIT


def test_notice_is_a_display_text(tree: MenuTree) -> None:
    """A leaf's notice is a DISPLAY TEXT the user clears; a leaf without one has none."""
    notice = tree.node(TOPUP).display_text()
    assert notice is not None
    assert notice.qualifier == DisplayTextQualifier.WAIT_FOR_USER
    assert tree.node("手机票").display_text() is None


def test_a_phone_session_walks_the_tree(tree: MenuTree) -> None:
    """Envelope -> SELECT ITEM -> item chosen -> GET INPUTs answered, as a phone would."""
    envelope = decode_envelope(MenuSelection(ItemIdentifier(1)).encode())
    wallet = tree.root(envelope.item.identifier)
    menu = decode_proactive_command(wallet.select_item().encode())
    assert isinstance(menu, SelectItem)
    chosen = decode_terminal_response(terminal_response(menu, item=1).encode())
    assert chosen.item is not None
    leaf = wallet.child(chosen.item.identifier)
    assert leaf.path == TOPUP
    answers = []
    for ask, typed in zip(leaf.get_inputs(), ["200", "123456"], strict=True):
        response = decode_terminal_response(terminal_response(ask, text=typed).encode())
        assert response.text is not None
        answers.append(response.text.text)
    assert answers == ["200", "123456"]


def test_unknown_paths_and_items(tree: MenuTree) -> None:
    """Paths, top-level ids and child ids the tree lacks raise MenuError."""
    with pytest.raises(MenuError):
        tree.node("我的手机钱包/转账")
    with pytest.raises(MenuError):
        tree.root(9)
    with pytest.raises(MenuError):
        tree.node("我的手机钱包").child(9)
    with pytest.raises(MenuError):
        tree.node(TOPUP).select_item()


def test_menu_change_is_a_data_change(tmp_path: Path) -> None:
    """Editing the file (a relabel, a longer amount) changes the commands, no code involved."""
    shipped = (Path(__file__).resolve().parents[2] / "stk_menus" / "menu.toml").read_text("utf-8")
    edited = shipped.replace('label = "余额查询"', 'label = "查余额"').replace(
        "max = 6\n", "max = 7\n", 1
    )
    path = tmp_path / "menu.toml"
    path.write_text(edited, encoding="utf-8")
    tree = MenuTree.load(path)
    assert [n.label for n in tree.node("我的手机钱包").children][1] == "查余额"
    assert tree.node(TOPUP).get_inputs()[0].response_length == ResponseLength(1, 7)


# -- validation -----------------------------------------------------------------------------


def _break(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(_data())
    change(data)
    return data


def _wallet(data: dict[str, Any]) -> dict[str, Any]:
    wallet: dict[str, Any] = data["items"][0]
    return wallet


def _topup(data: dict[str, Any]) -> dict[str, Any]:
    topup: dict[str, Any] = _wallet(data)["items"][0]
    return topup


BROKEN: dict[str, Callable[[dict[str, Any]], None]] = {
    "duplicate id": lambda d: d["items"][1].update(id=1),
    "duplicate label": lambda d: d["items"][1].update(label="Wallet"),
    "id 0": lambda d: d["items"][1].update(id=0),
    "id 256": lambda d: d["items"][1].update(id=256),
    "id as text": lambda d: d["items"][1].update(id="2"),
    "slash in label": lambda d: d["items"][1].update(label="a/b"),
    "empty label": lambda d: d["items"][1].update(label=""),
    "items and action": lambda d: _wallet(d).update(action="balance"),
    "neither": lambda d: d["items"][1].pop("action"),
    "unknown action": lambda d: d["items"][1].update(action="transfer"),
    "unknown key": lambda d: d["items"][1].update(colour="red"),
    "unknown top key": lambda d: d.update(version=2),
    "no title": lambda d: d.pop("title"),
    "no items": lambda d: d.update(items=[]),
    "empty submenu": lambda d: _wallet(d).update(items=[]),
    "inputs on a submenu": lambda d: _wallet(d).update(inputs=[]),
    "topup without pin": lambda d: _topup(d)["inputs"].pop(),
    "topup inputs swapped": lambda d: _topup(d)["inputs"].reverse(),
    "min above max": lambda d: _topup(d)["inputs"][0].update(min=7),
    "max 0": lambda d: _topup(d)["inputs"][0].update(min=0, max=0),
    "unknown kind": lambda d: _topup(d)["inputs"][0].update(kind="hex"),
    "packed ucs2": lambda d: _topup(d)["inputs"][0].update(kind="ucs2", packed=True),
    "hidden not bool": lambda d: _topup(d)["inputs"][1].update(hidden="yes"),
    "repeated input": lambda d: d["items"][1].update(
        inputs=[{"name": "x", "prompt": "p", "kind": "text", "min": 1, "max": 2}] * 2
    ),
    "empty notice": lambda d: d["items"][1].update(notice=""),
    "label too long": lambda d: d["items"][1].update(label="x" * 250),
    "prompt too long": lambda d: _topup(d)["inputs"][0].update(prompt="p" * 254),
    "items not tables": lambda d: d.update(items=[1]),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_invalid_trees_are_refused(name: str) -> None:
    """Each broken tree raises MenuError at load time."""
    MenuTree.from_dict(_data())  # the unbroken tree is valid
    with pytest.raises(MenuError):
        MenuTree.from_dict(_break(BROKEN[name]))


def test_invalid_toml(tmp_path: Path) -> None:
    """A file that is not TOML raises MenuError."""
    path = tmp_path / "menu.toml"
    path.write_text("title = \n", encoding="utf-8")
    with pytest.raises(MenuError, match="TOML"):
        MenuTree.load(path)


# -- docs/stk.md: the worked example ---------------------------------------------------------


def _example() -> dict[str, bytes]:
    tree = MenuTree.load()
    wallet = tree.node("我的手机钱包").select_item()
    amount, pin = tree.node(TOPUP).get_inputs()
    notice = tree.node(TOPUP).display_text()
    assert notice is not None
    return {
        "setup_menu": tree.setup_menu().encode(),
        "menu_selection": MenuSelection(ItemIdentifier(1)).encode(),
        "select_item_wallet": wallet.encode(),
        "terminal_response_item": terminal_response(wallet, item=1).encode(),
        "get_input_amount": amount.encode(),
        "terminal_response_amount": terminal_response(amount, text="200").encode(),
        "get_input_pin": pin.encode(),
        "display_text_notice": notice.encode(),
    }


def _doc_vectors() -> dict[str, bytes]:
    return doc_vectors(DOC)


_hex_lines = hex_lines


def test_doc_has_exactly_the_example_vectors() -> None:
    """docs/stk.md shows every vector of the worked example and no other."""
    assert sorted(_doc_vectors()) == sorted(_example())


@pytest.mark.parametrize("name", sorted(_example()))
def test_doc_vector(name: str) -> None:
    """The hex in docs/stk.md is what the code produces from the shipped menu."""
    built = _example()[name]
    assert _doc_vectors()[name] == built, f"{name}: the code produces\n{_hex_lines(built)}"


def test_commands_are_built_once(tree: MenuTree) -> None:
    """Each command is immutable and the same for every card: built once per command number,
    and equal to one built afresh from the same data."""
    wallet = tree.node("我的手机钱包")
    leaf = tree.node(TOPUP)
    assert tree.setup_menu() is tree.setup_menu()
    assert wallet.select_item() is wallet.select_item()
    assert leaf.inputs[0].get_input() is leaf.inputs[0].get_input()
    assert leaf.display_text() is leaf.display_text()
    fresh = MenuTree.load(Path(__file__).resolve().parents[2] / "stk_menus" / "menu.toml")
    assert fresh.setup_menu() == tree.setup_menu()
    assert fresh.node("我的手机钱包").select_item() == wallet.select_item()
    assert fresh.node(TOPUP).get_inputs() == leaf.get_inputs()
    assert wallet.select_item(number=2).number == 2
    assert wallet.select_item(number=2) != wallet.select_item()
    assert tree.setup_menu(number=3).number == 3
    assert leaf.inputs[1].get_input(number=4).number == 4
    notice = leaf.display_text(number=5)
    assert notice is not None and notice.number == 5
    assert fresh.node(TOPUP) == leaf  # the caches take no part in equality
    with pytest.raises(MenuError):  # a leaf is still no submenu, however often asked
        leaf.select_item()
