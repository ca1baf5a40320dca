"""Identifiers: format, uniqueness, and an even spread of characters in every position."""

from collections import Counter

from services.common.ids import ALPHABET, RANDOM_LENGTH, has_prefix, new_id

SAMPLE_SIZE = 62_000  # 1,000 expected per character and position


def test_new_id__prefix_then_24_base62_characters() -> None:
    for _ in range(1_000):
        value = new_id("pay")
        prefix, body = value.split("_")
        assert prefix == "pay"
        assert len(body) == RANDOM_LENGTH
        assert set(body) <= set(ALPHABET)
        assert has_prefix(value, "pay")


def test_new_id__never_repeats() -> None:
    values = [new_id("evt") for _ in range(SAMPLE_SIZE)]
    assert len(set(values)) == len(values)


def test_new_id__every_character_equally_likely_in_every_position() -> None:
    # A biased encoding (say, 18 random bytes reduced modulo 62**24) over-represents the low
    # characters of the most significant position by about 40%; this bound (7 standard
    # deviations of a fair draw) catches that and never fails a fair one in practice.
    positions = [Counter[str]() for _ in range(RANDOM_LENGTH)]
    for _ in range(SAMPLE_SIZE):
        for position, character in enumerate(new_id("x").removeprefix("x_")):
            positions[position][character] += 1
    expected = SAMPLE_SIZE / len(ALPHABET)
    bound = 7 * (expected * (1 - 1 / len(ALPHABET))) ** 0.5
    for position, counts in enumerate(positions):
        assert set(counts) == set(ALPHABET), position
        worst = max(abs(counts[c] - expected) for c in ALPHABET)
        assert worst < bound, (position, worst, bound)
