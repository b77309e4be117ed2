"""Master keys behind one interface, two backends: a key file and a PKCS#11 token (an HSM).

"One card, one key": a store holds *master* keys, by key set, name and version; a card's keys
are diversified from them by its ICCID (:mod:`ota.keys`: PBOC 3DES method, SP 800-108 AES
method). Both backends give the same card keys for the same masters.

* :class:`FileKeyStore`: a JSON file (the embedded default; never in the repository), mode
  0600, refused when group or others may access it; every import rewrites it atomically
  (temporary file, fsync, rename) under an advisory lock.
* :class:`Pkcs11KeyStore`: secret-key objects on a token (python-pkcs11; tested against
  SoftHSM2), labelled ``{keyset}/{name}/v{version}``, sensitive and non-extractable. Card keys
  are diversified inside the token: for 3DES, ``C_Encrypt`` with ``CKM_DES3_ECB`` of ``D`` and
  ``NOT D``; for AES, the SP 800-108 counter-mode KDF with the token's ``CKM_AES_CMAC`` as
  the PRF. The master never leaves the token; KCVs are computed on it too.

Versions and rotation: versions are integers 1-255 (for an OTA key set, the key-set number
of KIc/KID b8-b5, ETSI TS 102 225 §5.1.2-5.1.3, is 1-15). A version, once imported, is never
changed; the *current* version of a key set is the highest one present, so importing version
N+1 rotates the key set while cards not yet migrated keep working with an explicit older
version.

No key material in any repr, log line or exception message: stores show their path or token
label, errors name keys by key set, name and version.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from ota.keys import (
    AES_KEY_LENS,
    ALL_NAMES,
    KCV_LEN,
    TDES_KEY_LEN,
    CardKey,
    CardKeys,
    KeyAlgorithm,
    KeyName,
    KeysError,
    aes_fixed_input,
    card_key,
    check_key,
    diversify,
    kcv,
    kcv_hex,
    normalize_iccid,
    pboc_diversifier,
)

log = logging.getLogger(__name__)

FILE_FORMAT: Final = "stkpay-keys"
FILE_FORMAT_VERSION: Final = 1
MIN_VERSION: Final = 1
MAX_VERSION: Final = 255

_KEYSET: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_LABEL: Final = re.compile(
    r"(?P<keyset>[A-Za-z0-9][A-Za-z0-9_.-]{0,31})/(?P<name>[a-z]+)/v(?P<version>[0-9]{1,3})"
)


class KeyStoreError(Exception):
    """A key store failure or refusal; ``str()`` is one line without key material."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class KeyNotFoundError(KeyStoreError):
    """No such key set, version or key."""


class KeyExistsError(KeyStoreError):
    """The key (key set, name, version) is already in the store; versions are immutable."""


class KeyFileError(KeyStoreError):
    """The key file is unsafe (permissions) or malformed."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What a store says about one master key: never the key itself."""

    keyset: str
    name: KeyName
    version: int
    algorithm: KeyAlgorithm
    length: int  # bytes
    kcv: bytes

    @property
    def kcv_hex(self) -> str:
        """The KCV as printed (upper-case hex)."""
        return kcv_hex(self.kcv)

    @property
    def label(self) -> str:
        """``keyset/name/vN``: the PKCS#11 label, and how messages name the key."""
        return key_label(self.keyset, self.name, self.version)

    def describe(self) -> str:
        """``ota/kic v1 aes-128 KCV 1A2B3C``."""
        return (
            f"{self.keyset}/{self.name.value} v{self.version} {self.algorithm.value}-"
            f"{8 * self.length} KCV {self.kcv_hex}"
        )


class KeyStore(Protocol):
    """Master keys by key set, name and version; card keys diversified from them."""

    def card_keys(self, iccid: str, keyset: str = "ota", version: int | None = None) -> CardKeys:
        """The card's keys of ``keyset`` at ``version`` (None: the current version)."""
        ...

    def list_keys(self) -> list[KeyInfo]:
        """Every master key (no material), sorted by key set, version, name."""
        ...

    def import_key(
        self,
        keyset: str,
        name: KeyName | str,
        version: int,
        algorithm: KeyAlgorithm | str,
        material: bytes,
    ) -> KeyInfo:
        """Store a master key; :class:`KeyExistsError` if that version of it exists."""
        ...

    def current_version(self, keyset: str) -> int:
        """The highest version of ``keyset``; :class:`KeyNotFoundError` if it has none."""
        ...


