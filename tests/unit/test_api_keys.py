"""API key format: generation, checksum, parsing."""

from services.common.api_keys import generate_key, hash_key, parse_key


def test_generated_keys_parse_with_their_kind_and_mode() -> None:
    for kind, tag in [("secret", "sk"), ("publishable", "pk")]:
        for mode in ["test", "live"]:
            key = generate_key(kind=kind, mode=mode)  # type: ignore[arg-type]
            assert key.startswith(f"{tag}_{mode}_")
            parsed = parse_key(key)
            assert parsed is not None
            assert (parsed.kind, parsed.mode) == (kind, mode)
            assert key.startswith(parsed.prefix)
            assert parsed.key_hash == hash_key(key)


def test_keys_are_unique() -> None:
    assert len({generate_key(kind="secret", mode="test") for _ in range(1000)}) == 1000


def test_a_mistyped_character_fails_the_checksum() -> None:
    key = generate_key(kind="secret", mode="test")
    position = 12
    replacement = "a" if key[position] != "a" else "b"
    assert parse_key(key[:position] + replacement + key[position + 1 :]) is None


def test_malformed_keys_are_refused() -> None:
    key = generate_key(kind="secret", mode="test")
    for bad in ["", "sk_test_", key + "x", key[:-1], key.replace("sk_", "xk_"), " " + key]:
        assert parse_key(bad) is None, bad
