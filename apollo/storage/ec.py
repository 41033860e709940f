"""Stripe codecs: systematic Reed-Solomon (pyeclib/ISA-L) and n-way replication.

A stripe is up to ``k * cell_size`` data bytes. Encoding yields one *fragment*
per shard; data fragment ``i`` carries bytes ``[i*f, (i+1)*f)`` of the stripe
verbatim (systematic code), where ``f = ceil(len(stripe) / k)``. So a healthy
read slices data fragments directly and never calls the decoder.

pyeclib prefixes each fragment with a small header of its own that its decoder
needs; we store fragments whole and know the header length, so readers can
skip it.
"""

from __future__ import annotations

import functools

from pyeclib.ec_iface import ECDriver

from apollo.errors import InsufficientFragments
from apollo.invariant import invariant
from apollo.proto.layout import Scheme, fragment_payload_bytes

EC_BACKEND = "isa_l_rs_vand"
_SYSTEMATIC_SAMPLE_BYTES = 4096  # of each stripe checked to reappear verbatim in its data fragment


class StripeCodec:
    """Encode and decode one stripe at a time; thread-safe (pyeclib releases the GIL)."""

    def __init__(self, scheme: Scheme) -> None:
        self.scheme = scheme
        if scheme.kind == "ec":
            self._driver: ECDriver | None = ECDriver(k=scheme.k, m=scheme.m, ec_type=EC_BACKEND)
            self.header_bytes = len(self._driver.encode(b"x" * scheme.k)[0]) - 1
        else:
            self._driver = None
            self.header_bytes = 0

    def encode(self, stripe: bytes | memoryview) -> list[bytes]:
        """Return ``k + m`` fragments; data fragments are checked to be verbatim slices.

        Readers take data straight from the data fragments, so that property is what matters;
        comparing whole fragments would cost a fifth of a write's CPU, so the check samples
        the start of the last data fragment, where a non-systematic code would differ.
        """
        if self._driver is None:
            copy = bytes(stripe)
            return [copy] * self.scheme.width
        fragments = self._driver.encode(bytes(stripe))
        payload = fragment_payload_bytes(len(stripe), self.scheme.k)
        invariant(len(fragments) == self.scheme.width, "encoder returned wrong fragment count")
        invariant(len(fragments[0]) == self.header_bytes + payload, "unexpected fragment geometry")
        start = (self.scheme.k - 1) * payload
        sample = stripe[start : start + _SYSTEMATIC_SAMPLE_BYTES]
        invariant(
            fragments[self.scheme.k - 1][self.header_bytes : self.header_bytes + len(sample)] == sample,
            "encoder is not systematic: data fragment differs from the stripe slice",
        )
        return fragments

    def data_from_fragment(self, fragment: bytes | memoryview) -> memoryview:
        """The payload of a fragment (skipping the codec header)."""
        return memoryview(fragment)[self.header_bytes :]

    def decode(self, fragments: dict[int, bytes], stripe_bytes: int) -> bytes:
        """Rebuild the stripe's data from any ``k`` fragments (indexes 0..k+m-1)."""
        if len(fragments) < self.scheme.k:
            raise InsufficientFragments(
                f"only {len(fragments)} of {self.scheme.width} cells readable, need {self.scheme.k}"
            )
        if self._driver is None:
            return bytes(next(iter(fragments.values())))[:stripe_bytes]
        data = self._driver.decode(list(fragments.values()))
        invariant(len(data) == stripe_bytes, "decoded stripe has the wrong length")
        return data

    def rebuild(self, fragments: dict[int, bytes], missing: list[int]) -> dict[int, bytes]:
        """Recompute missing fragments (data or parity) from any ``k`` others."""
        if len(fragments) < self.scheme.k:
            raise InsufficientFragments(f"only {len(fragments)} cells readable, need {self.scheme.k}")
        if self._driver is None:
            copy = next(iter(fragments.values()))
            return {index: copy for index in missing}
        available = list(fragments.values())
        return {index: self._driver.reconstruct(available, [index])[0] for index in missing}


@functools.lru_cache(maxsize=32)
def codec_for(scheme: Scheme) -> StripeCodec:
    """Codecs are costly to build (ISA-L tables); share one per scheme."""
    return StripeCodec(scheme)
