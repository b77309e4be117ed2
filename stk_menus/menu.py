"""The wallet's STK menu tree, loaded from data and turned into CAT proactive commands.

The tree lives in ``menu.toml`` (its header states the rules). :class:`MenuTree` loads and
validates it, then builds the commands of ETSI TS 102 223 the card sends: SET UP MENU (§6.6.7)
for the top level, SELECT ITEM (§6.6.8) for a submenu, GET INPUT (§6.6.3) for each input a leaf
asks, and DISPLAY TEXT (§6.6.1) for a leaf's notice. Every command is built once at load time,
so a tree that cannot be encoded (a label too long, a prompt outside its alphabet) is refused
there, with the path of the offending node; the commands are immutable and kept, so every card
of a fleet is handed the same objects (another command number builds its own, once). Item
texts and the title are coded per TS 102 221 Annex A by :mod:`stk_menus.cat`; prompts and
notices use the 8-bit GSM alphabet when it can carry them, UCS2 otherwise (TS 102 223 §8.15).
"""

from __future__ import annotations

import enum
import functools
import os
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Final

from smsc import gsm7
from stk_menus.cat import (
    DCS_8BIT,
    DCS_UCS2,
    AlphaIdentifier,
    CatError,
    DisplayText,
    DisplayTextQualifier,
    GetInput,
    GetInputQualifier,
    Item,
    MenuQualifier,
    ResponseLength,
    SelectItem,
    SetUpMenu,
    TextString,
)

__all__ = [
    "REQUIRED_INPUTS",
    "Action",
    "InputKind",
    "InputSpec",
    "MenuError",
    "MenuNode",
    "MenuTree",
]

SEPARATOR: Final = "/"


class MenuError(ValueError):
    """A menu file that is not a valid tree, or a path or item that the tree does not have."""


class Action(enum.StrEnum):
    """What a leaf does when chosen."""

    TOPUP = "topup"  # load the card from the cash account
    BALANCE = "balance"  # balance query, answered by SMS
    LAST10 = "last10"  # last 10 transactions, answered by SMS
    ONECARD = "onecard"  # enterprise one-card functions (on the card)
    TICKETS = "tickets"  # mobile tickets (on the card)
    SIM_INFO = "sim_info"  # SIM card information (on the card)


#: The inputs an action needs, by name and in order: the handlers rely on them.
REQUIRED_INPUTS: Final[Mapping[Action, tuple[str, ...]]] = {Action.TOPUP: ("amount", "pin")}


class InputKind(enum.StrEnum):
    """What a GET INPUT lets the user type (its qualifier bits 1 and 2)."""

    DIGITS = "digits"  # 0-9, *, #, +
    TEXT = "text"  # SMS default alphabet
    UCS2 = "ucs2"  # UCS2


def _text_string(text: str) -> TextString:
    return TextString(text, DCS_8BIT if gsm7.can_encode(text) else DCS_UCS2)


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One input a leaf asks for with GET INPUT."""

    name: str
    prompt: str
    kind: InputKind
    min_length: int
    max_length: int
    hidden: bool = False
    packed: bool = False
    #: Commands built so far, by command number: immutable, so built once per process.
    _built: dict[int, GetInput] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def qualifier(self) -> GetInputQualifier:
        """The GET INPUT command qualifier (TS 102 223 §8.6)."""
        qualifier = GetInputQualifier.NONE
        if self.kind is not InputKind.DIGITS:
            qualifier |= GetInputQualifier.ALPHABET
        if self.kind is InputKind.UCS2:
            qualifier |= GetInputQualifier.UCS2
        if self.hidden:
            qualifier |= GetInputQualifier.HIDDEN
        if self.packed:
            qualifier |= GetInputQualifier.PACKED
        return qualifier

    def get_input(self, number: int = 1) -> GetInput:
        """The GET INPUT command that asks for this input (built once per number)."""
        command = self._built.get(number)
        if command is None:
            command = self._built[number] = GetInput(
                text=_text_string(self.prompt),
                response_length=ResponseLength(self.min_length, self.max_length),
                qualifier=self.qualifier,
                number=number,
            )
        return command


@dataclass(frozen=True, slots=True)
class MenuNode:
    """A menu entry: a submenu (``children``) or a leaf (``action``, ``inputs``, ``notice``)."""

    id: int
    label: str
    path: str
    children: tuple[MenuNode, ...] = ()
    action: Action | None = None
    inputs: tuple[InputSpec, ...] = ()
    notice: str | None = None
    #: Commands built so far, by (kind, command number): immutable, so built once.
    _built: dict[tuple[str, int], SelectItem | DisplayText] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @property
    def is_leaf(self) -> bool:
        """True for an entry that triggers an action."""
        return self.action is not None

    def item(self) -> Item:
        """This entry as an Item data object of its parent's menu."""
        return Item(self.id, self.label)

    def child(self, item_id: int) -> MenuNode:
        """The child chosen by item identifier ``item_id``."""
        for node in self.children:
            if node.id == item_id:
                return node
        raise MenuError(f"{self.path} has no item {item_id}")

    def select_item(self, number: int = 1) -> SelectItem:
        """The SELECT ITEM that shows this submenu (built once per number)."""
        command = self._built.get(("select", number))
        if command is None:
            if self.is_leaf:
                raise MenuError(f"{self.path} is a leaf, not a submenu")
            command = self._built["select", number] = SelectItem(
                items=tuple(node.item() for node in self.children),
                alpha=AlphaIdentifier(self.label),
                number=number,
            )
        assert isinstance(command, SelectItem)
        return command

    def get_inputs(self) -> tuple[GetInput, ...]:
        """The GET INPUT commands of this leaf, in the order they are asked."""
        return tuple(spec.get_input() for spec in self.inputs)

    def display_text(self, number: int = 1) -> DisplayText | None:
        """The DISPLAY TEXT of this leaf's notice (cleared by the user), or None (built
        once per number)."""
        if self.notice is None:
            return None
        command = self._built.get(("notice", number))
        if command is None:
            command = self._built["notice", number] = DisplayText(
                _text_string(self.notice), DisplayTextQualifier.WAIT_FOR_USER, number=number
            )
        assert isinstance(command, DisplayText)
        return command


