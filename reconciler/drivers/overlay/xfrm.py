"""IPsec for `encrypted: true` overlays: ESP in transport mode between every pair of VTEPs, for the
VXLAN traffic only (UDP 4789), as libnetwork does.

`plan` is pure: the SAs and policies one host needs, with keys derived from the key file's content
(never from the spec), so every host derives the same keys and rotating the file rotates them.
`missing_feature` probes the kernel first; an encrypted network is refused, never sent in plaintext.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
from dataclasses import dataclass

from ...names import VXLAN_PORT

AEAD = "rfc4106(gcm(aes))"  # libnetwork's cipher: a 128-bit key plus a 4-byte salt
AEAD_KEY_BYTES = 20
ICV_BITS = 64
MIN_KEY_BYTES = 16
# Throwaway TEST-NET addresses for the probe, which runs in a fresh network namespace.
_PROBE_SRC, _PROBE_DST = "192.0.2.1", "192.0.2.2"


@dataclass(frozen=True)
class SecurityAssociation:
    src: str
    dst: str
    spi: int
    key: bytes  # AEAD key material: key + salt

    def ip_args(self) -> list[str]:
        return [
            *("state", "add", "src", self.src, "dst", self.dst, "proto", "esp", "spi", f"0x{self.spi:08x}"),
            *("mode", "transport", "aead", AEAD, "0x" + self.key.hex(), str(ICV_BITS)),
        ]


@dataclass(frozen=True)
class Policy:
    direction: str  # "out" or "in"
    src: str
    dst: str
    dport: int = VXLAN_PORT


def _derive(key: bytes, label: str, length: int) -> bytes:
    return hmac.new(key, label.encode(), hashlib.sha256).digest()[:length]


def plan(
    vni: int, local: str, remotes: list[str], key: bytes
) -> tuple[list[SecurityAssociation], list[Policy]]:
    """The SAs (both directions per peer) and policies this host needs for one encrypted overlay."""
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the key file holds {len(key)} bytes; at least {MIN_KEY_BYTES} are needed")
    states: list[SecurityAssociation] = []
    policies: list[Policy] = []
    for remote in sorted(remotes):
        for src, dst in ((local, remote), (remote, local)):
            label = f"{vni}/{src}>{dst}"
            # SPIs below 256 are reserved (RFC 4303); the top bit keeps derived ones clear of them.
            spi = int.from_bytes(_derive(key, "spi/" + label, 4), "big") | 0x80000000
            states.append(SecurityAssociation(src, dst, spi, _derive(key, "key/" + label, AEAD_KEY_BYTES)))
        policies += [Policy("out", local, remote), Policy("in", remote, local)]
    return states, policies


def missing_feature() -> str | None:
    """What the kernel lacks for encrypted overlays, or None. Probed in a throwaway namespace.

    ESP itself is probed with a plain cipher first: without ESP, a probe with the GCM AEAD fails
    with "AEAD algorithm not found", which points at the wrong culprit."""
    plain = [
        *("state", "add", "src", _PROBE_SRC, "dst", _PROBE_DST, "proto", "esp", "spi", "0x100"),
        *("mode", "transport", "enc", "cbc(aes)", "0x" + "11" * 16, "auth-trunc", "hmac(sha256)"),
        *("0x" + "22" * 32, "128"),
    ]
    err = _probe(plain)
    if err is not None:
        if "type not found" in err or "not supported" in err.lower():
            return "IPsec ESP (the kernel's xfrm has no ESP type: CONFIG_INET_ESP / module esp4)"
        return f"IPsec xfrm ({err})"
    gcm = SecurityAssociation(_PROBE_SRC, _PROBE_DST, 0x101, bytes(AEAD_KEY_BYTES))
    err = _probe(gcm.ip_args())
    if err is not None:
        return f"the {AEAD} AEAD cipher for IPsec ESP ({err})"
    return None


def _probe(ip_xfrm_args: list[str]) -> str | None:
    try:
        proc = subprocess.run(
            ["unshare", "--net", "ip", "xfrm", *ip_xfrm_args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"probe could not run: {e}"
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"exit {proc.returncode}")
