"""Keys (data protection): AES-GCM values bound to their row, fresh nonces, a blind-index key
separate from the data key, and a keyring file whose keys are wrapped (never in clear)."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from adapter.security.crypto import (
    BlindIndex,
    DecryptionError,
    FieldCipher,
    KeySet,
    StaticKeys,
    UnknownKeyError,
    b64,
    unb64,
)
from adapter.security.keys import Keyring, KeyringError, LocalWrappingKey, WrappingError, env_keys, key_source
from adapter.settings import SettingsError, load_settings

NUMBER = "+1 555 0100 123"
D1, D2, I1, I2 = (bytes([n]) * 32 for n in (1, 2, 3, 4))


def cipher_and_index(data: list[bytes], index: list[bytes]) -> tuple[FieldCipher, BlindIndex]:
    keys = StaticKeys(KeySet.of(data, index))
    return FieldCipher(keys), BlindIndex(keys)


def test_a_value_moved_to_another_row_column_or_table_does_not_decrypt() -> None:
    cipher, _ = cipher_and_index([D1], [I1])
    stored = cipher.encrypt(NUMBER, context="outbox.recipient_enc:notify:1")
    assert cipher.decrypt(stored, context="outbox.recipient_enc:notify:1") == NUMBER
    for elsewhere in ("outbox.recipient_enc:notify:2", "outbox.payload:notify:1", "wa_contact.phone_enc:notify:1"):
        with pytest.raises(DecryptionError):
            cipher.decrypt(stored, context=elsewhere)


def test_a_tampered_value_or_a_swapped_key_id_does_not_decrypt() -> None:
    cipher, _ = cipher_and_index([D2, D1], [I1])
    stored = cipher.encrypt(NUMBER, context="c")
    version, key_id, nonce, sealed = stored.split(".")
    other = next(k for k in cipher.keys.current().data if k != key_id)
    flipped = bytearray(unb64(sealed))
    flipped[0] ^= 1
    for bad in (f"{version}.{other}.{nonce}.{sealed}", f"{version}.{key_id}.{nonce}.{b64(bytes(flipped))}", "junk"):
        with pytest.raises(DecryptionError):
            cipher.decrypt(bad, context="c")


def test_each_value_gets_a_fresh_nonce() -> None:
    cipher, _ = cipher_and_index([D1], [I1])
    first, second = (cipher.encrypt(NUMBER, context="c") for _ in range(2))
    assert first != second and first.split(".")[2] != second.split(".")[2]


def test_decrypts_under_a_previous_key_and_encrypts_under_the_active_one() -> None:
    old, _ = cipher_and_index([D1], [I1])
    stored = old.encrypt(NUMBER, context="c")
    new, _ = cipher_and_index([D2, D1], [I1])
    assert new.decrypt(stored, context="c") == NUMBER
    assert new.encrypt(NUMBER, context="c").split(".")[1] == new.key_id != old.key_id
    gone, _ = cipher_and_index([D2], [I1])
    with pytest.raises(UnknownKeyError) as error:
        gone.decrypt(stored, context="c")
    assert error.value.key_id == old.key_id


def test_the_index_key_is_not_the_data_key() -> None:
    _, before = cipher_and_index([D1], [I1])
    _, after_data_rotation = cipher_and_index([D2, D1], [I1])
    assert before.phone(NUMBER) == after_data_rotation.phone(NUMBER)  # only the data key changed
    _, after_index_rotation = cipher_and_index([D1], [I2, I1])
    assert after_index_rotation.phone(NUMBER) != before.phone(NUMBER)
    assert before.phone(NUMBER) in after_index_rotation.phone_candidates(NUMBER)
    assert before.phone("15550100123") == before.phone(NUMBER)  # punctuation does not matter
    with pytest.raises(ValueError, match="index key must not also be a data key"):
        KeySet.of([D1], [D1])


def test_settings_keep_the_two_keys_apart_and_refuse_placeholders_in_production(tmp_path: Path) -> None:
    same = base64.urlsafe_b64encode(D1).decode()
    with pytest.raises(SettingsError) as error:
        load_settings(mode="demo", data_encryption_key=same, blind_index_key=same)
    assert any("blind_index_key must differ" in line for line in error.value.problems)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert any(line.startswith("blind_index_key") for line in error.value.problems)
    with pytest.raises(SettingsError) as error:
        load_settings(mode="demo", keyring_file=str(tmp_path / "keyring.json"))
    assert any("BRIDGE_KEY_WRAPPING_KEY" in line for line in error.value.problems)
    demo = load_settings(mode="demo", blind_index_keys_previous=[base64.urlsafe_b64encode(I1).decode()])
    keys = env_keys(demo)
    assert len(keys.index) == 2 and keys.legacy_index  # indexes of earlier versions still found


def wrapping(tmp_path: Path, name: str = "kek") -> tuple[LocalWrappingKey, bytes]:
    key = os.urandom(32)
    return LocalWrappingKey(key), key


def test_the_keyring_file_holds_only_wrapped_keys(tmp_path: Path) -> None:
    wrapper, kek = wrapping(tmp_path)
    path = tmp_path / "keyring.json"
    ring = Keyring.create(path, wrapper)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    raw = path.read_bytes()
    keys = ring.current()
    for key in (*keys.data.values(), *keys.index.values(), kek):
        for shown in (key, key.hex().encode(), base64.b64encode(key), base64.urlsafe_b64encode(key).rstrip(b"=")):
            assert shown not in raw
    assert keys.active_data.encode() in raw and keys.active_index.encode() in raw  # ids are not secret
    with pytest.raises(KeyringError, match="already exists"):
        Keyring.create(path, wrapper)


def test_a_wrong_wrapping_key_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    Keyring.create(path, wrapping(tmp_path)[0])
    with pytest.raises(WrappingError, match="wrong key wrapping key"):
        Keyring.load(path, wrapping(tmp_path)[0])


def test_the_keyring_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    wrapper = wrapping(tmp_path)[0]
    Keyring.create(path, wrapper)
    path.chmod(0o644)
    with pytest.raises(KeyringError, match="0600"):
        Keyring.load(path, wrapper)


def test_a_key_added_by_another_process_is_picked_up_on_first_use(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    wrapper = wrapping(tmp_path)[0]
    serving = Keyring.create(path, wrapper)
    cipher = FieldCipher(serving)
    old_id = cipher.key_id
    cli = Keyring.load(path, wrapper)  # the `bridge keys rotate` process
    new_id = cli.rotate("data")
    stored = FieldCipher(cli).encrypt(NUMBER, context="c")
    assert stored.split(".")[1] == new_id
    assert cipher.decrypt(stored, context="c") == NUMBER  # unknown id: reloaded once, then decrypted
    assert cipher.key_id == new_id and old_id in serving.current().data
    with pytest.raises(KeyringError, match="active"):
        cli.retire(new_id)
    assert cli.retire(old_id) == "data" and old_id not in Keyring.load(path, wrapper).current().data
    with pytest.raises(UnknownKeyError):
        cipher.decrypt(stored.replace(new_id, "00000000"), context="c")


def test_key_source_reads_the_keyring_from_settings(tmp_path: Path) -> None:
    kek = base64.urlsafe_b64encode(os.urandom(32)).decode()
    path = tmp_path / "keyring.json"
    settings = load_settings(mode="demo", keyring_file=str(path), key_wrapping_key=kek)
    Keyring.create(path, LocalWrappingKey.from_settings(settings))
    source = key_source(settings)
    assert isinstance(source, Keyring) and source.current().active_data in path.read_text()
    with pytest.raises(SettingsError) as error:  # production, every other setting left at its default
        load_settings(keyring_file=str(path), key_wrapping_key=kek)
    named = {line.split(" ")[0] for line in error.value.problems}
    assert "data_encryption_key" not in named and "blind_index_key" not in named  # the keyring replaces them
    assert "whatsapp_app_secret" in named  # while the other placeholders are still refused