def key_label(keyset: str, name: KeyName | str, version: int) -> str:
    """``keyset/name/vN``."""
    return f"{keyset}/{KeyName(name).value}/v{version}"


def check_keyset(keyset: str) -> str:
    """A key set name: 1-32 of letters, digits, ``_ . -``, starting with a letter or digit."""
    if not isinstance(keyset, str) or not _KEYSET.fullmatch(keyset):
        raise KeyStoreError(
            f"bad key set name {str(keyset)[:40]!r}: 1-32 letters, digits, '_', '.', '-'"
        )
    return keyset


def check_version(version: int) -> int:
    """A key set version: an integer 1-255."""
    if isinstance(version, bool) or not isinstance(version, int):
        raise KeyStoreError(f"bad key version {version!r}: an integer 1-255")
    if not MIN_VERSION <= version <= MAX_VERSION:
        raise KeyStoreError(f"bad key version {version}: must be 1-255")
    return version


def _coerce(
    keyset: str, name: KeyName | str, version: int, algorithm: KeyAlgorithm | str
) -> tuple[str, KeyName, int, KeyAlgorithm]:
    check_keyset(keyset)
    check_version(version)
    try:
        key_name = KeyName(name)
    except ValueError:
        names = ", ".join(n.value for n in KeyName)
        raise KeyStoreError(f"unknown key name {str(name)[:20]!r} (one of {names})") from None
    try:
        alg = KeyAlgorithm(algorithm)
    except ValueError:
        raise KeyStoreError(f"unknown algorithm {str(algorithm)[:20]!r} (3des or aes)") from None
    return keyset, key_name, version, alg


def _check_material(alg: KeyAlgorithm, name: KeyName, material: bytes) -> None:
    if not isinstance(material, bytes | bytearray):
        raise KeyStoreError(f"{name}: key material must be bytes")
    try:
        check_key(alg, name, bytes(material))
    except KeysError as exc:
        raise KeyStoreError(str(exc)) from None


def _derive_all(iccid: str, keyset: str, version: int, keys: Iterable[CardKey]) -> CardKeys:
    ordered = sorted(keys, key=lambda k: ALL_NAMES.index(k.name))
    return CardKeys(normalize_iccid(iccid), keyset, version, tuple(ordered))


def _sort_infos(infos: Iterable[KeyInfo]) -> list[KeyInfo]:
    return sorted(infos, key=lambda i: (i.keyset, i.version, ALL_NAMES.index(i.name)))


def generate_keyset(
    store: KeyStore,
    keyset: str,
    version: int,
    algorithm: KeyAlgorithm | str = KeyAlgorithm.AES,
    *,
    names: Sequence[KeyName] = ALL_NAMES,
    aes_length: int = 16,
) -> list[KeyInfo]:
    """Fresh random master keys (``secrets``) for ``names`` in ``keyset`` v``version``.

    ``algorithm`` applies to the OTA keys; the PBOC wallet keys are always 2-key 3DES. For the
    demo and tests; production masters come from a key ceremony and are imported.
    """
    alg = KeyAlgorithm(algorithm)
    if aes_length not in AES_KEY_LENS:
        raise KeyStoreError(f"AES master length must be 16, 24 or 32 bytes, got {aes_length}")
    infos = []
    for name in names:
        key_alg = KeyAlgorithm.TDES if KeyName(name).wallet else alg
        material = _random_key(key_alg, aes_length)
        infos.append(store.import_key(keyset, name, version, key_alg, material))
    return infos


def _random_key(alg: KeyAlgorithm, aes_length: int) -> bytes:
    if alg is KeyAlgorithm.AES:
        return secrets.token_bytes(aes_length)
    while True:
        raw = secrets.token_bytes(TDES_KEY_LEN)
        key = bytes((b & 0xFE) | (bin(b >> 1).count("1") + 1) % 2 for b in raw)  # odd parity
        if key[:8] != key[8:]:
            return key


