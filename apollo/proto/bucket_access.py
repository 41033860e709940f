"""The one bucket-policy decision both doors make: the S3 gateway for every request
(``apollo.gateway.authorize``) and the metadata RPC for a native client's calls (``apollo.meta.call_policy``).

Each (action, resource) an operation needs (``apollo.proto.s3_actions``) is evaluated against the policy
of its bucket (``apollo.proto.policy``). Until identity policies exist, a signed key may do what its
buckets' policies do not deny (``SIGNED_KEY_POLICY``); anonymous requests only what a policy grants to
``"*"``. Policies are parsed once and kept ``POLICY_TTL_S``: a policy changed through one process applies
in every other one within that.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

from apollo.proto.policy import Decision, Policy, Request, evaluate, parse_policy

POLICY_TTL_S = 2.0

SIGNED_KEY_POLICY = parse_policy(
    '{"Version": "2012-10-17", "Statement": [{"Sid": "SignedKeysUntilIdentityPolicies", "Effect": "Allow", '
    '"Action": "s3:*", "Resource": "*"}]}',
    kind="identity",
)


class BucketPolicies:
    """Parsed bucket policies, each kept ``ttl_s`` (a bucket without one too: None), so that a request on
    a bucket without a policy costs a dictionary lookup."""

    def __init__(self, policy_text: Callable[[str], Awaitable[str]], ttl_s: float = POLICY_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._policy_text = policy_text  # bucket -> its policy document, "" for none; raises BucketNotFound
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, Policy | None]] = {}

    async def get(self, bucket: str) -> Policy | None:
        """:raises BucketNotFound:"""
        now = self._clock()
        hit = self._cache.get(bucket)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        text = await self._policy_text(bucket)
        policy = parse_policy(text, kind="bucket", bucket=bucket) if text else None
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[bucket] = (now, policy)
        return policy

    def forget(self, bucket: str) -> None:
        self._cache.pop(bucket, None)


def denial(principal: str | None, is_root: bool, context: dict[str, str],
           checks: Iterable[tuple[str, str, Policy | None]]) -> tuple[str, str, Decision] | None:  # fmt: skip
    """The first (action, resource, decision) of ``checks`` (each with its bucket's policy) not allowed to
    ``principal`` (None: anonymous); None when every one is."""
    identity = [SIGNED_KEY_POLICY] if principal is not None else []
    for action, resource, policy in checks:
        decision = evaluate(Request(principal=principal, action=action, resource=resource, context=context,
                                    is_root=is_root), identity, policy)  # fmt: skip
        if not decision.allowed:
            return action, resource, decision
    return None


def request_context(source_ip: str, secure: bool, now: float) -> dict[str, str]:
    """The global condition keys every request carries (the door adds its operation's own)."""
    return {
        "aws:SourceIp": source_ip,
        "aws:SecureTransport": "true" if secure else "false",
        "aws:CurrentTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "aws:EpochTime": str(int(now)),
    }
