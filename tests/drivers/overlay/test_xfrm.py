"""The IPsec plan for encrypted overlays (pure; the kernel here has no ESP, see test_overlay.py)."""

from __future__ import annotations

import pytest

from reconciler.drivers.overlay import xfrm

KEY = bytes(range(32))
A, B, C = "192.0.2.11", "192.0.2.12", "192.0.2.13"


def test_one_sa_per_direction_and_policies_for_vxlan_only() -> None:
    states, policies = xfrm.plan(4097, A, [C, B], KEY)
    assert [(s.src, s.dst) for s in states] == [(A, B), (B, A), (A, C), (C, A)]
    assert {(p.direction, p.src, p.dst, p.dport) for p in policies} == {
        ("out", A, B, 4789),
        ("in", B, A, 4789),
        ("out", A, C, 4789),
        ("in", C, A, 4789),
    }
    assert all(len(s.key) == xfrm.AEAD_KEY_BYTES and s.spi >= 0x80000000 for s in states)
    assert len({s.spi for s in states}) == len(states)


def test_both_ends_derive_the_same_sa() -> None:
    on_a, _ = xfrm.plan(4097, A, [B], KEY)
    on_b, _ = xfrm.plan(4097, B, [A], KEY)
    assert sorted(on_a, key=lambda s: s.spi) == sorted(on_b, key=lambda s: s.spi)


def test_keys_come_from_the_key_file_and_rotate_with_it() -> None:
    old, _ = xfrm.plan(4097, A, [B], KEY)
    new, _ = xfrm.plan(4097, A, [B], KEY[::-1])
    assert {s.key for s in old}.isdisjoint({s.key for s in new})
    assert {s.spi for s in old}.isdisjoint({s.spi for s in new})
    assert all(KEY.hex() not in " ".join(s.ip_args()) for s in old)
    other_vni, _ = xfrm.plan(4098, A, [B], KEY)
    assert {s.key for s in old}.isdisjoint({s.key for s in other_vni})


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        xfrm.plan(4097, A, [B], b"short")


def test_sa_uses_libnetworks_aead_in_transport_mode() -> None:
    (sa, _), _ = xfrm.plan(4097, A, [B], KEY)
    args = sa.ip_args()
    assert args[args.index("mode") + 1] == "transport"
    assert args[args.index("aead") + 1] == "rfc4106(gcm(aes))"
    assert args[args.index("proto") + 1] == "esp"