# --- key file -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    info: KeyInfo
    material: bytes

    def __repr__(self) -> str:
        return f"_Entry({self.info.describe()})"


class _DerivedCache:
    """The last ``limit`` cards' derived keys for one parsed version of the key file (its
    entries list is the generation: a new version of the file clears the cache; with no
    generation, as when the file could not be stat'ed, nothing is cached)."""

    __slots__ = ("_generation", "_items", "_lock", "limit")

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._generation: object = None
        self._items: OrderedDict[tuple[str, str, int], CardKeys] = OrderedDict()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"_DerivedCache({len(self._items)} cards)"

    def get(self, generation: object, key: tuple[str, str, int]) -> CardKeys | None:
        with self._lock:
            if generation is None or generation is not self._generation:
                return None
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, generation: object, key: tuple[str, str, int], keys: CardKeys) -> None:
        with self._lock:
            if generation is None:
                return
            if generation is not self._generation:
                self._generation = generation
                self._items.clear()
            self._items[key] = keys
            if len(self._items) > self.limit:
                self._items.popitem(last=False)


class FileKeyStore:
    """Master keys in a JSON file (mode 0600).

    Format (``format`` and ``version`` identify it; ``kcv`` is checked on every read, so a
    mistyped key is caught)::

        {"format": "stkpay-keys", "version": 1,
         "keys": [{"keyset": "ota", "name": "kic", "version": 1, "algorithm": "aes",
                   "key": "<hex>", "kcv": "1A2B3C"}, ...]}

    A missing file is an empty store; the first import creates it (and its directory, 0700).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int, int], list[_Entry]] | None = None
        # Card keys derived from the entries parsed last (cleared when the file changes).
        self._derived = _DerivedCache()

    def __repr__(self) -> str:
        return f"FileKeyStore({str(self.path)!r})"

    __str__ = __repr__

    # reading

    def _read_text(self) -> str | None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyFileError(f"key file {self.path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise KeyFileError(f"key file {self.path}: not a regular file")
            if mode & 0o077:
                raise KeyFileError(
                    f"key file {self.path} has mode {stat.S_IMODE(mode):04o}: group or others "
                    f"may access it; refusing to use it (chmod 600 {self.path})"
                )
            raw = fh.read()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyFileError(f"key file {self.path}: not UTF-8 text") from None

    def _load(self) -> list[_Entry]:
        # Parsed once per version of the file: (inode, size, mtime, ctime) changes on any
        # rewrite (atomic rename: a new inode) and on chmod, which re-runs the mode check.
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        except OSError:
            st = None
        stamp = None if st is None else (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        cached = self._cache
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1]
        text = self._read_text()
        if text is None:
            return []
        entries = self._parse(text)
        self._cache = (stamp, entries) if stamp is not None else None
        return entries

    def _parse(self, text: str) -> list[_Entry]:
        where = f"key file {self.path}"
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyFileError(
                f"{where}: not JSON (line {exc.lineno}, column {exc.colno})"
            ) from None
        except RecursionError:
            raise KeyFileError(f"{where}: not JSON (nested too deeply)") from None
        if not isinstance(doc, dict) or doc.get("format") != FILE_FORMAT:
            raise KeyFileError(f'{where}: not a key file (no "format": "{FILE_FORMAT}")')
        if doc.get("version") != FILE_FORMAT_VERSION:
            raise KeyFileError(f"{where}: unsupported key file version (expected 1)")
        keys = doc.get("keys")
        if not isinstance(keys, list):
            raise KeyFileError(f'{where}: "keys" must be a list')
        entries: list[_Entry] = []
        seen: set[tuple[str, KeyName, int]] = set()
        for index, item in enumerate(keys):
            entry = self._parse_entry(f"{where}, keys[{index}]", item)
            ident = (entry.info.keyset, entry.info.name, entry.info.version)
            if ident in seen:
                raise KeyFileError(f"{where}: {entry.info.label} appears twice")
            seen.add(ident)
            entries.append(entry)
        return entries

    @staticmethod
    def _parse_entry(where: str, item: Any) -> _Entry:
        if not isinstance(item, dict):
            raise KeyFileError(f"{where}: must be an object")
        fields = {"keyset", "name", "version", "algorithm", "key", "kcv"}
        if set(item) != fields:
            raise KeyFileError(f"{where}: expected exactly the fields {', '.join(sorted(fields))}")
        keyset, name, version = item["keyset"], item["name"], item["version"]
        algorithm, key_hex, kcv_text = item["algorithm"], item["key"], item["kcv"]
        if not all(isinstance(v, str) for v in (keyset, name, algorithm, key_hex, kcv_text)):
            raise KeyFileError(f"{where}: keyset, name, algorithm, key and kcv must be strings")
        try:
            keyset, key_name, version, alg = _coerce(keyset, name, version, algorithm)
        except KeyStoreError as exc:
            raise KeyFileError(f"{where}: {exc}") from None
        label = key_label(keyset, key_name, version)
        try:
            material = bytes.fromhex(key_hex)
        except ValueError:
            raise KeyFileError(f"{where} ({label}): key is not hex") from None
        try:
            check_key(alg, key_name, material)
        except KeysError as exc:
            raise KeyFileError(f"{where} ({label}): {exc}") from None
        actual = kcv(alg, material)
        if kcv_text.upper() != kcv_hex(actual):
            raise KeyFileError(
                f"{where} ({label}): KCV {kcv_text[:8]!r} does not match the key "
                f"(it computes to {kcv_hex(actual)})"
            )
        info = KeyInfo(keyset, key_name, version, alg, len(material), actual)
        return _Entry(info, material)

    # writing

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Thread lock plus an advisory ``flock`` on ``<file>.lock`` (other processes)."""
        with self._lock:
            try:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(
                    self.path.with_name(self.path.name + ".lock"),
                    os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW,
                    0o600,
                )
            except OSError as exc:
                raise KeyFileError(f"key file {self.path}: cannot lock: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _write(self, entries: Sequence[_Entry]) -> None:
        doc = {
            "format": FILE_FORMAT,
            "version": FILE_FORMAT_VERSION,
            "keys": [
                {
                    "keyset": e.info.keyset,
                    "name": e.info.name.value,
                    "version": e.info.version,
                    "algorithm": e.info.algorithm.value,
                    "key": e.material.hex().upper(),
                    "kcv": e.info.kcv_hex,
                }
                for e in entries
            ],
        }
        data = (json.dumps(doc, indent=2) + "\n").encode("utf-8")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise KeyFileError(f"key file {self.path}: cannot write: {exc.strerror}") from None

    # the KeyStore interface

    def list_keys(self) -> list[KeyInfo]:
        """Every master key in the file (no material)."""
        return _sort_infos(e.info for e in self._load())

    def current_version(self, keyset: str) -> int:
        """The highest version of ``keyset`` in the file."""
        check_keyset(keyset)
        versions = [e.info.version for e in self._load() if e.info.keyset == keyset]
        if not versions:
            raise KeyNotFoundError(f"no key set {keyset!r} in {self.path}")
        return max(versions)

    def import_key(
        self,
        keyset: str,
        name: KeyName | str,
        version: int,
        algorithm: KeyAlgorithm | str,
        material: bytes,
    ) -> KeyInfo:
        """Add a master key and rewrite the file atomically; returns its info (KCV)."""
        keyset, key_name, version, alg = _coerce(keyset, name, version, algorithm)
        _check_material(alg, key_name, material)
        material = bytes(material)
        info = KeyInfo(keyset, key_name, version, alg, len(material), kcv(alg, material))
        with self._locked():
            entries = self._load()
            if any(
                (e.info.keyset, e.info.name, e.info.version) == (keyset, key_name, version)
                for e in entries
            ):
                raise KeyExistsError(
                    f"{info.label} already exists in {self.path}; versions are immutable: "
                    f"import the new key as a new version"
                )
            self._write([*entries, _Entry(info, material)])
        log.info("imported master key %s into %s", info.describe(), self.path)
        return info

    def card_keys(self, iccid: str, keyset: str = "ota", version: int | None = None) -> CardKeys:
        """The card's keys of ``keyset`` v``version`` (None: current), diversified in software."""
        check_keyset(keyset)
        iccid = _iccid(iccid)
        entries = [e for e in self._load() if e.info.keyset == keyset]
        if not entries:
            raise KeyNotFoundError(f"no key set {keyset!r} in {self.path}")
        if version is None:
            version = max(e.info.version for e in entries)
        check_version(version)
        chosen = [e for e in entries if e.info.version == version]
        if not chosen:
            raise KeyNotFoundError(f"no version {version} of key set {keyset!r} in {self.path}")
        derived, source = self._derived, self._cache
        generation = None if source is None else source[1]
        cached = derived.get(generation, (iccid, keyset, version))
        if cached is not None:
            return cached
        keys = [
            card_key(
                e.info.name,
                e.info.algorithm,
                version,
                diversify(e.info.algorithm, e.material, e.info.name, iccid),
            )
            for e in chosen
        ]
        result = _derive_all(iccid, keyset, version, keys)
        derived.put(generation, (iccid, keyset, version), result)
        return result

    def generate(
        self,
        keyset: str,
        version: int,
        algorithm: KeyAlgorithm | str = KeyAlgorithm.AES,
        names: Sequence[KeyName] = ALL_NAMES,
    ) -> list[KeyInfo]:
        """Fresh random masters for ``names`` (see :func:`generate_keyset`)."""
        return generate_keyset(self, keyset, version, algorithm, names=names)


def _iccid(iccid: str) -> str:
    try:
        return normalize_iccid(iccid)
    except KeysError as exc:
        raise KeyStoreError(str(exc)) from None


# --- PKCS#11 ------------------------------------------------------------------------------


class _SharedSession:
    """The process's one logged-in session on a token (PKCS#11 login state is per process:
    a second ``C_Login`` fails and any ``C_Logout`` logs every session out), shared by every
    :class:`Pkcs11KeyStore` on that token and closed with the last of them."""

    def __init__(self, session: Any, pin_digest: bytes, salt: bytes) -> None:
        self.session = session
        self.pin_digest = pin_digest
        self.salt = salt
        self.refs = 0
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        return f"_SharedSession(refs={self.refs})"


_SESSIONS: dict[tuple[str, str], _SharedSession] = {}
_SESSIONS_LOCK: Final = threading.Lock()


def _pin_digest(salt: bytes, pin: str) -> bytes:
    return hashlib.sha256(salt + pin.encode("utf-8")).digest()


class Pkcs11KeyStore:
    """Master keys as secret-key objects on a PKCS#11 token; diversification on the token.

    ``lib_path`` is the PKCS#11 module (e.g. ``/usr/lib/softhsm/libsofthsm2.so``); the PIN
    logs in and is not kept (only a salted digest, so that a second store on the same token
    in this process must present the same PIN). python-pkcs11 loads a module once per process
    (and SoftHSM reads ``SOFTHSM2_CONF`` then). Stores on one token share one session,
    serialised by a lock.
    """

    def __init__(self, lib_path: str, token_label: str, pin: str) -> None:
        import pkcs11  # noqa: PLC0415 - optional at import time: only this backend needs it

        self._pkcs11 = pkcs11
        self.lib_path = lib_path
        self.token_label = token_label
        self._where = where = f"PKCS#11 token {token_label!r} ({lib_path})"
        self._closed = False
        with _SESSIONS_LOCK:
            shared = _SESSIONS.get((lib_path, token_label))
            if shared is None:
                shared = self._login(pin)
                _SESSIONS[(lib_path, token_label)] = shared
            elif not hmac.compare_digest(shared.pin_digest, _pin_digest(shared.salt, pin)):
                raise KeyStoreError(f"{where}: the PIN was refused")
            shared.refs += 1
        self._shared = shared

    def _login(self, pin: str) -> _SharedSession:
        pkcs11, where = self._pkcs11, self._where
        try:
            lib = pkcs11.lib(self.lib_path)
        except (pkcs11.PKCS11Error, OSError, RuntimeError) as exc:
            raise KeyStoreError(
                f"cannot load PKCS#11 module {self.lib_path}: {_p11_reason(exc)}"
            ) from None
        try:
            token = lib.get_token(token_label=self.token_label)
        except pkcs11.NoSuchToken:
            raise KeyStoreError(f"{where}: no such token") from None
        except pkcs11.PKCS11Error as exc:
            raise KeyStoreError(f"{where}: {_p11_reason(exc)}") from None
        try:
            session = token.open(rw=True, user_pin=pin)
        except (pkcs11.PinIncorrect, pkcs11.PinLenRange, pkcs11.PinInvalid):
            raise KeyStoreError(f"{where}: the PIN was refused") from None
        except pkcs11.UserAlreadyLoggedIn:
            raise KeyStoreError(
                f"{where}: already logged in by other code in this process; cannot verify the PIN"
            ) from None
        except pkcs11.PKCS11Error as exc:
            raise KeyStoreError(f"{where}: cannot log in: {_p11_reason(exc)}") from None
        salt = secrets.token_bytes(16)
        return _SharedSession(session, _pin_digest(salt, pin), salt)

    def __repr__(self) -> str:
        return f"Pkcs11KeyStore(token={self.token_label!r}, lib={self.lib_path!r})"

    __str__ = __repr__

    def close(self) -> None:
        """Release the store; the last one on a token closes the session (and logs out)."""
        with _SESSIONS_LOCK:
            if self._closed:
                return
            self._closed = True
            self._shared.refs -= 1
            if self._shared.refs == 0:
                _SESSIONS.pop((self.lib_path, self.token_label), None)
                with self._shared.lock, contextlib.suppress(Exception):
                    self._shared.session.close()

    def __enter__(self) -> Pkcs11KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _session(self) -> Any:
        if self._closed:
            raise KeyStoreError(f"{self._where}: the store is closed")
        return self._shared.session

    # token helpers

    def _objects(self) -> list[tuple[KeyInfo, Any]]:
        """Our master keys on the token (labels ``keyset/name/vN``), KCVs computed on it."""
        p11 = self._pkcs11
        found: list[tuple[KeyInfo, Any]] = []
        objects = list(self._session.get_objects({p11.Attribute.CLASS: p11.ObjectClass.SECRET_KEY}))
        for obj in objects:
            parsed = _parse_label(str(obj[p11.Attribute.LABEL]))
            if parsed is None:
                continue
            keyset, name, version = parsed
            key_type = obj[p11.Attribute.KEY_TYPE]
            if key_type == p11.KeyType.DES2:
                alg, length = KeyAlgorithm.TDES, TDES_KEY_LEN
            elif key_type == p11.KeyType.AES:
                alg, length = KeyAlgorithm.AES, int(obj[p11.Attribute.VALUE_LEN])
            else:
                continue
            info = KeyInfo(keyset, name, version, alg, length, self._token_kcv(obj, alg))
            found.append((info, obj))
        return found

    def _token_kcv(self, obj: Any, alg: KeyAlgorithm) -> bytes:
        p11 = self._pkcs11
        if alg is KeyAlgorithm.TDES:
            block = obj.encrypt(bytes(8), mechanism=p11.Mechanism.DES3_ECB)
        else:
            block = obj.encrypt(b"\x01" * 16, mechanism=p11.Mechanism.AES_ECB)
        return bytes(block[:KCV_LEN])

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        with self._shared.lock:
            try:
                yield
            except self._pkcs11.PKCS11Error as exc:
                raise KeyStoreError(f"{self._where}: {what} failed: {_p11_reason(exc)}") from None

    # the KeyStore interface

    def list_keys(self) -> list[KeyInfo]:
        """Every master key on the token (no material; KCVs computed on the token)."""
        with self._guard("listing keys"):
            return _sort_infos(info for info, _ in self._objects())

    def current_version(self, keyset: str) -> int:
        """The highest version of ``keyset`` on the token."""
        check_keyset(keyset)
        with self._guard("listing keys"):
            versions = [i.version for i, _ in self._objects() if i.keyset == keyset]
        if not versions:
            raise KeyNotFoundError(f"no key set {keyset!r} on {self._where}")
        return max(versions)

    def import_key(
        self,
        keyset: str,
        name: KeyName | str,
        version: int,
        algorithm: KeyAlgorithm | str,
        material: bytes,
    ) -> KeyInfo:
        """Create the master key on the token: sensitive, non-extractable, private."""
        keyset, key_name, version, alg = _coerce(keyset, name, version, algorithm)
        _check_material(alg, key_name, material)
        material = bytes(material)
        label = key_label(keyset, key_name, version)
        expected = kcv(alg, material)
        p11 = self._pkcs11
        A = p11.Attribute  # noqa: N806 - the PKCS#11 attribute namespace
        attrs: dict[Any, Any] = {
            A.CLASS: p11.ObjectClass.SECRET_KEY,
            A.KEY_TYPE: p11.KeyType.DES2 if alg is KeyAlgorithm.TDES else p11.KeyType.AES,
            A.VALUE: material,
            A.LABEL: label,
            A.TOKEN: True,
            A.PRIVATE: True,
            A.SENSITIVE: True,
            A.EXTRACTABLE: False,
            A.ENCRYPT: True,  # 3DES: diversification; both: the KCV
            A.DECRYPT: False,
            A.SIGN: alg is KeyAlgorithm.AES,  # AES-CMAC, the KDF's PRF
            A.VERIFY: False,
            A.WRAP: False,
            A.UNWRAP: False,
            A.DERIVE: False,
        }
        with self._guard(f"importing {label}"):
            if any(True for _ in self._session.get_objects({A.LABEL: label})):
                raise KeyExistsError(
                    f"{label} already exists on {self._where}; versions are immutable: "
                    f"import the new key as a new version"
                )
            obj = self._session.create_object(attrs)
            actual = self._token_kcv(obj, alg)
            if actual != expected:
                obj.destroy()
                raise KeyStoreError(f"{label}: the token computes another KCV; key not stored")
        info = KeyInfo(keyset, key_name, version, alg, len(material), expected)
        log.info("imported master key %s into %s", info.describe(), self._where)
        return info

    def card_keys(self, iccid: str, keyset: str = "ota", version: int | None = None) -> CardKeys:
        """The card's keys, diversified on the token (the masters never leave it)."""
        check_keyset(keyset)
        iccid = _iccid(iccid)
        p11 = self._pkcs11
        with self._guard(f"diversifying key set {keyset!r}"):
            objects = [(i, o) for i, o in self._objects() if i.keyset == keyset]
            if not objects:
                raise KeyNotFoundError(f"no key set {keyset!r} on {self._where}")
            if version is None:
                version = max(i.version for i, _ in objects)
            check_version(version)
            chosen = [(i, o) for i, o in objects if i.version == version]
            if not chosen:
                raise KeyNotFoundError(
                    f"no version {version} of key set {keyset!r} on {self._where}"
                )
            keys = []
            for info, obj in chosen:
                if info.algorithm is KeyAlgorithm.TDES:
                    d = pboc_diversifier(iccid)
                    not_d = bytes(b ^ 0xFF for b in d)
                    value = obj.encrypt(d + not_d, mechanism=p11.Mechanism.DES3_ECB)
                else:
                    fixed = aes_fixed_input(info.name, iccid, info.length)
                    blocks = (info.length + 15) // 16
                    out = b"".join(
                        obj.sign(bytes([i]) + fixed, mechanism=p11.Mechanism.AES_CMAC)
                        for i in range(1, blocks + 1)
                    )
                    value = out[: info.length]
                keys.append(card_key(info.name, info.algorithm, version, bytes(value)))
        return _derive_all(iccid, keyset, version, keys)


def _parse_label(label: str) -> tuple[str, KeyName, int] | None:
    match = _LABEL.fullmatch(label)
    if match is None:
        return None
    try:
        name = KeyName(match["name"])
    except ValueError:
        return None
    version = int(match["version"])
    if not MIN_VERSION <= version <= MAX_VERSION:
        return None
    return match["keyset"], name, version


def _p11_reason(exc: BaseException) -> str:
    """The PKCS#11 error's class name: python-pkcs11 messages may echo call arguments."""
    return type(exc).__name__