# -- reading the data -----------------------------------------------------------------------

_TREE_KEYS: Final = frozenset({"title", "items"})
_NODE_KEYS: Final = frozenset({"id", "label", "items", "action", "inputs", "notice"})
_INPUT_KEYS: Final = frozenset({"name", "prompt", "kind", "min", "max", "hidden", "packed"})


def _check_keys(table: Mapping[str, object], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise MenuError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _str(table: Mapping[str, object], key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise MenuError(f"{where}: {key} must be a non-empty string")
    return value


def _int(table: Mapping[str, object], key: str, where: str, low: int, high: int) -> int:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MenuError(f"{where}: {key} must be an integer {low}..{high}")
    return value


def _bool(table: Mapping[str, object], key: str, where: str) -> bool:
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise MenuError(f"{where}: {key} must be true or false")
    return value


def _tables(value: object, where: str) -> list[Mapping[str, object]]:
    if not isinstance(value, list) or not value:
        raise MenuError(f"{where} must be a non-empty array of tables")
    for entry in value:
        if not isinstance(entry, dict):
            raise MenuError(f"{where} must be an array of tables")
    return value


def _parse_input(table: Mapping[str, object], where: str) -> InputSpec:
    _check_keys(table, _INPUT_KEYS, where)
    name = _str(table, "name", where)
    where = f"{where} {name!r}"
    kind_text = _str(table, "kind", where)
    try:
        kind = InputKind(kind_text)
    except ValueError:
        raise MenuError(f"{where}: kind {kind_text!r} is not one of digits, text, ucs2") from None
    low = _int(table, "min", where, 0, 255)
    high = _int(table, "max", where, 1, 255)
    if low > high:
        raise MenuError(f"{where}: min {low} exceeds max {high}")
    spec = InputSpec(
        name=name,
        prompt=_str(table, "prompt", where),
        kind=kind,
        min_length=low,
        max_length=high,
        hidden=_bool(table, "hidden", where),
        packed=_bool(table, "packed", where),
    )
    if spec.packed and kind is InputKind.UCS2:
        raise MenuError(f"{where}: a UCS2 input cannot come back packed")
    return spec


def _parse_node(table: Mapping[str, object], parent: str) -> MenuNode:
    where = f"menu item under {parent or 'the top level'}"
    _check_keys(table, _NODE_KEYS, where)
    label = _str(table, "label", where)
    if SEPARATOR in label:
        raise MenuError(f"{where}: label {label!r} contains {SEPARATOR!r}")
    path = f"{parent}{SEPARATOR}{label}" if parent else label
    node_id = _int(table, "id", path, 1, 255)
    has_items, has_action = "items" in table, "action" in table
    if has_items == has_action:
        raise MenuError(f"{path}: a node has either items (a submenu) or an action (a leaf)")
    if has_items:
        for key in ("inputs", "notice"):
            if key in table:
                raise MenuError(f"{path}: a submenu has no {key}")
        children = _parse_level(table["items"], path)
        return MenuNode(node_id, label, path, children=children)
    action_text = _str(table, "action", path)
    try:
        action = Action(action_text)
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise MenuError(f"{path}: action {action_text!r} is not one of {known}") from None
    raw_inputs = table.get("inputs")
    inputs = (
        ()
        if raw_inputs is None
        else tuple(_parse_input(t, f"{path} input") for t in _tables(raw_inputs, f"{path} inputs"))
    )
    names = tuple(spec.name for spec in inputs)
    if len(set(names)) != len(names):
        raise MenuError(f"{path}: input names repeat")
    required = REQUIRED_INPUTS.get(action, ())
    if required and names != required:
        raise MenuError(f"{path}: action {action} asks inputs {required}, in that order")
    notice = table.get("notice")
    if notice is not None and (not isinstance(notice, str) or not notice):
        raise MenuError(f"{path}: notice must be a non-empty string")
    return MenuNode(node_id, label, path, action=action, inputs=inputs, notice=notice)


def _parse_level(value: object, parent: str) -> tuple[MenuNode, ...]:
    nodes = tuple(_parse_node(t, parent) for t in _tables(value, f"{parent or 'top'} items"))
    ids = [node.id for node in nodes]
    labels = [node.label for node in nodes]
    if len(set(ids)) != len(ids) or len(set(labels)) != len(labels):
        raise MenuError(f"{parent or 'the top level'}: item ids and labels must be unique")
    return nodes


def _walk(nodes: Sequence[MenuNode]) -> Iterator[MenuNode]:
    for node in nodes:
        yield node
        yield from _walk(node.children)


@dataclass(frozen=True, slots=True)
class MenuTree:
    """The validated menu tree: the title of the card's menu and its top-level entries."""

    title: str
    roots: tuple[MenuNode, ...]
    _by_path: dict[str, MenuNode] = field(init=False, repr=False, compare=False)
    _menus: dict[int, SetUpMenu] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_path", {node.path: node for node in _walk(self.roots)})
        object.__setattr__(self, "_menus", {})
        self._check_encodable()

    def _check_encodable(self) -> None:
        where = "the top level"
        try:
            self.setup_menu().encode()
            for node in self.walk():
                where = node.path
                if node.is_leaf:
                    for command in node.get_inputs():
                        command.encode()
                    notice = node.display_text()
                    if notice is not None:
                        notice.encode()
                else:
                    node.select_item().encode()
        except CatError as exc:
            raise MenuError(f"{where}: cannot be coded as a CAT command: {exc}") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> MenuTree:
        """Validate parsed TOML and build the tree."""
        _check_keys(data, _TREE_KEYS, "menu")
        title = _str(data, "title", "menu")
        return cls(title, _parse_level(data.get("items"), ""))

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> MenuTree:
        """Load a menu file; without ``path``, the ``menu.toml`` shipped in this package
        (parsed once per process: the tree is immutable, every card of a fleet shares it)."""
        if path is None:
            return _packaged_menu()
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise MenuError(f"menu file is not valid TOML: {exc}") from None
        return cls.from_dict(data)

    def walk(self) -> Iterator[MenuNode]:
        """Every node, depth first, in menu order."""
        return _walk(self.roots)

    def node(self, path: str) -> MenuNode:
        """The node at ``path``, labels joined by "/" (e.g. "我的手机钱包/充值")."""
        try:
            return self._by_path[path]
        except KeyError:
            raise MenuError(f"no menu entry {path!r}") from None

    def root(self, item_id: int) -> MenuNode:
        """The top-level entry the MENU SELECTION envelope names by ``item_id``."""
        for node in self.roots:
            if node.id == item_id:
                return node
        raise MenuError(f"the menu has no top-level item {item_id}")

    def setup_menu(self, number: int = 1) -> SetUpMenu:
        """The SET UP MENU that installs the top level on the phone (built once per
        number)."""
        command = self._menus.get(number)
        if command is None:
            command = self._menus[number] = SetUpMenu(
                alpha=AlphaIdentifier(self.title),
                items=tuple(node.item() for node in self.roots),
                qualifier=MenuQualifier.NONE,
                number=number,
            )
        return command


@functools.cache
def _packaged_menu() -> MenuTree:
    with resources.as_file(resources.files("stk_menus").joinpath("menu.toml")) as path:
        return MenuTree.load(path)
