"""Keyed generators: one seed per key tuple, reproducible, independent of the global RNG."""

from __future__ import annotations

import hashlib
import struct

import pytest
import torch

from jpegrestore.utils.seeding import keyed_generator, keyed_seed


def test_seed_is_blake2b_of_the_packed_keys():
    digest = hashlib.blake2b(struct.pack("<3q", 7, -1, 2), digest_size=8).digest()
    assert keyed_seed(7, -1, 2) == int.from_bytes(digest, "little") >> 1


@pytest.mark.parametrize("a, b", [((1, 2, 3), (1, 2, 3, 0)), ((5,), (5, 0)), ((0, 1), (2**32,)), ((0,), ()),
                                  ((1, 2), (2, 1)), ((-1,), (2**63 - 1,))])
def test_different_key_tuples_give_different_seeds(a, b):
    assert keyed_seed(*a) != keyed_seed(*b)
    assert 0 <= keyed_seed(*a) < 2**63


def test_generator_repeats_its_draws_whatever_the_global_rng_did():
    first = torch.randn(5, generator=keyed_generator(3, 0, 1))
    torch.randn(100)  # global draws in between change nothing
    assert torch.equal(first, torch.randn(5, generator=keyed_generator(3, 0, 1)))
    assert not torch.equal(first, torch.randn(5, generator=keyed_generator(3, 0, 2)))
    assert keyed_generator(1).device == torch.device("cpu")


def test_str_keys_are_their_blake2b_digest_as_an_int64():
    digest = hashlib.blake2b("img0.png@q10".encode(), digest_size=8, person=b"jpegrestore-key").digest()
    as_int = int.from_bytes(digest, "little", signed=True)
    assert keyed_seed(3, "img0.png@q10", 1) == keyed_seed(3, as_int, 1)
    assert keyed_seed(3, "img0.png@q10") != keyed_seed(3, "img0.png@q20")
    assert keyed_seed("a", "b") != keyed_seed("ab") != keyed_seed("b", "a")
